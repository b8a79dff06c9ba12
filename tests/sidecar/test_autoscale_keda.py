"""The recommendation reaches KEDA as its `metrics-api` scaler reads it: two real `ig-gate serve` processes
share one real Redis; a client doing what KEDA does (GET the URL, parse the JSON, take `valueLocation`)
asks one of them and gets replicas for the demand both saw."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.middleware.conftest import US_IP, World
from tests.support.redis_server import redis_server
from tests.support.sidecar import serve_sidecar

REPO = Path(__file__).resolve().parents[2]
SCALED_OBJECT = REPO / "deploy" / "keda-scaledobject.yaml"


def keda_metrics_api(url: str, value_location: str) -> float:
    """What KEDA's metrics-api scaler does each polling interval: GET, JSON, a GJSON-style dotted path."""
    response = httpx.get(url, headers={"accept": "application/json"}, timeout=5)
    response.raise_for_status()
    value: Any = response.json()
    for part in value_location.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return float(value)


def until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def gauge(admin_url: str, name: str, default: float | None = None, **labels: str) -> float:
    """A sample's value from the admin listener's /metrics, parsed as Prometheus does."""
    text = httpx.get(f"{admin_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    if default is not None:
        return default
    raise AssertionError(f"{name}{labels} not exported")


def test_keda_metrics_api_reads_the_fleet_recommendation_from_any_process(
    world: World, tmp_path: Path
) -> None:
    trigger = next(yaml.safe_load_all(SCALED_OBJECT.read_text()))["spec"]["triggers"][0]
    assert trigger["type"] == "metrics-api" and trigger["metricType"] == "AverageValue"
    path = "/" + trigger["metadata"]["url"].split("/", 3)[3]  # /autoscale/gateway
    location = trigger["metadata"]["valueLocation"]
    with redis_server(tmp_path / "redis") as redis_url:
        settings = world.settings(
            risk_store={"redis_url": redis_url},
            autoscale={"tick_s": 0.5, "ewma_half_life_s": 1.0, "up_cooldown_s": 0, "profiles": {
                "gateway": {"read_qps_per_pod": 2, "min_replicas": 1, "max_replicas": 40}}},
        )
        with serve_sidecar(settings, tmp_path / "a", name="a") as a, \
                serve_sidecar(settings, tmp_path / "b", name="b") as b:
            headers = {"authorization": f"Bearer {world.token()}", "x-forwarded-for": US_IP,
                       "x-forwarded-method": "GET", "x-forwarded-uri": "/graphql?query=%7Bme%7Bid%7D%7D"}
            url = f"http://127.0.0.1:{{}}{path}"
            stop = threading.Event()

            def load() -> None:  # ~10 req/s to each process until the recommendation is seen
                with httpx.Client(timeout=5) as client:
                    while not stop.wait(0.1):
                        for served in (a, b):
                            client.get(f"{served.url}/authz", headers=headers)

            def fleet_seen() -> tuple[float, float] | None:
                replicas = keda_metrics_api(url.format(a.admin_port), location)
                own = gauge(a.admin_url, "ig_gate_profile_rate", 0.0, route="/graphql", tenant="acme",
                            profile="read")  # 0 until the first tick that saw a request
                # a's own rate alone asks own/2 pods at 2 reads/s a pod; both processes' about twice that
                return (replicas, own) if own > 3 and replicas >= 1.6 * own / 2 else None

            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            try:
                replicas, own = until(fleet_seen, 20, "a recommendation for the demand of both processes")
            finally:
                stop.set()
                loader.join()
            assert replicas == int(replicas) and 1 <= replicas <= 40
            body = httpx.get(url.format(a.admin_port), timeout=5).json()
            assert body["component"] == "gateway" and body["dominant"] == "read"
            assert gauge(a.admin_url, "ig_gate_autoscale_desired_replicas", component="gateway") >= own / 2
            assert httpx.get(f"{a.admin_url}/autoscale/nope", timeout=5).status_code == 404
            assert httpx.get(f"{a.url}{path}", timeout=5).status_code != 200  # not on the client port
