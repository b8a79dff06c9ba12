"""Reverse-proxy mode (`server.upstream` / `ig-gate serve --upstream URL`): every path the sidecar does
not serve itself goes through ZeroTrustMiddleware, then to the upstream.

HTTP: a pool of keep-alive HTTP/1.1 connections (sidecar/upstream_pool.py; opened in the app lifespan,
closed at shutdown; not aiohttp: measured here with wrk, its request and response objects made the
sidecar spend ~330 µs of CPU per proxied request, this pool ~145 µs, uvicorn and Starlette included;
bench/proxy_throughput.py). A request body is read first, up to `server.max_body_bytes`, before an
upstream connection is taken (a client trickling its body holds no pool slot); a larger one then streams
on. Responses stream (compressed ones as they are). The proxy frames the upstream request itself: a body
read whole goes with its Content-Length, a streamed one with the client's Content-Length or chunked.
What one client may hold (sidecar/client_limits.py): its body must have arrived within
`server.client_body_timeout_s` (else 408), and at most `server.max_upstream_per_client` exchanges per
client address run at once (else 429 with Retry-After). The request target is the scope's `raw_path`,
which the middleware has normalised (middleware/paths.py): the upstream resolves what the gate judged.
Hop-by-hop headers (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*,
every header named in Connection) are dropped both ways, Expect and the upstream's Date too (uvicorn
sends its own). Upstream requests carry:
- `Host`: the upstream's own;
- `X-Forwarded-For`: the client's list with this hop's peer appended;
- `X-Forwarded-Proto` / `X-Forwarded-Host`: what this hop received (client-sent values are replaced);
- `X-Auth-Subject` / `-Tenant` / `-Risk` / `-Decision-Id`: the gate's verified identity. Every client-sent
  `X-Auth-*` header is removed first, so an upstream can trust them. Client headers with `_` in their
  names are dropped (nginx's `underscores_in_headers off`; `server.allow_underscore_headers` lets them
  through, but never one that reads as a header the proxy sets or drops, such as `X_Auth_Subject`).
Upstream unreachable, closing early or answering malformed HTTP -> 502 JSON; no connection or no data
within `server.upstream_timeout_s` -> 504 JSON. A request that fails on a reused keep-alive connection
before any response byte (the upstream closed it while idle) is sent again once on a new connection when
it is idempotent and its body was not streamed. A failure after the response has started cannot be
reported: the connection is cut, so the client sees a truncated body. A client that hangs up while its
body streams, or while a streamed response is relayed, aborts the upstream request.

WebSocket (GraphQL subscriptions): decided at connect by the middleware, which also decides every
operation frame the client sends on a GraphQL path and closes the socket once its session no longer
passes (middleware/websocket.py); the relay then receives websocket.disconnect and closes the upstream
connection with the same code. The upstream connection is opened with the same subprotocols offered
(graphql-transport-ws, graphql-ws), the client is accepted with the subprotocol the upstream chose, and
frames are relayed both ways until either side closes (the close code is passed on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from ig_gate.middleware.asgi import STATE_KEY, ZeroTrustMiddleware
from ig_gate.middleware.gate import Gate
from ig_gate.middleware.settings import ConfigError, Settings
from ig_gate.sidecar.asgi_io import Headers, Receive, Scope, Send, respond_json
from ig_gate.sidecar.client_limits import ClientBodyDeadline, ExchangeLimiter, client_address
from ig_gate.sidecar.extension import Extension
from ig_gate.sidecar.forward_auth import identity_headers
from ig_gate.sidecar.upstream_pool import Connection, Origin, UpstreamError, UpstreamPool, UpstreamTimeout

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# the proxy frames the upstream request itself and answers Expect: 100-continue on its own side
_HTTP_DROPPED = HOP_BY_HOP | {b"content-length", b"expect"}
# the client's WebSocket handshake headers: the upstream handshake makes its own
_WS_DROPPED = HOP_BY_HOP | {
    b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"
}
# uvicorn always sends its own Date: the upstream's would make a second one (nginx drops it too)
_RESPONSE_DROPPED = HOP_BY_HOP | {b"date"}
_SET_BY_PROXY = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_CLIENT_ONLY_PREFIXES = (b"proxy-", b"x-auth-")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
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
        buffer_bytes: int = 1 << 20,
        limiter: ExchangeLimiter | None = None,
        allow_underscore_headers: bool = False,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"server.upstream: expected http(s)://host[:port][/base], got {upstream!r}")
        if parsed.query or parsed.fragment:
            raise ConfigError(f"server.upstream: must not have a query or fragment: {upstream!r}")
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigError(f"server.upstream: bad port in {upstream!r}") from exc
        self.upstream = upstream
        self.origin = Origin(parsed.hostname, port, tls=parsed.scheme == "https")
        base = urllib.parse.quote(parsed.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self._base_path = base.encode("ascii")
        self._ws_base = ("wss" if self.origin.tls else "ws") + f"://{parsed.netloc}{base}"
        self._host = self.origin.host_header
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._ws_max = ws_max_message_bytes
        self._buffer_bytes = buffer_bytes
        self._limiter = limiter or ExchangeLimiter(32)
        self._underscores = allow_underscore_headers
        self._pool: UpstreamPool | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Open the upstream connection pool for the app's lifetime."""
        self._pool = UpstreamPool(
            self.origin, timeout_s=self._timeout_s, max_connections=self._max_connections
        )
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            await pool.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    # -- HTTP -------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        pool = self._pool
        if pool is None:
            raise RuntimeError("ReverseProxy: the upstream pool is not open (run the app lifespan)")
        limiter = self._limiter
        client = limiter.key(scope)
        if not limiter.enter(client):
            await limiter.refuse(send)
            return
        try:
            await self._proxy(pool, scope, receive, send)
        finally:
            limiter.leave(client)

    async def _proxy(self, pool: UpstreamPool, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            conn = await self._exchange(pool, scope, receive)
        except _ClientGone:
            return
        except UpstreamError as exc:
            log.warning("%s", exc)
            timed_out = isinstance(exc, UpstreamTimeout)
            with contextlib.suppress(OSError):  # the client may be gone already
                await respond_json(send, 504 if timed_out else 502, _TIMEOUT if timed_out else _UNREACHABLE)
            return
        try:
            await _relay_response(conn, receive, send)
        finally:
            pool.release(conn)

    async def _exchange(self, pool: UpstreamPool, scope: Scope, receive: Receive) -> Connection:
        """Read the request body up to the buffer bound (no upstream connection is held meanwhile), then
        send the request upstream; return the connection once the response head has arrived."""
        method = scope["method"]
        head = self._request_head(scope)
        has_body, length = _request_framing(scope["headers"])
        body, more = b"", False
        if has_body:
            body, more = await _buffer_body(receive, self._buffer_bytes)
        retry = method in _IDEMPOTENT and not more  # the request can be sent again as it is
        while True:
            conn = await pool.acquire()
            conn.begin(head=method == "HEAD")
            try:
                if not has_body:
                    conn.write(head + b"\r\n")
                elif not more:
                    conn.write(b"%scontent-length: %d\r\n\r\n%s" % (head, len(body), body))
                else:
                    await _upload(conn, head, length, body, receive)
                await conn.response_head()
                return conn
            except UpstreamError:
                pool.release(conn)
                if retry and conn.reused and not conn.received:  # a stale keep-alive connection
                    retry = False
                    continue
                raise
            except BaseException:
                conn.abort()
                pool.release(conn)
                raise

    def _request_head(self, scope: Scope) -> bytes:
        """Request line and headers, without the framing header and the blank line."""
        query = scope["query_string"]
        parts = [
            scope["method"].encode("ascii"), b" ", self._base_path,
            scope.get("raw_path") or urllib.parse.quote(scope["path"]).encode("ascii"),
            b"?" if query else b"", query, b" HTTP/1.1\r\nhost: ", self._host, b"\r\n",
        ]  # fmt: skip
        for name, value in upstream_headers(scope, dropped=_HTTP_DROPPED, underscores=self._underscores):
            parts += (name, b": ", value, b"\r\n")
        return b"".join(parts)

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


async def _buffer_body(receive: Receive, bound: int) -> tuple[bytes, bool]:
    """(body so far, whether more follows): the whole body, or the first part once more than `bound`
    bytes have arrived (the rest then streams). _ClientGone when the client hangs up meanwhile."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        more = message.get("more_body", False)
        if not more or size > bound:
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), more


async def _upload(
    conn: Connection, head: bytes, length: bytes | None, first: bytes, receive: Receive
) -> None:
    """Stream a request body that arrives in several messages (chunked unless the client gave its length);
    stop early when the upstream answers before the body is complete."""
    if length is None:
        data = head + b"transfer-encoding: chunked\r\n\r\n" + _chunk(first)
    else:
        data = b"%scontent-length: %s\r\n\r\n%s" % (head, length, first)
    more = True
    while True:
        try:
            conn.write(data)
            await conn.drain()
        except UpstreamError:
            if not conn.head_done:
                raise
        if not more:
            return
        if conn.head_done:  # an early answer (e.g. 413): relay it, never reuse the connection
            conn.abandoned = True
            return
        message = await receive()
        if message["type"] != "http.request":
            conn.abort()
            raise _ClientGone
        chunk, more = message.get("body", b""), message.get("more_body", False)
        data = chunk if length is not None else _chunk(chunk) + (b"" if more else b"0\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


async def _relay_response(conn: Connection, receive: Receive, send: Send) -> None:
    """Send the upstream's response on; a streamed one is cut (not completed) when the upstream fails,
    and the upstream request is aborted when the client hangs up meanwhile."""
    try:
        headers = _response_headers(conn.headers)
        await send({"type": "http.response.start", "status": conn.status, "headers": headers})
        if conn.complete:  # the whole response is here already
            await send({"type": "http.response.body", "body": await conn.read()})
            return
    except OSError:  # the client went away
        conn.abort()
        return
    relaying = True

    def client_gone(watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None and relaying:
            conn.abort()  # runs soon after the disconnect: the connection may not be released yet

    watcher = asyncio.ensure_future(_disconnect(receive))
    watcher.add_done_callback(client_gone)
    try:
        while chunk := await conn.read():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except UpstreamError as exc:
        if not conn.abandoned:
            log.warning("upstream failed mid-response: %s", exc)
    except OSError:  # the client went away
        conn.abort()
    finally:
        relaying = False
        watcher.cancel()


async def _disconnect(receive: Receive) -> None:
    """Return when the client disconnects."""
    while (await receive())["type"] != "http.disconnect":
        pass


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


def upstream_headers(
    scope: Scope, *, dropped: frozenset[bytes] = HOP_BY_HOP, underscores: bool = False
) -> Headers:
    """The request headers for the upstream (names lower-case, as ASGI servers give them): `dropped`,
    headers named in Connection, Proxy-* and client X-Auth-* removed; X-Forwarded-* set; the gate's
    identity (scope state) added. A name with "_" is dropped unless `underscores`, and even then when it
    reads as one of those with "-" (CGI/WSGI upstreams take X_Auth_Subject for X-Auth-Subject)."""
    forwarded_for: list[bytes] = []
    host = connection = b""
    out: Headers = []
    for name, value in scope["headers"]:
        if b"_" in name:
            if underscores and _client_may_send(name.lower().replace(b"_", b"-"), dropped):
                out.append((name, value))
        elif name in _SET_BY_PROXY:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"host":
                host = value
        elif name in dropped:
            if name == b"connection":
                connection += b"," + value
        elif not name.startswith(_CLIENT_ONLY_PREFIXES):
            out.append((name, value))
    if connection:
        out = _without_named(out, connection)
    if (client := scope.get("client")) is not None:
        forwarded_for.append(client[0].encode("latin-1"))
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"x-forwarded-proto", b"https" if scope.get("scheme") in ("https", "wss") else b"http"))
    if host:
        out.append((b"x-forwarded-host", host))
    if (state := scope.get("state")) and (identity := state.get(STATE_KEY)) is not None:
        out.extend(identity_headers(identity))
    return out


def _client_may_send(name: bytes, dropped: frozenset[bytes]) -> bool:
    """Whether a client header of this (normalised) name goes upstream as the client sent it."""
    return not (name in _SET_BY_PROXY or name in dropped or name.startswith(_CLIENT_ONLY_PREFIXES))


def _response_headers(headers: Headers) -> Headers:
    """The upstream's response headers (names lower-case) without hop-by-hop, Proxy-* and Date ones."""
    connection = b""
    out: Headers = []
    for name, value in headers:
        if name in _RESPONSE_DROPPED:
            if name == b"connection":
                connection += b"," + value
        elif not name.startswith(b"proxy-"):
            out.append((name, value))
    return _without_named(out, connection) if connection else out


def _without_named(headers: Headers, connection: bytes) -> Headers:
    """headers without those named in a Connection header's value (hop-by-hop by declaration)."""
    named = {token.strip().lower() for token in connection.split(b",")}
    return [(name, value) for name, value in headers if name not in named]


def _ws_headers(scope: Scope) -> list[tuple[str, str]]:
    headers = upstream_headers(scope, dropped=_WS_DROPPED)
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


def _request_framing(headers: Headers) -> tuple[bool, bytes | None]:
    """(whether the request has a body, its Content-Length when it is not chunked)."""
    has_body, length = False, None
    for name, value in headers:
        if name == b"transfer-encoding":
            return True, None
        if name == b"content-length":
            has_body, length = True, value.strip()
    return has_body, length


def _subprotocols(scope: Scope) -> list[str]:
    return [p for p in scope.get("subprotocols") or () if p]


def _target(scope: Scope) -> str:
    """Path (as received, still percent-encoded) and query string."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else urllib.parse.quote(scope["path"])
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


class _ClientGone(Exception):
    """The client disconnected while its request body was being streamed upstream."""


def _close_code(code: Any) -> int:
    """code when it may be sent on the wire, else 1000 (1004-1006 and 1015 are reserved)."""
    return code if code in _SENDABLE_CLOSE_CODES else 1000


def proxy_extension(settings: Settings, gate: Gate) -> Extension | None:
    """The sidecar extension for reverse-proxy mode (None when `server.upstream` is not set): the
    proxy behind ZeroTrustMiddleware as the fallback for every path no sidecar route serves."""
    server = settings.server
    if not server.upstream:
        return None
    proxy = ReverseProxy(
        server.upstream,
        timeout_s=server.upstream_timeout_s,
        buffer_bytes=server.max_body_bytes,
        limiter=ExchangeLimiter(server.max_upstream_per_client, client_address(gate.ip_resolver)),
        allow_underscore_headers=server.allow_underscore_headers,
    )
    gated = ClientBodyDeadline(ZeroTrustMiddleware(proxy, gate=gate), server.client_body_timeout_s)
    return Extension(fallback=gated, lifespan=proxy.lifespan)
