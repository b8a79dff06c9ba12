"""Reverse-proxy mode (`server.upstream` / `ig-gate serve --upstream URL`): every path the sidecar does
not serve itself goes through ZeroTrustMiddleware, then to the upstream.

HTTP: one pooled keep-alive aiohttp ClientSession (opened in the app lifespan, closed at shutdown; aiohttp,
not httpx: measured here, httpx.AsyncClient managed ~600-1,100 proxied req/s against aiohttp's 3,300-5,600,
and degrades with concurrency). Request and response bodies stream both ways (compressed ones as they are;
the middleware buffers only GraphQL bodies, to sniff them); hop-by-hop headers (Connection, Keep-Alive,
TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*, and every header named in Connection) are dropped both
ways. Upstream requests carry:
- `X-Forwarded-For`: the client's list with this hop's peer appended;
- `X-Forwarded-Proto` / `X-Forwarded-Host`: what this hop received (client-sent values are replaced);
- `X-Auth-Subject` / `-Tenant` / `-Risk` / `-Decision-Id`: the gate's verified identity. Every client-sent
  `X-Auth-*` header is removed first, so an upstream can trust them.
Upstream unreachable -> 502 JSON; no connection or no data within `server.upstream_timeout_s` -> 504 JSON.
A failure after the response has started cannot be reported: the connection is cut, so the client sees a
truncated body. A client that hangs up while its body streams aborts the upstream request.

WebSocket (GraphQL subscriptions): decided at connect by the middleware; then the upstream connection is
opened with the same subprotocols offered (graphql-transport-ws, graphql-ws), the client is accepted with
the subprotocol the upstream chose, and frames are relayed both ways until either side closes (the close
code is passed on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import websockets
import yarl
from websockets.asyncio.client import ClientConnection

from ig_gate.middleware.asgi import STATE_KEY, ZeroTrustMiddleware
from ig_gate.middleware.gate import Gate
from ig_gate.middleware.settings import ConfigError, Settings
from ig_gate.sidecar.asgi_io import Headers, Message, Receive, Scope, Send, respond_json
from ig_gate.sidecar.forward_auth import identity_headers

if TYPE_CHECKING:
    from ig_gate.sidecar.app import Extension

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# the client's WebSocket handshake headers: the upstream handshake makes its own
_WS_HANDSHAKE = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
_SET_BY_PROXY = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_WS_CLOSE_BAD_GATEWAY = 1014
_WS_CLOSE_ABNORMAL = 1006
_SENDABLE_CLOSE_CODES = frozenset(range(1000, 1015)) - {1004, 1005, 1006} | frozenset(range(3000, 5000))
_TIMEOUT = {"error": "upstream_timeout", "description": "the upstream did not answer in time"}
_UNREACHABLE = {"error": "bad_gateway", "description": "the upstream is unreachable"}


class ReverseProxy:
    """Pure-ASGI reverse proxy to one upstream; mount it behind ZeroTrustMiddleware."""

    def __init__(
        self,
        upstream: str,
        *,
        timeout_s: float = 30.0,
        max_connections: int = 256,
        ws_max_message_bytes: int = 1 << 20,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"server.upstream: expected http(s)://host[:port][/base], got {upstream!r}")
        if parsed.query or parsed.fragment:
            raise ConfigError(f"server.upstream: must not have a query or fragment: {upstream!r}")
        self.upstream = upstream
        self._base = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        self._ws_base = ("wss" if parsed.scheme == "https" else "ws") + self._base[len(parsed.scheme) :]
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._ws_max = ws_max_message_bytes
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Open the pooled upstream session for the app's lifetime."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30.0),
            timeout=aiohttp.ClientTimeout(sock_connect=self._timeout_s, sock_read=self._timeout_s),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),  # forward the client's, add none
            trust_env=False,  # never route the upstream leg through HTTP(S)_PROXY
        )
        try:
            yield
        finally:
            session, self._session = self._session, None
            await session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    # -- HTTP -------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self._session
        if session is None:
            raise RuntimeError("ReverseProxy: the upstream session is not open (run the app lifespan)")
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in upstream_headers(scope)]
        try:
            response = await session.request(
                scope["method"], yarl.URL(self._base + _target(scope), encoded=True), headers=headers,
                data=_body(receive) if _has_body(scope["headers"]) else None, allow_redirects=False,
            )
        except TimeoutError:  # aiohttp's connect/read timeouts are TimeoutErrors
            await respond_json(send, 504, _TIMEOUT)
            return
        except (aiohttp.ClientError, _ClientGone) as exc:
            log.warning("upstream %s unreachable: %s", self.upstream, type(exc).__name__)
            with contextlib.suppress(OSError):  # the client may be gone already
                await respond_json(send, 502, _UNREACHABLE)
            return
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": _response_headers(response.raw_headers)})
            if scope["method"] != "HEAD":
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, TimeoutError) as exc:  # after the response started: cut the connection
            log.warning("upstream %s failed mid-response: %s", self.upstream, type(exc).__name__)
        except OSError:  # the client went away
            pass
        finally:
            response.release()

    # -- WebSocket --------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        offered = _subprotocols(scope)
        try:
            upstream = await websockets.connect(
                self._ws_base + _target(scope),
                subprotocols=offered or None,  # type: ignore[arg-type]
                additional_headers=_ws_headers(scope),
                open_timeout=self._timeout_s,
                max_size=self._ws_max,
                compression=None,
                proxy=None,
                user_agent_header=None,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            log.warning("upstream websocket %s refused: %s", self.upstream, type(exc).__name__)
            await send({"type": "websocket.close", "code": _WS_CLOSE_BAD_GATEWAY, "reason": "upstream down"})
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay(upstream, receive, send)


async def _relay(upstream: ClientConnection, receive: Receive, send: Send) -> None:
    """Pump frames both ways until one side closes; the close code crosses over."""

    async def downstream() -> None:
        try:
            async for frame in upstream:
                key = "text" if isinstance(frame, str) else "bytes"
                await send({"type": "websocket.send", key: frame})
        except websockets.ConnectionClosed:
            pass
        code = _close_code(upstream.close_code if upstream.close_code is not None else _WS_CLOSE_ABNORMAL)
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""})

    async def upstream_pump() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                await upstream.send(data if data is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                await upstream.close(_close_code(message.get("code", 1000)), message.get("reason") or "")
                return

    tasks = [asyncio.ensure_future(downstream()), asyncio.ensure_future(upstream_pump())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed, OSError):
                await task


# -- headers ------------------------------------------------------------------------------------------


def upstream_headers(scope: Scope, *, drop: frozenset[bytes] = frozenset()) -> Headers:
    """The request headers for the upstream: hop-by-hop, `drop` and client `X-Auth-*` removed;
    X-Forwarded-* set; the gate's identity (scope state) added."""
    headers: Headers = scope["headers"]
    named = _connection_named(headers)
    forwarded_for: list[bytes] = []
    host = b""
    out: Headers = []
    for name, value in headers:
        if name in _SET_BY_PROXY:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"host":
                host = value
        elif not (
            name in HOP_BY_HOP or name in named or name in drop
            or name.startswith(b"proxy-") or name.startswith(b"x-auth-")
        ):
            out.append((name, value))
    if (client := scope.get("client")) is not None:
        forwarded_for.append(client[0].encode("latin-1"))
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    scheme = scope.get("scheme", "http")
    out.append((b"x-forwarded-proto", b"https" if scheme in ("https", "wss") else b"http"))
    if host:
        out.append((b"x-forwarded-host", host))
    identity = (scope.get("state") or {}).get(STATE_KEY)
    if identity is not None:
        out.extend(identity_headers(identity))
    return out


