"""A tiny upstream for proxy tests: answers every GET/POST with the request headers it received as JSON
(lower-case names); `?delay_ms=N` waits N ms first. Run: `python -m tests.support.echo_upstream PORT`."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.support.procs import free_port, running

REPO = Path(__file__).resolve().parents[2]


def argv(port: int) -> list[str]:
    """The command line that runs this upstream on port (from the repository root)."""
    return [sys.executable, "-m", "tests.support.echo_upstream", str(port)]


@contextlib.contextmanager
def echo_running(workdir: Path) -> Iterator[int]:
    """This upstream as a process on a free port (log in workdir, stopped by PID); yields the port."""
    port = free_port()
    with running(argv(port), port=port, log=workdir / "echo.log", cwd=REPO):
        yield port


class Echo(BaseHTTPRequestHandler):
    """Echo the request headers."""

    def do_GET(self) -> None:
        delay = parse_qs(urlsplit(self.path).query).get("delay_ms", ["0"])[0]
        time.sleep(int(delay) / 1000)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
