"""Replay a per-minute demand trace through the replica recommender and a naive proportional baseline.

Trace: CSV with a header `minute,tenant,profile,requests`: requests in that minute (for `subscription`:
open subscriptions during that minute). Each minute:

1. tenant caps (`tenants.<id>.max_qps`) cut each tenant's rate to its cap (the gate answers the excess
   429: counted as `refused`); caps on `subscription` are on subscribe rates, not on open counts, and
   are not applied to a trace of open counts;
2. the admitted demand goes to the `Recommender` (middleware/autoscale.py) at the minute's end, and to the
   baseline: `ceil(load)` each minute, no hysteresis (load = demand in pods' worth at 100 % capacity);
3. both fleets follow their targets from the next minute: a new pod is billed from then and serves after
   `startup_min` minutes; a removed pod stops serving at once and is billed `drain_min` more minutes
   (connection draining, termination grace).

A third fleet, `clairvoyant`, knows the future: each minute it targets the fewest replicas that leave no
minute under capacity (`max(ceil(load))` over the minutes until its new pods serve). With the default
`startup_min` = `drain_min` = 1 a fleet following targets T serves `min(T[m-1], T[m])` and is billed
`max(T[m-1], T[m])` in minute m, so no policy without a minute under capacity pays fewer pod-minutes: it
is the floor any real recommender is measured against.

Reported per policy: thrash events (direction changes of the target within `autoscale.down_cooldown_s`
of the previous change), minutes under capacity (serving pods < load), pod-minutes and cost per 1k
admitted requests (`pod_minute_cost` per pod-minute). `plot()` draws demand, capacity and replicas.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ig_gate.errors import IgGateError
from ig_gate.middleware.autoscale import Recommender, capacity_of, pod_load
from ig_gate.middleware.metrics import PROFILES
from ig_gate.middleware.settings import ScheduledEvent, Settings

_EPS = 1e-9


class TraceError(IgGateError, ValueError):
    """A trace file that cannot be read: the message names the file and line."""

    code = "trace"
    label = "trace error"


@dataclass(frozen=True, slots=True)
class Minute:
    """Demand of one minute: per (tenant, profile), requests (or open subscriptions)."""

    index: int
    demand: dict[tuple[str, str], float]


def read_trace(path: str | Path) -> list[Minute]:
    """The minutes of a trace CSV (missing minutes have no demand); TraceError names file:line."""
    rows: dict[int, dict[tuple[str, str], float]] = defaultdict(dict)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"minute", "tenant", "profile", "requests"} <= set(reader.fieldnames or ()):
                raise TraceError(f"{path}:1: header must be minute,tenant,profile,requests")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                try:
                    minute, value = int(row["minute"]), float(row["requests"])
                except (TypeError, ValueError):
                    raise TraceError(f"{where}: minute must be an integer and requests a number") from None
                if minute < 0 or value < 0 or not math.isfinite(value):
                    raise TraceError(f"{where}: minute and requests must be >= 0")
                if row["profile"] not in PROFILES:
                    raise TraceError(f"{where}: profile must be one of {', '.join(PROFILES)}")
                key = (row["tenant"], row["profile"])
                rows[minute][key] = rows[minute].get(key, 0.0) + value
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise TraceError(f"{path}: no rows")
    return [Minute(m, rows.get(m, {})) for m in range(max(rows) + 1)]


@dataclass(slots=True)
class Fleet:
    """Pods following a target: billed from the minute after the decision, serving `startup` later."""

    startup: int
    drain: int = 0
    billed: int = 0  # pod-minutes: pods of the target, plus removed pods while they drain
    pods: list[int] = field(default_factory=list)  # the minute each pod starts serving
    targets: list[int] = field(default_factory=list)
    serving: list[int] = field(default_factory=list)
    changes: list[tuple[int, int]] = field(default_factory=list)  # (minute, direction)
    draining: list[int] = field(default_factory=list)  # the minute each removed pod is gone

    def follow(self, minute: int, target: int) -> None:
        """Apply the target decided at the end of `minute - 1` for `minute`."""
        self.targets.append(target)
        if not self.pods:  # warm start: the first target is already serving
            self.pods = [minute] * target
        while len(self.pods) > target:
            self.pods.remove(max(self.pods))  # the youngest (a starting pod first)
            self.draining += [minute + self.drain]
        self.draining = [end for end in self.draining if end > minute]
        self.billed += target + len(self.draining)
        self.pods += [minute + self.startup] * (target - len(self.pods))
        self.serving.append(sum(1 for ready in self.pods if ready <= minute))
        if len(self.targets) > 1 and target != self.targets[-2]:
            self.changes.append((minute, 1 if target > self.targets[-2] else -1))

    def thrash(self, window_min: float) -> int:
        """Direction changes within `window_min` of the previous change."""
        return sum(
            1 for (m0, d0), (m1, d1) in zip(self.changes, self.changes[1:], strict=False)
            if d1 != d0 and m1 - m0 < window_min
        )


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """What one policy did over the trace."""

    thrash_events: int
    minutes_under_capacity: int
    pod_minutes: int
    cost_per_1k_requests: float
    max_replicas: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "thrash_events": self.thrash_events, "minutes_under_capacity": self.minutes_under_capacity,
            "pod_minutes": self.pod_minutes, "cost_per_1k_requests": round(self.cost_per_1k_requests, 5),
            "max_replicas": self.max_replicas,
        }


@dataclass(slots=True)
class Simulation:
    """The replay: per-minute series for the plot, totals per policy."""

    component: str
    load: list[float]  # admitted demand, pods' worth at 100 %
    offered: list[float]  # demand before caps, pods' worth
    recommender: Fleet
    baseline: Fleet
    clairvoyant: Fleet
    requests: float  # admitted requests (subscriptions count as none)
    refused: float  # requests over a tenant cap (the gate's 429s)
    events: list[tuple[int, int, str]]  # (first minute, last minute, name) of scheduled events
    results: dict[str, PolicyResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "component": self.component, "minutes": len(self.load), "requests": round(self.requests),
            "refused_over_cap": round(self.refused),
            "recommender": self.results["recommender"].to_json(),
            "baseline": self.results["baseline"].to_json(),
            "clairvoyant": self.results["clairvoyant"].to_json(),
        }


def simulate(
    minutes: list[Minute],
    settings: Settings,
    *,
    component: str | None = None,
    start: str = "2026-12-01T00:00:00+00:00",
    startup_min: int = 1,
    drain_min: int = 1,
    pod_minute_cost: float = 1.0,
) -> Simulation:
    """Replay the trace (minute 0 starts at `start`) for one component (default: the first configured)."""
    auto = settings.autoscale
    component = component or next(iter(auto.profiles))
    profile = auto.profiles[component]
    capacity = capacity_of(profile)
    caps = {(t, p): cap for t, s in settings.tenants.items() for p, cap in s.max_qps.items()}
    recommender = Recommender(component, profile, auto)
    t0 = datetime.fromisoformat(start).timestamp()
    ours, naive = Fleet(startup_min, drain_min), Fleet(startup_min, drain_min)
    load: list[float] = []
    offered: list[float] = []
    requests = refused = 0.0
    target = naive_target = 0
    for minute in minutes:
        admitted: dict[str, float] = defaultdict(float)
        asked: dict[str, float] = defaultdict(float)
        for (tenant, prof), value in minute.demand.items():
            rate = value if prof == "subscription" else value / 60
            asked[prof] += rate
            cap = caps.get((tenant, prof)) if prof != "subscription" else None
            if cap is not None and rate > cap:
                refused += (rate - cap) * 60
                rate = cap
            admitted[prof] += rate
            if prof != "subscription":
                requests += rate * 60
        load.append(pod_load(admitted, capacity))
        offered.append(pod_load(asked, capacity))
        if minute.index:  # the targets decided at the end of the previous minute
            ours.follow(minute.index, target)
            naive.follow(minute.index, naive_target)
        target = recommender.update(t0 + 60 * (minute.index + 1), dict(admitted)).replicas
        naive_target = _bounded(math.ceil(load[-1] - _EPS), profile.min_replicas, profile.max_replicas)
        if not minute.index:
            ours.follow(0, target)
            naive.follow(0, naive_target)
    events = _event_minutes(auto.events, t0, len(minutes))
    oracle = clairvoyant([_bounded(math.ceil(x - _EPS), profile.min_replicas, profile.max_replicas)
                          for x in load], startup_min, drain_min)
    sim = Simulation(component, load, offered, ours, naive, oracle, requests, refused, events)
    window = auto.down_cooldown_s / 60
    for name, fleet in (("recommender", ours), ("baseline", naive), ("clairvoyant", oracle)):
        pod_minutes = fleet.billed
        sim.results[name] = PolicyResult(
            fleet.thrash(window),
            sum(1 for m, serving in enumerate(fleet.serving) if serving + _EPS < load[m]),
            pod_minutes,
            pod_minutes * pod_minute_cost / max(requests / 1000, _EPS),
            max(fleet.targets),
        )
    return sim


def clairvoyant(need: list[int], startup_min: int = 1, drain_min: int = 1) -> Fleet:
    """The fleet that knows each minute's need: targets `max(need)` over the minutes until a new pod serves,
    so no minute is under capacity; with `startup_min` = `drain_min` = 1 no such fleet is billed less."""
    fleet = Fleet(startup_min, drain_min)
    for m in range(len(need)):
        fleet.follow(m, max(need[m:m + startup_min + 1]))
    return fleet


def _bounded(value: int, low: int, high: int) -> int:
    return min(high, max(low, value))


def _event_minutes(events: tuple[ScheduledEvent, ...], t0: float, minutes: int) -> list[tuple[int, int, str]]:
    """(first, last minute, name) of the events that overlap the trace."""
    out = []
    for event in events:
        first = math.floor((datetime.fromisoformat(event.start).timestamp() - t0) / 60)
        last = math.ceil((datetime.fromisoformat(event.end).timestamp() - t0) / 60) - 1
        if last >= 0 and first < minutes:
            out.append((max(first, 0), min(last, minutes - 1), event.name))
    return out


def plot(sim: Simulation, path: str | Path, title: str) -> None:
    """A PNG: demand (offered and admitted) vs serving capacity, and replicas of both policies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = range(len(sim.load))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    if any(o > a + _EPS for o, a in zip(sim.offered, sim.load, strict=True)):
        top.plot(x, sim.offered, color="0.6", lw=1, ls=":", label="offered demand (before caps)")
    top.plot(x, sim.load, color="black", lw=1.5, label="demand (pods' worth)")
    top.step(x, sim.recommender.serving, where="post", color="tab:blue", label="capacity: recommender")
    top.step(x, sim.baseline.serving, where="post", color="tab:orange", alpha=0.7, label="capacity: baseline")
    bottom.step(x, sim.recommender.targets, where="post", color="tab:blue", label="replicas: recommender")
    bottom.step(x, sim.baseline.targets, where="post", color="tab:orange", alpha=0.7,
                label="replicas: baseline")
    bottom.step(x, sim.clairvoyant.targets, where="post", color="0.4", lw=1, ls=":",
                label="replicas: clairvoyant (the floor)")
    for first, last, name in sim.events:
        for ax in (top, bottom):
            ax.axvspan(first, last + 1, color="tab:green", alpha=0.12)
        top.text(first, top.get_ylim()[1] * 0.95, name, fontsize=8, va="top")
    r, b, c = sim.results["recommender"], sim.results["baseline"], sim.results["clairvoyant"]
    top.set_title(f"{title} — recommender: {r.pod_minutes} pod-min, {r.minutes_under_capacity} min under, "
                  f"{r.thrash_events} thrash; baseline: {b.pod_minutes} pod-min, {b.minutes_under_capacity} "
                  f"min under, {b.thrash_events} thrash\nclairvoyant floor (no minute under): "
                  f"{c.pod_minutes} pod-min", fontsize=9)
    top.set_ylabel("pods' worth")
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("minute")
    top.legend(fontsize=8, loc="best")
    bottom.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
