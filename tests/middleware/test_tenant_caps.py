"""Per-tenant caps at the gate (429 + Retry-After, reason in the decision log, others unaffected), the
profile exporter's metrics, and the caps shared through a real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.caps import TenantCaps
from ig_gate.middleware.decision import TOO_MANY, UNAUTHENTICATED, Decision
from ig_gate.middleware.responses import Responses
from ig_gate.middleware.settings import StepUpSettings, TenantSettings
from tests.middleware.conftest import World, call_asgi, demo_app, query
from tests.support.procs import free_port
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.anyio


def _auth(world: World, tenant: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {world.token(tenant=tenant)}".encode()),
            (b"content-type", b"application/json"), (b"x-purpose", b"support")]


def _middleware(world: World, tmp_path: Path, **extra: object) -> ZeroTrustMiddleware:
    settings = world.settings(
        tenants={"acme": {"max_qps": {"read": 5}}},
        decision_log={"path": str(tmp_path / "decisions.jsonl")},
        autoscale={"routes": ["/items/{id}"]},
        **extra,
    )
    return ZeroTrustMiddleware(demo_app(), config=settings)


async def test_a_tenant_over_its_read_cap_gets_429_with_retry_after_and_others_pass(
    world: World, tmp_path: Path
) -> None:
    middleware = _middleware(world, tmp_path)
    gate = middleware.gate
    body = query("{ hello }").encode()
    acme = [(await call_asgi(middleware, headers=_auth(world, "acme"), body=body)) for _ in range(40)]
    initech = [(await call_asgi(middleware, headers=_auth(world, "initech"), body=body)) for _ in range(40)]
    refused = [r for r in acme if r[0] == 429]
    assert 25 <= len(refused) <= 35  # a burst of 5 (+ refill while the loop runs) then 429
    assert all(r[0] == 200 for r in acme[:5])
    assert all(r[1][b"retry-after"] == b"1" for r in refused)
    assert {r[0] for r in initech} == {200}  # no cap: unaffected
    assert json.loads(refused[0][2])["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
    gate.workload.tick()
    reg = gate.metrics.registry
    assert reg.get_sample_value(
        "ig_gate_tenant_over_cap_total", {"tenant": "acme", "profile": "read"}) == len(refused)
    assert reg.get_sample_value(
        "ig_gate_decisions_total",
        {"outcome": "too_many_requests", "reason": "tenant_over_cap", "tenant": "acme", "profile": "read"},
    ) == len(refused)
    # demand counts only what was admitted: acme's excess never reaches the recommender
    assert reg.get_sample_value(
        "ig_gate_profile_requests_total", {"route": "/graphql", "tenant": "acme", "profile": "read"}
    ) == 40 - len(refused)
    gate.close()
    lines = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    over = [x for x in lines if x.get("result", {}).get("reasons") == ["tenant_over_cap"]]
    assert len(over) == len(refused)


async def test_profile_exporter_bounds_routes_and_rates_by_ewma(world: World, tmp_path: Path) -> None:
    middleware = _middleware(world, tmp_path)
    gate = middleware.gate
    now = time.time() + 100  # after the tick the gate's start made
    gate.workload.tick(now)
    for path in ("/items/1", "/items/2", "/secret/x", "/graphql"):
        await call_asgi(middleware, method="GET", path=path, headers=_auth(world, "initech"))
    gate.workload.tick(now + 2)
    reg = gate.metrics.registry
    get = reg.get_sample_value
    labels = {"tenant": "other", "profile": "read"}  # initech is not in metrics.tenants
    assert get("ig_gate_profile_requests_total", {"route": "/items/{id}", **labels}) == 2
    assert get("ig_gate_profile_requests_total", {"route": "other", **labels}) == 1
    rate = get("ig_gate_profile_rate", {"route": "/items/{id}", **labels})
    assert rate is not None and 0 < rate < 1.0  # 2 requests / 2 s, smoothed from 0 toward 1/s
    assert get("ig_gate_profile_dominant", {"component": "gateway", "profile": "read"}) == 1
    assert get("ig_gate_profile_dominant", {"component": "gateway", "profile": "write"}) == 0
    assert get("ig_gate_autoscale_desired_replicas", {"component": "gateway"}) == 1
    gate.close()


def test_caps_are_shared_through_redis_across_processes(tmp_path: Path) -> None:
    """Two TenantCaps (two processes' worth) on one real Redis admit about one cap between them."""
    with redis_server(tmp_path / "redis") as url:
        tenants = {"acme": TenantSettings(max_qps={"read": 50})}
        client = redis.Redis.from_url(url, decode_responses=True)
        a, b = TenantCaps(tenants, client), TenantCaps(tenants, client)
        admitted = 0
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            for caps in (a, b):
                caps.sync()
                admitted += sum(caps.take("acme", "read") for _ in range(40))
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        assert a.synced and b.synced
        # local buckets alone would admit ~2 x 50/s; shared, about 50/s plus the stated bound
        assert admitted <= 50 * (elapsed + 1) * (1 + 0.25) + 2 * 50
        assert admitted < 2 * 50 * elapsed


def test_caps_keep_enforcing_locally_when_redis_is_unreachable() -> None:
    """Fail safe: a sync that cannot reach Redis keeps the local bucket (never more than the local cap)."""
    tenants = {"acme": TenantSettings(max_qps={"read": 10})}
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    caps = TenantCaps(tenants, client)
    caps.sync()
    assert caps.synced is False
    admitted = sum(caps.take("acme", "read") for _ in range(50))
    assert 10 <= admitted <= 12  # the one-second burst, then refused
    assert caps.refused[("acme", "read")] == 50 - admitted


@pytest.mark.parametrize("graphql", [False, True])
def test_a_refusal_body_encoded_once_still_carries_each_requests_own_decision_id(graphql: bool) -> None:
    """Responses.http encodes each kind of refusal once and splices the decision id in: every answer must
    still be the JSON of its own decision (an id needing escapes, a detail that looks like the splice
    mark)."""
    responses = Responses(StepUpSettings())
    over = Decision(TOO_MANY, ("tenant_over_cap",), "a1-1", None, False, graphql, detail="over its cap")
    odd = Decision(UNAUTHENTICATED, ("token_invalid",), "a1-2", None, False, graphql, None, "invalid",
                   'bad "\x00decision-id\x00" token')
    for decision in (over, over._replace(decision_id='a1-"2\\é'), odd, odd._replace(decision_id="a1-3")):
        status, headers, payload = responses.http(decision)
        body = json.loads(payload)
        if graphql:
            error = body["errors"][0]
            assert error["extensions"]["decision_id"] == decision.decision_id
            assert error["message"].endswith(decision.detail)
        else:
            assert (body["decision_id"], body["reason"]) == (decision.decision_id, decision.detail)
        named = dict(headers)
        assert named[b"content-length"] == str(len(payload)).encode()
        assert status == (429 if decision.outcome == TOO_MANY else 401)
        assert (b"retry-after" in named) == (decision.outcome == TOO_MANY)
        assert (b"www-authenticate" in named) == (decision.outcome == UNAUTHENTICATED)
