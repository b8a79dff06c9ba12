"""The event loop never waits on the remote PDP: uvicorn in its own process serving the demo app behind
ZeroTrustMiddleware with `bundle.remote_opa_url` set to a real `ig-gate serve` (its OPA-compatible Data
API), which the test pauses (SIGSTOP) while a request that needs it is waiting.

The request that needs the remote waits at most its timeout (1 s) and is decided by failure_mode
(503 engine_error); requests the memo can answer keep being answered meanwhile, fast; SIGCONT brings
remote decisions back. The same path through `Gate.decide_async` in-process: a memo hit never asks."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.gate import GateRequest
from ig_gate.middleware.remote_pdp import RemotePolicySource
from tests.middleware.conftest import REPO, US_IP, World, query
from tests.sidecar.test_redis_paused import percentile
from tests.support.procs import free_port, running, wait_until
from tests.support.served_middleware import serve_argv
from tests.support.sidecar import Served, serve_sidecar, write_config

pytestmark = pytest.mark.integration


def headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json", "x-forwarded-for": US_IP}


@pytest.fixture
def pdp(world: World, tmp_path: Path) -> Iterator[Served]:
    """A real `ig-gate serve` whose admin listener answers the Data API (the remote PDP)."""
    with serve_sidecar(world.settings(), tmp_path / "pdp") as served:
        try:
            yield served
        finally:
            os.kill(served.process.pid, signal.SIGCONT)  # never leave it stopped (it is stopped by PID next)


@pytest.fixture
def served(world: World, tmp_path: Path, pdp: Served) -> Iterator[str]:
    """URL of /graphql: uvicorn (its own process) with the middleware asking the remote PDP."""
    settings = world.settings(
        geo={"trusted_proxies": ["127.0.0.1/32"]},
        bundle={"remote_opa_url": pdp.admin_url},
        memo={"ttl_s": 60.0},  # the warm input stays memoized for the whole test
    )
    config = write_config(settings, tmp_path / "ig-gate.yaml")
    port = free_port()
    env = {"IG_GATE_CONFIG": str(config)}
    with running(serve_argv(port), port=port, log=tmp_path / "uvicorn.log", env=env, cwd=REPO):
        yield f"http://127.0.0.1:{port}/graphql"


def timed(client: httpx.Client, url: str, token: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post(url, content=query(), headers=headers(token))
    return time.perf_counter() - started, response


def test_a_stalled_remote_pdp_delays_only_the_request_that_waits_for_it(served, pdp, world, record_property):
    url = served
    warm = world.token(sub="warm")
    cold: dict[str, Any] = {}

    def ask_cold() -> None:  # a new input: a memo miss that must ask the stopped remote
        with httpx.Client(timeout=10.0) as other:
            cold["seconds"], response = timed(other, url, world.token(sub="cold"))
        cold["status"], cold["text"] = response.status_code, response.text

    with httpx.Client(timeout=10.0) as client:
        wait_until(lambda: timed(client, url, warm)[1].status_code == 200, 20, "a remote decision (200)")
        before = [timed(client, url, warm)[0] for _ in range(500)]  # this machine's noise, same server
        os.kill(pdp.process.pid, signal.SIGSTOP)
        try:
            asking = threading.Thread(target=ask_cold)
            asking.start()
            during: list[float] = []
            while asking.is_alive():
                seconds, response = timed(client, url, warm)
                assert response.status_code == 200, response.text  # memoized: the remote is not asked
                during.append(seconds)
            asking.join()
        finally:
            os.kill(pdp.process.pid, signal.SIGCONT)
        fresh = world.token(sub="after-resume")
        wait_until(lambda: timed(client, url, fresh)[1].status_code == 200, 15, "remote decisions again")

    assert cold["status"] == 503 and "engine_error" in cold["text"]  # failure_mode closed
    assert 0.9 < cold["seconds"] < 3.0  # it waited for the remote's timeout (1 s), no longer
    p50, p99, worst = statistics.median(during) * 1e3, percentile(during, 0.99) * 1e3, max(during) * 1e3
    p99_before = percentile(before, 0.99) * 1e3
    for name, value in (
        ("cold_request_s", cold["seconds"]), ("warm_requests_meanwhile", len(during)),
        ("p50_meanwhile_ms", p50), ("p99_meanwhile_ms", p99), ("max_meanwhile_ms", worst),
        ("p99_before_ms", p99_before),
    ):
        record_property(name, round(value, 3))
    print(f"\nremote PDP stopped: the cold request waited {cold['seconds']:.2f} s; meanwhile "
          f"{len(during)} warm requests p50 {p50:.2f} ms p99 {p99:.2f} ms max {worst:.1f} ms "
          f"(before: p99 {p99_before:.2f} ms)")
    assert worst < 250.0  # no warm request waited for the remote
    assert len(during) >= 50  # the loop kept serving while the cold request waited
    assert p99 < max(5.0, 1.5 * p99_before + 1.0)


def test_decide_async_asks_the_remote_on_a_memo_miss_only_and_decides_like_decide(
    pdp: Served, world: World
) -> None:
    remote = RemotePolicySource(pdp.admin_url)
    gate = build_gate(world.settings(), policy=remote)
    body = query().encode()
    request = GateRequest(
        "POST", "/graphql", b"", headers(world.token(sub="async-a")), "203.0.113.5", body
    )
    try:
        assert gate.awaits_remote
        first = asyncio.run(gate.decide_async(request))
        second = asyncio.run(gate.decide_async(request))
        assert (first.outcome, second.outcome) == ("allow", "allow")
        assert first.revision == f"remote:{pdp.admin_url}"
        assert remote.status()["evaluations"] == 1  # the second came from the memo
        assert gate.decide(request).outcome == first.outcome  # the blocking path agrees
    finally:
        gate.close()
        remote.close()
