"""Reverse-proxy mode over real sockets: the sidecar app (uvicorn) in front of a real upstream (uvicorn).

The client reaches the sidecar from 127.0.0.1, a trusted proxy in these settings, and names its own
address in X-Forwarded-For (a US address inside tenant acme's geo-fence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from ig_gate.middleware.settings import ConfigError
from ig_gate.sidecar.app import build_app
from ig_gate.sidecar.proxy import ReverseProxy, proxy_extension, upstream_headers
from tests.middleware.conftest import US_IP, World
from tests.support.procs import free_port, wait_until

CHUNK = b"x" * 65_536


@dataclass
class Upstream:
    """What the upstream saw: one record per request or WebSocket connect."""

    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)


def upstream_app(record: Upstream) -> Starlette:
    """An upstream that echoes what it received, streams, stalls, and relays a GraphQL WebSocket."""

    async def echo(request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:
            record.seen.append({"aborted": request.scope["raw_path"].decode()})
            raise
        seen = {
            "method": request.method,
            "target": request.scope["raw_path"].decode() + "?" + request.scope["query_string"].decode(),
            "headers": [(k.decode(), v.decode()) for k, v in request.scope["headers"]],
            "body": body.decode("latin-1") if len(body) < 10_000 else f"<{len(body)} bytes>",
            "peer_port": request.client.port if request.client else None,
        }
        record.seen.append(seen)
        return JSONResponse(
            seen,
            headers={"connection": "x-upstream-private", "x-upstream-private": "1", "x-upstream-public": "1"},
        )

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(32):
                yield CHUNK

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def stall(request: Request) -> Response:
        await asyncio.sleep(30)  # longer than the proxy's timeout; the server is stopped at teardown
        return Response("late")

    async def graphql_ws(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        chosen = "graphql-transport-ws" if "graphql-transport-ws" in offered else None
        record.seen.append({"ws_headers": [(k.decode(), v.decode()) for k, v in websocket.scope["headers"]]})
        await websocket.accept(subprotocol=chosen)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") == "close-me":
                    await websocket.close(code=4400, reason="asked to")
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"][::-1])
                else:
                    await websocket.send_text(json.dumps({"echo": message.get("text")}))
        except WebSocketDisconnect:
            return

    return Starlette(
        routes=[
            Route("/base/stream", stream),  # the sidecar's upstream URL has the base path /base
            Route("/base/stall", stall),
            WebSocketRoute("/base/graphql", graphql_ws),
            WebSocketRoute("/base/ws", graphql_ws),  # outside graphql.paths: the gate relays frames unread
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        ]
    )


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run app under uvicorn on a free loopback port in a thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, f"uvicorn on {port}")
        if not server.started:
            raise RuntimeError(f"uvicorn on port {port} did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    record = Upstream()
    with serve(upstream_app(record)) as url:
        record.url = url
        yield record


def _sidecar(world: World, tmp_path: Any, upstream_url: str, **server: Any) -> Any:
    """The sidecar app (reverse-proxy mode to upstream_url) under uvicorn; a context manager -> its URL."""
    settings = world.settings(
        geo={"trusted_proxies": ["127.0.0.1/32"]},
        server={"upstream": upstream_url, **server},
        decision_log={"path": str(tmp_path / "decisions.jsonl")},
    )
    return serve(build_app(settings, factories=[proxy_extension]))


@pytest.fixture(scope="module")
def sidecar(world: World, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("proxy")
    with _sidecar(world, workdir, upstream.url + "/base/", upstream_timeout_s=1.0) as url:
        yield url


def auth(world: World, *, risk: str = "low", **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {world.token(risk=risk)}", "x-forwarded-for": US_IP, **headers}


def seen_headers(response: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


def test_an_allowed_request_reaches_the_upstream_with_identity_and_forwarding_headers(world, sidecar):
    headers = auth(
        world,
        **{
            "x-auth-subject": "mallory",
            "X-Auth-Risk": "low",
            "x-auth-anything": "spoof",
            "connection": "x-hop-only",
            "x-hop-only": "1",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "proxy-authorization": "Basic c2VjcmV0",
            "x-keep": "yes",
        },
    )
    response = httpx.get(f"{sidecar}/graphql/a%40b?query=%7Bme%7D&x=1", headers=headers)

    assert response.status_code == 200, response.text
    seen = seen_headers(response)
    assert response.json()["target"] == "/base/graphql/a%40b?query=%7Bme%7D&x=1"
    assert seen["x-auth-subject"] == ["alice"]  # the gate's, never the client's
    assert seen["x-auth-tenant"] == ["acme"]
    assert seen["x-auth-risk"] == ["low"]
    assert len(seen["x-auth-decision-id"][0]) >= 8
    assert "x-auth-anything" not in seen
    for hop in ("x-hop-only", "keep-alive", "te", "proxy-authorization", "upgrade", "transfer-encoding"):
        assert hop not in seen
    assert seen["x-keep"] == ["yes"]
    assert seen["x-forwarded-for"] == [f"{US_IP}, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [sidecar.removeprefix("http://")]
    assert seen["host"] == [upstream_host(sidecar, response)]


def upstream_host(sidecar: str, response: httpx.Response) -> str:
    """The upstream's own host:port as it saw it (the proxy does not forward the client's Host)."""
    return dict(response.json()["headers"])["host"]


def test_response_hop_by_hop_headers_are_dropped_and_others_kept(world, sidecar):
    response = httpx.get(f"{sidecar}/echo", headers=auth(world))
    assert response.headers["x-upstream-public"] == "1"
    assert "x-upstream-private" not in response.headers  # named in the upstream's Connection header
    assert len(response.headers.get_list("date")) == 1  # the sidecar's own, not the upstream's as well


def test_a_graphql_body_buffered_by_the_gate_reaches_the_upstream_unchanged(world, sidecar):
    body = json.dumps({"query": "query Me { me { id } }", "variables": {"a": "ü"}})
    response = httpx.post(
        f"{sidecar}/graphql",
        content=body.encode(),
        headers=auth(world, **{"content-type": "application/json"}),
    )
    assert response.status_code == 200, response.text
    assert response.json()["body"].encode("latin-1").decode() == body


def test_large_bodies_stream_both_ways(world, sidecar):
    managed = world.attestation("managed")
    headers = auth(world, **{"content-type": "application/octet-stream", "x-device-attestation": managed})

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield CHUNK

    uploaded = httpx.put(f"{sidecar}/upload", content=chunks(), headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["body"] == f"<{64 * len(CHUNK)} bytes>"

    with httpx.stream("GET", f"{sidecar}/stream", headers=auth(world)) as streamed:
        parts = list(streamed.iter_raw())
    assert b"".join(parts) == CHUNK * 32


def test_a_client_that_goes_away_mid_upload_aborts_the_upstream_request(world, sidecar, upstream):
    host, port = sidecar.removeprefix("http://").split(":")
    head = (
        f"PUT /abandoned HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {world.token()}\r\n"
        f"X-Device-Attestation: {world.attestation('managed')}\r\nX-Forwarded-For: {US_IP}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 4000000\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as client:
        # more than server.max_body_bytes (1 MiB, read before the upstream is asked): the rest streams;
        # then hang up with most of the body unsent
        client.sendall(head.encode() + CHUNK * 17)
    wait_until(
        lambda: {"aborted": "/base/abandoned"} in upstream.seen, 5, "the upstream request to be aborted"
    )
    assert httpx.get(f"{sidecar}/echo", headers=auth(world)).status_code == 200  # the proxy is fine


def test_refused_requests_never_reach_the_upstream(world, sidecar, upstream):
    before = len(upstream.seen)
    no_token = httpx.get(f"{sidecar}/graphql", headers={"x-forwarded-for": US_IP})
    high = httpx.get(f"{sidecar}/graphql", headers=auth(world, risk="high"))
    medium_mutation = httpx.post(
        f"{sidecar}/graphql",
        headers=auth(world, risk="medium", **{"content-type": "application/json"}),
        content=json.dumps({"query": 'mutation { rename(name: "x") { id } }'}),
    )
    assert (no_token.status_code, high.status_code, medium_mutation.status_code) == (401, 403, 401)
    assert medium_mutation.headers["www-authenticate"].startswith("Bearer")
    assert 'error="insufficient_user_authentication"' in medium_mutation.headers["www-authenticate"]
    assert len(upstream.seen) == before


def test_upstream_connections_are_pooled_and_kept_alive(world, sidecar):
    ports = {httpx.get(f"{sidecar}/echo", headers=auth(world)).json()["peer_port"] for _ in range(5)}
    assert len(ports) == 1


def test_an_upstream_that_does_not_answer_in_time_gives_504_json(world, sidecar):
    response = httpx.get(f"{sidecar}/stall", headers=auth(world), timeout=10)
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


def test_an_unreachable_upstream_gives_502_json(world, tmp_path):
    with _sidecar(world, tmp_path, f"http://127.0.0.1:{free_port()}") as url:
        response = httpx.get(f"{url}/graphql", headers=auth(world))
        assert response.status_code == 502
        assert response.json() == {"error": "bad_gateway", "description": "the upstream is unreachable"}
        # the sidecar's own routes are not proxied
        assert httpx.get(f"{url}/healthz").status_code == 200


def _ws_url(sidecar: str, path: str = "/graphql") -> str:
    return sidecar.replace("http://", "ws://") + path


def test_a_websocket_subscription_is_relayed_with_its_subprotocol_and_identity(world, sidecar, upstream):
    headers = auth(world, **{"x-auth-subject": "mallory"})
    offered = ["graphql-transport-ws"]
    # on a path outside graphql.paths every frame is relayed as it is, binary and non-JSON ones too (on
    # /graphql the gate reads each frame first: tests/sidecar/test_websocket_proxy.py)
    with ws_connect(_ws_url(sidecar, "/ws"), subprotocols=offered, additional_headers=headers) as ws:
        assert ws.subprotocol == "graphql-transport-ws"
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=5)) == {"echo": json.dumps({"type": "connection_init"})}
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=5) == b"\x03\x02\x01"
        ws.send("close-me")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4400  # the upstream's close code crosses the proxy
    handshake = dict(next(s for s in reversed(upstream.seen) if "ws_headers" in s)["ws_headers"])
    assert handshake["x-auth-subject"] == "alice"
    assert handshake["sec-websocket-protocol"] == "graphql-transport-ws"
    assert handshake["x-forwarded-for"] == f"{US_IP}, 127.0.0.1"


def test_a_refused_websocket_is_closed_before_the_upstream_is_contacted(world, sidecar, upstream):
    before = len(upstream.seen)
    no_token = {"x-forwarded-for": US_IP}
    try:  # the middleware refuses with 4401 after accept, or (older behaviour) a 403 handshake
        with ws_connect(_ws_url(sidecar), subprotocols=["graphql-ws"], additional_headers=no_token) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd.code == 4401
    except InvalidStatus as refused:
        assert refused.response.status_code == 403
    assert len(upstream.seen) == before


def test_bad_upstream_urls_are_config_errors():
    for bad in ("ftp://host/", "http://", "http://host/?q=1"):
        with pytest.raises(ConfigError, match=r"^server\.upstream: "):
            ReverseProxy(bad)


def test_headers_named_in_connection_and_client_identity_headers_are_removed():
    scope = {
        "headers": [
            (b"connection", b"Keep-Alive, X-A"),
            (b"x-a", b"1"),
            (b"x-auth-tenant", b"evil"),
            (b"host", b"gw.example"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-b", b"2"),
        ],
        "client": ("10.1.1.1", 5000),
        "scheme": "https",
    }
    assert upstream_headers(scope) == [
        (b"x-b", b"2"),
        (b"x-forwarded-for", b"1.2.3.4, 10.1.1.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"gw.example"),
    ]


@pytest.mark.parametrize("path", ["/graphql", "/v1/database", "/healthz-of-the-app", "/authzed"])
def test_paths_that_are_not_sidecar_routes_are_gated_then_proxied(world, sidecar, path):
    # the fast path skips the router only for paths no sidecar route can start; both ways end gated
    assert httpx.get(f"{sidecar}{path}").status_code == 401
    response = httpx.get(f"{sidecar}{path}", headers=auth(world))
    assert response.status_code == 200, response.text
    assert response.json()["target"].startswith(f"/base{path}")


def test_sidecar_routes_still_answer_in_proxy_mode(sidecar):
    assert httpx.get(f"{sidecar}/healthz").status_code == 200
    assert httpx.get(f"{sidecar}/readyz").status_code == 200
