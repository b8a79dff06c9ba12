"""Operations endpoints (/healthz, /readyz; on the admin listener also /metrics, /v1/status) and the
never-a-500 promise."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ig_gate.middleware.compose import policy_wiring
from ig_gate.middleware.settings import ConfigError
from tests.middleware.conftest import US_IP, World
from tests.sidecar.conftest import ADMIN
from tests.support.procs import free_port, wait_until


def test_healthz_is_alive_and_readyz_names_the_active_revision(make_sidecar: Any) -> None:
    client = make_sidecar()
    assert client.get("/healthz").text == "ok"
    assert client.get("/readyz").json() == {"ready": True}  # the client port says no more
    ready = client.get(f"{ADMIN}/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["revision"].startswith("1.0.0+")


def test_readyz_is_503_with_the_reason_when_no_verified_bundle_is_active(
    make_sidecar: Any, world: World
) -> None:
    tampered = world.root / "tampered.tgz"
    tampered.write_bytes(world.bundle_path.read_bytes()[:-40] + b"\0" * 40)
    client = make_sidecar(bundle={"path": str(tampered)})
    assert client.get("/readyz").status_code == 503
    response = client.get(f"{ADMIN}/readyz")
    assert response.status_code == 503
    assert response.json()["ready"] is False and "tampered.tgz" in response.json()["reason"]
    assert client.get("/healthz").status_code == 200  # alive all the same


def test_metrics_expose_the_gates_registry(make_sidecar: Any, world: World) -> None:
    client = make_sidecar()
    headers = {"authorization": f"Bearer {world.token(sub='ops-m')}", "x-forwarded-for": US_IP}
    assert client.get("/authz", headers={**headers, "x-original-uri": "/graphql?query=%7Bme%7D"}).status_code
    response = client.get(f"{ADMIN}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'ig_gate_decisions_total{outcome="allow"' in response.text
    assert "ig_gate_bundle_info{" in response.text


def test_status_reports_bundle_jwks_geo_risk_store_and_failures(make_sidecar: Any, world: World) -> None:
    client = make_sidecar()
    status = client.get(f"{ADMIN}/v1/status").json()
    assert status["ready"] is True
    assert status["bundle"]["source"] == "file"
    active = status["bundle"]["active"]
    assert active["version"] == "1.0.0" and active["digest"].startswith("sha256:") and active["verified_at"]
    assert status["jwks"]["identity"]["kids"] == ["idp-1"]
    assert status["geo"]["path"] == str(world.mmdb) and status["geo"]["database_type"] == "GeoIP2-Country"
    assert status["risk_store"]["kind"] == "InMemoryRiskStore"
    assert status["failures"] == {}


def test_status_counts_failures_by_kind(make_sidecar: Any, world: World) -> None:
    client = make_sidecar(bundle={"path": "/nonexistent/policy.tgz"})
    headers = {"authorization": f"Bearer {world.token(sub='ops-f')}", "x-original-uri": "/graphql"}
    assert client.get("/authz", headers=headers).status_code == 503
    status = client.get(f"{ADMIN}/v1/status").json()
    assert status["failures"] == {"no_bundle": 1.0}
    assert status["bundle"]["path"] == "/nonexistent/policy.tgz" and "active" not in status["bundle"]
    assert "policy.tgz" in status["policy_problem"]


def test_registry_source_is_started_by_the_lifespan_and_reported(
    make_sidecar: Any, world: World, tmp_path: Any
) -> None:
    client = make_sidecar(bundle={
        "registry": f"127.0.0.1:{free_port()}", "repository": "ig/policy", "plain_http": True,
        "state_dir": str(tmp_path / "state"), "poll_interval_s": 60,
    })
    assert client.get(f"{ADMIN}/readyz").status_code == 503  # nothing pulled, no last-good bundle
    fetch_failures = 'ig_gate_bundle_events_total{kind="fetch"}'
    wait_until(lambda: fetch_failures in client.get(f"{ADMIN}/metrics").text, 10, "a counted fetch failure")
    bundle = client.get(f"{ADMIN}/v1/status").json()["bundle"]
    assert (bundle["source"], bundle["repository"], bundle["channel"]) == ("registry", "ig/policy", "prod")


def test_registry_without_repository_is_a_config_error(world: World) -> None:
    with pytest.raises(ConfigError, match=r"bundle\.repository"):
        policy_wiring(world.settings(bundle={"registry": "127.0.0.1:5000"}))


def test_random_bytes_on_every_endpoint_never_get_a_500(make_sidecar: Any) -> None:
    client = make_sidecar()
    rng = random.Random(6)
    paths = ["/apollo/coprocessor", "/authz", "/authz/graphql", f"{ADMIN}/v1/data/ig/zt/decision",
             f"{ADMIN}/v1/data"]
    seeds = [b"{", b'{"version": 1, "stage": "RouterRequest", "headers": ', b'{"input": ', b"\xff\xfe"]
    for _ in range(200):
        body = rng.choice(seeds) + bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        content_type = rng.choice(["application/json", "application/graphql", "text/plain"])
        response = client.post(rng.choice(paths), content=body, headers={"content-type": content_type})
        assert response.status_code < 500, (response.status_code, body)
