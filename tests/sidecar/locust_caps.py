"""Locust load for tests/sidecar/test_tenant_caps_load.py: a phased schedule of a noisy tenant beside a quiet
one, through `ig-gate serve` in reverse-proxy mode.

IG_GATE_LOCUST (JSON) configures one process; the test runs two (role `quiet`, role `noisy`) so that the
process measuring the quiet tenant's latency never also handles the noisy tenant's requests:

    {"role": "quiet" | "noisy", "users": N, "rate": total req/s (quiet), "headers": {...} (quiet),
     "phases": [{"name": ..., "noisy": null | {"tenant": ..., "rate": req/s, "headers": {...}}}, ...],
     "phase_s": s, "settle_s": s, "cycles": n, "ready": path, "go": path, "out": path}

Each process writes `ready` once its users run, then polls for `go` (the test writes the common start
time t0 there once both are ready). From t0 the phases repeat `cycles` times, `phase_s` each; then the
users stop the run. A request is named `<who> <phase> <status>` by the phase it was *sent* in; a quiet
request sent within `settle_s` of a phase start is named `<who> settle <status>` (the previous phase's
backlog may still drain). On quitting, `out` gets {name: [[sent at (epoch s), response time (ms)], ...]}
(locust's own float timings, not its rounded percentiles).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, events, task

SETUP: dict[str, Any] = json.loads(os.environ.get("IG_GATE_LOCUST", "{}"))
PHASES: list[dict[str, Any]] = SETUP.get("phases", [])
TIMES: dict[str, list[tuple[float, float]]] = defaultdict(list)
_START: dict[str, float] = {}  # "t0" once the go file exists


@events.request.add_listener
def _timed(name: str, response_time: float, start_time: float, **_: Any) -> None:
    TIMES[name].append((start_time, response_time))


@events.test_start.add_listener
def _ready(**_: Any) -> None:
    Path(SETUP["ready"]).write_text("ready")


@events.quitting.add_listener
def _write(**_: Any) -> None:
    Path(SETUP["out"]).write_text(json.dumps(TIMES))


def _t0() -> float | None:
    """The common start time, once the test has written it (None before)."""
    if "t0" not in _START:
        go = Path(SETUP["go"])
        if not go.exists():
            return None
        _START["t0"] = float(go.read_text())
    return _START["t0"]


def _phase(now: float, t0: float) -> tuple[dict[str, Any] | None, float]:
    """(the phase at `now`, seconds into it); None before t0 and after the last cycle."""
    index, into = divmod(now - t0, SETUP["phase_s"])
    if index < 0 or index >= len(PHASES) * SETUP["cycles"]:
        return None, 0.0
    return PHASES[int(index) % len(PHASES)], into


def _next_rate(phase: dict[str, Any]) -> float:
    """The per-user rate of the first phase after `phase` in which this process's role calls."""
    at = PHASES.index(phase)
    for later in PHASES[at + 1 :] + PHASES[: at + 1]:
        if later["noisy"]:
            return later["noisy"]["rate"] / SETUP["users"]
    return 1.0


class Caller(FastHttpUser):
    """One user of this process's role: paced per phase (quiet: constant rate; noisy: the phase's)."""

    fixed_count = SETUP.get("users", 0)
    _last = 0.0

    def wait_time(self) -> float:
        """Poisson arrivals at the phase's rate (exponential gaps from the last start, so users never march
        in step); a silent phase is waited out, and the first call after it comes within one mean gap."""
        t0 = _t0()
        if t0 is None:
            return 0.05  # polling for the go file
        now = time.time()
        phase, into = _phase(now, t0)
        if phase is None:
            return max(0.0, t0 - now)
        rate = SETUP["rate"] if SETUP["role"] == "quiet" else (phase["noisy"] or {}).get("rate")
        if not rate:  # the noisy tenant is silent in this phase
            return SETUP["phase_s"] - into + random.uniform(0, 1 / _next_rate(phase))
        return max(0.0, random.expovariate(rate / SETUP["users"]) - (now - self._last))

    @task
    def call(self) -> None:
        t0 = _t0()
        if t0 is None:
            return
        self._last = now = time.time()
        phase, into = _phase(now, t0)
        if phase is None:
            if now > t0 and not _START.get("over"):  # the schedule is over: stop (not from this greenlet)
                _START["over"] = now
                gevent.spawn(self.environment.runner.quit)
            return
        if SETUP["role"] == "quiet":
            who, headers = "quiet", SETUP["headers"]
            label = phase["name"] if into >= SETUP["settle_s"] else "settle"
        elif phase["noisy"] is None:
            return
        else:
            who, headers, label = phase["noisy"]["tenant"], phase["noisy"]["headers"], phase["name"]
        with self.client.get("/graphql?query=%7Bme%7Bid%7D%7D", headers=headers, catch_response=True) as r:
            r.request_meta["name"] = f"{who} {label} {r.status_code}"
            r.success()
