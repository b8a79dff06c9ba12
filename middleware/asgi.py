"""ZeroTrustMiddleware: the Gate in front of any ASGI app (pure ASGI: HTTP, WebSocket, lifespan).

On a GraphQL path (`graphql.paths`), a request with a JSON or application/graphql body is authenticated
first (refused unread when its token does not verify), then its body is buffered (bounded, 413 beyond
`server.max_body_bytes`) so that the GraphQL operation type can be read, and replayed to the app
unchanged; every other body streams through untouched (the method decides).
Every path is normalised first, and written back into the scope (`path`, `raw_path`): what the gate
judges, `exclude_paths` match and a proxy forwards is one form; an ambiguous path (dot segments, an
encoded `/` or `\\`) is refused 400 (middleware/paths.py). `exclude_paths` match exactly, or as a prefix
when they end in "/", and pass only GET/HEAD/OPTIONS unless an entry names its methods ("POST /hooks/").
WebSocket connections are decided at connect and refused with a close code (4401/4403/4503) right after
accept, before the app sees them; on GraphQL paths every operation frame is decided too, and open
sockets follow their session (middleware/websocket.py).

The gate is built by the composition root (middleware/compose.py) from the same YAML as `ig-gate serve`:
bundle file, registry channel (last-good, rollout) or remote PDP; memory or Redis risk store; with
`ssf.transmitter_jwks` set the middleware answers `POST /ssf/events` itself (signed SETs; middleware/ssf.py)
in front of the app. Constructing the middleware validates the settings and reads local files only: no
network I/O, no thread. Lifespan passes through; when the app reports startup complete the background work
starts (bundle polling, JWKS refresh, the Redis subscription, the decision-log writer, the open-socket
watcher) and the heap is frozen (`server.gc_freeze`, default on; see `freeze_heap`); when it reports
shutdown complete all of it stops (decision log flushed). Lazy start: on a server without lifespan (or an
app mounted where lifespan does not reach) the first request or WebSocket starts the background work
instead, and it is closed at interpreter exit (`atexit`).
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from ig_gate.middleware.asgi_body import BodyTooLarge, Message, Receive, read_body
from ig_gate.middleware.compose import GateSystem, PolicyWiring, compose
from ig_gate.middleware.decision import BAD_REQUEST, Decision
from ig_gate.middleware.extract import CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING, HeaderMap, header_map
from ig_gate.middleware.gate import Gate, GateRequest
from ig_gate.middleware.graphql import is_graphql_content_type
from ig_gate.middleware.paths import AMBIGUOUS_PATH, AmbiguousPath, ExcludedPaths, normalise_scope
from ig_gate.middleware.responses import Responses
from ig_gate.middleware.settings import Settings, load_settings
from ig_gate.middleware.websocket import SocketGuard, WebSocketGate

Scope = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)

STATE_KEY = "ig_gate"
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
# a refused request's unread body up to this size is drained by the server (keep-alive); a larger one, or
# one of unknown length, closes the connection instead: refusing never costs more than this to receive
_DRAINED_BYTES = 65_536


class ZeroTrustMiddleware:
    """Decide every HTTP request and WebSocket connect with a Gate; pass allowed ones to `app` with the
    verified identity in `scope["state"]["ig_gate"]` (Starlette: `request.state.ig_gate`)."""

    def __init__(
        self,
        app: ASGIApp,
        config: str | Path | Settings | None = None,
        gate: Gate | None = None,
        *,
        max_body_bytes: int | None = None,
    ) -> None:
        if gate is None:
            settings = config if isinstance(config, Settings) else load_settings(config)
            system = compose(settings)
        else:  # a ready-made gate: its policy source and risk store belong to the caller
            system = GateSystem(gate.settings, gate, PolicyWiring(gate.policy, "given"), close_store=False)
        self.system = system
        self.gate = gate = system.gate
        self.app = app
        excluded = gate.settings.exclude_paths
        if system.ssf is not None:  # SETs are signed by the IdP: received before (and without) a decision
            from ig_gate.middleware.ssf import PATH

            self.app = _serving(system.ssf, PATH, app)
            excluded = (*excluded, f"POST {PATH}")
        self.responses = Responses(gate.settings.identity.stepup)
        self.websockets = WebSocketGate(gate, self.responses)
        self.max_body_bytes = max_body_bytes or gate.settings.server.max_body_bytes
        self._excluded = ExcludedPaths(excluded)
        self._lazy = True  # no lifespan startup seen yet: the first request starts the background work

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._lazy:
            await self._start_lazily(scope)
        if scope["type"] != "http":  # HTTP is handled here, not in a method: one coroutine less per request
            await self._other(scope, receive, send)
            return
        method = scope["method"]
        try:
            path = normalise_scope(scope)  # what is matched, judged and forwarded from here on
        except AmbiguousPath as exc:
            await self._send_refusal(send, self._ambiguous(self._as_received(scope, method), exc), method)
            return
        if self._is_excluded(method, path):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        headers = header_map(scope["headers"])
        request = GateRequest(method, path, scope["query_string"], headers, client and client[0])
        session = None
        content_type = headers.get(CONTENT_TYPE)
        if (
            content_type is not None
            and method not in _BODYLESS
            and self.gate.classifier.is_graphql(path)
            and is_graphql_content_type(content_type)
        ):
            # authenticate before the body is read: a request whose token does not verify is refused unread
            session = self.gate.begin(request)
            if type(session) is Decision:
                await self._send_refusal(send, session, method, _large_unread_body(headers))
                return
            try:
                body = await read_body(receive, self.max_body_bytes, headers.get(CONTENT_LENGTH))
            except BodyTooLarge:
                refusal = self.gate.refuse_too_large(request, self.max_body_bytes)
                await self._send_refusal(send, refusal, method, close=True)
                return
            if body is None:  # the client went away while sending
                return
            receive = _replay(body, receive)
            request = GateRequest(method, path, scope["query_string"], headers, client and client[0], body)
        decision = await self.gate.decide_async(request, session)  # type: ignore[arg-type]
        if decision.passes:
            _set_identity(scope, decision)
            await self.app(scope, receive, send)
        else:
            close = request.body is None and _large_unread_body(headers)
            await self._send_refusal(send, decision, method, close)

    def _is_excluded(self, method: str, path: str) -> bool:
        """Whether `exclude_paths` lets this request through undecided (see middleware/paths.py)."""
        return self._excluded.match(method, path)

    def _ambiguous(self, request: GateRequest, exc: AmbiguousPath) -> Decision:
        """The recorded 400 for a path an upstream could resolve differently (reason ambiguous_path)."""
        return self.gate.refuse(request, BAD_REQUEST, AMBIGUOUS_PATH, str(exc))

    @staticmethod
    def _as_received(scope: Scope, method: str) -> GateRequest:
        """The request as the server gave it (its path not normalised), to record its refusal."""
        peer = client[0] if (client := scope.get("client")) else None
        return GateRequest(method, scope["path"], scope["query_string"], scope["headers"], peer)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            path = normalise_scope(scope)
        except AmbiguousPath as exc:
            request = self._as_received(scope, "GET")
            decision = self._ambiguous(request, exc)
            guard = SocketGuard(self.websockets, request, decision, None, False, receive, send)
            await guard.run(self.app, scope)  # accepted, then closed with 4400
            return
        if self._is_excluded("GET", path):
            await self.app(scope, receive, send)
            return
        guard = await self.websockets.connect(scope, receive, send)  # the connect checks and decision
        if guard.decision.passes:
            _set_identity(scope, guard.decision)
        await guard.run(self.app, scope)  # the refusal, or the app with every operation frame decided

    async def _send_refusal(self, send: Send, decision: Any, method: str, close: bool = False) -> None:
        """The refusal response; `close`: end the connection after it (a large body is left unread, and
        the server would otherwise receive and discard it all to keep the connection alive)."""
        status, headers, body = self.responses.http(decision)
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self._lazy = False
                # bundle polling, key-set refresh, risk events, decision-log writer; the last-good bundle
                # is loaded and the risk view's first load awaited off the event loop
                await asyncio.to_thread(self.system.start)
                if self.gate.settings.server.gc_freeze:
                    freeze_heap()
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await asyncio.to_thread(self.system.close)  # flush the decision log even when shutdown failed
            await send(message)

        return lifespan_send

    async def _start_lazily(self, scope: Scope) -> None:
        """The first request or WebSocket came before any lifespan startup (a server without lifespan):
        start the background work now (off the event loop), once, and close it at interpreter exit."""
        if scope["type"] == "lifespan":  # the startup on its way starts it
            return
        self._lazy = False
        if self.system.started:
            return
        log.info("ig-gate: no ASGI lifespan startup before the first request; starting background work now")
        atexit.register(self.system.close)
        await asyncio.to_thread(self.system.start)


def _serving(endpoint: ASGIApp, path: str, app: ASGIApp) -> ASGIApp:
    """`app`, except that `POST path` goes to `endpoint`."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == path and scope["method"] == "POST":
            await endpoint(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


def _large_unread_body(headers: HeaderMap) -> bool:
    """Whether the request announces a body larger than _DRAINED_BYTES, or one of unknown length."""
    length = headers.get(CONTENT_LENGTH)
    if length is None:
        return TRANSFER_ENCODING in headers
    return not length.isdigit() or int(length) > _DRAINED_BYTES


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that first yields the buffered body, then defers to the server's receive."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def freeze_heap() -> None:
    """Collect, then move every object alive now (the app, its settings, keys, policy engine, caches so
    far) to the garbage collector's permanent generation: full collections then no longer walk them.
    Call once when a server has started (`server.gc_freeze`, on by default for lifespan startup).
    The cold path allocates objects that live on in caches, so full collections come round; on a
    startup heap of a few hundred thousand objects each one would cost milliseconds of a request."""
    gc.collect()
    gc.freeze()


def _set_identity(scope: Scope, decision: Any) -> None:
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state[STATE_KEY] = decision.identity
