"""Reverse-proxy mode: one GET straight to an upstream vs the same GET through `ig-gate serve --upstream`
(gate decision + proxy hop), over real loopback sockets with a keep-alive client. The difference is the
latency the sidecar adds in proxy mode; throughput ceilings come from wrk: bench/proxy_throughput.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bench.proxy_throughput import serve_upstream
from tests.middleware.conftest import US_IP, World, build_world
from tests.support.sidecar import serve_sidecar


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("proxy-bench-world"))


@pytest.fixture(scope="module")
def urls(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(direct upstream URL, sidecar URL proxying to it)."""
    tmp = tmp_path_factory.mktemp("proxy-bench")
    settings = world.settings(geo={"trusted_proxies": ["127.0.0.1/32"]})
    with (
        serve_upstream(tmp / "upstream.log", cpu=None) as upstream,
        serve_sidecar(settings, tmp, "--upstream", upstream.url + "/") as sidecar,
    ):
        yield upstream.url, sidecar.url


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
