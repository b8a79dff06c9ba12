"""WebSockets through the gate: decided at connect, every GraphQL operation decided, followed while open.

At connect, before the app sees anything:
- a cookie-authenticated handshake whose Origin is neither the Host's own nor one of
  `identity.allowed_origins` is refused 4403 (cross-site WebSocket hijacking); a bearer token in the
  Authorization header, or no Origin at all (not a browser), is not affected;
- on a GraphQL path (`graphql.paths`) the client must offer graphql-transport-ws or graphql-ws (else 4400);
- the gate decides the connection (operation type "subscription").
A refusal is accept-then-close with the decision's close code (a close before accept reaches browsers as
1006); the app never sees the connection.

On a GraphQL path every client frame is read before the app gets it: a graphql-transport-ws `subscribe`
or graphql-ws `start` is classified (query | mutation | subscription) and decided with that operation
type and the session verified at connect (the token is not verified again; the memo makes repeats
cheap). A refused operation gets that protocol's `error` message for its id and never reaches the app.
A frame that is not a JSON object, is longer than `server.max_body_bytes`, or carries an operation that
cannot be classified (`graphql.max_document_bytes`, several operations and no operationName, ...) closes
the socket with 4400, as graphql-transport-ws servers do. Other frames, and all frames on other paths,
pass through.

Every open socket is registered with the gate's LiveConnections: re-decided when its session's risk
changes or a new bundle becomes active, and by one timer when its token expires. A socket that no longer
passes is closed by the gate: the client gets the close code (4401, 4403 for a deny) and the app's next
receive() returns websocket.disconnect with that code (a proxy relay then closes its upstream too);
whatever the app sends afterwards is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ig_gate.middleware.asgi_body import Message, Receive
from ig_gate.middleware.decision import BAD_REQUEST, DENY, ERROR, Decision
from ig_gate.middleware.extract import AUTHORIZATION, COOKIE, HeaderMap, header_map
from ig_gate.middleware.gate import Gate, GateRequest
from ig_gate.middleware.graphql import GraphQLRequestError, payload_operation
from ig_gate.middleware.live import Live
from ig_gate.middleware.responses import Responses
from ig_gate.middleware.session import Session

Scope = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRANSPORT_WS, LEGACY_WS = "graphql-transport-ws", "graphql-ws"
SUBPROTOCOLS = frozenset({TRANSPORT_WS, LEGACY_WS})
_OPERATION_FRAMES = {"subscribe": TRANSPORT_WS, "start": LEGACY_WS}  # frame type -> its protocol
_ORIGIN, _HOST = b"origin", b"host"
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_EXPIRY_SLACK_S = 0.01  # the expiry timer fires this long after the gate's own expiry instant
_MAX_REASON = 120  # a close reason must fit in a control frame (123 bytes)


class WebSocketGate:
    """The connect checks for WebSockets, and a SocketGuard for each connection."""

    def __init__(self, gate: Gate, responses: Responses) -> None:
        settings = gate.settings
        self.gate = gate
        self.responses = responses
        self.max_frame_bytes = settings.server.max_body_bytes
        self.max_document_bytes = settings.graphql.max_document_bytes
        self.leeway_s = float(settings.identity.leeway_s)
        self._cookie = settings.identity.cookie is not None
        self._origins = frozenset(o.lower() for o in settings.identity.allowed_origins)

    async def connect(self, scope: Scope, receive: Receive, send: Send) -> SocketGuard:
        """Decide a new connection; the guard runs it (or sends its refusal)."""
        headers = header_map(scope["headers"])
        client = scope.get("client")
        path = scope["path"]
        request = GateRequest("GET", path, scope["query_string"], headers, client and client[0], None, True)
        graphql = self.gate.classifier.is_graphql(path)
        session: Session | None = None
        if self._cross_site(headers):
            detail = "a cookie session may not open a WebSocket from another origin"
            decision = self.gate.refuse(request, DENY, "origin_not_allowed", detail)
        elif graphql and SUBPROTOCOLS.isdisjoint(scope.get("subprotocols") or ()):
            detail = f"a GraphQL WebSocket must offer {TRANSPORT_WS} or {LEGACY_WS}"
            decision = self.gate.refuse(request, BAD_REQUEST, "subprotocol_required", detail)
        else:
            verified = self.gate.authenticate(request)
            if type(verified) is Session:
                session, decision = verified, await self.gate.decide_async(request, verified)
            else:
                decision = verified
        return SocketGuard(self, request, decision, session, graphql, receive, send)

    def _cross_site(self, headers: HeaderMap) -> bool:
        """A browser handshake carried by the session cookie from a page of another origin."""
        origin = headers.get(_ORIGIN)
        if origin is None or not self._cookie or COOKIE not in headers:
            return False
        authorization = headers.get(AUTHORIZATION)
        if authorization is not None and authorization.strip()[:7].lower() == b"bearer ":
            return False  # the token comes from the header, which no other site's page can set
        text = origin.decode("latin-1").strip().lower()
        return text not in self._origins and not _same_origin(text, headers.get(_HOST))


class SocketGuard:
    """One WebSocket connection: its receive and send as the app sees them, and how the gate closes it."""

    def __init__(
        self,
        owner: WebSocketGate,
        request: GateRequest,
        decision: Decision,
        session: Session | None,
        graphql: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        self.owner = owner
        self.gate = owner.gate
        self.request = request
        self.decision = decision
        self.session = session
        self.graphql = graphql
        self._receive = receive
        self._send = send
        self._accepted = self._app_closed = False
        self._disconnect: Message | None = None  # what receive() returns once the gate closed the socket
        self._receiver: asyncio.Task[Any] | None = None  # the app's task while it waits in receive()
        self._interrupted = False  # the gate cancelled that wait to deliver its disconnect
        self._closing: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._rechecks: set[asyncio.Task[None]] = set()  # re-decisions awaiting a remote PDP
        tenant = session.tenant if session is not None else None  # open subscriptions, for the exporter
        self.subscriptions = self.gate.workload.meter.tracker(request.path, tenant)

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        """Run the app on this connection, or send the refusal when the connect decision refused it."""
        if not self.decision.passes or self.session is None:
            await self._refuse(scope, self.decision)
            return
        loop = asyncio.get_running_loop()
        live = Live(loop, self.session.session_key, self.session.subject, self.recheck)
        if not self.gate.live.register(live):
            detail = "too many open connections in this process"
            await self._refuse(scope, self.gate.refuse(self.request, ERROR, "too_many_connections", detail))
            return
        self._arm_expiry()
        if not self.graphql:
            self.subscriptions.whole_socket()
        try:
            await app(scope, self.receive, self.send)
        finally:
            self.subscriptions.close_all()
            self.gate.live.unregister(live)
            if self._timer is not None:
                self._timer.cancel()
            if self._closing is not None:
                await self._closing

    # -- what the app calls ------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next message for the app; operation frames the gate refused are answered, not returned."""
        while True:
            message = await self._next()
            if message["type"] != "websocket.receive" or not self.graphql or await self._admit(message):
                return message

    async def send(self, message: Message) -> None:
        """Send for the app; dropped once the gate closed the connection."""
        if self._disconnect is not None:
            return
        kind = message["type"]
        if kind == "websocket.accept":
            self._accepted = True
        elif kind == "websocket.close":
            self._app_closed = True
        elif kind == "websocket.send":
            self.subscriptions.server_message(message)
        await self._send(message)

    async def _next(self) -> Message:
        """The server's next message, or the gate's disconnect: close() cancels a wait in progress (the
        servers' receive() is safe to cancel) and the cancellation is turned into the disconnect."""
        if self._disconnect is not None:
            return self._disconnect
        task = self._receiver = asyncio.current_task()
        try:
            return await self._receive()
        except asyncio.CancelledError:
            if not self._interrupted or task is None:
                raise
            task.uncancel()  # ours, not the app's: the app gets the disconnect instead
            assert self._disconnect is not None
            return self._disconnect
        finally:
            self._receiver = None

    # -- frames ------------------------------------------------------------------------------------

    async def _admit(self, message: Message) -> bool:
        """True when the frame goes on to the app; False when the gate answered it or closed the socket."""
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        if len(data) > self.owner.max_frame_bytes:
            return self._bad_frame(f"frame longer than {self.owner.max_frame_bytes} bytes")
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError):  # UnicodeDecodeError included
            return self._bad_frame("frame is not JSON")
        if not isinstance(frame, dict):
            return self._bad_frame("frame is not a JSON object")
        kind = frame.get("type")
        protocol = _OPERATION_FRAMES.get(kind) if isinstance(kind, str) else None
        if protocol is None:
            self.subscriptions.client_frame(kind, frame.get("id"))
            return True
        op_id = frame.get("id")
        if not isinstance(op_id, str) or not op_id:
            return self._bad_frame(f"'{kind}' frame without a string id")
        try:
            operation = payload_operation(frame.get("payload"), self.owner.max_document_bytes)
        except GraphQLRequestError as exc:
            return self._bad_frame(exc.detail)
        decision = await self.gate.decide_async(self.request._replace(operation=operation), self.session)
        if decision.passes:
            if operation == "subscription":
                self.subscriptions.started(op_id)
            return True
        if decision.token_error is not None:  # the session itself is refused now, not the operation
            self.close(decision)
            return False
        error = self.owner.responses.graphql_error(decision)
        reply = {"id": op_id, "type": "error", "payload": [error] if protocol == TRANSPORT_WS else error}
        with contextlib.suppress(OSError, RuntimeError):  # the client is gone: the next receive says so
            await self._send({"type": "websocket.send", "text": json.dumps(reply, separators=(",", ":"))})
        return False

    def _bad_frame(self, detail: str) -> bool:
        self.close(self.gate.refuse(self.request, BAD_REQUEST, "malformed_frame", detail))
        return False

    # -- following the session ---------------------------------------------------------------------

    def recheck(self) -> None:
        """Decide the connection again (on its loop); close it when it no longer passes. With a remote PDP
        the decision is awaited in a task (the loop never waits on the network)."""
        if self._disconnect is not None:
            return
        if self.gate.awaits_remote:
            task = asyncio.get_running_loop().create_task(self._recheck_remote())
            self._rechecks.add(task)
            task.add_done_callback(self._rechecks.discard)
            return
        verified = self.gate.authenticate(self.request)
        decision = self.gate.decide(self.request, verified) if type(verified) is Session else verified
        self._settle(verified, decision)

    async def _recheck_remote(self) -> None:
        verified = self.gate.authenticate(self.request)
        if type(verified) is Session:
            decision = await self.gate.decide_async(self.request, verified)
        else:
            decision = verified
        if self._disconnect is None:
            self._settle(verified, decision)

    def _settle(self, verified: Session | Decision, decision: Decision) -> None:
        """Keep the connection with its re-verified session, or close it with the refusal."""
        if decision.passes:
            self.session = verified  # type: ignore[assignment]  # a Session: decide() passed it
        else:
            self.close(decision)

    def _arm_expiry(self) -> None:
        assert self.session is not None
        delay = self.session.exp + self.owner.leeway_s - time.time()
        if delay > -1.0:  # else the gate's clock disagrees: trust its decisions
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(delay, 0.0) + _EXPIRY_SLACK_S, self._expire)

    def _expire(self) -> None:
        self.recheck()
        if self._disconnect is None:
            self._arm_expiry()

    def close(self, decision: Decision) -> None:
        """Close the connection for a refused decision: the client gets its close code, the app a
        websocket.disconnect at its next receive(). Call on the connection's loop."""
        if self._disconnect is not None:
            return
        code = self.owner.responses.close_code(decision)
        reason = (decision.detail or ", ".join(decision.reasons))[:_MAX_REASON]
        self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        if self._receiver is not None:
            self._interrupted = True
            self._receiver.cancel()
        self._closing = asyncio.ensure_future(self._close_client(code, reason))

    async def _close_client(self, code: int, reason: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # the client may be gone already
            if not self._accepted:
                self._accepted = True
                await self._send({"type": "websocket.accept", "subprotocol": None})
            if not self._app_closed:
                await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def _refuse(self, scope: Scope, decision: Decision) -> None:
        message = await self._receive()  # websocket.connect comes first
        if message["type"] != "websocket.connect":
            return
        # A close before accept becomes an HTTP 403 on the handshake, which browsers report as 1006:
        # accept (echoing the client's first subprotocol, as graphql-ws servers do), then close with
        # the decision's code so that clients see why.
        offered = scope.get("subprotocols") or ()
        await self._send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        reason = ", ".join(decision.reasons)[:_MAX_REASON]
        await self._send({"type": "websocket.close", "code": self.owner.responses.close_code(decision),
                          "reason": reason})


def _same_origin(origin: str, host: bytes | None) -> bool:
    """Whether an Origin value names the host:port of the Host header (the scheme's default port when
    either leaves it out); schemes are not compared, since a TLS-terminating proxy changes them."""
    if host is None:
        return False
    scheme, _, netloc = origin.partition("://")
    default = _DEFAULT_PORTS.get(scheme)
    return _authority(netloc, default) == _authority(host.decode("latin-1").strip().lower(), default)


def _authority(netloc: str, default_port: int | None) -> tuple[str, int | None]:
    host, colon, port = netloc.rpartition(":")
    if colon and port.isdigit():
        return host, int(port)
    return netloc, default_port
