"""Usage questions answered from the request log: shared by /api/usage, /api/requests and the CLI.

Definitions (docs/request-log.md): a request is an error when the client got a status of 400 or
more or the upstream failed (error_type set, e.g. a stream broken off after its 200); latency
percentiles are nearest-rank over the durations of successful requests (2xx, no error); mean
time to first token is over streams that produced content; cost is the sum of the rows' cost,
where an unpriced row (tokens used, no price) counts 0 and its model is listed as unpriced.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from exporter.requestlog import REQUEST_COLUMNS

TOKEN_COLUMNS = {
    "input": "input_tokens",
    "cached_input": "cached_input_tokens",
    "cache_write_input": "cache_write_input_tokens",
    "output": "output_tokens",
    "reasoning": "reasoning_tokens",
}
GROUPS = {
    "model": "model",
    "upstream": "upstream",
    "api": "api",
    "day": "strftime('%Y-%m-%d', ts, 'unixepoch')",  # UTC days
    "key_id": "key_id",
    "user": "user",
}
LIST_FILTERS = ("upstream", "model", "api", "key_id", "user", "session_id")  # repeatable: any of
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# Numbers in query parameters are ASCII digits only: Python's int() and float() would also take
# "١٢", "1_000" and " 12 ".
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION = re.compile(f"({_NUMBER})([smhdw])")
_UNIX_SECONDS = re.compile(_NUMBER)
_ERROR = "(status_code >= 400 OR error_type IS NOT NULL)"
_SUCCESS = "(status_code BETWEEN 200 AND 299 AND error_type IS NULL)"
_USED_TOKENS = "(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0) > 0)"


class BadParameter(ValueError):
    """A query parameter is wrong; `parameter` names it, the message starts with it."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


# --- parameters --------------------------------------------------------------------------------


def parse_time(value: str, parameter: str, now: float | None = None) -> float:
    """Unix seconds, an ISO 8601 date or date-time (UTC unless it says otherwise), or a
    duration ago: 90s, 30m, 24h, 7d, 2w."""
    now = time.time() if now is None else now
    if match := _DURATION.fullmatch(value):
        moment = now - float(match.group(1)) * _UNITS[match.group(2)]
    elif _UNIX_SECONDS.fullmatch(value):
        moment = float(value)
    else:
        moment = _iso_time(value) if value.isascii() else None
    if moment is None or not math.isfinite(moment):  # 400 digits are a float too: infinity
        raise BadParameter(parameter, f"{value!r} is not a time: give unix seconds, an ISO 8601 date or "
                                      "date-time, or a duration ago such as 30m, 24h or 7d")
    return moment


