"""Work before authentication is bounded, measured on a real server: uvicorn in its own process serving
the demo app behind ZeroTrustMiddleware, driven by real HTTP clients (httpx) over loopback.

An unauthenticated request is refused before its body is read or parsed, and nothing it sends is cached:
its memory does not stay behind, and a flood of them does not slow down a legitimate user.
"""

from __future__ import annotations

import contextlib
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.middleware.conftest import REPO, US_IP, World, query
from tests.support.procs import free_port, running, stop
from tests.support.served_middleware import BAD_TOKEN, FLOOR, junk
from tests.support.sidecar import write_config

MB = 1 << 20


def legitimate(world: World) -> dict[str, str]:
    """Headers of an allowed GraphQL query: a valid token, from a US address."""
    return {
        "authorization": f"Bearer {world.token()}",
        "content-type": "application/json",
        "x-forwarded-for": US_IP,
    }


@pytest.fixture
def served(world: World, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(URL of /graphql, server PID): uvicorn with the middleware in front of the demo app."""
    # loopback is a trusted proxy here, so that the legitimate user is seen from the US (X-Forwarded-For)
    settings = world.settings(geo={"trusted_proxies": ["127.0.0.1/32"]})
    config = write_config(settings, tmp_path / "ig-gate.yaml")
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "--factory", "tests.support.served_middleware:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    env = {"IG_GATE_CONFIG": str(config)}
    with running(argv, port=port, log=tmp_path / "uvicorn.log", env=env, cwd=REPO) as process:
        yield f"http://127.0.0.1:{port}/graphql", process.pid


def rss_bytes(pid: int) -> int:
    """The process's resident set size now (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_150_distinct_1mb_bodies_with_an_invalid_token_leave_no_memory_behind(served, world, record_property):
    url, pid = served
    legit = legitimate(world)
    with httpx.Client(timeout=60.0) as client:
        assert client.post(url, content=query(), headers=legit).status_code == 200
        for n in range(5):  # warm up the refusal path and the server's buffers
            assert client.post(url, content=junk(n), headers=BAD_TOKEN).status_code == 401
        before = rss_bytes(pid)
        for n in range(150):
            response = client.post(url, content=junk(1_000 + n), headers=BAD_TOKEN)
            assert response.status_code == 401
        after = rss_bytes(pid)
    growth = after - before
    record_property("rss_before_mb", round(before / MB, 1))
    record_property("rss_growth_mb", round(growth / MB, 1))
    print(f"\nRSS {before / MB:.1f} MB -> {after / MB:.1f} MB after 150 x 1 MB invalid-token bodies")
    assert growth < 20 * MB


@contextlib.contextmanager
def flooding(url: str, clients: int) -> Iterator[list[subprocess.Popen[Any]]]:
    """`clients` processes posting 1 MB junk with a bad token to url; yielded once each had an answer."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.served_middleware", "flood", url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        for _ in range(clients)
    ]
    try:
        deadline = time.monotonic() + 60
        for proc in procs:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "a junk client got no answer within 60 s"
            assert proc.stdout is not None and proc.stdout.readline().strip() in (b"401", b"closed")
        yield procs
    finally:
        for proc in procs:
            stop(proc)


def latencies_s(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> list[float]:
    """The times of n sequential legitimate GraphQL queries (each must be allowed)."""
    times = []
    body = query()
    for _ in range(n):
        started = time.perf_counter()
        response = client.post(url, content=body, headers=headers)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200
    return times


def test_a_legitimate_users_median_latency_under_a_junk_flood_stays_at_the_servers_floor(
    served, world, record_property
):
    """3 clients post 1 MB `{{{...` documents with a bad token, back to back. Measured against the same
    flood sent to `/floor`, which the server refuses without the gate: what any refusal costs on this
    machine (the kernel and the server receive the junk either way). Phases alternate, so that the load
    of a shared machine falls on both alike."""
    url, _ = served
    floor_url = url.removesuffix("/graphql") + FLOOR
    legit = legitimate(world)
    samples: dict[str, list[float]] = {"idle": [], "floor": [], "gate": []}
    with httpx.Client(timeout=60.0) as client:
        latencies_s(client, url, legit, 50)  # warm: engine compiled, token and decision cached
        for _ in range(3):
            samples["idle"] += latencies_s(client, url, legit, 100)
            for phase, target in (("floor", floor_url), ("gate", url)):
                with flooding(target, clients=3) as procs:
                    samples[phase] += latencies_s(client, url, legit, 100)
                    assert all(proc.poll() is None for proc in procs)  # still flooding when measured
    idle, floor, gate = (statistics.median(samples[k]) * 1e3 for k in ("idle", "floor", "gate"))
    for name, value in (("p50_idle_ms", idle), ("p50_floor_flood_ms", floor), ("p50_gate_flood_ms", gate)):
        record_property(name, round(value, 2))
    print(
        f"\np50 idle {idle:.2f} ms; 3 junk clients: refused by the bare server {floor:.2f} ms, "
        f"refused by the gate {gate:.2f} ms"
    )
    # before the fix each junk document was parsed before the token was checked: hundreds of ms
    assert gate < 2 * floor


def test_nothing_an_unauthenticated_request_sends_enters_a_cache(make_client):
    client = make_client(geo={"trusted_proxies": ["203.0.113.0/24"]})
    gate = client.middleware.gate
    for n in range(20):
        headers = {
            "authorization": f"Bearer not-a-token-{n}",
            "content-type": "application/json",
            "x-forwarded-for": f"198.51.100.{n}",
        }
        body = f'{{"query": "query Q{n} {{ a }}"}}'
        assert client.post("/graphql", content=body, headers=headers).status_code == 401
        assert client.get(f"/graphql?query=%7Bq{n}%7D", headers=headers).status_code == 401
    assert len(gate.classifier._cache) == 0  # no document, no digest of one
    assert not gate._tokens._seen  # no Authorization value
    assert gate.ip_resolver._from_headers_cached.cache_info().currsize == 0  # no X-Forwarded-For
