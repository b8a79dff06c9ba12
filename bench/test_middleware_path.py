"""What ZeroTrustMiddleware adds per request, driving the ASGI callable directly (no server, no event loop).

(a) a no-op ASGI app called directly; (b) the same app behind the middleware on a warm request (known
token, known IP, memoized decision; metrics and the decision log on); (c) the cold path: a new ES256 token,
a new client IP and an engine evaluation (memo miss). Nothing awaited here ever suspends, so each request
is one `coroutine.send(None)`: the per-request overhead of the harness is the same for (a) and (b).
Targets (issue 3): (b) - (a) <= 10 us median; (c) <= 300 us p99 (reported in extra_info).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ig_gate.middleware.asgi import ZeroTrustMiddleware
from tests.middleware.conftest import World, build_world
from tests.support import tokens

BODY = json.dumps({"query": "query Me { me { id name } }", "operationName": "Me"}).encode()
REQUEST = {"type": "http.request", "body": BODY, "more_body": False}
COLD_ROUNDS = 2000


async def noop_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def receive() -> dict[str, Any]:
    return REQUEST


async def send(message: Any) -> None:
    return None


def scope(token: str, peer: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"api.example.test"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"application/json"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": (peer, 40000),
        "server": ("10.0.0.1", 443),
        "state": {},
    }


def drive(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends to completion."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("the request suspended: the benchmark harness cannot drive it")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("bench-world"))


@pytest.fixture
def middleware(world: World, tmp_path: Path) -> Any:
    settings = world.settings(
        decision_log={"path": str(tmp_path / "decisions.jsonl"), "queue_size": 10_000_000}
    )
    protected = ZeroTrustMiddleware(noop_app, config=settings)
    yield protected
    protected.gate.close()


def request(app: Callable[..., Coroutine[Any, Any, None]], token: str, peer: str) -> Callable[[], None]:
    prepared = scope(token, peer)
    return lambda: drive(app(prepared, receive, send))


def test_a_noop_app_alone(benchmark):
    benchmark.pedantic(request(noop_app, "x", "203.0.113.5"), iterations=1000, rounds=200, warmup_rounds=2)


def test_b_warm_request_through_the_middleware(benchmark, world, middleware):
    call = request(middleware, tokens.session_token(world.idp), "203.0.113.5")
    call()
    benchmark.pedantic(call, iterations=1000, rounds=200, warmup_rounds=2)
    metrics = middleware.gate.metrics.registry.get_sample_value
    assert (
        metrics(
            "ig_gate_decisions_total",
            {"outcome": "allow", "reason": "ok", "tenant": "acme", "profile": "read"},
        )
        >= 200_000
    )
    assert metrics("ig_gate_memo_lookups_total", {"result": "hit"}) >= 200_000
    middleware.gate.decision_log.close(timeout_s=300)
    benchmark.extra_info["decision_log_dropped"] = middleware.gate.decision_log.dropped


def test_c_cold_request_new_token_new_ip_engine_eval(benchmark, world, middleware):
    peers = [str(ip) for ip in ipaddress.ip_network("11.0.0.0/16").hosts()]
    pending = [
        request(middleware, tokens.session_token(world.idp, sub=f"user-{i}"), peers[i % len(peers)])
        for i in range(COLD_ROUNDS + 10)
    ]
    benchmark.pedantic(
        lambda call: call(), setup=lambda: ((pending.pop(),), {}), rounds=COLD_ROUNDS, warmup_rounds=10
    )
    data = sorted(benchmark.stats.stats.data)
    benchmark.extra_info["p99_us"] = round(data[int(len(data) * 0.99)] * 1e6, 1)
    benchmark.extra_info["median_us"] = round(data[len(data) // 2] * 1e6, 1)
    metrics = middleware.gate.metrics.registry.get_sample_value
    assert metrics("ig_gate_memo_lookups_total", {"result": "miss"}) >= COLD_ROUNDS
