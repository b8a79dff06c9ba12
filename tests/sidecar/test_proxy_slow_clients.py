"""One slow client cannot exhaust the proxy (issue 9, item 7): `ig-gate serve --upstream` in front of a
real upstream that reads every request body (tests/sidecar/test_proxy.py's uvicorn app; Apollo Server
answers non-JSON bodies without reading them, so it would not hold a trickling upload) and of the echo
upstream, attacked over raw sockets.

Every client reaches the sidecar from 127.0.0.1 (a trusted proxy here) and names its address in
X-Forwarded-For: the trickling attacker is TRICKLER_IP, the other user US_IP.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.middleware.conftest import US_IP, World
from tests.sidecar.test_proxy import Upstream, serve, upstream_app
from tests.support.echo_upstream import echo_running
from tests.support.procs import wait_until
from tests.support.sidecar import Served, serve_sidecar

TRICKLER_IP = "203.0.113.66"  # US, like the other user, but another address
TRICKLERS = 260

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reading_port() -> Iterator[int]:
    """An upstream (uvicorn) whose every route reads the whole request body before answering."""
    with serve(upstream_app(Upstream())) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def echo_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with echo_running(tmp_path_factory.mktemp("echo-slow")) as port:
        yield port


def _served(world: World, tmp: Path, upstream_port: int, **server: Any) -> Any:
    settings = world.settings(
        geo={"trusted_proxies": ["127.0.0.1/32"]},
        server={"upstream": f"http://127.0.0.1:{upstream_port}", **server},
        decision_log={"path": str(tmp / "decisions.jsonl")},
    )
    return serve_sidecar(settings, tmp)


def _upload_head(
    world: World,
    served: Served,
    length: int,
    target: str = "/upload",
    content_type: str = "application/octet-stream",
) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
        f"Authorization: Bearer {world.token(risk='low', sub='trickler')}\r\n"
        f"X-Device-Attestation: {world.attestation('managed', sub='trickler')}\r\n"
        f"X-Forwarded-For: {TRICKLER_IP}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _decisions(served: Served) -> int:
    log = served.log.with_name("decisions.jsonl")
    return log.read_bytes().count(b"\n") if log.exists() else 0


def _timed_get(world: World, served: Served, target: str, client_ip: str = US_IP) -> tuple[int, float, Any]:
    """(status, seconds, response headers) of one GET as an allowed user."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    started = time.perf_counter()
    try:
        conn.request(
            "GET",
            target,
            headers={
                "authorization": f"Bearer {world.token(risk='low')}",
                "x-forwarded-for": client_ip,
            },
        )
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started, response.headers
    finally:
        conn.close()


def test_260_uploads_trickling_one_byte_a_second_leave_another_user_served(world, tmp_path, reading_port):
    # the per-client cap is lifted above TRICKLERS: this shows that a trickling body holds no pool slot
    # (256 connections), not only that one address is capped. On the code before the fix every trickler
    # held a slot and the other user got 504 after the 3 s upstream timeout.
    limits = {"upstream_timeout_s": 3.0, "max_upstream_per_client": 300}
    with _served(world, tmp_path, reading_port, **limits) as served:
        idle = [_timed_get(world, served, "/echo")[1] for _ in range(5)]
        head = _upload_head(world, served, 10_000)
        sockets = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(TRICKLERS)]
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(1.0):
                for sock in sockets:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")

        for sock in sockets:
            sock.sendall(head + b"x")
        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            before = 5
            wait_until(lambda: _decisions(served) >= before + TRICKLERS, 30, "every upload to be let in")
            during = [_timed_get(world, served, "/echo") for _ in range(5)]
        finally:
            stop.set()
            trickler.join(5)
            for sock in sockets:
                sock.close()
    statuses = [status for status, _, _ in during]
    latencies = [seconds for _, seconds, _ in during]
    print(
        f"\n{TRICKLERS} trickling uploads: other user p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms (idle p50 {statistics.median(idle) * 1000:.1f} ms)"
    )
    assert statuses == [200] * 5
    assert max(latencies) < 2.0  # a pool slot never waited for (the upstream timeout is 3 s)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65_536):
        data += chunk
    return data


# an upload is read by the proxy; JSON on the GraphQL path by the gate, to classify the operation
SLOW_BODIES = [("/upload", "application/octet-stream"), ("/graphql", "application/json")]


@pytest.mark.parametrize(("target", "kind"), SLOW_BODIES)
def test_a_body_that_has_not_arrived_within_the_deadline_gets_408(world, tmp_path, echo_port, target, kind):
    with _served(world, tmp_path, echo_port, client_body_timeout_s=1.0) as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(_upload_head(world, served, 100, target, kind) + b"{")
            answer = _read_response(sock)  # the sidecar closes the connection after its answer
            elapsed = time.monotonic() - started
        assert _timed_get(world, served, "/echo")[0] == 200  # the proxy is fine
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(body)["error"] == "client_body_timeout"
    assert 0.9 <= elapsed < 8


def test_concurrent_upstream_exchanges_per_client_address_are_capped_with_429(world, tmp_path, echo_port):
    with _served(world, tmp_path, echo_port, max_upstream_per_client=2) as served:
        slow = "/slow?delay_ms=3000"
        with ThreadPoolExecutor(4) as pool:
            first = [pool.submit(_timed_get, world, served, slow, TRICKLER_IP) for _ in range(2)]
            wait_until(lambda: _decisions(served) >= 2, 10, "two slow exchanges to be under way")
            third = _timed_get(world, served, slow, TRICKLER_IP)
            other = _timed_get(world, served, "/echo", US_IP)
            statuses = sorted(f.result()[0] for f in first)
    status, _, headers = third
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert statuses == [200, 200]
    assert other[0] == 200  # another address is not capped
