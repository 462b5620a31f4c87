"""`llm-exporter serve` as a real subprocess for tests: start it, wait for it, stop it, read its output."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port, wait_ready

CLI = [sys.executable, "-m", "exporter"]


@dataclass
class ServeProcess:
    url: str
    process: subprocess.Popen
    output_path: Path  # stdout and stderr together
    returncode: int | None = None
    _stopped: bool = field(default=False, repr=False)
    _final_output: str | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        if self._final_output is not None:
            return self._final_output
        return self.output_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig`, wait for the exit (a generous bound), return the exit status."""
        if not self._stopped:
            self._stopped = True
            if self.process.poll() is None:
                self.process.send_signal(sig)
            try:
                self.returncode = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.returncode = self.process.wait(timeout=30)
                raise AssertionError(f"serve did not exit within {timeout}s of {sig!r}:\n{self.output()}")
        return self.returncode  # type: ignore[return-value]


@contextlib.contextmanager
def serve_cli(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
              ready: bool = True) -> Iterator[ServeProcess]:
    """Run `llm-exporter serve ARGS --port P`; yield once /readyz answers 200; SIGTERM on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llm-exporter-serve-") as scratch:
        output_path = Path(scratch) / "output.log"
        with open(output_path, "wb") as output:
            process = subprocess.Popen(
                [*CLI, "serve", *args, "--port", str(port)], stdout=output, stderr=subprocess.STDOUT,
                cwd=cwd or scratch, env={**os.environ, **(env or {})},
            )
        served = ServeProcess(f"http://127.0.0.1:{port}", process, output_path)
        try:
            if ready:
                try:
                    wait_ready(served.url, process)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{served.output()}") from None
            yield served
        finally:
            if not served._stopped:
                with contextlib.suppress(AssertionError):
                    served.stop()
            served._final_output = served.output_path.read_text(errors="replace")


def children(pid: int) -> list[int]:
    """The worker processes of a `serve --workers N` parent (from /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