def _ws_headers(scope: Scope) -> list[tuple[str, str]]:
    headers = upstream_headers(scope, drop=_WS_HANDSHAKE)
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


def _response_headers(raw: Any) -> Headers:
    named = _connection_named(raw)
    out: Headers = []
    for name, value in raw:
        lower = name.lower()
        if not (lower in HOP_BY_HOP or lower in named or lower.startswith(b"proxy-")):
            out.append((lower, value))
    return out


def _connection_named(headers: Headers) -> frozenset[bytes]:
    """Header names listed in Connection (hop-by-hop by declaration)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(names)


def _subprotocols(scope: Scope) -> list[str]:
    return [p for p in scope.get("subprotocols") or () if p]


def _target(scope: Scope) -> str:
    """Path (as received, still percent-encoded) and query string."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else urllib.parse.quote(scope["path"])
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


def _has_body(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


class _ClientGone(Exception):
    """The client disconnected while its request body was being streamed upstream."""


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _close_code(code: Any) -> int:
    """code when it may be sent on the wire, else 1000 (1004-1006 and 1015 are reserved)."""
    return code if code in _SENDABLE_CLOSE_CODES else 1000


def proxy_extension(settings: Settings, gate: Gate) -> Extension | None:
    """The sidecar extension for reverse-proxy mode (None when `server.upstream` is not set): the
    proxy behind ZeroTrustMiddleware as the fallback for every path no sidecar route serves."""
    from ig_gate.sidecar.app import Extension  # app.py lists this factory: import it lazily

    server = settings.server
    if not server.upstream:
        return None
    proxy = ReverseProxy(server.upstream, timeout_s=server.upstream_timeout_s)
    return Extension(fallback=ZeroTrustMiddleware(proxy, gate=gate), lifespan=proxy.lifespan)