def _iso_time(text: str) -> float | None:
    """An ISO 8601 date or date-time as unix seconds (UTC unless it says otherwise), or None."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def _whole_number(text: str) -> int | None:
    """ASCII digits as an int, else None."""
    return int(text) if text.isascii() and text.isdigit() else None


@dataclass
class Filters:
    since: float | None = None
    until: float | None = None
    match: dict[str, list[str]] = field(default_factory=dict)  # column -> any of these values
    status: list[int] = field(default_factory=list)
    errors: bool | None = None  # True: only errors, False: only successes

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["1"], []
        if self.since is not None:
            clauses.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            params.append(self.until)
        for column, values in self.match.items():
            clauses.append(f"[{column}] IN ({', '.join('?' * len(values))})")
            params.extend(values)
        if self.status:
            clauses.append(f"status_code IN ({', '.join('?' * len(self.status))})")
            params.extend(self.status)
        if self.errors is not None:
            clauses.append(_ERROR if self.errors else f"NOT {_ERROR}")
        return " AND ".join(clauses), params

    def describe(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, **{k: v for k, v in self.match.items()}}


class Params:
    """Query parameters, checked: unknown or malformed ones raise BadParameter naming them."""

    def __init__(self, items: Sequence[tuple[str, str]], known: Sequence[str]) -> None:
        self.values: dict[str, list[str]] = {}
        for name, value in items:
            if name not in known:
                raise BadParameter(name, f"unknown parameter (known: {', '.join(known)})")
            self.values.setdefault(name, []).append(value)

    def one(self, name: str) -> str | None:
        values = self.values.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadParameter(name, "give it once")
        if not values[0].strip():
            raise BadParameter(name, "is empty")
        return values[0]

    def many(self, name: str) -> list[str]:
        """Repeated (?model=a&model=b) or comma-separated (?model=a,b)."""
        found = [part.strip() for value in self.values.get(name, []) for part in value.split(",")]
        if any(not part for part in found):
            raise BadParameter(name, "has an empty value")
        return found

    def filters(self, now: float | None = None) -> Filters:
        now = time.time() if now is None else now
        result = Filters()
        if (since := self.one("since")) is not None:
            result.since = parse_time(since, "since", now)
        if (until := self.one("until")) is not None:
            result.until = parse_time(until, "until", now)
        if result.since is not None and result.until is not None and result.until <= result.since:
            raise BadParameter("until", "must be later than since")
        for name in LIST_FILTERS:
            if name in self.values:
                result.match[name] = self.many(name)
        for code in self.many("status") if "status" in self.values else []:
            number = _whole_number(code)
            if number is None or not 100 <= number <= 599:
                raise BadParameter("status", f"{code!r} is not an HTTP status code")
            result.status.append(number)
        if (errors := self.one("errors")) is not None:
            if errors.lower() not in ("true", "false", "1", "0"):
                raise BadParameter("errors", f"{errors!r} must be true or false")
            result.errors = errors.lower() in ("true", "1")
        return result


USAGE_PARAMETERS = ("since", "until", "upstream", "model", "api", "key_id", "user", "session_id", "group_by")
REQUESTS_PARAMETERS = (
    "since", "until", "upstream", "model", "api", "key_id", "user", "session_id", "status", "errors", "limit",
)


def usage_query(items: Sequence[tuple[str, str]], now: float | None = None) -> tuple[Filters, str | None]:
    params = Params(items, USAGE_PARAMETERS)
    group_by = params.one("group_by")
    if group_by is not None and group_by not in GROUPS:
        raise BadParameter("group_by", f"{group_by!r} is not one of {', '.join(GROUPS)}")
    return params.filters(now), group_by


def requests_query(items: Sequence[tuple[str, str]], now: float | None = None) -> tuple[Filters, int]:
    params = Params(items, REQUESTS_PARAMETERS)
    limit = DEFAULT_LIMIT
    if (text := params.one("limit")) is not None:
        number = _whole_number(text)
        if number is None or not 1 <= number <= MAX_LIMIT:
            raise BadParameter("limit", f"{text!r} must be a whole number from 1 to {MAX_LIMIT}")
        limit = number
    return params.filters(now), limit


# --- queries -----------------------------------------------------------------------------------


def usage(conn: sqlite3.Connection, filters: Filters, group_by: str | None) -> dict[str, Any]:
    """The /api/usage answer: totals, and one entry per group when group_by is given."""
    where, params = filters.where()
    total = _summaries(conn, "NULL", where, params)[None]
    groups = []
    if group_by is not None:
        summaries = _summaries(conn, GROUPS[group_by], where, params)
        groups = [{"group": key, **summary} for key, summary in summaries.items()]
        if group_by == "day":
            groups.sort(key=lambda g: g["group"] or "")
        else:
            groups.sort(key=lambda g: (-g["cost_usd"], -g["requests"], str(g["group"])))
    return {
        "filters": filters.describe(),
        "group_by": group_by,
        "total": total,
        "groups": groups,
    }


def _summaries(conn: sqlite3.Connection, group: str, where: str, params: list[Any]) -> dict[Any, dict[str, Any]]:
    # TOTAL, not SUM: SUM of 64-bit integers fails on overflow, and rows written before token
    # counts were bounded (exporter.families.MAX_TOKENS) may hold counts up to 2**53.
    token_sums = ", ".join(f"TOTAL({column})" for column in TOKEN_COLUMNS.values())
    rows = conn.execute(
        f"""SELECT {group} AS grp, COUNT(*), COALESCE(SUM(CASE WHEN {_ERROR} THEN 1 ELSE 0 END), 0),
                   {token_sums}, COALESCE(SUM(cost_usd), 0), AVG(ttft_seconds),
                   COALESCE(SUM(CASE WHEN cost_usd IS NULL AND {_USED_TOKENS} THEN 1 ELSE 0 END), 0)
            FROM requests WHERE {where} GROUP BY grp""",
        params,
    ).fetchall()
    result: dict[Any, dict[str, Any]] = {}
    for grp, requests, errors, *rest in rows:
        tokens, (cost, ttft, unpriced) = rest[:len(TOKEN_COLUMNS)], rest[len(TOKEN_COLUMNS):]
        result[grp] = {
            "requests": requests,
            "errors": errors,
            "tokens": dict(zip(TOKEN_COLUMNS, (int(t) for t in tokens))),
            "cost_usd": float(cost),
            "latency_seconds": {"p50": None, "p95": None},
            "mean_ttft_seconds": ttft,
            "unpriced_requests": unpriced,
            "unpriced_models": [],
        }
    if group == "NULL" and None not in result:  # no rows at all: a total of zeros
        result[None] = _summaries_empty()
    # Nearest-rank percentiles in SQL: the value at rank ceil(p * n) of the sorted durations.
    for grp, p50, p95 in conn.execute(
        f"""SELECT grp, MIN(CASE WHEN rn >= 0.50 * n THEN d END), MIN(CASE WHEN rn >= 0.95 * n THEN d END)
            FROM (SELECT {group} AS grp, duration_seconds AS d,
                         ROW_NUMBER() OVER (PARTITION BY {group} ORDER BY duration_seconds) AS rn,
                         COUNT(*) OVER (PARTITION BY {group}) AS n
                  FROM requests WHERE {where} AND {_SUCCESS} AND duration_seconds IS NOT NULL)
            GROUP BY grp""",
        params,
    ):
        if grp in result:
            result[grp]["latency_seconds"] = {"p50": p50, "p95": p95}
    for grp, model in conn.execute(
        f"""SELECT DISTINCT {group} AS grp, model FROM requests
            WHERE {where} AND cost_usd IS NULL AND {_USED_TOKENS} ORDER BY model""",
        params,
    ):
        if grp in result:
            result[grp]["unpriced_models"].append(model)
    return result


def _summaries_empty() -> dict[str, Any]:
    return {
        "requests": 0, "errors": 0, "tokens": dict.fromkeys(TOKEN_COLUMNS, 0), "cost_usd": 0.0,
        "latency_seconds": {"p50": None, "p95": None}, "mean_ttft_seconds": None,
        "unpriced_requests": 0, "unpriced_models": [],
    }


def recent_requests(conn: sqlite3.Connection, filters: Filters, limit: int) -> dict[str, Any]:
    """The /api/requests answer: the newest rows first."""
    where, params = filters.where()
    columns = list(REQUEST_COLUMNS)
    cursor = conn.execute(
        f"SELECT {', '.join(f'[{c}]' for c in columns)} FROM requests WHERE {where} "
        f"ORDER BY ts DESC, rowid DESC LIMIT ?",
        [*params, limit],
    )
    rows = [_request_row(columns, values) for values in cursor]
    return {"filters": filters.describe(), "limit": limit, "count": len(rows), "requests": rows}


def one_request(conn: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    """One row by request_id, with its captured bodies when there are any."""
    from exporter.capture import decode_body

    columns = list(REQUEST_COLUMNS)
    values = conn.execute(
        f"SELECT {', '.join(f'[{c}]' for c in columns)} FROM requests WHERE request_id = ? LIMIT 1", [request_id]
    ).fetchone()
    if values is None:
        return None
    body = conn.execute(
        "SELECT request_body, request_size, request_truncated, response_body, response_size, "
        "response_truncated, response_content_type FROM bodies WHERE request_id = ? LIMIT 1", [request_id]
    ).fetchone()
    bodies = None
    if body is not None:
        bodies = {
            "request": decode_body(body[0]), "request_size": body[1], "request_truncated": bool(body[2]),
            "response": decode_body(body[3]), "response_size": body[4], "response_truncated": bool(body[5]),
            "response_content_type": body[6],
        }
    return {"request": _request_row(columns, values), "bodies": bodies}


def _request_row(columns: list[str], values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(columns, values))
    row["stream"] = bool(row["stream"]) if row["stream"] is not None else None
    return row


# --- the terminal table ------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("REQUESTS", lambda s: f"{s['requests']:,}"),
    ("ERRORS", lambda s: f"{s['errors']:,}"),
    ("INPUT", lambda s: f"{s['tokens']['input']:,}"),
    ("CACHED", lambda s: f"{s['tokens']['cached_input']:,}"),
    ("CACHE_WRITE", lambda s: f"{s['tokens']['cache_write_input']:,}"),
    ("OUTPUT", lambda s: f"{s['tokens']['output']:,}"),
    ("REASONING", lambda s: f"{s['tokens']['reasoning']:,}"),
    ("COST_USD", lambda s: f"{s['cost_usd']:,.6f}"),
    ("P50_S", lambda s: _seconds(s["latency_seconds"]["p50"])),
    ("P95_S", lambda s: _seconds(s["latency_seconds"]["p95"])),
    ("TTFT_S", lambda s: _seconds(s["mean_ttft_seconds"])),
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_table(report: Mapping[str, Any], title: str) -> str:
    """The usage report as an aligned plain-text table, one line per group and a TOTAL line."""
    group_by = report["group_by"]
    header = [(group_by or "").upper() or "ALL", *(name for name, _ in TABLE_COLUMNS)]
    lines = []
    for group in report["groups"]:
        label = "-" if group["group"] is None else str(group["group"])
        lines.append([label, *(fmt(group) for _, fmt in TABLE_COLUMNS)])
    lines.append(["TOTAL", *(fmt(report["total"]) for _, fmt in TABLE_COLUMNS)])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    out = [title, "", render(header)]
    out.extend(render(row) for row in lines[:-1])
    if report["groups"]:
        out.append("-" * len(render(header)))
    out.append(render(lines[-1]))
    unpriced = report["total"]["unpriced_models"]
    if unpriced:
        out.append("")
        out.append(f"Unpriced models (their cost counts as 0; add them to the config's pricing): {', '.join(unpriced)}")
    return "\n".join(out) + "\n"


def open_read_only(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0)
    conn.execute("PRAGMA query_only = 1")
    return conn
