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
2. **Forecast error**: each sample's one-step error, relative (noise grows with the rate),
   `e = (x - (L + T*k)) / max(x, L + T*k)`, feeds an EWMA of `e**2` (sigma = its root; `PRIOR_SIGMA`
   until measured). The demand covered is `max(x, forecast * (1 + headroom_sigmas * sigma))`: headroom
   sized from how wrong the forecast has been, on the forecast (the expected next value), not on a sample
   that already carries its noise. An error beyond both `SHIFT_SIGMAS` sigmas and `MIN_SHIFT` (after
   `MIN_ERRORS` samples) is a level shift (a spike, an event): Holt restarts from the sample with no
   trend, since the level catching up with a step would otherwise read as a steep trend and be
   extrapolated (the overshoot after a spike); sigma takes in the error's bound, not the step.
3. **Calendar**: inside `[start - lead_s, end]` of a configured event, planned and covered demand are at
   least the demand measured when the window opened times the event's `multiplier` (so the multiplier is
   applied to the pre-event baseline, never to demand that already includes the event).
4. **Raw replicas**: `ceil(sum_p covered_p / capacity_p / target_utilization)` within [min, max]
   (profiles share a pod: each takes its share of its capacity); `headroom` = covered - planned, in pods.
5. **Up**: when raw > current, at most `max_step_up` at once and not within `up_cooldown_s` of the last
   up step.
6. **Down** to the fewest replicas that serve, with the headroom, the demand planned until the end of the
   thrash window (`max(planned, L + T * (forecast_horizon_s + down_cooldown_s))`: a rising trend that
   would bring the removed pods back within the window holds them, held reason `forecast`), keeping a
   share of their capacity spare (hysteresis, held reason `dead_band`): `headroom_sigmas * sigma` of the
   forecast, so noise of the size the forecast has been missing by does not bring a removed pod straight
   back, plus `dead_band` unless the trend is clearly falling (by more than that noise share within the
   window: the band would only lag behind it). At most `max_step_down` at once, not within
   `down_cooldown_s` of the last up step nor `down_step_s` of the last down step (`cooldown_down`), so a
   falling trend is followed minute by minute.

