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
from ig_gate.middleware.metrics import PREFIX
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
