"""A warm forward-auth call and warm coprocessor calls through the whole sidecar ASGI app (Starlette
routing included), driven directly (no server, no event loop): what the sidecar adds on top of the gate.

Warm: known token and attestation, known client IP, memoized decision; metrics on, decision log off.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bench.test_middleware_path import drive, timed
from ig_gate.sidecar.app import create_app
from tests.middleware.conftest import US_IP, World, build_world

ROUTER_BODY = json.dumps({"query": "query Me { me { id name } }", "operationName": "Me"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("bench-sidecar-world"))


@pytest.fixture(scope="module")
def app(world: World) -> Any:
    # one trusted hop (a load balancer before the Router): the coprocessor calls decide on geo, as deployed
    sidecar = create_app(world.settings(decision_log={"path": None}, server={"coprocessor_trusted_hops": 1}))
    yield sidecar
    sidecar.state.sidecar.gate.close()


class Counted:
    """A prepared call in the shape `timed` expects: `call()` runs it, `made` counts the runs."""

    def __init__(self, run: Callable[[], int]) -> None:
        self.made = 0
        self._run = run

    def call(self) -> int:
        self.made += 1
        return self._run()


def call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> Counted:
    """A prepared request; `call()` runs the app once and returns the response status."""
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(sent: dict[str, Any]) -> None:
        if sent["type"] == "http.response.start":
            statuses.append(sent["status"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8181"), *headers, (b"content-length", str(len(body)).encode())],
        "client": ("10.0.0.2", 40000), "server": ("127.0.0.1", 8181), "state": {},
    }

    def run() -> int:
        drive(app(scope, receive, send))
        return statuses.pop()

    return Counted(run)


def coprocessor_payload(world: World, stage: str, **extra: Any) -> bytes:
    headers = {
        "authorization": [f"Bearer {world.token(sub='bench-copro')}"],
        "content-type": ["application/json"],
        "x-forwarded-for": [US_IP],
        "x-device-attestation": [world.attestation("managed", sub="bench-copro")],
    }
    payload = {
        "version": 1, "stage": stage, "control": "continue", "id": "1b19c05fdafc521016df33148ad63c1b",
        "headers": headers, "context": {"entries": {"accepts-json": True}}, **extra,
    }
    return json.dumps(payload).encode()


def test_forward_auth_warm_call(benchmark: Any, world: World, app: Any) -> None:
    headers = [
        (b"authorization", f"Bearer {world.token(sub='bench-fa')}".encode()),
        (b"x-device-attestation", world.attestation("managed", sub="bench-fa").encode()),
        (b"x-forwarded-for", US_IP.encode()),
        (b"x-original-uri", b"/graphql?query=%7Bme%7Bid%7D%7D"),
        (b"x-original-method", b"GET"),
    ]
    run = call(app, "GET", "/authz", headers, b"")
    assert run.call() == 200
    timed(benchmark, run, rounds=100, iterations=200)


def test_coprocessor_router_request_warm_call(benchmark: Any, world: World, app: Any) -> None:
    body = coprocessor_payload(world, "RouterRequest", body=ROUTER_BODY, path="/", method="POST")
    run = call(app, "POST", "/apollo/coprocessor", [(b"content-type", b"application/json")], body)
    assert run.call() == 200
    timed(benchmark, run, rounds=100, iterations=200)


def test_coprocessor_supergraph_request_with_three_policies(benchmark: Any, world: World, app: Any) -> None:
    body = coprocessor_payload(
        world, "SupergraphRequest", body=json.loads(ROUTER_BODY),
        context={"entries": {"apollo::authorization::required_policies": dict.fromkeys(
            ["read_profile", "admin", "billing"])}},
    )
    run = call(app, "POST", "/apollo/coprocessor", [(b"content-type", b"application/json")], body)
    assert run.call() == 200
    timed(benchmark, run, rounds=100, iterations=200)

