"""Tenant analytics without HTTP: the cost model, the anomaly baseline (z-scores) and month arithmetic.

The recording and alert rules in deploy/prometheus-analytics-rules.yaml compute the same things in
PromQL; `ig-gate analytics report` (sidecar/analytics_cli.py) fetches the series and uses this module.

Anomaly baseline, both in PromQL and here, on a tenant's hourly call rate x (requests/s over one hour):
- same hour of week: mean and population standard deviation of x one, two, ... `weeks` weeks earlier
  (the weeks that have data; at least `MIN_WEEKS`), z = (x - mean) / spread;
- rolling: mean and standard deviation of x over the last day: the hourly points in [t - 1d, t], both ends
  included (25 points), as PromQL's `[1d]` range over an hourly evaluation (Prometheus 2.x);
- spread = max(stddev, `REL_FLOOR` * mean + `ABS_FLOOR`), so a flat history does not turn noise into
  infinite z. An hour is anomalous when both |z| reach `Z_THRESHOLD` (high: FinOps, low: customer success).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from ig_gate.errors import IgGateError
from ig_gate.middleware.metrics import OUTCOMES, PREFIX
from ig_gate.middleware.settings import CostSettings

WEEKS = 4
MIN_WEEKS = 2
ROLLING_HOURS = 24
REL_FLOOR = 0.1
ABS_FLOOR = 0.01
Z_THRESHOLD = 3.0
HOUR = timedelta(hours=1)
WEEK = timedelta(weeks=1)

# profile -> (unit label, CostSettings field)
PRICED_UNITS = {
    "read": ("1k_requests", "per_1k_reads"),
    "write": ("1k_requests", "per_1k_writes"),
    "subscription": ("subscription_minute", "per_subscription_minute"),
    "ingest": ("mb", "per_ingest_mb"),
}


class AnalyticsError(IgGateError, ValueError):
    """Bad input to the analytics (a month that is not YYYY-MM, a month in the future)."""


def export_cost_model(registry: CollectorRegistry, cost: CostSettings) -> None:
    """Export the prices as `ig_gate_cost_price{profile,unit}` (set once; the rules multiply usage by it)."""
    price = Gauge(
        PREFIX + "cost_price", "Price per unit of a workload profile (cost section of the config).",
        ("profile", "unit"), registry=registry, multiprocess_mode="livemax",
    )
    for profile, (unit, name) in PRICED_UNITS.items():
        price.labels(profile, unit).set(getattr(cost, name))


def cost_of(usage: Mapping[str, float], cost: CostSettings) -> float:
    """Cost of usage {"reads", "writes", "subscription_minutes", "ingest_mb"} (missing keys count 0)."""
    return (
        usage.get("reads", 0.0) / 1000 * cost.per_1k_reads
        + usage.get("writes", 0.0) / 1000 * cost.per_1k_writes
        + usage.get("subscription_minutes", 0.0) * cost.per_subscription_minute
        + usage.get("ingest_mb", 0.0) * cost.per_ingest_mb
    )


# -- months --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Month:
    """A calendar month in UTC, cut at `end` when it is the current one (`partial`)."""

    name: str
    start: datetime
    end: datetime
    partial: bool

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())


def month_window(name: str, now: datetime | None = None) -> Month:
    """The month `YYYY-MM`; ends at `now` if it has not ended yet; AnalyticsError if it has not begun."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", name)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise AnalyticsError(f"--month: expected YYYY-MM, got {name!r}")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    now = now or datetime.now(UTC)
    if start >= now:
        raise AnalyticsError(f"--month: {name} has not begun")
    if end > now:
        return Month(name, start, now.replace(microsecond=0), True)
    return Month(name, start, end, False)


# -- anomaly baseline ---------------------------------------------------------------------------------


def zscore(value: float, history: Sequence[float], min_points: int = 1) -> float | None:
    """z of value against history (population stddev, floored spread); None with too little history."""
    if len(history) < min_points or not history:
        return None
    mean = sum(history) / len(history)
    stddev = math.sqrt(sum((v - mean) ** 2 for v in history) / len(history))
    return (value - mean) / max(stddev, REL_FLOOR * mean + ABS_FLOOR)


def hour_of_week_z(series: Mapping[datetime, float], at: datetime, weeks: int = WEEKS) -> float | None:
    """z of series[at] against the same hour 1..`weeks` weeks earlier (those present, >= MIN_WEEKS)."""
    history = [series[t] for k in range(1, weeks + 1) if (t := at - k * WEEK) in series]
    return zscore(series[at], history, MIN_WEEKS)


def rolling_z(series: Mapping[datetime, float], at: datetime, hours: int = ROLLING_HOURS) -> float | None:
    """z of series[at] against the hourly points from `hours` hours before `at` to `at`, both included."""
    history = [series[t] for k in range(hours + 1) if (t := at - k * HOUR) in series]
    return zscore(series[at], history, 2)


@dataclass(frozen=True)
class Anomaly:
    """One anomalous hour of one tenant."""

    tenant: str
    at: datetime
    rate: float
    z_hour_of_week: float
    z_rolling: float

    @property
    def team(self) -> str:
        """Who is told: FinOps for a surge (cost), customer success for a drop."""
        return "finops" if self.z_hour_of_week > 0 else "cs"

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "at": self.at.isoformat(), "rate": self.rate, "team": self.team,
                "z_hour_of_week": round(self.z_hour_of_week, 3), "z_rolling": round(self.z_rolling, 3)}


