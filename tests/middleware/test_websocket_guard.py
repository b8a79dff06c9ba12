"""WebSockets through the middleware, served by a real uvicorn and driven by the `websockets` client: every
GraphQL operation sent over a socket is decided, cross-site cookie sockets are refused, and open sockets
are closed when their token expires, their session is revoked, or a new bundle refuses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.policy import PolicySnapshot, StaticPolicySource
from ig_gate.bundles.signing import sign_bundle
from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.gate import Gate, verify_options
from ig_gate.middleware.live import LiveConnections
from ig_gate.middleware.risk import RiskStore
from ig_gate.middleware.risk_redis import RedisRiskStore
from tests.middleware.conftest import REPO, US_IP, World
from tests.support.procs import wait_until
from tests.support.redis_server import redis_server
from tests.support.uvicorn_thread import serve_in_thread

TRANSPORT, LEGACY = "graphql-transport-ws", "graphql-ws"
MUTATION = 'mutation Rename { rename(name: "mallory") { id } }'
QUERY = "query Me { me { id } }"
CLOSE_BUDGET_S = 1.0  # the bound for closing a socket after its session changes


class SwappablePolicy:
    """A PolicySource whose active snapshot the test replaces (as a bundle manager does on activation)."""

    def __init__(self, snapshot: PolicySnapshot) -> None:
        self.snapshot = snapshot

    def current(self) -> PolicySnapshot:
        return self.snapshot


class Served:
    """The echo app behind the middleware, served by uvicorn: what the app saw, the gate, the address."""

    def __init__(self, address: str, gate: Gate, seen: list[dict[str, Any]], policy: SwappablePolicy) -> None:
        self.address = address
        self.gate = gate
        self.seen = seen
        self.policy = policy

    def url(self, path: str = "/graphql") -> str:
        return f"ws://{self.address}{path}"

    def app_saw(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in list(self.seen) if frame.get("type") == kind]


def echo_app(seen: list[dict[str, Any]]) -> Starlette:
    """graphql-transport-ws / graphql-ws echo at /graphql (acks, answers every operation with its
    document), and /raw (echoes any frame) outside the GraphQL paths. Records every frame and disconnect."""

    async def graphql(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=next((p for p in offered if p in (TRANSPORT, LEGACY)), None))
        try:
            while True:
                frame = await websocket.receive_json()
                seen.append(frame)
                kind = frame.get("type")
                if kind == "connection_init":
                    await websocket.send_json({"type": "connection_ack"})
                elif kind in ("subscribe", "start"):
                    data = {"data": {"echo": frame["payload"]["query"]}}
                    reply = "next" if kind == "subscribe" else "data"
                    await websocket.send_json({"id": frame["id"], "type": reply, "payload": data})
        except WebSocketDisconnect as exc:
            seen.append({"type": "disconnect", "code": exc.code})

    async def raw(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                seen.append({"type": "raw", "text": text})
                await websocket.send_text(text)
        except WebSocketDisconnect as exc:
            seen.append({"type": "disconnect", "code": exc.code})

    return Starlette(routes=[WebSocketRoute("/graphql", graphql), WebSocketRoute("/raw", raw)])


def signed_bundle(
    world: World, root: Path, name: str, extra_rego: str = "", version: str | None = None
) -> Path:
    """The example policy (plus `extra_rego` appended to ig/zt.rego), signed with the world's bundle key."""
    source = root / name
    shutil.copytree(REPO / "policies", source)
    zt = source / "ig" / "zt.rego"
    zt.write_text(zt.read_text() + extra_rego)
    path = root / f"{name}.tgz"
    path.write_bytes(sign_bundle(build_bundle(source, version=version), world.bundle_key.private_pem).archive)
    return path


SOCKETS_NEED_STEPUP = """
stepup_reasons contains "subscription_needs_stepup" if {
	input.request.operation_type == "subscription"
	not stepup_satisfied
}
"""


@pytest.fixture(scope="module")
def stepup_snapshot(world: World, tmp_path_factory: pytest.TempPathFactory) -> PolicySnapshot:
    """A bundle that asks every subscription for step-up (so it refuses the open sockets of these tests)."""
    root = tmp_path_factory.mktemp("ws-bundles")
    path = signed_bundle(world, root, "stepup", SOCKETS_NEED_STEPUP)
    return StaticPolicySource(path, verify_options(world.settings())).current()


