"""Per-request geo costs: client IP resolution and country lookup against the embedded database."""

from __future__ import annotations

import itertools
import random

import pytest

from ig_gate.geo import ClientIPResolver, GeoReader, TravelAnomalyDetector

PROXIES = ["10.0.0.0/8", "172.16.0.0/12", "2001:db8:ffff::/48"]


@pytest.fixture(scope="module")
def public_ips() -> list[str]:
    rng = random.Random(7)
    return [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(4096)
    ]


def test_country_cached(benchmark) -> None:
    geo = GeoReader()
    geo.country("8.8.8.8")
    assert benchmark(geo.country, "8.8.8.8") == "US"


def test_country_uncached(benchmark, public_ips: list[str]) -> None:
    geo = GeoReader(cache_size=0)
    ips = itertools.cycle(public_ips)
    benchmark(lambda: geo.country(next(ips)))


def test_resolve_untrusted_peer(benchmark) -> None:
    resolver = ClientIPResolver(PROXIES)
    result = benchmark(resolver.resolve, "198.51.100.7", "192.0.2.1", None)
    assert result.address == "198.51.100.7"


def test_resolve_trusted_proxy_x_forwarded_for(benchmark) -> None:
    resolver = ClientIPResolver(PROXIES)
    result = benchmark(resolver.resolve, "10.0.0.2", "192.0.2.1, 198.51.100.7, 10.0.0.3", None)
    assert result.address == "198.51.100.7"


def test_resolve_trusted_proxy_forwarded(benchmark) -> None:
    resolver = ClientIPResolver(PROXIES)
    header = 'for=192.0.2.1, for="198.51.100.7:4711";proto=https, for=10.0.0.3'
    result = benchmark(resolver.resolve, "10.0.0.2", None, header)
    assert result.address == "198.51.100.7"


def test_resolve_then_country_warm(benchmark) -> None:
    resolver = ClientIPResolver(PROXIES)
    geo = GeoReader()

    def signal() -> str | None:
        return geo.country(resolver.resolve("10.0.0.2", "8.8.8.8, 10.0.0.3", None).address)

    assert benchmark(signal) == "US"


def test_anomaly_observe_same_country(benchmark) -> None:
    detector = TravelAnomalyDetector()
    assert benchmark(detector.observe, "alice", "US", 1000.0) is False


def test_resolve_trusted_proxy_new_client(benchmark, public_ips: list[str]) -> None:
    # 4096 clients in a cycle through 1024-entry LRUs: every client misses, the proxies stay cached
    resolver = ClientIPResolver(PROXIES, cache_size=1024)
    headers = itertools.cycle([f"{ip}, 10.0.0.3" for ip in public_ips])
    benchmark(lambda: resolver.resolve("10.0.0.2", next(headers), None))
