"""The demo GraphQL-ish service that ig-gate protects in `make demo` and in the benchmarks.

It answers `POST /graphql` (and `GET /graphql?query=...`) without a GraphQL library: a query returns
the caller's identity as ig-gate established it, a mutation echoes its variables. Enough to see what
the gate lets through; nothing here is part of the enforcement.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ig_gate.sidecar import demo_page

_IDENTITY_KEYS = ("subject", "tenant", "risk", "posture", "country", "decision_id", "profile")


def identity_of(connection: Request | WebSocket) -> dict[str, Any]:
    """What ig-gate put into scope["state"]["ig_gate"] for this connection (empty when unprotected)."""
    ident = connection.scope.get("state", {}).get("ig_gate")
    if ident is None:
        return {}
    if isinstance(ident, dict):
        return {k: ident.get(k) for k in _IDENTITY_KEYS}
    return {k: getattr(ident, k, None) for k in _IDENTITY_KEYS}


async def graphql(request: Request) -> Response:
    if request.method == "GET":
        document = request.query_params.get("query", "")
        variables: Any = {}
    else:
        try:
            payload = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"errors": [{"message": "body is not JSON"}]}, status_code=400)
        if not isinstance(payload, dict):
            return JSONResponse({"errors": [{"message": "body must be an object"}]}, status_code=400)
        document = str(payload.get("query", ""))
        variables = payload.get("variables") or {}
    if document.lstrip().startswith("mutation"):
        return JSONResponse({"data": {"update": {"ok": True, "input": variables}}})
    return JSONResponse({"data": {"me": identity_of(request), "greeting": "hello from the demo service"}})


async def subscription(websocket: WebSocket) -> None:
    """A one-event GraphQL subscription (graphql-transport-ws framing): who am I, then complete.

    With `?watch=1` the socket speaks graphql-transport-ws and stays open: `connection_init` is acked and
    each `subscribe` gets its `next` (and no `complete`), until the client or the gate closes it."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept("graphql-transport-ws" if "graphql-transport-ws" in offered else None)
    if websocket.query_params.get("watch"):
        await _watch(websocket)
        return
    payload = {"data": {"me": identity_of(websocket)}}
    await websocket.send_json({"id": "1", "type": "next", "payload": payload})
    await websocket.send_json({"id": "1", "type": "complete"})
    await websocket.close(1000)


async def _watch(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            frame = json.loads(message.get("text") or message.get("bytes") or b"")
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            await websocket.close(4400)
            return
        if frame.get("type") == "connection_init":
            await websocket.send_json({"type": "connection_ack"})
        elif frame.get("type") == "ping":
            await websocket.send_json({"type": "pong"})
        elif frame.get("type") == "subscribe":
            payload = {"data": {"me": identity_of(websocket)}}
            await websocket.send_json({"id": frame.get("id"), "type": "next", "payload": payload})


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(oidc_issuer: str | None = None, client_id: str = "ig-gate-demo") -> Starlette:
    """The bare demo app (wrap it in ZeroTrustMiddleware to protect it); with `oidc_issuer` its page at
    `/ui` signs in at that OpenID provider (sidecar/oidc_provider.py) as `client_id`."""
    page = demo_page.render(oidc_issuer, client_id)

    async def ui(_: Request) -> Response:
        return HTMLResponse(page)

    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql/ws", subscription),
            Route("/ui", ui),
            Route("/healthz", healthz),
        ]
    )

