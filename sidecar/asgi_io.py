"""Tiny pure-ASGI helpers for the sidecar's hot endpoints (Starlette's Request/Response cost ~20 us more)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# the middleware's bounded body reader, re-exported for the sidecar's endpoints
from ig_gate.middleware.asgi_body import BodyTooLarge as BodyTooLarge
from ig_gate.middleware.asgi_body import read_body as read_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


async def respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """Send a complete response (content-length added when missing)."""
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


async def respond_json(send: Send, status: int, obj: Any, headers: Headers = JSON_HEADERS) -> None:
    """Send `obj` as a JSON response."""
    await respond(send, status, headers, dumps(obj))