@pytest.fixture
def serve(world: World, tmp_path: Path) -> Iterator[Any]:
    """serve(risk_store=None, **setting overrides) -> Served: the echo app behind a fresh gate, on a real
    uvicorn."""
    with contextlib.ExitStack() as stack:

        def start(risk_store: RiskStore | None = None, **overrides: Any) -> Served:
            overrides.setdefault("decision_log", {"path": str(tmp_path / "decisions.jsonl")})
            overrides.setdefault("geo", {"trusted_proxies": ["127.0.0.1/32"]})  # clients name US_IP
            settings = world.settings(**overrides)
            source = StaticPolicySource(world.bundle_path, verify_options(settings))
            policy = SwappablePolicy(source.current())
            gate = build_gate(settings, policy=policy, risk_store=risk_store)
            seen: list[dict[str, Any]] = []
            address = stack.enter_context(serve_in_thread(ZeroTrustMiddleware(echo_app(seen), gate=gate)))
            return Served(address, gate, seen, policy)

        yield start


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **headers}


async def open_socket(
    url: str, protocol: str | None = TRANSPORT, additional_headers: dict[str, str] | None = None,
    *, init: bool = True,
) -> ClientConnection:
    """A connected client (from US_IP, via the trusted loopback proxy) that has done the protocol's
    connection_init / connection_ack when `init`."""
    headers = {"x-forwarded-for": US_IP, **(additional_headers or {})}
    ws = await connect(url, subprotocols=[protocol] if protocol else None, open_timeout=5,
                       additional_headers=headers)
    if protocol is not None and init:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "connection_ack"}
    return ws


