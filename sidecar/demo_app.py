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
    """A one-event GraphQL subscription (graphql-transport-ws framing): who am I, then complete."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept("graphql-transport-ws" if "graphql-transport-ws" in offered else None)
    payload = {"data": {"me": identity_of(websocket)}}
    await websocket.send_json({"id": "1", "type": "next", "payload": payload})
    await websocket.send_json({"id": "1", "type": "complete"})
    await websocket.close(1000)


async def ui(_: Request) -> Response:
    return HTMLResponse(UI_PAGE)


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    """The bare demo app (wrap it in ZeroTrustMiddleware to protect it)."""
    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql/ws", subscription),
            Route("/ui", ui),
            Route("/healthz", healthz),
        ]
    )


UI_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ig-gate demo</title></head>
<body>
<h1>ig-gate demo</h1>
<p><label>Bearer token <input id="token" size="80"></label></p>
<p><button id="query">query</button> <button id="subscribe">subscribe (WebSocket)</button></p>
<pre id="out"></pre>
<script>
const out = document.getElementById("out");
const show = (text) => { out.textContent = text; };
document.getElementById("query").onclick = async () => {
  const token = document.getElementById("token").value;
  const response = await fetch("/graphql", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token},
    body: JSON.stringify({query: "query Me { me { subject tenant risk } }"}),
  });
  const challenge = response.headers.get("WWW-Authenticate") || "";
  show(response.status + " " + challenge + "\\n" + await response.text());
};
document.getElementById("subscribe").onclick = () => {
  // browsers cannot set Authorization on a WebSocket: the token travels in the session cookie
  document.cookie = "ig_session=" + document.getElementById("token").value + "; path=/; SameSite=Strict";
  const ws = new WebSocket(`ws://${location.host}/graphql/ws`, "graphql-transport-ws");
  const messages = [];
  ws.onmessage = (event) => messages.push(event.data);
  ws.onclose = (event) => show("closed " + event.code + "\\n" + messages.join("\\n"));
};
</script>
</body></html>
"""
