"""RedisRiskStore against a real redis-server: shared between stores, never lowers, TTLs, the local view
(loaded at subscription, kept current by messages, own writes at once), failures, and enforcement through
the real middleware. The Redis-paused test is tests/sidecar/test_redis_paused.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from starlette.testclient import TestClient

from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.compose import build_gate
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


def synced(store: RedisRiskStore) -> RedisRiskStore:
    """store, started, once its view has loaded and heard from Redis."""
    store.start()
    wait_until(store.view.synced, 10, "the risk view to sync")
    return store


def seen(store: RedisRiskStore, read: Callable[[], object], what: str) -> object:
    """What read() returns once it is not None (a change from another replica reaches the view)."""
    wait_until(lambda: read() is not None, 5, what)
    return read()


@pytest.fixture
def stores(redis_url: str, prefix: str) -> Iterator[tuple[RedisRiskStore, RedisRiskStore]]:
    """Two stores with their own connections (two replicas), their views in sync."""
    made = [synced(RedisRiskStore.from_url(redis_url, prefix=prefix)) for _ in range(2)]
    yield made[0], made[1]
    for store in made:
        store.close()


def test_a_risk_raised_by_one_replica_is_seen_by_another(stores):
    a, b = stores
    assert b.get("sid-1") is None
    a.raise_risk("sid-1", "high", reason="caep risk-level-change")

    override = seen(b, lambda: b.get("sid-1"), "the raised risk on the other replica")
    assert override is not None
    assert (override.risk, override.revoked, override.reason) == ("high", False, "caep risk-level-change")


def test_risk_never_goes_down_across_replicas(stores):
    a, b = stores
    a.raise_risk("sid-2", "high", reason="first")
    b.raise_risk("sid-2", "medium", reason="second")
    assert (b.get("sid-2").risk, b.get("sid-2").reason) == ("high", "first")  # as Redis merged it

    b.raise_risk("sid-3", "low", reason="low")
    a.raise_risk("sid-3", "medium", reason="up")
    wait_until(lambda: b.get("sid-3").risk == "medium", 5, "the raise on the other replica")


def test_a_revocation_keeps_the_raised_risk_and_survives_later_raises(stores):
    a, b = stores
    a.raise_risk("sid-4", "medium", reason="risk")
    b.revoke("sid-4", reason="session-revoked")
    a.raise_risk("sid-4", "high", reason="more risk")

    override = a.get("sid-4")  # a's own write: Redis' merged entry, applied at once
    assert override.revoked is True
    assert override.risk == "high"


def test_device_posture_is_replaced_either_way(stores):
    a, b = stores
    a.set_posture("dev-1", "not-compliant", reason="mdm")
    assert seen(b, lambda: b.get_posture("dev-1"), "the status on the other replica") == "not-compliant"
    b.set_posture("dev-1", "compliant", reason="fixed")
    wait_until(lambda: a.get_posture("dev-1") == "compliant", 5, "the status going back")
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


def test_a_view_loads_what_was_written_before_it_subscribed_and_own_writes_apply_at_once(
    redis_url, prefix
):
    writer = synced(RedisRiskStore.from_url(redis_url, prefix=prefix))
    writer.revoke("before", reason="earlier")
    writer.set_posture("dev-before", "jailbroken", reason="earlier")
    reader = synced(RedisRiskStore.from_url(redis_url, prefix=prefix))  # a replica started later
    try:
        assert reader.get("before").revoked is True  # the full load at subscription
        assert reader.get_posture("dev-before") == "jailbroken"
        assert reader.status()["entries"] == 2

        reader.raise_risk("own", "high", reason="here")
        assert reader.get("own").risk == "high"  # own write: in the view before the call returns
    finally:
        reader.close()
        writer.close()


def test_a_dead_redis_leaves_the_view_out_of_sync_and_writes_fail_fast_until_retry():
    clock = Clock()
    store = RedisRiskStore.from_url(f"redis://127.0.0.1:{free_port()}/0", retry_after_s=1.0, clock=clock)
    where = r"risk store redis://127\.0\.0\.1:\d+/0: "
    with pytest.raises(RiskStoreError, match=where + "local view out of sync"):
        store.get("sid")  # never loaded: no lookup is proved clear
    with pytest.raises(RiskStoreError, match="out of sync"):
        store.get_posture("dev")
    with pytest.raises(RiskStoreError, match=where + "ConnectionError"):
        store.revoke("sid", reason="r")
    with pytest.raises(RiskStoreError, match="retrying soon"):
        store.revoke("sid", reason="r")
    assert store.status()["available"] is False
    assert store.status()["synced"] is False
    clock.now += 1.5
    with pytest.raises(RiskStoreError, match="ConnectionError"):
        store.revoke("sid", reason="r")
    store.close()


def test_factory_picks_memory_or_redis_and_reports_bad_urls_by_key(redis_url):
    assert isinstance(risk_store_from_settings(settings_from_dict({})), InMemoryRiskStore)
    view = {"stale_after_s": 5.0, "max_entries": 10}
    settings = settings_from_dict({"risk_store": {"redis_url": redis_url, "ttl_s": 60, **view}})
    store = risk_store_from_settings(settings)
    assert isinstance(store, RedisRiskStore)
    assert (store.view.stale_after_s, store.view.max_entries) == (5.0, 10)
    store.close()
    with pytest.raises(ConfigError, match=r"risk_store\.stale_after_s"):
        settings_from_dict({"risk_store": {"stale_after_s": 0}})
    with pytest.raises(ConfigError, match=r"^risk_store\.redis_url: "):
        risk_store_from_settings(settings_from_dict({"risk_store": {"redis_url": "http://nope"}}))


def test_status_and_messages_never_show_the_redis_password():
    url = "redis://user:s3cret@127.0.0.1:6390/0"
    assert safe_url(url) == "redis://127.0.0.1:6390/0"
    store = RedisRiskStore.from_url(url)
    assert "s3cret" not in str(store.status())
    store.close()


def _client(world: World, store: RedisRiskStore) -> tuple[TestClient, Gate]:
    gate = build_gate(world.settings(), risk_store=store)
    return TestClient(ZeroTrustMiddleware(demo_app(), gate=gate), client=PEER), gate


def test_the_middleware_enforces_a_revocation_written_by_another_replica(world: World, stores):
    a, b = stores
    client, gate = _client(world, a)
    token = world.token(risk="low", sid="sess-9")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    with client:
        assert client.post("/graphql", content=query(), headers=headers).status_code == 200
        b.revoke("sess-9", reason="session-revoked")
        wait_until(lambda: a.get("sess-9") is not None, a.view.stale_after_s, "the revocation in a's view")
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
    store.close()
    assert response.status_code == 503
    assert gate.metrics.registry.get_sample_value(
        "ig_gate_failure_mode_total", {"kind": "risk_store_unavailable", "mode": "closed"}
    ) == 1


def test_a_command_redis_refuses_raises_without_failing_fast(stores, redis_url, prefix):
    a, _ = stores
    raw = redis.Redis.from_url(redis_url)
    raw.set(prefix + "s:sid-wrongtype", "not a hash")
    with pytest.raises(RiskStoreError, match="WRONGTYPE"):
        a.revoke("sid-wrongtype", reason="r")
    assert a.status()["available"] is True  # Redis answered: no back-off for the other keys
    late = synced(RedisRiskStore.from_url(redis_url, prefix=prefix))  # its load skips what is no entry
    assert late.get("sid-wrongtype") is None
    late.close()
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
