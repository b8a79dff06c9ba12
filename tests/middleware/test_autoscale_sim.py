"""The replica recommender on the shipped traces (deploy/traces), against the naive proportional baseline,
through `ig-gate autoscale simulate` and the simulator it runs."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

from bench.autoscale_traces import rows, swing, write
from ig_gate.middleware.settings import load_settings
from ig_gate.middleware.simulate import Fleet, Minute, clairvoyant, read_trace, simulate
from ig_gate.sidecar.cli import main

TRACES = Path(__file__).resolve().parents[2] / "deploy" / "traces"
CONFIG = TRACES / "autoscale.yaml"
EVENT_DAY = "2026-12-24T15:00:00+00:00"  # minute 0 of scheduled-event.csv; the event is 18:00-19:00


@pytest.fixture(scope="module")
def settings():
    return load_settings(CONFIG, env={})


def test_simulate_cli_prints_both_policies_and_writes_the_plot(tmp_path: Path, capsys) -> None:
    png = tmp_path / "swing.png"
    assert main(["autoscale", "simulate", str(TRACES / "swing.csv"), "--config", str(CONFIG),
                 "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["recommender"]) == set(report["baseline"]) == set(report["clairvoyant"]) == {
        "thrash_events", "minutes_under_capacity", "pod_minutes", "cost_per_1k_requests", "max_replicas"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_cli_names_the_bad_line_of_a_trace(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("minute,tenant,profile,requests\n0,acme,read,10\n1,acme,reads,10\n")
    assert main(["autoscale", "simulate", str(bad)]) == 1
    assert f"{bad}:3: profile must be one of" in capsys.readouterr().err


def test_a_20_percent_swing_is_served_without_thrash_or_a_minute_under_capacity(settings) -> None:
    sim = simulate(read_trace(TRACES / "swing.csv"), settings)
    ours, naive = sim.results["recommender"], sim.results["baseline"]
    assert max(sim.load) / min(sim.load) > 1.4  # the trace really swings ±20 %
    assert ours.minutes_under_capacity == 0 and ours.thrash_events == 0
    assert naive.minutes_under_capacity > 20 and naive.thrash_events > 10  # what the recommender avoids
    # the issue asks pod-minutes <= the baseline's; measured: +1.5 %. Unattainable with no minute under
    # capacity: even the clairvoyant fleet pays more than the baseline here (next test); held within 2 %
    assert ours.pod_minutes <= naive.pod_minutes * 1.02


def test_on_the_swing_no_fleet_without_a_minute_under_capacity_is_as_cheap_as_the_baseline(settings) -> None:
    sim = simulate(read_trace(TRACES / "swing.csv"), settings)
    ours, naive, floor = (sim.results[k] for k in ("recommender", "baseline", "clairvoyant"))
    assert floor.minutes_under_capacity == 0
    assert floor.pod_minutes > naive.pod_minutes  # the baseline saves what its minutes under capacity cost
    assert ours.pod_minutes <= floor.pod_minutes * 1.02  # measured: +1.3 % over knowing the future


def test_the_clairvoyant_fleet_is_the_cheapest_with_no_minute_under_capacity() -> None:
    """Against every target sequence of small random needs (startup 1, drain 1: the simulator's default)."""
    rng = random.Random(7)
    for _ in range(40):
        need = [rng.randint(1, 4) for _ in range(5)]
        floor = clairvoyant(need)
        assert all(s >= n for s, n in zip(floor.serving, need, strict=True))
        cheapest = math.inf
        for targets in itertools.product(range(1, 5), repeat=len(need)):  # above the top need never helps
            fleet = Fleet(1, 1)
            for m, target in enumerate(targets):
                fleet.follow(m, target)
            if all(s >= n for s, n in zip(fleet.serving, need, strict=True)):
                cheapest = min(cheapest, fleet.billed)
        assert floor.billed == cheapest, need


@pytest.mark.parametrize(("seed", "noise"), [(2, 0.005), (3, 0.005), (4, 0.01), (5, 0.01)])
def test_the_swing_result_holds_for_other_noise_draws(
    settings, tmp_path: Path, seed: int, noise: float
) -> None:
    """Not tuned to the shipped draw: the same ±20 % swing with other seeds and twice the noise."""
    write(tmp_path / "swing.csv", rows(480, swing, seed, noise=noise))
    ours = simulate(read_trace(tmp_path / "swing.csv"), settings).results["recommender"]
    assert ours.minutes_under_capacity == 0 and ours.thrash_events == 0


def test_after_a_spike_the_recommender_neither_overshoots_nor_lingers(settings) -> None:
    sim = simulate(read_trace(TRACES / "spike.csv"), settings)
    before, peak = sim.recommender.targets[110], math.ceil(max(sim.load))
    assert max(sim.recommender.targets) <= peak + 2  # a step is not a trend: no extrapolated catch-up
    assert max(sim.recommender.targets[135 + 25:]) <= before + 1  # back within 25 minutes of the end
    assert sim.results["recommender"].thrash_events == 0


def test_capacity_for_a_scheduled_event_is_serving_before_it_starts(settings) -> None:
    sim = simulate(read_trace(TRACES / "scheduled-event.csv"), settings, start=EVENT_DAY)
    (first, last, name), = sim.events
    assert (first, last, name) == (180, 239, "winter-sale")
    peak = max(sim.load[first:last + 1])
    assert sim.load[first - 1] < peak / 2  # demand jumps only when the event starts
    assert sim.recommender.serving[first - 1] >= math.ceil(peak)  # pre-scaled and serving before
    assert sim.results["recommender"].minutes_under_capacity == 0
    assert sim.results["baseline"].minutes_under_capacity > 0  # the baseline catches up after the start


def test_a_noisy_tenant_over_its_cap_is_refused_and_does_not_raise_replicas(settings) -> None:
    minutes = read_trace(TRACES / "noisy-tenant.csv")
    sim = simulate(minutes, settings)
    without = simulate([Minute(m.index, {k: v for k, v in m.demand.items() if k[0] != "noisy"})
                        for m in minutes], settings)
    cap = settings.tenants["noisy"].max_qps["read"]
    assert sim.refused == pytest.approx((3000 - cap) * 60 * 120)  # 120 minutes over the cap, all refused
    assert max(sim.offered) > max(sim.load) + 4  # uncapped, the noisy tenant alone would need 5 pods
    # its admitted share (200/s = 1/3 pod) adds at most one replica, never its offered 3000/s
    assert max(sim.recommender.targets) <= max(without.recommender.targets) + 1
    at_cap = simulate([Minute(m.index, {k: min(v, cap * 60) if k == ("noisy", "read") else v
                                        for k, v in m.demand.items()}) for m in minutes], settings)
    assert at_cap.refused == 0
    assert sim.recommender.targets == at_cap.recommender.targets  # the excess changes nothing at all
    assert sim.results["recommender"].minutes_under_capacity == 0
