"""A tiny upstream for proxy tests: answers every GET/POST with the request headers it received as JSON
(lower-case names); `?delay_ms=N` waits N ms first. Run: `python -m tests.support.echo_upstream PORT`."""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def argv(port: int) -> list[str]:
    """The command line that runs this upstream on port (from the repository root)."""
    return [sys.executable, "-m", "tests.support.echo_upstream", str(port)]


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
