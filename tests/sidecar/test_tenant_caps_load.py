"""Per-tenant caps under a real locust load through a real `ig-gate serve` (reverse-proxy mode) in front of an
upstream of fixed capacity: the tenant over its cap gets 429s, the other tenant none, and the other
tenant's p95 does not change because of the excess.

What "no change" is measured against, in ONE run whose 1.5-second phases repeat in turn (6 cycles), so that
the drift of this shared machine falls on every phase alike; the quiet tenant calls at a constant 60/s
(Poisson arrivals) throughout:

- `alone`: the noisy tenant silent (reported for reference: its legitimate share also costs something);
- `at_cap`: the noisy tenant at 80 % of its cap (16 of 20 reads/s): everything it sends is served;
- `over_cap`: the noisy tenant offers far more (up to OFFERED/s; locust reaches 150-200/s on its core
  here, 7-10x the cap); the gate serves about its cap and refuses the rest 429, so the upstream sees the
  same load as in `at_cap`: only the refusals differ;
- `no_cap`: the same offered load from a tenant without a cap: the excess reaches the upstream.

Claims: p95(over_cap) <= p95(at_cap) * (1 + REL_TOL) + ABS_TOL_MS — the excess, refused, costs the others
nothing beyond that tolerance — and p95(no_cap) >= HARM * p95(over_cap): without the cap the same excess
does hurt (~4x measured), so the first claim is about the cap, not about an excess too small to matter.
A phase's p95 is the median over the cycles of each cycle's p95 (the pooled p95s are printed too): a
stall of the shared machine (seen once in ~12 runs: one pooled p95 at 68 ms instead of ~20) lands in one
occurrence of one phase, which the median ignores and the pooled p95 would not.

Isolation: the gate, the upstream and the quiet locust process share one core; the noisy tenant's locust
process runs alone on the other (taskset), so the load generator's CPU for the excess stays off the
measured path, while the gate's own cost of each refusal stays on it: ~80-100 µs of server CPU per 429
under wrk here, ~21 µs of it in the middleware (bench/test_tenant_cap_refusal.py; the rest is uvicorn's
HTTP handling), i.e. ~2 % of the core at 200 refusals/s. Users are paced; the quiet tenant's latency is
locust's own float timing in a process of its own, and requests sent in the first SETTLE_S of a phase
are left out (the previous phase's backlog, and the cap's one-second burst that the bucket, full after
`at_cap`, admits at the start of `over_cap`).

Tolerance: measured here (load average 3-6 on 2 cores, 12 runs), p95(over_cap) / p95(at_cap) was
0.87-1.17 (+0 to +2.3 ms on ~13-25 ms), against 1.07-1.23 with the noisy locust on the measured path's
cores (that part was the load generator, not the gate) and ~5x for the same excess without a cap.
REL_TOL 0.35 plus ABS_TOL_MS 1 ms is twice the largest excess seen, and still far below the harm the cap
prevents.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.middleware.conftest import US_IP, World
from tests.sidecar.capacity_upstream import capacity_upstream
from tests.support.procs import wait_until
from tests.support.sidecar import serve_sidecar

REPO = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")
CAP = 20  # reads/s of the noisy tenant (acme)
OFFERED = 300  # reads/s the noisy tenant offers over its cap (and the uncapped tenant in no_cap)
PHASE_S, SETTLE_S, CYCLES = 1.5, 0.5, 6
REL_TOL, ABS_TOL_MS, HARM = 0.35, 1.0, 2.5
PHASES = ("alone", "at_cap", "over_cap", "no_cap")
TASKSET = shutil.which("taskset")
# the measured path (gate, upstream, quiet locust) on one core, the noisy load generator on the other
PATH_CPU, LOAD_CPU = ("0", "1") if TASKSET and len(os.sched_getaffinity(0)) >= 2 else (None, None)


def _headers(token: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "x-forwarded-for": US_IP, **extra}


def run_phased_locust(
    url: str, plan: list[dict[str, Any]], setups: dict[str, dict[str, Any]], workdir: Path
) -> dict[str, list[tuple[int, float]]]:
    """One locust process per role, started together on tests/sidecar/locust_caps.py; once both run, the
    common start time t0 is written to the go file. Returns {request name: [(cycle, response time in ms)]}
