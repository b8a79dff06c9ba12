"""GateMetrics: values read back from the registry, bounded labels, multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ig_gate.middleware.metrics import BATCH, RAW_KEY_LIMIT, GateMetrics


def value(metrics: GateMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def decisions(metrics: GateMetrics, **labels: str) -> float | None:
    return value(metrics, "ig_gate_decisions_total", **labels)


def series(metrics: GateMetrics, name: str) -> list[dict[str, str]]:
    return [s.labels for m in metrics.registry.collect() for s in m.samples if s.name == name]


@pytest.fixture
def metrics() -> GateMetrics:
    return GateMetrics(tenants=("acme", "globex"))


def test_decisions_are_counted_by_outcome_reason_tenant_and_profile(metrics):
    for _ in range(3):
        metrics.observe_decision("allow", "ok", "acme", "read", 2e-5)
    metrics.observe_decision("deny", "risk_high", "globex", "write", 4e-5)

    assert decisions(metrics, outcome="allow", reason="ok", tenant="acme", profile="read") == 3
    assert decisions(metrics, outcome="deny", reason="risk_high", tenant="globex", profile="write") == 1
    assert decisions(metrics, outcome="allow", reason="ok", tenant="globex", profile="read") is None


def test_decision_seconds_fall_into_buckets_from_5us_to_50ms(metrics):
    for seconds in (3e-6, 5e-6, 3e-5, 0.049, 0.2):
        metrics.observe_decision("allow", "ok", "acme", "read", seconds)

    def bucket(le: str) -> float | None:
        return value(metrics, "ig_gate_decision_seconds_bucket", le=le)

    assert bucket("5e-06") == 2  # 3 µs and exactly 5 µs (le is inclusive)
    assert bucket("2.5e-05") == 2
    assert bucket("5e-05") == 3
    assert bucket("0.025") == 3
    assert bucket("0.05") == 4
    assert bucket("+Inf") == 5
    assert value(metrics, "ig_gate_decision_seconds_count") == 5
    assert value(metrics, "ig_gate_decision_seconds_sum") == pytest.approx(3e-6 + 5e-6 + 3e-5 + 0.049 + 0.2)


def test_unconfigured_tenants_are_counted_as_other_and_missing_as_none(metrics):
    metrics.observe_decision("allow", "ok", "initech", "read", 1e-5)
    metrics.observe_decision("allow", "ok", "umbrella", "read", 1e-5)
    metrics.observe_decision("unauthenticated", "token_missing", None, "read", 1e-5)

    assert decisions(metrics, outcome="allow", reason="ok", tenant="other", profile="read") == 2
    unauthenticated = decisions(metrics, outcome="unauthenticated", reason="token_missing", tenant="none",
                                profile="read")
    assert unauthenticated == 1
    assert {labels["tenant"] for labels in series(metrics, "ig_gate_decisions_total")} == {"other", "none"}


def test_many_distinct_tenants_stay_one_series_and_a_bounded_cache(metrics):
    for i in range(RAW_KEY_LIMIT + 500):
        metrics.observe_decision("allow", "ok", f"tenant-{i}", "read", 1e-5)

    assert series(metrics, "ig_gate_decisions_total") == [
        {"outcome": "allow", "reason": "ok", "tenant": "other", "profile": "read"}
    ]
    total = decisions(metrics, outcome="allow", reason="ok", tenant="other", profile="read")
    assert total == RAW_KEY_LIMIT + 500
    assert len(metrics._decision_incs) == RAW_KEY_LIMIT


def test_unknown_reasons_outcomes_and_profiles_are_bounded_to_other(metrics):
    metrics.observe_decision("maybe", "attacker-chosen-reason-123", "acme", "bulk", 1e-5)
    metrics.observe_decision("deny", None, "acme", "write", 1e-5)

    assert decisions(metrics, outcome="other", reason="other", tenant="acme", profile="other") == 1
    assert decisions(metrics, outcome="deny", reason="none", tenant="acme", profile="write") == 1
    assert metrics.reason_label("geo_fenced") == "geo_fenced"
    assert metrics.tenant_label("acme") == "acme"


def test_reason_set_can_be_replaced():
    metrics = GateMetrics(reasons=("custom_rule",))
    metrics.observe_decision("deny", "custom_rule", "acme", "read", 1e-5)
    metrics.observe_decision("deny", "risk_high", "acme", "read", 1e-5)

    assert decisions(metrics, outcome="deny", reason="custom_rule", tenant="other", profile="read") == 1
    assert decisions(metrics, outcome="deny", reason="other", tenant="other", profile="read") == 1


def test_each_instance_has_its_own_registry_and_never_the_global_one():
    first, second = GateMetrics(), GateMetrics()
    first.observe_decision("allow", "ok", None, "read", 1e-5)

    assert first.registry is not second.registry
    assert decisions(first, outcome="allow", reason="ok", tenant="none", profile="read") == 1
    assert decisions(second, outcome="allow", reason="ok", tenant="none", profile="read") is None
    assert REGISTRY.get_sample_value("ig_gate_decision_seconds_count") is None


def test_signal_and_failure_counters(metrics):
    metrics.memo(True)
    metrics.memo(True)
    metrics.memo(False)
    metrics.jwks_refresh(True)
    metrics.jwks_refresh(False)
    metrics.geo_anomaly("acme")
    metrics.geo_anomaly("hooli")
    metrics.failure("no_bundle", "closed")
    metrics.malformed_forwarded()
    metrics.decision_log_dropped()
    metrics.decision_log_written(5)
    metrics.decision_log_written()

    assert value(metrics, "ig_gate_memo_lookups_total", result="hit") == 2
    assert value(metrics, "ig_gate_memo_lookups_total", result="miss") == 1
    assert value(metrics, "ig_gate_jwks_refresh_total", result="ok") == 1
    assert value(metrics, "ig_gate_jwks_refresh_total", result="error") == 1
    assert value(metrics, "ig_gate_geo_anomalies_total", tenant="acme") == 1
    assert value(metrics, "ig_gate_geo_anomalies_total", tenant="other") == 1
    assert value(metrics, "ig_gate_failure_mode_total", kind="no_bundle", mode="closed") == 1
    assert value(metrics, "ig_gate_forwarded_header_malformed_total") == 1
    assert value(metrics, "ig_gate_decision_log_dropped_total") == 1
    assert value(metrics, "ig_gate_decision_log_written_total") == 6


def test_bundle_info_keeps_only_the_active_bundle(metrics):
    metrics.bundle_info("r1", "sha256:aa", "1.0.0")
    metrics.bundle_info("r2", "sha256:bb", None)

    active = {"revision": "r2", "digest": "sha256:bb", "version": ""}
    assert series(metrics, "ig_gate_bundle_info") == [active]
    assert value(metrics, "ig_gate_bundle_info", revision="r2", digest="sha256:bb", version="") == 1


def test_rollout_and_bundle_manager_hooks(metrics):
    metrics.decision_by_role("candidate", "deny")
    metrics.decision_by_role("baseline", "allow")
    metrics.rollout_stage(2)
    metrics.rollout_revert()
    metrics.bundle_event("activated")
    metrics.bundle_event("activated")

    assert value(metrics, "ig_gate_decisions_by_role_total", role="candidate", outcome="deny") == 1
    assert value(metrics, "ig_gate_decisions_by_role_total", role="baseline", outcome="allow") == 1
    assert value(metrics, "ig_gate_rollout_stage") == 2
    assert value(metrics, "ig_gate_rollout_reverts_total") == 1
    assert value(metrics, "ig_gate_bundle_events_total", kind="activated") == 2


def test_exposition_is_prometheus_text(metrics):
    metrics.observe_decision("allow", "ok", "acme", "read", 1e-5)
    body, content_type = metrics.exposition()

    assert content_type.startswith("text/plain")
    assert b'ig_gate_decisions_total{outcome="allow",profile="read",reason="ok",tenant="acme"} 1.0' in body


_WORKER = textwrap.dedent("""
    import sys
    from ig_gate.middleware.metrics import GateMetrics
    m = GateMetrics(tenants=["acme"])
    assert m.multiprocess
    m.memo(True)
    m.observe_decision("allow", "ok", "acme", "read", 1e-5)
    m.bundle_info(sys.argv[1], "sha256:" + sys.argv[1], "1")
    m.bundle_info(sys.argv[2], "sha256:" + sys.argv[2], "2")
    m.rollout_stage(1)
    if sys.argv[3] == "print":
        sys.stdout.write(m.exposition()[0].decode())
