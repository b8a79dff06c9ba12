"""Reverse-proxy mode: one GET straight to an upstream vs the same GET through `ig-gate serve --upstream`
(gate decision + proxy hop), over real loopback sockets with a keep-alive client. The difference is the
latency the sidecar adds in proxy mode; throughput ceilings come from wrk (see bench/RESULTS.md)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator

import httpx
import pytest

from tests.middleware.conftest import US_IP, World, build_world
from tests.support.procs import free_port, running
from tests.support.sidecar import serve_sidecar

UPSTREAM_APP = textwrap.dedent("""
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"data":{"me":{"id":"1"}}}'})
""")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("proxy-bench-world"))


@pytest.fixture(scope="module")
def urls(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(direct upstream URL, sidecar URL proxying to it)."""
    tmp = tmp_path_factory.mktemp("proxy-bench")
    (tmp / "upstream_app.py").write_text(UPSTREAM_APP)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(tmp),
        "upstream_app:app",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    settings = world.settings(geo={"trusted_proxies": ["127.0.0.1/32"]})
    with (
        running(argv, port=port, log=tmp / "upstream.log"),
        serve_sidecar(settings, tmp, "--upstream", f"http://127.0.0.1:{port}/") as sidecar,
    ):
        yield f"http://127.0.0.1:{port}", sidecar.url


def _get(benchmark, url: str, headers: dict[str, str]) -> None:
    with httpx.Client(headers=headers) as client:
        assert client.get(url).status_code == 200
        benchmark(client.get, url)


def test_get_direct_to_the_upstream(benchmark, urls):
    _get(benchmark, urls[0] + "/graphql", {})


def test_get_through_the_sidecar_proxy(benchmark, urls, world: World):
    _get(
        benchmark,
        urls[1] + "/graphql",
        {"authorization": f"Bearer {world.token()}", "x-forwarded-for": US_IP},
    )
