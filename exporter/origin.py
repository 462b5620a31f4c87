"""An upstream's origin, parsed once at start-up, and the request targets composed on it.

The upstream a request goes to comes from the configuration only. A configured URL is split
here, once, into scheme, host, port, credentials and base path; a proxied request then adds the
client's path and query to the base path, and the upstream clients connect to `host` and `port`
as parsed. Nothing is ever parsed again from a joined string, so no client path (`@evil/`,
`//evil/`, `*`, an absolute URL) can change where a request goes or who gets the upstream's key.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Origin:
    scheme: str  # "http" or "https"
    host: str  # as configured (an IPv6 address without brackets)
    port: int
    base_path: str  # the configured URL's path without its trailing "/", often ""
    host_header: bytes  # the Host header: the configured host, and the port unless it is the default
    user: str | None = None  # credentials in the configured URL (basic auth), never the client's
    password: str | None = None
    http_proxy: str | None = None  # from HTTP(S)_PROXY / NO_PROXY at start-up

    @property
    def url_host(self) -> str:
        """The host as a URL writes it: an IPv6 address in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def direct_plain_http(self) -> bool:
        """Served by the lean HTTP/1.1 client: plain HTTP, reached directly, no credentials."""
        return (self.scheme == "http" and self.http_proxy is None and self.user is None
                and self.host.isascii())

    def target(self, client_path: str, query: str = "") -> str:
        """The upstream request target for a client's origin-form path (it starts with "/") and
        query: the base path, then both exactly as the client sent them."""
        return self.base_path + client_path + ("?" + query if query else "")

    def __str__(self) -> str:  # for messages and logs: never the credentials
        return f"{self.scheme}://{self.host_header.decode('latin-1')}{self.base_path}"


def parse_origin(url: str) -> Origin:
    """The origin of a configured upstream URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} must not have a query or fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    proxy = urllib.request.getproxies_environment().get(parts.scheme)
    if proxy and urllib.request.proxy_bypass_environment(parts.hostname):
        proxy = None
    netloc = parts.netloc.rpartition("@")[2]  # as configured, without credentials
    try:
        host_header = netloc.encode("ascii") if netloc.isascii() else netloc.encode("idna")
    except UnicodeError:
        raise ValueError(f"{url!r} has a host name that cannot be encoded") from None
    return Origin(
        scheme=parts.scheme, host=parts.hostname, port=port, base_path=parts.path.rstrip("/"),
        host_header=host_header, user=parts.username, password=parts.password, http_proxy=proxy or None,
    )
