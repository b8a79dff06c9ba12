"""Replica recommendations per component from demand by workload profile, without thrash.

`Recommender.update(now, demand)` is called every `autoscale.tick_s` (the gate's background tick) or
every trace minute (the simulator) with the demand per profile (req/s for read/write/ingest, open
subscriptions for subscription; tenant demand already capped at the tenant's `max_qps`). Steps:

1. **Forecast** (Holt's linear trend, per profile, over the EWMA demand sampled every `FORECAST_STEP_S`
   (60 s), so a trend is never read from the few seconds between two ticks): level L and trend T are
   updated from each sample, `L' = a*x + (1-a)*(L + T*k)`, `T' = b*(L' - L)/k + (1-b)*T` (k = seconds since
   the last sample, so T is per second); the forecast is `L' + T' * forecast_horizon_s` (never below 0),
   kept until the next sample while the demand itself is read at every tick. Planned demand is
   `max(x, forecast)`: a rising trend is provisioned for a horizon ahead (pod start-up and scrape delay),
   a falling one is not trusted.
2. **Calendar**: inside `[start - lead_s, end]` of a configured event, planned demand is at least the
   demand measured when the window opened times the event's `multiplier` (so the multiplier is applied
   to the pre-event baseline, never to demand that already includes the event).
3. **Raw replicas**: `ceil(sum_p planned_p / (capacity_p * target_utilization))` within [min, max]
   (profiles share a pod: each takes its share of its capacity).
4. **Hysteresis and cooldowns**: up when raw > current, at most `max_step_up` at once and not within
   `up_cooldown_s` of the last up step; down only when the fleet one step smaller would still have
   `dead_band` of its capacity spare (so demand hovering near a boundary does not flap), at most
   `max_step_down` at once, and not within `down_cooldown_s` of the last change of either direction.

A *thrash event* is a change whose direction differs from the previous change made less than
`down_cooldown_s` earlier; the rules above make a down step after an up step impossible within that
window, an up step after a down one happens only when demand really rose (it is counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from ig_gate.middleware.settings import AutoscaleSettings, ComponentProfile, ScheduledEvent

FORECAST_STEP_S = 60.0  # seconds between the samples Holt's method sees
PROFILE_CAPACITY = {  # profile -> the ComponentProfile field that says what one pod serves
    "read": "read_qps_per_pod",
    "write": "write_qps_per_pod",
    "subscription": "subs_fanout_per_pod",
    "ingest": "ingest_qps_per_pod",
}


def capacity_of(profile: ComponentProfile) -> dict[str, float]:
    """What one pod of the component serves, per workload profile."""
    return {p: float(getattr(profile, name)) for p, name in PROFILE_CAPACITY.items()}


def pod_load(demand: dict[str, float], capacity: dict[str, float]) -> float:
    """Demand in pods' worth at full capacity (profiles add up their shares of a pod)."""
    return sum(demand.get(p, 0.0) / c for p, c in capacity.items())