of both processes (the cycle each request was sent in)."""
    workdir.mkdir(parents=True, exist_ok=True)
    go = workdir / "go"
    procs = {}
    logs = contextlib.ExitStack()
    for role, setup in setups.items():
        config = {**setup, "role": role, "phases": plan, "phase_s": PHASE_S, "settle_s": SETTLE_S,
                  "cycles": CYCLES, "ready": str(workdir / f"{role}.ready"), "go": str(go),
                  "out": str(workdir / f"{role}.json")}
        argv = [str(LOCUST), "-f", str(REPO / "tests/sidecar/locust_caps.py"), "--headless", "-u",
                str(setup["users"]), "-r", str(setup["users"]), "-t", "120s", "--host", url,
                "--only-summary", "--stop-timeout", "2", "--loglevel", "WARNING"]
        cpu = PATH_CPU if role == "quiet" else LOAD_CPU
        if cpu is not None:
            argv = [str(TASKSET), "-c", cpu, *argv]
        procs[role] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=logs.enter_context((workdir / f"{role}.log").open("wb")),
            env={"IG_GATE_LOCUST": json.dumps(config), "PATH": str(LOCUST.parent)},
        )
    try:
        wait_until(lambda: all((workdir / f"{r}.ready").exists() for r in setups), 30, "both locust runs")
        go.write_text(str(time.time() + 0.1))
        for role, proc in procs.items():
            assert proc.wait(timeout=PHASE_S * len(PHASES) * CYCLES + 30) == 0, (
                workdir / f"{role}.log").read_text()[-2000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        logs.close()
    t0 = float(go.read_text())
    cycle_s = PHASE_S * len(plan)
    times: dict[str, list[tuple[int, float]]] = {}
    for role in setups:
        for name, samples in json.loads((workdir / f"{role}.json").read_text()).items():
            times[name] = [(int((sent - t0) // cycle_s), elapsed) for sent, elapsed in samples]
    return times


def p95(values: list[float]) -> float:
    """The 95th percentile (inclusive method) in ms."""
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def cycle_p95(samples: list[tuple[int, float]]) -> float:
    """The median over cycles of each cycle's p95: a stall of the shared machine lands in one occurrence of
    one phase and moves one cycle's p95 only (the pooled p95 would take it whole)."""
    by_cycle: dict[int, list[float]] = {}
    for cycle, elapsed in samples:
        by_cycle.setdefault(cycle, []).append(elapsed)
    return statistics.median(p95(values) for values in by_cycle.values() if len(values) >= 20)


def count(times: dict[str, list[tuple[int, float]]], who: str, phase: str, status: int) -> int:
    return len(times.get(f"{who} {phase} {status}", []))


def test_a_tenant_over_its_cap_gets_429s_only_for_itself_and_the_others_p95_does_not_move(
    world: World, tmp_path: Path
) -> None:
    support = {"x-purpose": "support"}
    capped = {"tenant": "acme", "headers": _headers(world.token(tenant="acme", sub="noisy"))}
    # initech has no cap: the control that lets the same excess through (another subject than the quiet one)
    uncapped = {"tenant": "uncapped",
                "headers": _headers(world.token(tenant="initech", sub="noisy"), **support)}
    plan = [
        {"name": "alone", "noisy": None},
        {"name": "at_cap", "noisy": {**capped, "rate": CAP * 0.8}},
        {"name": "over_cap", "noisy": {**capped, "rate": OFFERED}},
        {"name": "no_cap", "noisy": {**uncapped, "rate": OFFERED}},
    ]
    quiet = {"users": 3, "rate": 60,
             "headers": _headers(world.token(tenant="initech", sub="quiet"), **support)}
    noisy = {"users": 10}
    # one slot of 5 ms: ~200 req/s; quiet + noisy at its cap use ~40 % of it, the uncapped excess saturates it
    with capacity_upstream(tmp_path, slots=1, service_ms=5, cpus=PATH_CPU) as upstream:
        settings = world.settings(
            geo={"trusted_proxies": ["127.0.0.1/32"]},
            tenants={"acme": {"max_qps": {"read": CAP}}},
            metrics={"tenants": ["acme", "initech"]},
            server={"upstream": upstream},
        )
        with serve_sidecar(settings, tmp_path / "sidecar") as served:
            if PATH_CPU is not None:  # every thread of the gate (it starts no child without a decision log)
                pin = [str(TASKSET), "-a", "-p", "-c", PATH_CPU, str(served.process.pid)]
                subprocess.run(pin, check=True, capture_output=True)
            times = run_phased_locust(served.url, plan, {"quiet": quiet, "noisy": noisy}, tmp_path / "locust")

    quiet_p95 = {phase: cycle_p95(times[f"quiet {phase} 200"]) for phase in PHASES}
    pooled = {phase: round(p95([ms for _, ms in times[f"quiet {phase} 200"]]), 2) for phase in PHASES}
    refused = {phase: count(times, "acme", phase, 429) for phase in PHASES}
    served_capped = count(times, "acme", "over_cap", 200)
    offered = (served_capped + refused["over_cap"]) / (CYCLES * PHASE_S)
    print(f"\nquiet p95 (ms) by phase, median of cycles: { {k: round(v, 2) for k, v in quiet_p95.items()} }; "
          f"pooled: {pooled}; samples "
          f"{ {k: len(times[f'quiet {k} 200']) for k in PHASES} }; acme over_cap: offered {offered:.0f}/s, "
          f"{served_capped} served, {refused['over_cap']} refused 429; uncapped no_cap: "
          f"{count(times, 'uncapped', 'no_cap', 200)} served")
    # 429s for the capped tenant only, and only over its cap
    assert not [name for name in times if name.startswith("quiet") and not name.endswith(" 200")]
    assert not [name for name in times if name.startswith("uncapped") and not name.endswith(" 200")]
    assert refused["at_cap"] == 0 and count(times, "acme", "at_cap", 200) > 0
    assert refused["over_cap"] > 2 * served_capped  # far over its cap: most of what it sent was refused
    assert served_capped <= CYCLES * CAP * (PHASE_S + 1)  # the cap (one second of burst) held, every cycle
    assert all(len(times[f"quiet {phase} 200"]) >= 100 for phase in PHASES)
    # the excess, refused, does not move the others' p95; the same excess without a cap does
    assert quiet_p95["over_cap"] <= quiet_p95["at_cap"] * (1 + REL_TOL) + ABS_TOL_MS, quiet_p95
    assert quiet_p95["no_cap"] >= HARM * quiet_p95["over_cap"], quiet_p95