""")


def test_multiprocess_mode_aggregates_worker_processes(tmp_path: Path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def worker(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", _WORKER, *args], env=env, capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout

    worker("r1", "r2", "quiet")
    text = worker("r1", "r2", "print")

    assert 'ig_gate_decisions_total{outcome="allow",profile="read",reason="ok",tenant="acme"} 2.0' in text
    assert "ig_gate_decision_seconds_count 2.0" in text
    assert 'ig_gate_memo_lookups_total{result="hit"} 2.0' in text  # flushed with the decision record
    assert 'ig_gate_bundle_info{digest="sha256:r2",revision="r2",version="2"} 1.0' in text
    assert 'ig_gate_bundle_info{digest="sha256:r1",revision="r1",version="1"} 0.0' in text


def test_every_record_is_seen_by_the_next_collection_even_below_a_batch(metrics):
    metrics.observe_decision("allow", "ok", "acme", "read", 1e-5)
    metrics.memo(True)
    metrics.memo(False)

    assert decisions(metrics, outcome="allow", reason="ok", tenant="acme", profile="read") == 1
    assert value(metrics, "ig_gate_memo_lookups_total", result="hit") == 1
    assert value(metrics, "ig_gate_memo_lookups_total", result="miss") == 1
    assert value(metrics, "ig_gate_decision_seconds_count") == 1


def test_concurrent_recording_and_scraping_lose_nothing(metrics):
    per_thread = 3 * BATCH + 7

    def record() -> None:
        for i in range(per_thread):
            metrics.observe_decision("allow", "ok", "acme", "read", 1e-5)
            metrics.memo(i % 2 == 0)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        metrics.exposition()  # scrapes flush from another thread meanwhile
    for thread in threads:
        thread.join()

    assert decisions(metrics, outcome="allow", reason="ok", tenant="acme", profile="read") == 4 * per_thread
    hits = value(metrics, "ig_gate_memo_lookups_total", result="hit")
    misses = value(metrics, "ig_gate_memo_lookups_total", result="miss")
    assert (hits, misses) == (4 * (per_thread // 2 + 1), 4 * (per_thread // 2))
    assert value(metrics, "ig_gate_decision_seconds_count") == 4 * per_thread


def test_a_mixed_batch_adds_up_as_each_record_would(metrics):
    outcomes = (("allow", "ok"), ("deny", "risk_high"), ("stepup", "stepup_required"))
    tenants, profiles = ("acme", "globex", "initech", None), ("read", "write", "ingest")
    bounds = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2)
    expected: dict[tuple[str, ...], int] = {}
    sizes: dict[tuple[str, str], int] = {}
    buckets = dict.fromkeys(bounds, 0)
    total = 3 * BATCH + 11
    for i in range(total):
        outcome, reason = outcomes[i % 3]
        tenant, profile = tenants[i % 4], profiles[i % 3]
        seconds = bounds[i % len(bounds)] * (1.0 if i % 2 else 1.5)  # on a bound, and between two
        size = (i * 37) % 5 * 100
        metrics.observe_decision(outcome, reason, tenant, profile, seconds, size)
        metrics.memo(i % 5 == 0)
        label = {"initech": "other", None: "none"}.get(tenant, tenant)  # initech is not configured
        key = (outcome, reason, label, profile)
        expected[key] = expected.get(key, 0) + 1
        if size:
            sizes[label, profile] = sizes.get((label, profile), 0) + size
        for bound in bounds:
            buckets[bound] += seconds <= bound

    for (outcome, reason, tenant, profile), count in expected.items():
        assert decisions(metrics, outcome=outcome, reason=reason, tenant=tenant, profile=profile) == count
    for (tenant, profile), size in sizes.items():
        assert value(metrics, "ig_gate_request_bytes_total", tenant=tenant, profile=profile) == size
    for bound, count in buckets.items():
        assert value(metrics, "ig_gate_decision_seconds_bucket", le=str(bound)) == count
    assert value(metrics, "ig_gate_decision_seconds_bucket", le="+Inf") == total
    assert value(metrics, "ig_gate_memo_lookups_total", result="hit") == len(range(0, total, 5))
    assert value(metrics, "ig_gate_memo_lookups_total", result="miss") == total - len(range(0, total, 5))