def anomalies(
    tenant: str, series: Mapping[datetime, float], start: datetime, end: datetime
) -> list[Anomaly]:
    """The hours in [start, end) where both z-scores reach Z_THRESHOLD with the same sign."""
    found = []
    for at in sorted(t for t in series if start <= t < end):
        z_week, z_roll = hour_of_week_z(series, at), rolling_z(series, at)
        if z_week is None or z_roll is None:
            continue
        if min(z_week, z_roll) >= Z_THRESHOLD or max(z_week, z_roll) <= -Z_THRESHOLD:
            found.append(Anomaly(tenant, at, series[at], z_week, z_roll))
    return found


# -- the monthly report --------------------------------------------------------------------------------

AVAILABILITY_BUDGET = 0.001  # as the SLO of the recording rules


@dataclass(frozen=True)
class MonthData:
    """What the report is made of, as fetched from Prometheus (or built by a test).

    `decisions`: (tenant, profile, outcome) -> decisions in the month; `hourly`: tenant -> {hour: calls/s}
    from `weeks` weeks before the month to its end (the anomaly baseline); `subscription_minutes`:
    tenant -> open-subscription minutes; `ingest_mb`: tenant -> MB of ingest request bodies; `latency`:
    quantile -> seconds over the month (the whole fleet).
    """

    decisions: Mapping[tuple[str, str, str], float]
    hourly: Mapping[str, Mapping[datetime, float]]
    subscription_minutes: Mapping[str, float]
    ingest_mb: Mapping[str, float]
    latency: Mapping[str, float | None]


def build_report(
    month: Month, data: MonthData, cost: CostSettings, tenants: Sequence[str] = ()
) -> dict[str, Any]:
    """The monthly per-tenant report as a JSON-ready dict: one row per tenant seen or configured (a tenant
    without data gets a zero row with `has_data` false), the anomalous hours, the fleet latency."""
    names = sorted({t for t, _, _ in data.decisions} | set(data.hourly) | set(data.subscription_minutes)
                   | set(data.ingest_mb) | set(tenants))
    hours_in_month = max(1, math.ceil(month.seconds / 3600))
    rows, found = [], []
    for tenant in names:
        mine = {(p, o): v for (t, p, o), v in data.decisions.items() if t == tenant}
        by_profile = {p: sum(v for (q, _), v in mine.items() if q == p) for p in PRICED_UNITS}
        by_outcome = {o: sum(v for (_, q), v in mine.items() if q == o) for o in OUTCOMES}
        calls = sum(mine.values())
        series = data.hourly.get(tenant, {})
        active = sorted(t for t, v in series.items() if month.start <= t <= month.end and v > 0)
        usage = {"reads": by_profile["read"], "writes": by_profile["write"],
                 "subscription_minutes": data.subscription_minutes.get(tenant, 0.0),
                 "ingest_mb": data.ingest_mb.get(tenant, 0.0)}
        tenant_anomalies = anomalies(tenant, series, month.start, month.end)
        found += tenant_anomalies
        error_ratio = by_outcome["error"] / calls if calls else 0.0
        rows.append({
            "tenant": tenant,
            "has_data": calls > 0,
            "calls": round(calls),
            **{f"{p}_calls": round(v) for p, v in by_profile.items()},
            **{f"{o}": round(v) for o, v in by_outcome.items()},
            "error_ratio": error_ratio,
            "availability_budget_burn": error_ratio / AVAILABILITY_BUDGET,
            "subscription_minutes": round(usage["subscription_minutes"], 1),
            "ingest_mb": round(usage["ingest_mb"], 3),
            "cost": round(cost_of(usage, cost), 4),
            "first_seen": active[0].isoformat() if active else None,
            "last_seen": active[-1].isoformat() if active else None,
            "coverage": round(len(active) / hours_in_month, 4),
            "anomalies": len(tenant_anomalies),
        })
    return {
        "month": month.name,
        "start": month.start.isoformat(),
        "end": month.end.isoformat(),
        "partial": month.partial,
        "currency": cost.currency,
        "cost_model": {name: getattr(cost, name) for _, name in PRICED_UNITS.values()},
        "fleet": {"calls": sum(r["calls"] for r in rows),
                  "cost": round(sum(r["cost"] for r in rows), 4),
                  "decision_seconds": dict(data.latency)},
        "tenants": rows,
        "anomalies": [a.as_dict() for a in found],
        "notes": [
            "ingest MB: Content-Length of decided requests (forward-auth sees a body only when the proxy "
            "sends it, as Envoy's ext_authz with_request_body)",
            "latency is the whole fleet's: ig_gate_decision_seconds has no tenant label",
        ],
    }


def daily_calls(series: Mapping[datetime, float], month: Month) -> dict[datetime, float]:
    """Calls per day of the month from hourly rates (calls/s over each hour)."""
    days: dict[datetime, float] = {}
    for at, rate in series.items():
        if month.start < at <= month.end:
            day = (at - HOUR).replace(hour=0, minute=0, second=0, microsecond=0)
            days[day] = days.get(day, 0.0) + rate * 3600
    return days