@dataclass(slots=True)
class Holt:
    """Holt's linear trend over irregularly spaced samples; trend per second."""

    alpha: float
    beta: float
    level: float | None = None
    trend: float = 0.0
    at: float = 0.0

    def update(self, now: float, value: float) -> None:
        if self.level is None:
            self.level, self.at = value, now
            return
        k = max(now - self.at, 1e-9)
        previous = self.level
        self.level = self.alpha * value + (1 - self.alpha) * (previous + self.trend * k)
        self.trend = self.beta * (self.level - previous) / k + (1 - self.beta) * self.trend
        self.at = now

    def forecast(self, horizon_s: float) -> float:
        return max(0.0, (self.level or 0.0) + self.trend * horizon_s)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommendation: what KEDA gets (`replicas`) and why."""

    component: str
    replicas: int
    raw_replicas: int
    demand: dict[str, float]
    planned: dict[str, float]
    dominant: str | None
    held: str | None  # dead_band | cooldown_up | cooldown_down | step_limit, when raw was not applied
    events: tuple[str, ...]  # scheduled events in force (pre-scaling included)
    thrash: bool  # this change reversed the previous one inside the cooldown

    def to_json(self) -> dict[str, object]:
        return {
            "component": self.component, "replicas": self.replicas, "raw_replicas": self.raw_replicas,
            "demand": self.demand, "planned": self.planned, "dominant": self.dominant, "held": self.held,
            "events": list(self.events),
        }


@dataclass(slots=True)
class _Window:
    event: ScheduledEvent
    opens: float
    closes: float
    base: dict[str, float] | None = None  # demand when the window opened


@dataclass(slots=True)
class Recommender:
    """Recommends replicas for one component (see the module docstring for the rules)."""

    component: str
    profile: ComponentProfile
    settings: AutoscaleSettings
    replicas: int = 0  # 0 until the first update
    _holt: dict[str, Holt] = field(default_factory=dict)
    _windows: list[_Window] = field(default_factory=list)
    _last_change: float = -math.inf
    _last_up: float = -math.inf
    _last_direction: int = 0
    capacity: dict[str, float] = field(default_factory=dict)  # set from `profile`
    last: Recommendation | None = None

    def __post_init__(self) -> None:
        self.capacity = capacity_of(self.profile)
        s = self.settings
        self._holt = {p: Holt(s.holt_alpha, s.holt_beta) for p in self.capacity}
        self._windows = [
            _Window(e, _epoch(e.start) - e.lead_s, _epoch(e.end)) for e in s.events
        ]

    def update(self, now: float, demand: dict[str, float]) -> Recommendation:
        """The recommendation at `now` (epoch seconds) for this demand sample."""
        s = self.settings
        planned: dict[str, float] = {}
        for p, holt in self._holt.items():
            x = max(0.0, demand.get(p, 0.0))
            if holt.level is None or now - holt.at >= FORECAST_STEP_S - 1e-6:
                holt.update(now, x)
            planned[p] = max(x, holt.forecast(s.forecast_horizon_s))
        active = []
        for window in self._windows:
            if window.opens <= now <= window.closes:
                if window.base is None:
                    window.base = {p: max(0.0, demand.get(p, 0.0)) for p in self.capacity}
                active.append(window.event.name)
                for p, base in window.base.items():
                    planned[p] = max(planned[p], base * window.event.multiplier)
        load = pod_load(planned, self.capacity)
        raw = self._bounded(math.ceil(load / s.target_utilization - 1e-9))
        current = self.replicas or raw
        target, held = self._step(now, current, raw, load)
        thrash = False
        if target != current:
            direction = 1 if target > current else -1
            thrash = direction != self._last_direction != 0 and now - self._last_change < s.down_cooldown_s
            self._last_change, self._last_direction = now, direction
            if direction > 0:
                self._last_up = now
        self.replicas = target
        shares = {p: planned[p] / c for p, c in self.capacity.items()}
        dominant = max(shares, key=lambda p: shares[p]) if load > 0 else None
        self.last = Recommendation(
            self.component, target, raw, {p: round(demand.get(p, 0.0), 3) for p in self.capacity},
            {p: round(v, 3) for p, v in planned.items()}, dominant, held, tuple(active), thrash,
        )
        return self.last

    def _bounded(self, replicas: int) -> int:
        return min(self.profile.max_replicas, max(self.profile.min_replicas, replicas))

    def _step(self, now: float, current: int, raw: int, load: float) -> tuple[int, str | None]:
        s = self.settings
        if raw > current:
            if now - self._last_up < s.up_cooldown_s:
                return current, "cooldown_up"
            target = min(raw, current + s.max_step_up)
            return target, "step_limit" if target < raw else None
        if raw == current:
            return current, None
        target = self._bounded(max(raw, current - s.max_step_down))
        if load / s.target_utilization > target * (1 - s.dead_band):
            return current, "dead_band"
        if now - self._last_change < s.down_cooldown_s:
            return current, "cooldown_down"
        return target, "step_limit" if target > raw else None


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def recommenders(settings: AutoscaleSettings) -> dict[str, Recommender]:
    """One recommender per configured component."""
    return {name: Recommender(name, profile, settings) for name, profile in settings.profiles.items()}
