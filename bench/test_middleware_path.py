"""What ZeroTrustMiddleware adds per request, driving the ASGI callable directly (no server, no event loop).

(a) a no-op ASGI app called directly; (b) the same app behind the middleware on a warm request (known
token, known IP, memoized decision; metrics and the decision log on); (c) the cold path: a new ES256 token,
a new client IP and an engine evaluation (memo miss). Nothing awaited here ever suspends, so each request
is one `coroutine.send(None)`: the per-request overhead of the harness is the same for (a) and (b).
Each benchmark freezes the heap once its setup is done, as the middleware does when a server has started
(`server.gc_freeze`). Targets (issue 3): (b) - (a) <= 10 us median; (c) <= 300 us p99 (in extra_info).
"""

from __future__ import annotations

import gc
import ipaddress
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ig_gate.middleware.asgi import ZeroTrustMiddleware, freeze_heap
from tests.middleware.conftest import World, build_world
from tests.support import tokens

BODY = json.dumps({"query": "query Me { me { id name } }", "operationName": "Me"}).encode()
REQUEST = {"type": "http.request", "body": BODY, "more_body": False}
COLD_ROUNDS = 2000
ALLOWED = {"outcome": "allow", "reason": "ok", "tenant": "acme", "profile": "read"}


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
def started() -> Any:
    """`started()` does what the middleware does at lifespan startup complete (server.gc_freeze):
    freeze the heap built so far; the benchmark calls it when its setup is done. Unfrozen afterwards."""
    yield freeze_heap
    gc.unfreeze()


def protect(world: World, log_path: Path | None) -> ZeroTrustMiddleware:
    log = {"path": str(log_path), "queue_size": 10_000_000} if log_path else {"path": None}
    protected = ZeroTrustMiddleware(noop_app, config=world.settings(decision_log=log))
    protected.system.start()  # what lifespan startup does (no lazy start off an event loop on the first call)
    return protected


@pytest.fixture
def middleware(world: World, tmp_path: Path) -> Any:
    protected = protect(world, tmp_path / "decisions.jsonl")
    yield protected
    protected.gate.close()


class Request:
    """A prepared request: `call()` drives `app` once; `made` counts the calls.

    Counting (rather than deriving the number from rounds and iterations) holds under
    --benchmark-disable, where pedantic calls the target once; it costs the same in every benchmark.
    """

    def __init__(self, app: Callable[..., Coroutine[Any, Any, None]], token: str, peer: str) -> None:
        prepared = scope(token, peer)
        self.made = 0

        def call() -> None:
            self.made += 1
            drive(app(prepared, receive, send))

        self.call = call


def timed(benchmark: Any, request: Request, rounds: int = 200, iterations: int = 1000) -> None:
    """benchmark.pedantic, plus the serving thread's own CPU time per call in extra_info (it excludes
    what other threads, such as the decision-log writer, take from this core)."""
    started, made = time.thread_time(), request.made
    benchmark.pedantic(request.call, iterations=iterations, rounds=rounds, warmup_rounds=2)
    cpu = (time.thread_time() - started) / (request.made - made)
    benchmark.extra_info["serving_thread_cpu_us"] = round(cpu * 1e6, 2)


def test_a_noop_app_alone(benchmark, started):
    request = Request(noop_app, "x", "203.0.113.5")
    started()
    timed(benchmark, request)


def test_b_warm_request_through_the_middleware(benchmark, world, middleware, started):
    request = Request(middleware, tokens.session_token(world.idp), "203.0.113.5")
    request.call()
    started()
    timed(benchmark, request)
    metrics = middleware.gate.metrics.registry.get_sample_value
    assert metrics("ig_gate_decisions_total", ALLOWED) == request.made
    lookups = [metrics("ig_gate_memo_lookups_total", {"result": r}) or 0 for r in ("hit", "miss")]
    assert sum(lookups) == request.made  # misses: at most one a second (auth_age_s is in the input)
    log = middleware.gate.decision_log
    log.close(timeout_s=300)
    assert (log.written, log.dropped) == (request.made, 0)
    benchmark.extra_info["decision_log_written"] = log.written


def test_b_warm_request_without_the_decision_log(benchmark, world, started):
    protected = protect(world, None)
    request = Request(protected, tokens.session_token(world.idp), "203.0.113.5")
    request.call()
    started()
    timed(benchmark, request)
    protected.gate.close()
    allowed = protected.gate.metrics.registry.get_sample_value("ig_gate_decisions_total", ALLOWED)
    assert allowed == request.made


def test_c_cold_request_new_token_new_ip_engine_eval(benchmark, world, middleware, started):
    peers = [str(ip) for ip in ipaddress.ip_network("11.0.0.0/16").hosts()]
    pending = [
        Request(middleware, tokens.session_token(world.idp, sub=f"user-{i}"), peers[i % len(peers)])
        for i in range(COLD_ROUNDS + 10)
    ]
    made: list[Request] = []
    started()

    def next_request() -> tuple[tuple[Request], dict[str, Any]]:
        made.append(pending.pop())
        return (made[-1],), {}

    benchmark.pedantic(
        lambda request: request.call(), setup=next_request, rounds=COLD_ROUNDS, warmup_rounds=10
    )
    if not benchmark.disabled:
        data = sorted(benchmark.stats.stats.data)
        benchmark.extra_info["p99_us"] = round(data[int(len(data) * 0.99)] * 1e6, 1)
        benchmark.extra_info["median_us"] = round(data[len(data) // 2] * 1e6, 1)
    calls = sum(request.made for request in made)
    metrics = middleware.gate.metrics.registry.get_sample_value
    assert calls >= 1
    assert metrics("ig_gate_memo_lookups_total", {"result": "miss"}) == calls  # every call evaluated
    assert metrics("ig_gate_decisions_total", ALLOWED) == calls
