"""RedisRiskStore against a real redis-server: shared between stores, never lowers, TTLs, local cache
staleness bound, failures, and enforcement through the real middleware."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.gate import Gate
from ig_gate.middleware.risk import InMemoryRiskStore
from ig_gate.middleware.risk_redis import RedisRiskStore, RiskStoreError, risk_store_from_settings, safe_url
from ig_gate.middleware.settings import ConfigError, settings_from_dict
from tests.middleware.conftest import PEER, US_IP, World, demo_app, query
from tests.support.procs import free_port, wait_until
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.integration


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"t-{request.node.name}:"


@pytest.fixture
def stores(redis_url: str, prefix: str) -> Iterator[tuple[RedisRiskStore, RedisRiskStore]]:
    """Two stores with their own connections (two replicas), no local caching."""
    made = [RedisRiskStore.from_url(redis_url, prefix=prefix, cache_ttl_s=0.0) for _ in range(2)]
    yield made[0], made[1]
    for store in made:
        store.close()


def test_a_risk_raised_by_one_replica_is_seen_by_another(stores):
    a, b = stores
    assert b.get("sid-1") is None
    a.raise_risk("sid-1", "high", reason="caep risk-level-change")

    override = b.get("sid-1")
    assert override is not None
    assert (override.risk, override.revoked, override.reason) == ("high", False, "caep risk-level-change")


def test_risk_never_goes_down_across_replicas(stores):
    a, b = stores
    a.raise_risk("sid-2", "high", reason="first")
    b.raise_risk("sid-2", "medium", reason="second")
    assert (a.get("sid-2").risk, a.get("sid-2").reason) == ("high", "first")

    b.raise_risk("sid-3", "low", reason="low")
    a.raise_risk("sid-3", "medium", reason="up")
    assert b.get("sid-3").risk == "medium"


def test_a_revocation_keeps_the_raised_risk_and_survives_later_raises(stores):
    a, b = stores
    a.raise_risk("sid-4", "medium", reason="risk")
    b.revoke("sid-4", reason="session-revoked")
    a.raise_risk("sid-4", "high", reason="more risk")

    override = b.get("sid-4")
    assert override.revoked is True
    assert override.risk == "high"


def test_device_posture_is_replaced_either_way(stores):
    a, b = stores
    a.set_posture("dev-1", "not-compliant", reason="mdm")
    assert b.get_posture("dev-1") == "not-compliant"
    b.set_posture("dev-1", "compliant", reason="fixed")
    assert a.get_posture("dev-1") == "compliant"
    assert a.get_posture("dev-unknown") is None
    assert a.get("dev-1") is None  # devices and sessions are separate key spaces


def test_entries_expire_with_their_ttl_and_a_live_deadline_is_never_shortened(stores, redis_url, prefix):
    a, _ = stores
    a.revoke("short", reason="r", ttl_s=0.2)
    assert a.get("short") is not None
    wait_until(lambda: a.get("short") is None, 5, "the revocation to expire")

    a.revoke("long", reason="r", ttl_s=100)
    a.raise_risk("long", "high", reason="r", ttl_s=0.1)
    pttl = redis.Redis.from_url(redis_url).pttl(prefix + "s:long")
    assert pttl > 90_000
    assert a.get("long").until > time.time() + 90  # the informational wall-clock deadline follows


def test_invalid_values_are_refused_before_reaching_redis(stores):
    a, _ = stores
    with pytest.raises(ValueError, match="risk must be one of"):
        a.raise_risk("sid", "critical", reason="r")
    with pytest.raises(ValueError, match="device status"):
        a.set_posture("dev", "sort-of", reason="r")
    with pytest.raises(ValueError, match="ttl_s"):
        a.revoke("sid", reason="r", ttl_s=0)


def test_the_local_cache_is_stale_at_most_cache_ttl_for_other_replicas_and_never_for_own_writes(
    redis_url, prefix
):
    clock = Clock()
    reader = RedisRiskStore.from_url(redis_url, prefix=prefix, cache_ttl_s=1.0, clock=clock)
    writer = RedisRiskStore.from_url(redis_url, prefix=prefix, cache_ttl_s=1.0)
    try:
        assert reader.get("sid") is None  # cached (a None answer too)
        writer.revoke("sid", reason="elsewhere")
        assert reader.get("sid") is None  # within the staleness bound
        clock.now += 1.01
        assert reader.get("sid").revoked is True

        assert reader.get("sid-own") is None
        reader.raise_risk("sid-own", "high", reason="here")
        assert reader.get("sid-own").risk == "high"  # own write: no staleness
    finally:
        reader.close()
        writer.close()


def test_a_dead_redis_raises_risk_store_error_then_fails_fast_until_retry():
    clock = Clock()
    store = RedisRiskStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", cache_ttl_s=0.0, retry_after_s=1.0, clock=clock
    )
    with pytest.raises(RiskStoreError, match=r"risk store redis://127\.0\.0\.1:\d+/0: ConnectionError"):
        store.get("sid")
    with pytest.raises(RiskStoreError, match="retrying soon"):
        store.get("sid")
    assert store.status()["available"] is False
    clock.now += 1.5
    with pytest.raises(RiskStoreError, match="ConnectionError"):
        store.revoke("sid", reason="r")


def test_factory_picks_memory_or_redis_and_reports_bad_urls_by_key(redis_url):
    assert isinstance(risk_store_from_settings(settings_from_dict({})), InMemoryRiskStore)
    settings = settings_from_dict({"risk_store": {"redis_url": redis_url, "ttl_s": 60}})
    store = risk_store_from_settings(settings)
    assert isinstance(store, RedisRiskStore)
    store.close()
    with pytest.raises(ConfigError, match=r"^risk_store\.redis_url: "):
        risk_store_from_settings(settings_from_dict({"risk_store": {"redis_url": "http://nope"}}))


def test_status_and_messages_never_show_the_redis_password():
    url = "redis://user:s3cret@127.0.0.1:6390/0"
    assert safe_url(url) == "redis://127.0.0.1:6390/0"
    store = RedisRiskStore.from_url(url)
    assert "s3cret" not in str(store.status())
    store.close()


def _client(world: World, store: RedisRiskStore) -> tuple[TestClient, Gate]:
    gate = Gate.from_settings(world.settings(), risk_store=store)
    return TestClient(ZeroTrustMiddleware(demo_app(), gate=gate), client=PEER), gate


def test_the_middleware_enforces_a_revocation_written_by_another_replica(world: World, stores):
    a, b = stores
    client, gate = _client(world, a)
    token = world.token(risk="low", sid="sess-9")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    with client:
        assert client.post("/graphql", content=query(), headers=headers).status_code == 200
        b.revoke("sess-9", reason="session-revoked")
        refused = client.post("/graphql", content=query(), headers=headers)
    gate.close()
    assert refused.status_code == 401
    assert "revoked" in refused.headers["www-authenticate"]


def test_a_dead_redis_fails_closed_through_the_middleware(world: World):
    store = RedisRiskStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    client, gate = _client(world, store)
    headers = {"authorization": f"Bearer {world.token()}", "content-type": "application/json",
               "x-forwarded-for": US_IP}
    with client:
        response = client.post("/graphql", content=query(), headers=headers)
    gate.close()
    assert response.status_code == 503



def test_a_command_redis_refuses_raises_without_failing_fast(stores, redis_url, prefix):
    a, _ = stores
    raw = redis.Redis.from_url(redis_url)
    raw.set(prefix + "s:sid-wrongtype", "not a hash")
    with pytest.raises(RiskStoreError, match="WRONGTYPE"):
        a.revoke("sid-wrongtype", reason="r")
    assert a.status()["available"] is True  # Redis answered: no back-off for the other keys
    a.revoke("sid-fine", reason="r")
    assert a.get("sid-fine").revoked
    raw.close()


def test_replay_claims_are_short_until_remembered_and_can_be_released(stores, redis_url, prefix):
    a, b = stores
    raw = redis.Redis.from_url(redis_url)
    assert a.claim_once("jti-1", 60) and not b.claim_once("jti-1", 60)  # shared by replicas
    assert 0 < raw.pttl(prefix + "once:jti-1") <= 60_000
    a.remember("jti-1", 86_400)
    assert raw.pttl(prefix + "once:jti-1") > 60_000
    b.release("jti-1")
    assert a.claim_once("jti-1", 60)
    raw.close()
