"""Subscription demand counts open subscriptions (fan-out), not connects: each decided `subscribe` frame
with a subscription is one, until either side completes it or the socket closes."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from ig_gate.middleware.asgi import ZeroTrustMiddleware
from tests.middleware.conftest import World

SUB = "subscription S { ticks }"
FINITE = "subscription F { finite }"  # the app completes it after one event


def app() -> Starlette:
    async def graphql(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="graphql-transport-ws")
        try:
            while True:
                frame = await websocket.receive_json()
                if frame["type"] == "connection_init":
                    await websocket.send_json({"type": "connection_ack"})
                elif frame["type"] == "subscribe":
                    await websocket.send_json({"id": frame["id"], "type": "next", "payload": {"data": {}}})
                    if "finite" in frame["payload"]["query"] or "query" in frame["payload"]["query"]:
                        await websocket.send_json({"id": frame["id"], "type": "complete"})
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/graphql", graphql)])


def open_subscriptions(middleware: ZeroTrustMiddleware) -> float | None:
    middleware.gate.workload.tick(time.time() + 1000)
    return middleware.gate.metrics.registry.get_sample_value(
        "ig_gate_subscriptions_open", {"route": "/graphql", "tenant": "acme"})


def subscribe(ws: Any, op_id: str, document: str) -> None:
    ws.send_text(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": document}}))
    assert ws.receive_json()["type"] == "next"


def test_open_subscriptions_are_counted_per_operation_not_per_connect(world: World) -> None:
    middleware = ZeroTrustMiddleware(app(), config=world.settings())
    headers = {"authorization": f"Bearer {world.token()}"}
    with TestClient(middleware, client=("203.0.113.7", 40000)) as client:
        protocols = ["graphql-transport-ws"]
        with client.websocket_connect("/graphql", subprotocols=protocols, headers=headers) as ws:
            ws.send_text(json.dumps({"type": "connection_init", "payload": {}}))
            assert ws.receive_json() == {"type": "connection_ack"}
            assert not open_subscriptions(middleware)  # connected, nothing subscribed: no demand
            subscribe(ws, "1", SUB)
            subscribe(ws, "2", SUB)
            subscribe(ws, "3", "query Q { me { id } }")  # a query over the socket is not a subscription
            assert ws.receive_json() == {"id": "3", "type": "complete"}
            assert open_subscriptions(middleware) == 2
            subscribe(ws, "4", FINITE)
            assert ws.receive_json() == {"id": "4", "type": "complete"}  # the app ended it
            ws.send_text(json.dumps({"id": "1", "type": "complete"}))  # the client ends one
            ws.send_text(json.dumps({"id": "1", "type": "complete"}))  # twice: counted once
            subscribe(ws, "5", SUB)
            assert open_subscriptions(middleware) == 2  # 2 and 5
            rate = middleware.gate.metrics.registry.get_sample_value(
                "ig_gate_profile_rate", {"route": "/graphql", "tenant": "acme", "profile": "subscription"})
            assert rate is not None and 0 < rate <= 2
        deadline = time.monotonic() + 5  # the socket closed: its subscriptions end with it
        while open_subscriptions(middleware) != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert open_subscriptions(middleware) == 0
    middleware.gate.close()