A *thrash event* is a change whose direction differs from the previous change made less than
`down_cooldown_s` earlier: a down step after an up step cannot happen within that window; an up step
after a down one happens only when demand rose beyond the forecast and its headroom (it is counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from ig_gate.middleware.settings import AutoscaleSettings, ComponentProfile, ScheduledEvent

FORECAST_STEP_S = 60.0  # seconds between the samples Holt's method sees
ERROR_WEIGHT = 0.1  # EWMA weight of a new squared forecast error (about the last 10 samples)
MIN_ERRORS = 3  # forecast errors measured before a level shift can be told from noise
SHIFT_SIGMAS = 5.0  # a one-step error beyond this many sigmas is a level shift, not noise
MIN_SHIFT = 0.1  # ... and beyond this share of the demand (so a quiet series still learns its trend)
PRIOR_SIGMA = MIN_SHIFT / SHIFT_SIGMAS  # sigma before any error is measured (2 %): a cold start has headroom
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
    """Holt's linear trend over irregularly spaced samples (trend per second), with the spread of its
    one-step forecast error and level-shift resets."""

    alpha: float
    beta: float
    level: float | None = None
    trend: float = 0.0
    at: float = 0.0
    error_var: float = PRIOR_SIGMA**2  # EWMA of the squared one-step forecast error
    errors: int = 0  # errors measured so far

    @property
    def sigma(self) -> float:
        return math.sqrt(self.error_var)

    def update(self, now: float, value: float) -> None:
        if self.level is None:
            self.level, self.at = value, now
            return
        k = max(now - self.at, 1e-9)
        previous = self.level
        predicted = previous + self.trend * k
        error = (value - predicted) / max(predicted, value, 1e-9)
        bound = max(SHIFT_SIGMAS * self.sigma, MIN_SHIFT)
        if self.errors >= MIN_ERRORS and abs(error) > bound:  # a step, not a trend: restart from it
            self.level, self.trend, self.at = value, 0.0, now
            self.error_var += ERROR_WEIGHT * (bound * bound - self.error_var)
            return
        self.error_var += ERROR_WEIGHT * (error * error - self.error_var)
        self.errors += 1
        self.level = self.alpha * value + (1 - self.alpha) * predicted
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
    headroom: float  # pods' worth covered beyond the planned demand, for the forecast's error
    dominant: str | None
    held: str | None  # forecast | dead_band | cooldown_up | cooldown_down | step_limit: why raw was not
    events: tuple[str, ...]  # scheduled events in force (pre-scaling included)
    thrash: bool  # this change reversed the previous one inside the cooldown

    def to_json(self) -> dict[str, object]:
        return {
            "component": self.component, "replicas": self.replicas, "raw_replicas": self.raw_replicas,
            "demand": self.demand, "planned": self.planned, "headroom": self.headroom,
            "dominant": self.dominant, "held": self.held,
            "events": list(self.events),
        }


class _Plan(NamedTuple):
    """Per profile: demand planned for, covered with the headroom, planned until the thrash window ends,
    and the headroom alone; the scheduled events in force."""

    planned: dict[str, float]
    covered: dict[str, float]
    until_window_end: dict[str, float]
    noise: dict[str, float]
    events: tuple[str, ...]


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
    _last_down: float = -math.inf
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
        plan = self._plan(now, demand)
        planned = plan.planned
        load = pod_load(plan.covered, self.capacity)
        headroom = load - pod_load(planned, self.capacity)
        keep = pod_load(plan.until_window_end, self.capacity) + headroom
        noise = pod_load(plan.noise, self.capacity)
        fall = sum(h.trend * s.down_cooldown_s / self.capacity[p] for p, h in self._holt.items())
        raw = self._bounded(math.ceil(load / s.target_utilization - 1e-9))
        current = self.replicas or raw
        band = (0.0 if fall < -noise else s.dead_band) + noise / max(load, 1e-9)
        target, held = self._step(now, current, raw, keep, band)
        thrash = False
        if target != current:
            direction = 1 if target > current else -1
            thrash = direction != self._last_direction != 0 and now - self._last_change < s.down_cooldown_s
            self._last_change, self._last_direction = now, direction
            if direction > 0:
                self._last_up = now
            else:
                self._last_down = now
        self.replicas = target
        shares = {p: planned[p] / c for p, c in self.capacity.items()}
        dominant = max(shares, key=lambda p: shares[p]) if load > 0 else None
        self.last = Recommendation(
            self.component, target, raw, {p: round(demand.get(p, 0.0), 3) for p in self.capacity},
            {p: round(v, 3) for p, v in planned.items()}, round(headroom, 3), dominant, held, plan.events,
            thrash,
        )
        return self.last

    def _plan(self, now: float, demand: dict[str, float]) -> _Plan:
        s = self.settings
        plan = _Plan({}, {}, {}, {}, ())
        for p, holt in self._holt.items():
            x = max(0.0, demand.get(p, 0.0))
            if holt.level is None or now - holt.at >= FORECAST_STEP_S - 1e-6:
                holt.update(now, x)
            forecast = holt.forecast(s.forecast_horizon_s)
            plan.noise[p] = s.headroom_sigmas * holt.sigma * forecast
            plan.planned[p] = max(x, forecast)
            plan.covered[p] = max(x, forecast + plan.noise[p])
            plan.until_window_end[p] = max(
                plan.planned[p], holt.forecast(s.forecast_horizon_s + s.down_cooldown_s))
        active = []
        for window in self._windows:
            if window.opens <= now <= window.closes:
                if window.base is None:
                    window.base = {p: max(0.0, demand.get(p, 0.0)) for p in self.capacity}
                active.append(window.event.name)
                for p, base in window.base.items():
                    expected = base * window.event.multiplier
                    for part in (plan.planned, plan.covered, plan.until_window_end):
                        part[p] = max(part[p], expected)
        return plan._replace(events=tuple(active))

    def _bounded(self, replicas: int) -> int:
        return min(self.profile.max_replicas, max(self.profile.min_replicas, replicas))

    def _step(self, now: float, current: int, raw: int, keep: float, band: float) -> tuple[int, str | None]:
        s = self.settings
        if raw > current:
            if now - self._last_up < s.up_cooldown_s:
                return current, "cooldown_up"
            target = min(raw, current + s.max_step_up)
            return target, "step_limit" if target < raw else None
        if raw == current:
            return current, None
        needed = keep / s.target_utilization
        if self._bounded(math.ceil(needed - 1e-9)) >= current:
            return current, "forecast"
        floor = self._bounded(math.ceil(needed / (1 - band) - 1e-9)) if band < 1 else current
        if floor >= current:
            return current, "dead_band"
        if now - self._last_up < s.down_cooldown_s or now - self._last_down < s.down_step_s:
            return current, "cooldown_down"
        target = max(floor, current - s.max_step_down)
        return target, "step_limit" if target > floor else None


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def recommenders(settings: AutoscaleSettings) -> dict[str, Recommender]:
    """One recommender per configured component."""
    return {name: Recommender(name, profile, settings) for name, profile in settings.profiles.items()}