async def operation(ws: ClientConnection, op_id: str, document: str, kind: str = "subscribe") -> dict:
    await ws.send(json.dumps({"id": op_id, "type": kind, "payload": {"query": document}}))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def close_code(ws: ClientConnection, timeout_s: float = 5.0) -> int | None:
    """The close code the server sent (waits for the close)."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), timeout_s)
    return ws.close_code


def test_a_mutation_in_a_subscribe_frame_from_an_unmanaged_device_gets_an_error_and_never_reaches_the_app(
    world, serve
):
    served = serve()

    async def scenario() -> tuple[dict, dict]:
        async with await open_socket(served.url(), additional_headers=bearer(world.token())) as ws:
            refused = await operation(ws, "1", MUTATION)
            allowed = await operation(ws, "2", QUERY)  # the socket stays usable: only the write was refused
            return refused, allowed

    refused, allowed = asyncio.run(scenario())

    assert refused["id"] == "1" and refused["type"] == "error"
    (error,) = refused["payload"]  # graphql-transport-ws: a list of GraphQL errors
    assert error["extensions"]["code"] == "STEP_UP_REQUIRED"
    assert error["extensions"]["reasons"] == ["device_unmanaged_write"]
    assert error["extensions"]["decision_id"]
    assert allowed == {"id": "2", "type": "next", "payload": {"data": {"echo": QUERY}}}
    assert [frame["id"] for frame in served.app_saw("subscribe")] == ["2"]


def test_a_mutation_in_a_legacy_graphql_ws_start_frame_gets_an_error_object_and_never_reaches_the_app(
    world, serve
):
    served = serve()

    async def scenario() -> dict:
        async with await open_socket(served.url(), LEGACY, additional_headers=bearer(world.token())) as ws:
            return await operation(ws, "7", MUTATION, "start")

    refused = asyncio.run(scenario())

    assert refused["id"] == "7" and refused["type"] == "error"
    assert refused["payload"]["extensions"]["code"] == "STEP_UP_REQUIRED"  # graphql-ws: one error object
    assert served.app_saw("start") == []


def test_a_mutation_from_a_managed_device_is_decided_and_passes(world, serve):
    served = serve()
    headers = bearer(world.token(), **{"x-device-attestation": world.attestation("managed")})

    async def scenario() -> dict:
        async with await open_socket(served.url(), additional_headers=headers) as ws:
            return await operation(ws, "1", MUTATION)

    assert asyncio.run(scenario())["type"] == "next"
    assert [frame["id"] for frame in served.app_saw("subscribe")] == ["1"]


def test_a_graphql_socket_offering_no_graphql_subprotocol_is_refused_with_4400(world, serve):
    served = serve()

    async def scenario() -> int | None:
        headers = bearer(world.token(), **{"x-forwarded-for": US_IP})
        ws = await connect(served.url(), subprotocols=["chat"], additional_headers=headers)
        return await close_code(ws)

    assert asyncio.run(scenario()) == 4400
    assert served.seen == []


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        json.dumps(["subscribe"]),
        json.dumps({"id": 1, "type": "subscribe", "payload": {"query": QUERY}}),  # id must be a string
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "query A { a } query B { b }"}}),
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ a }" + " " * 70_000}}),
    ],
    ids=["not-json", "not-an-object", "numeric-id", "two-operations-no-name", "document-too-long"],
)
def test_a_malformed_or_oversized_operation_frame_closes_the_socket_with_4400(world, serve, frame):
    served = serve()

    async def scenario() -> int | None:
        ws = await open_socket(served.url(), additional_headers=bearer(world.token()))
        await ws.send(frame)
        return await close_code(ws)

    assert asyncio.run(scenario()) == 4400
    assert served.app_saw("subscribe") == []
    wait_until(lambda: served.app_saw("disconnect"), 5, "the app to see the disconnect")
    assert served.app_saw("disconnect")[0]["code"] == 4400


def test_frames_on_a_path_that_is_not_graphql_pass_through(world, serve):
    served = serve()

    async def scenario() -> str:
        headers = bearer(world.token(), **{"x-forwarded-for": US_IP})
        async with await connect(served.url("/raw"), additional_headers=headers) as ws:
            frame = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": MUTATION}})
            await ws.send(frame)
            return await asyncio.wait_for(ws.recv(), 5)

    assert json.loads(asyncio.run(scenario()))["payload"]["query"] == MUTATION


@pytest.mark.parametrize(
    "origin, extra, expected",
    [
        ("https://evil.example", {}, 4403),  # a cookie session opened from another site's page
        ("null", {}, 4403),  # sandboxed pages send Origin: null
        (None, {}, None),  # no Origin: not a browser, no ambient credential abuse
        ("same", {}, None),  # the Host's own origin
        ("https://app.example.test", {}, None),  # listed in identity.allowed_origins
        ("https://evil.example", {"bearer": True}, None),  # a bearer header is no ambient credential
    ],
)
def test_cookie_authenticated_sockets_are_refused_4403_from_another_origin(
    world, serve, origin, extra, expected
):
    served = serve(identity={"cookie": "ig_session", "allowed_origins": ["https://app.example.test"]})
    token = world.token()
    headers = bearer(token) if extra.get("bearer") else {"cookie": f"ig_session={token}"}
    if origin is not None:
        headers["origin"] = f"http://{served.address}" if origin == "same" else origin

    async def scenario() -> int | None:
        ws = await open_socket(served.url(), additional_headers=headers, init=expected is None)
        if expected is not None:
            return await close_code(ws)
        reply = await operation(ws, "1", QUERY)
        await ws.close()
        return None if reply["type"] == "next" else -1

    assert asyncio.run(scenario()) == expected


def test_an_open_socket_is_closed_4401_within_a_second_of_its_token_expiring(world, serve):
    served = serve(identity={"leeway_s": 0})
    exp = int(time.time()) + 2
    token = world.token(exp=exp)

    async def scenario() -> tuple[int | None, float]:
        ws = await open_socket(served.url(), additional_headers=bearer(token))
        assert (await operation(ws, "1", QUERY))["type"] == "next"
        return await close_code(ws, timeout_s=10), time.time()

    code, closed_at = asyncio.run(scenario())
    latency = closed_at - exp

    assert code == 4401
    assert 0 <= latency < CLOSE_BUDGET_S, latency
    wait_until(lambda: served.app_saw("disconnect"), 5, "the app to see the disconnect")
    assert served.app_saw("disconnect")[0]["code"] == 4401
    print(f"close after expiry: {latency * 1000:.0f} ms")


def close_after(served: Served, token: str, act: Any) -> tuple[int | None, float]:
    """Open a socket, run act() on another thread once it is open, return (close code, seconds from the
    start of act() to the close arriving at the client: an upper bound that includes act() itself)."""
    acted: list[float] = []
    failed: list[BaseException] = []

    async def scenario() -> tuple[int | None, float]:
        ws = await open_socket(served.url(), additional_headers=bearer(token))
        assert (await operation(ws, "1", QUERY))["type"] == "next"

        def run() -> None:
            try:
                act()
            except BaseException as exc:  # reported by the test thread
                failed.append(exc)

        acted.append(time.monotonic())
        thread = threading.Thread(target=run)
        thread.start()
        code = await close_code(ws, timeout_s=10)
        latency = time.monotonic() - acted[0]
        await asyncio.to_thread(thread.join, 10)
        return code, latency

    result = asyncio.run(scenario())
    assert not failed, failed
    return result


def test_an_open_socket_is_closed_4401_within_a_second_of_its_session_being_revoked(world, serve):
    served = serve()
    code, latency = close_after(
        served, world.token(sid="sess-revoked"),
        lambda: served.gate.risk_store.revoke("sess-revoked", reason="caep session-revoked"),
    )

    assert code == 4401
    assert latency < CLOSE_BUDGET_S, latency
    wait_until(lambda: served.app_saw("disconnect"), 5, "the app to see the disconnect")
    assert served.app_saw("disconnect")[0]["code"] == 4401
    assert len(served.gate.live) == 0
    print(f"close after revocation: {latency * 1000:.0f} ms")


def test_a_risk_raised_to_high_closes_the_socket_with_4403(world, serve):
    served = serve()
    code, latency = close_after(
        served, world.token(sub="bob", sid="sess-bob"),
        lambda: served.gate.risk_store.raise_risk("bob", "high", reason="caep risk-level-change"),
    )
    assert code == 4403 and latency < CLOSE_BUDGET_S, (code, latency)


def test_other_sessions_stay_open_when_one_is_revoked(world, serve):
    served = serve()

    async def scenario() -> dict:
        kept = bearer(world.token(sid="sess-kept"))
        async with await open_socket(served.url(), additional_headers=kept) as ws:
            served.gate.risk_store.revoke("sess-gone", reason="caep session-revoked")
            await asyncio.sleep(0.3)
            return await operation(ws, "1", QUERY)

    assert asyncio.run(scenario())["type"] == "next"


def test_an_open_socket_is_closed_4401_within_a_second_of_a_bundle_swap_that_refuses_it(
    world, serve, stepup_snapshot
):
    served = serve()

    def swap() -> None:
        served.policy.snapshot = stepup_snapshot

    code, latency = close_after(served, world.token(), swap)

    assert code == 4401
    assert latency < CLOSE_BUDGET_S, latency
    print(f"close after bundle swap: {latency * 1000:.0f} ms")


@pytest.mark.integration
def test_with_redis_a_revocation_written_by_another_replica_closes_the_socket_within_a_second(
    world, serve, tmp_path
):
    with redis_server(tmp_path / "redis") as url:
        store = RedisRiskStore.from_url(url)
        served = serve(risk_store=store)
        other_replica = RedisRiskStore.from_url(url)  # its write reaches this gate only through Redis
        try:
            code, latency = close_after(
                served, world.token(sid="sess-elsewhere"),
                lambda: other_replica.revoke("sess-elsewhere", reason="caep session-revoked"),
            )
        finally:
            other_replica.close()
            store.close()

    assert code == 4401
    assert latency < CLOSE_BUDGET_S, latency
    print(f"close after a revocation through Redis pub/sub: {latency * 1000:.0f} ms")


def test_a_device_reported_not_compliant_closes_the_sockets_it_attested_with_4403(world, serve):
    served = serve()
    attested = world.attestation("managed", device_id="dev-ws")

    async def scenario() -> int | None:
        headers = bearer(world.token(), **{"x-device-attestation": attested})
        ws = await open_socket(served.url(), additional_headers=headers)
        assert (await operation(ws, "1", MUTATION))["type"] == "next"  # managed: writes pass
        await asyncio.to_thread(
            served.gate.risk_store.set_posture, "dev-ws", "not-compliant", reason="caep device-compliance"
        )
        return await close_code(ws)

    assert asyncio.run(scenario()) == 4403


def test_sockets_beyond_the_per_process_bound_are_refused_4503(world, serve):
    served = serve()
    served.gate.live = LiveConnections(served.gate.policy, served.gate.risk_store, limit=1)

    async def scenario() -> int | None:
        async with await open_socket(served.url(), additional_headers=bearer(world.token())):
            second = await open_socket(served.url(), additional_headers=bearer(world.token()), init=False)
            return await close_code(second)

    assert asyncio.run(scenario()) == 4503
