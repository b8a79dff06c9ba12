"""Tenant analytics math (middleware/analytics.py) agrees with the recording rules promtool evaluates."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from prometheus_client import CollectorRegistry

from ig_gate.middleware.analytics import (
    HOUR,
    AnalyticsError,
    anomalies,
    cost_of,
    export_cost_model,
    hour_of_week_z,
    month_window,
    rolling_z,
)
from ig_gate.middleware.metrics import GateMetrics
from ig_gate.middleware.settings import CostSettings
from tests.middleware.conftest import REPO

DEPLOY = REPO / "deploy"
T0 = datetime(2026, 10, 5, tzinfo=UTC)
CHANGE = T0 + timedelta(weeks=4, days=1)  # as deploy/prometheus-analytics-anomaly.test.yaml


def synthetic(before: float, after: float) -> dict[datetime, float]:
    """Hourly rates: `before` for four weeks and a day, then `after` for five hours."""
    hours = int((CHANGE - T0) / HOUR)
    return {T0 + k * HOUR: (before if k <= hours else after) for k in range(hours + 6)}


def test_python_z_scores_equal_what_promtool_computes_from_the_rules() -> None:
    at = CHANGE + 2 * HOUR  # the anomaly test's eval_time 41880m
    expected = yaml.safe_load((DEPLOY / "prometheus-analytics-anomaly.test.yaml").read_text())
    rolling = {s["labels"]: s["value"] for case in expected["tests"][0]["promql_expr_test"]
               if case["expr"] == "tenant:ig_gate_calls:z_rolling" for s in case["exp_samples"]}
    surge, drop, steady = synthetic(1, 5), synthetic(2, 0), synthetic(1, 1)
    assert rolling_z(surge, at) == pytest.approx(rolling['tenant:ig_gate_calls:z_rolling{tenant="acme"}'])
    assert rolling_z(drop, at) == pytest.approx(rolling['tenant:ig_gate_calls:z_rolling{tenant="globex"}'])
    assert hour_of_week_z(surge, at) == pytest.approx(36.36, abs=0.01)  # the alert's summary
    assert hour_of_week_z(drop, at) == pytest.approx(-9.524, abs=0.001)
    assert hour_of_week_z(steady, at) == rolling_z(steady, at) == 0


def test_anomalies_flag_the_surge_for_finops_the_drop_for_cs_and_nothing_steady() -> None:
    window = (CHANGE - timedelta(days=1), CHANGE + 6 * HOUR)
    (first, *_) = found = anomalies("acme", synthetic(1, 5), *window)
    assert first.at == CHANGE + HOUR and first.team == "finops" and len(found) == 2  # the onset only
    assert {a.team for a in anomalies("globex", synthetic(2, 0), *window)} == {"cs"}
    assert anomalies("initech", synthetic(1, 1), *window) == []


def test_hour_of_week_needs_two_weeks_of_history() -> None:
    series = {CHANGE: 5.0, CHANGE - timedelta(weeks=1): 1.0}
    assert hour_of_week_z(series, CHANGE) is None
    series[CHANGE - timedelta(weeks=3)] = 1.0  # a missing week is skipped, not counted as 0
    assert hour_of_week_z(series, CHANGE) == pytest.approx(4 / 0.11)


def test_month_window_full_partial_and_bad_months() -> None:
    now = datetime(2026, 12, 3, 13, 30, 5, 123, tzinfo=UTC)
    november = month_window("2026-11", now)
    assert (november.start, november.end, november.partial) == (
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), False)
    december = month_window("2026-12", now)
    assert december.partial and december.end == now.replace(microsecond=0) and december.seconds == 221405
    assert month_window("2025-12", now).end == datetime(2026, 1, 1, tzinfo=UTC)
    for bad in ("2026-13", "26-11", "2026-1", "november"):
        with pytest.raises(AnalyticsError, match="expected YYYY-MM"):
            month_window(bad, now)
    with pytest.raises(AnalyticsError, match="has not begun"):
        month_window("2027-01", now)


def test_cost_model_prices_each_unit_and_is_exported_for_the_rules() -> None:
    cost = CostSettings(per_1k_reads=0.02, per_1k_writes=0.1, per_subscription_minute=0.001,
                        per_ingest_mb=0.5)
    usage = {"reads": 50_000, "writes": 2_000, "subscription_minutes": 600, "ingest_mb": 3}
    assert cost_of(usage, cost) == pytest.approx(1.0 + 0.2 + 0.6 + 1.5)
    assert cost_of({}, cost) == 0
    registry = CollectorRegistry()
    export_cost_model(registry, cost)
    price = registry.get_sample_value
    assert price("ig_gate_cost_price", {"profile": "write", "unit": "1k_requests"}) == 0.1
    assert price("ig_gate_cost_price", {"profile": "subscription", "unit": "subscription_minute"}) == 0.001


@pytest.mark.parametrize(
    "tests", ["prometheus-analytics-rules.test.yaml", "prometheus-analytics-anomaly.test.yaml"]
)
def test_analytics_rules_pass_promtool_check_and_their_unit_tests(tests: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    for argv in (["check", "rules", "prometheus-analytics-rules.yaml"], ["test", "rules", tests]):
        done = subprocess.run([promtool, *argv], cwd=DEPLOY, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_request_bytes_are_counted_per_tenant_and_profile_for_the_ingest_price() -> None:
    metrics = GateMetrics(tenants=("acme",))
    metrics.observe_decision("allow", "ok", "acme", "ingest", 1e-5, 4096)
    metrics.observe_decision("allow", "ok", "acme", "ingest", 1e-5, 1024)
    metrics.observe_decision("allow", "ok", "umbrella", "ingest", 1e-5, 10)  # unconfigured: "other"
    metrics.observe_decision("allow", "ok", "acme", "read", 1e-5)  # no body: no series
    value = metrics.registry.get_sample_value
    assert value("ig_gate_request_bytes_total", {"tenant": "acme", "profile": "ingest"}) == 5120
    assert value("ig_gate_request_bytes_total", {"tenant": "other", "profile": "ingest"}) == 10
    assert value("ig_gate_request_bytes_total", {"tenant": "acme", "profile": "read"}) is None
