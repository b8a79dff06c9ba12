"""What one client may hold of the reverse proxy: time to send its body, and concurrent upstream exchanges.

- `ClientBodyDeadline` (pure ASGI, outermost in proxy mode): a request body must have fully arrived
  within `server.client_body_timeout_s` of the request's start, whoever reads it (the gate sniffing a
  GraphQL body, or the proxy); else 408 JSON and the connection is closed. uvicorn itself waits for
  body bytes forever.
- `ExchangeLimiter`: at most `server.max_upstream_per_client` proxied exchanges at once per client
  address (the address geo resolves, through trusted proxies: behind a load balancer every client shares
  its peer address); beyond it 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ig_gate.errors import IgGateError
from ig_gate.geo.client_ip import ClientIPResolver
from ig_gate.sidecar.asgi_io import JSON_HEADERS, ASGIApp, Message, Receive, Scope, Send, respond_json

_BODY_TIMEOUT = {"error": "client_body_timeout", "description": "the request body did not arrive in time"}
_BUSY = {"error": "too_many_requests", "description": "too many requests in flight from this client"}
_CLOSE = [*JSON_HEADERS, (b"connection", b"close")]
_RETRY_AFTER_S = b"1"


class ClientBodyTimeout(IgGateError):
    """The request body had not fully arrived by the deadline (raised from the wrapped receive)."""


class ClientBodyDeadline:
    """Wrap an ASGI app so that an HTTP request body must arrive within `timeout_s` (else 408)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        complete = started = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ClientBodyTimeout from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except ClientBodyTimeout:
            if not started:  # else the response is cut short: nothing more can be said
                await respond_json(send, 408, _BODY_TIMEOUT, _CLOSE)


def _has_body(scope: Scope) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


ClientKey = Callable[[Scope], str | None]


def client_address(resolver: ClientIPResolver) -> ClientKey:
    """The client address of a request as the gate resolves it (trusted proxies), else its peer."""

    def key(scope: Scope) -> str | None:
        peer = client[0] if (client := scope.get("client")) else None
        forwarded_for: list[str] = []
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"forwarded":
                forwarded.append(value.decode("latin-1"))
        found = resolver.resolve(peer, ",".join(forwarded_for) or None, ",".join(forwarded) or None)
        return found.address or peer

    return key


def peer_address(scope: Scope) -> str | None:
    """The socket peer's address (the key when no resolver is configured)."""
    return client[0] if (client := scope.get("client")) else None


class ExchangeLimiter:
    """Counts the proxied exchanges in flight per client address; `enter` is False beyond the cap."""

    def __init__(self, max_per_client: int, key: ClientKey = peer_address) -> None:
        self.max_per_client = max_per_client
        self.key = key
        self._in_flight: dict[str | None, int] = {}

    def enter(self, key: str | None) -> bool:
        """Count one more exchange of this client (`self.key(scope)`) and True, or False at its cap."""
        count = self._in_flight.get(key, 0)
        if count >= self.max_per_client:
            return False
        self._in_flight[key] = count + 1
        return True

    def leave(self, key: str | None) -> None:
        """One exchange of this client (entered) has ended."""
        count = self._in_flight[key] - 1
        if count:
            self._in_flight[key] = count
        else:
            del self._in_flight[key]

    async def refuse(self, send: Send) -> None:
        """The 429 answer for a client at its cap."""
        await respond_json(send, 429, _BUSY, [*JSON_HEADERS, (b"retry-after", _RETRY_AFTER_S)])
