"""The tests' demo app behind ZeroTrustMiddleware, for a real server in its own process:

    python -m uvicorn --factory tests.support.served_middleware:app   (IG_GATE_CONFIG names the YAML)

Beside it, `/floor` refuses every request at once (401, connection closed, body unread) without the
gate: what the server itself costs to refuse, the floor against which the gate's refusals are measured.

and `python -m tests.support.served_middleware flood <url>`: an unauthenticated client that posts distinct
1 MB `{{{...` GraphQL documents with a bad bearer token until it is stopped, printing one line a response.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

JUNK_BYTES = 1 << 20
FLOOR = "/floor"
BAD_TOKEN = {"authorization": "Bearer not-a-token", "content-type": "application/json"}


def serve_argv(port: int) -> list[str]:
    """The command that serves `app` (IG_GATE_CONFIG in its environment) with uvicorn on 127.0.0.1:port."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", "tests.support.served_middleware:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def app() -> Any:
    """The ASGI app uvicorn serves (`--factory`)."""
    from ig_gate.middleware.asgi import ZeroTrustMiddleware
    from tests.middleware.conftest import demo_app

    protected = ZeroTrustMiddleware(demo_app(), config=os.environ["IG_GATE_CONFIG"])

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == FLOOR:
            headers = [(b"connection", b"close"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await protected(scope, receive, send)

    return serve


def junk(n: int, size: int = JUNK_BYTES) -> bytes:
    """A distinct JSON body of `size` bytes whose document is `{{{...` (number n)."""
    head = b'{"query": "#%010d\\n' % n
    return head + b"{" * (size - len(head) - 2) + b'"}'


def flood(url: str) -> None:
    """Post junk with a bad token, one request after another, until killed; prints each answer's status
    line, or "closed" when the server ended the connection first. A raw HTTP/1.1 client (keep-alive while
    the server keeps the connection), so that the flood costs its own CPU as little as possible."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-length: {JUNK_BYTES}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in BAD_TOKEN.items())
        + "\r\n"
    ).encode()
    body = bytearray(junk(0))
    connection: socket.socket | None = None
    for n in itertools.count(os.getpid() * 1_000_000):
        body[12:22] = b"%010d" % (n % 10**10)  # a distinct document each time (in its leading comment)
        try:
            if connection is None:
                connection = socket.create_connection((parts.hostname, parts.port))
            connection.sendall(head + body)
            answer = connection.recv(65536)
            print(answer.split(b"\r\n", 1)[0].partition(b" ")[2][:3].decode() or "closed", flush=True)
            if not answer or b"connection: close" in answer.lower():
                connection.close()
                connection = None
        except OSError:
            if connection is not None:
                connection.close()
            connection = None
            print("closed", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["flood"]:
        flood(sys.argv[2])
