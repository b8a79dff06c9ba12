"""WebSockets through `ig-gate serve --upstream` to a real Apollo Server speaking graphql-transport-ws
(graphql-ws) and legacy graphql-ws (subscriptions-transport-ws), tests/apollo/subscriptions.js.

Every operation sent over a socket is decided before the upstream sees it (the upstream counts the
mutations it executed and its open sockets), and an open socket is closed 4401 within a second of its
token expiring, of a CAEP session-revoked event posted to /ssf/events, and of a registry bundle swap
that refuses it; the proxy then closes its upstream connection too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ig_gate.bundles.detached import sign_blob
from ig_gate.bundles.registry import RegistryClient
from ig_gate.middleware.ssf import CAEP
from tests.middleware.conftest import US_IP, World
from tests.middleware.test_websocket_guard import SOCKETS_NEED_STEPUP, signed_bundle
from tests.registry.conftest import start_registry
from tests.sidecar.test_ssf import RECEIVER, SECEVENT, TRANSMITTER, make_set, opaque
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.procs import free_port, running, wait_until
from tests.support.redis_server import redis_server
from tests.support.sidecar import serve_sidecar

APOLLO = Path(__file__).resolve().parents[1] / "apollo"
TRANSPORT, LEGACY = "graphql-transport-ws", "graphql-ws"
MUTATION = 'mutation { rename(name: "mallory") }'
CLOSE_BUDGET_S = 1.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("node") is None or not (APOLLO / "node_modules" / "graphql-ws").is_dir(),
        reason="needs node and tests/apollo/node_modules (`make test` runs npm install there)",
    ),
]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Apollo Server with both WebSocket protocols; yields host:port."""
    port = free_port()
    log = tmp_path_factory.mktemp("apollo-ws") / "subscriptions.log"
    with running(["node", "subscriptions.js"], port=port, log=log, cwd=APOLLO, env={"WS_PORT": str(port)}):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def transmitter() -> KeyPair:
    return make_keypair("ES256", "ssf-ws")


def proxy_settings(world: World, workdir: Path, transmitter: KeyPair, **overrides: Any) -> Any:
    jwks = write_jwks(workdir / "ssf-jwks.json", transmitter)
    return world.settings(
        geo={"trusted_proxies": ["127.0.0.1/32"]},  # clients name their US address in X-Forwarded-For
        identity={"cookie": "ig_session", "leeway_s": 0},
        ssf={"transmitter_jwks": str(jwks), "issuer": TRANSMITTER, "audience": RECEIVER},
        decision_log={"path": str(workdir / "decisions.jsonl")},
        **overrides,
    )


