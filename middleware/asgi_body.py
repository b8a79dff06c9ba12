"""Reading a whole ASGI request body, bounded: shared by the middleware and the sidecar's endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


async def read_body(receive: Receive, limit: int, declared_length: bytes | None = None) -> bytes | None:
    """The whole request body; None when the client disconnected; BodyTooLarge beyond `limit` bytes.

    A declared Content-Length (`declared_length`, the raw header value) above `limit` is refused before
    anything is read; the bytes actually received are counted all the same.
    """
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise BodyTooLarge(limit)
    message = await receive()
    if message["type"] != "http.request":
        return None
    body = message.get("body", b"")
    size = len(body)
    if size > limit:
        raise BodyTooLarge(limit)
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