@pytest.fixture(scope="module")
def sidecar(world: World, upstream: str, transmitter: KeyPair, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[str]:
    """`ig-gate serve --upstream` in front of the Apollo Server; yields its client URL."""
    workdir = tmp_path_factory.mktemp("ws-proxy")
    settings = proxy_settings(world, workdir, transmitter)
    with serve_sidecar(settings, workdir, "--upstream", f"http://{upstream}/") as served:
        yield served.url


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/graphql"


async def open_socket(base: str, protocol: str | None = TRANSPORT, *, init: bool = True,
                      **headers: str) -> ClientConnection:
    """A client from US_IP through the trusted loopback proxy; connection_init done when `init`."""
    ws = await connect(ws_url(base), subprotocols=[protocol] if protocol else None, open_timeout=10,
                       additional_headers={"x-forwarded-for": US_IP, **headers})
    if protocol is not None and init:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
    return ws


async def operation(ws: ClientConnection, op_id: str, document: str, kind: str = "subscribe") -> dict:
    await ws.send(json.dumps({"id": op_id, "type": kind, "payload": {"query": document}}))
    while True:  # skip keep-alives (subscriptions-transport-ws sends "ka")
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("id") == op_id:
            return reply


async def close_code(ws: ClientConnection, timeout_s: float = 10.0) -> int | None:
    """The close code the server sends within timeout_s (frames before it, such as ticks, are skipped)."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    return ws.close_code


def upstream_count(upstream: str, field: str) -> int:
    """`renames` (mutations executed) or `sockets` (open WebSockets) straight from the upstream."""
    response = httpx.post(f"http://{upstream}/", json={"query": f"{{ {field} }}"}, timeout=10)
    return response.json()["data"][field]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_mutation_in_a_subscribe_frame_gets_an_error_and_never_reaches_apollo(world, sidecar, upstream):
    before = upstream_count(upstream, "renames")

    async def scenario() -> tuple[dict, dict]:
        async with await open_socket(sidecar, **bearer(world.token())) as ws:
            return await operation(ws, "1", MUTATION), await operation(ws, "2", "{ renames }")

    refused, allowed = asyncio.run(scenario())

    assert refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "STEP_UP_REQUIRED"
    assert allowed == {"id": "2", "type": "next", "payload": {"data": {"renames": before}}}
    assert upstream_count(upstream, "renames") == before


def test_a_mutation_in_a_legacy_start_frame_gets_an_error_and_never_reaches_apollo(world, sidecar, upstream):
    before = upstream_count(upstream, "renames")

    async def scenario() -> tuple[dict, dict]:
        async with await open_socket(sidecar, LEGACY, **bearer(world.token())) as ws:
            refused = await operation(ws, "1", MUTATION, "start")
            return refused, await operation(ws, "2", "{ renames }", "start")

    refused, allowed = asyncio.run(scenario())

    assert refused["type"] == "error" and refused["payload"]["extensions"]["code"] == "STEP_UP_REQUIRED"
    assert allowed["type"] == "data" and allowed["payload"]["data"]["renames"] == before
    assert upstream_count(upstream, "renames") == before


def test_a_managed_device_may_send_the_mutation(world, sidecar, upstream):
    before = upstream_count(upstream, "renames")
    headers = {**bearer(world.token()), "x-device-attestation": world.attestation("managed")}

    async def scenario() -> dict:
        async with await open_socket(sidecar, **headers) as ws:
            return await operation(ws, "1", MUTATION)

    assert asyncio.run(scenario())["type"] == "next"
    assert upstream_count(upstream, "renames") == before + 1


def test_a_socket_offering_no_graphql_subprotocol_is_refused_4400(world, sidecar):
    async def scenario() -> int | None:
        return await close_code(await open_socket(sidecar, None, **bearer(world.token())))

    assert asyncio.run(scenario()) == 4400


def test_a_cookie_socket_from_another_origin_is_refused_4403(world, sidecar):
    headers = {"cookie": f"ig_session={world.token()}", "origin": "https://evil.example"}

    async def scenario() -> int | None:
        return await close_code(await open_socket(sidecar, init=False, **headers))

    assert asyncio.run(scenario()) == 4403


def closed_after(base: str, token: str, act: Callable[[], Any]) -> tuple[int | None, float]:
    """Open a socket with a live subscription, run act() on another thread, return (close code, seconds
    from the start of act() to the close reaching the client: an upper bound, act() included)."""
    acted: list[float] = []
    failed: list[BaseException] = []

    async def scenario() -> tuple[int | None, float]:
        ws = await open_socket(base, **bearer(token))
        assert (await operation(ws, "1", "subscription { ticks }"))["type"] == "next"

        def run() -> None:
            try:
                act()
            except BaseException as exc:  # reported by the test thread
                failed.append(exc)

        acted.append(time.monotonic())
        thread = threading.Thread(target=run)
        thread.start()
        code = await close_code(ws)
        latency = time.monotonic() - acted[0]
        await asyncio.to_thread(thread.join, 10)
        return code, latency

    result = asyncio.run(scenario())
    assert not failed, failed
    return result


def upstream_closed_its_socket(upstream: str) -> None:
    wait_until(lambda: upstream_count(upstream, "sockets") == 0, 5, "the proxy to close its upstream socket")


def test_a_caep_session_revoked_event_closes_the_open_socket_4401_within_a_second(
    world, sidecar, upstream, transmitter
):
    event = make_set(transmitter, {CAEP + "session-revoked": {}}, sub_id=opaque("sess-ws-revoked"))

    def post() -> None:
        response = httpx.post(sidecar + "/ssf/events", content=event, headers=SECEVENT, timeout=10)
        assert response.status_code == 202

    code, latency = closed_after(sidecar, world.token(sid="sess-ws-revoked"), post)

    assert code == 4401
    assert latency < CLOSE_BUDGET_S, latency
    upstream_closed_its_socket(upstream)
    print(f"proxy: close after CAEP session-revoked: {latency * 1000:.0f} ms")


def test_an_open_socket_is_closed_4401_within_a_second_of_its_token_expiring(world, sidecar, upstream):
    exp = int(time.time()) + 3
    token = world.token(exp=exp)

    async def scenario() -> tuple[int | None, float]:
        ws = await open_socket(sidecar, **bearer(token))
        assert (await operation(ws, "1", "subscription { ticks }"))["type"] == "next"
        return await close_code(ws), time.time()

    code, closed_at = asyncio.run(scenario())
    latency = closed_at - exp

    assert code == 4401
    assert 0 <= latency < CLOSE_BUDGET_S, latency
    upstream_closed_its_socket(upstream)
    print(f"proxy: close after token expiry: {latency * 1000:.0f} ms")


def test_a_registry_bundle_swap_that_refuses_the_socket_closes_it_4401(
    world, upstream, transmitter, tmp_path
):
    registry = start_registry(tmp_path / "registry")
    try:
        client = RegistryClient(registry.host, plain_http=True)

        def publish(name: str, version: str, extra_rego: str = "") -> None:
            archive = signed_bundle(world, tmp_path, name, extra_rego, version).read_bytes()
            client.push("policies/ws", "prod", archive, sign_blob(archive, world.bundle_key.private_pem))

        publish("base", "1.0.0")
        settings = proxy_settings(
            world, tmp_path, transmitter,
            bundle={"path": None, "registry": registry.host, "repository": "policies/ws", "plain_http": True,
                    "state_dir": str(tmp_path / "state"), "poll_interval_s": 0.2},
            rollout={"enabled": False},
        )
        with serve_sidecar(settings, tmp_path, "--upstream", f"http://{upstream}/") as served:
            token = world.token()
            query = {"query": "{ renames }"}
            wait_until(
                lambda: httpx.post(served.url + "/graphql", json=query, timeout=5,
                                   headers={**bearer(token), "x-forwarded-for": US_IP}).status_code == 200,
                20, "the sidecar to activate the first bundle",
            )
            code, latency = closed_after(
                served.url, token, lambda: publish("stepup", "1.1.0", SOCKETS_NEED_STEPUP)
            )
        assert code == 4401
        # from the push: the manager polls every 0.2 s, then the gate re-decides within CLOSE_BUDGET_S
        assert latency < 0.2 * 1.1 + CLOSE_BUDGET_S, latency
        upstream_closed_its_socket(upstream)
        print(f"proxy: close after bundle push (poll 0.2 s included): {latency * 1000:.0f} ms")
    finally:
        registry.stop()


def test_with_redis_a_revocation_received_by_another_replica_closes_the_socket_within_a_second(
    world, upstream, transmitter, tmp_path
):
    with redis_server(tmp_path / "redis") as redis_url:
        settings = proxy_settings(world, tmp_path, transmitter, risk_store={"redis_url": redis_url})
        with (
            serve_sidecar(settings, tmp_path, "--upstream", f"http://{upstream}/", name="a") as a,
            serve_sidecar(settings, tmp_path, "--upstream", f"http://{upstream}/", name="b") as b,
        ):
            event = make_set(transmitter, {CAEP + "session-revoked": {}}, sub_id=opaque("sess-replicas"))

            def post_to_b() -> None:
                response = httpx.post(b.url + "/ssf/events", content=event, headers=SECEVENT, timeout=10)
                assert response.status_code == 202

            code, latency = closed_after(a.url, world.token(sid="sess-replicas"), post_to_b)

    assert code == 4401
    assert latency < CLOSE_BUDGET_S, latency
    upstream_closed_its_socket(upstream)
    print(f"proxy: close on replica a after a CAEP event received by replica b: {latency * 1000:.0f} ms")
