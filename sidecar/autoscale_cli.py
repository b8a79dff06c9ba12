"""`ig-gate autoscale simulate TRACE.csv [--config FILE]`: replay a trace through the recommender and a
naive proportional baseline, against the clairvoyant floor (middleware/simulate.py); a JSON summary on
stdout and a PNG plot.

Exit codes: 0 done, 1 bad trace or config (one line on stderr naming what and where), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ig_gate.errors import IgGateError
from ig_gate.middleware.settings import load_settings
from ig_gate.middleware.simulate import plot, read_trace, simulate


def _simulate(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, env={})
        if args.component and args.component not in settings.autoscale.profiles:
            print(f"ig-gate: --component: {args.component!r} is not in autoscale.profiles", file=sys.stderr)
            return 1
        sim = simulate(
            read_trace(args.trace), settings, component=args.component, start=args.start,
            startup_min=args.startup_min, drain_min=args.drain_min, pod_minute_cost=args.pod_minute_cost,
        )
    except IgGateError as exc:
        print(f"ig-gate: {exc}", file=sys.stderr)
        return 1
    out = args.plot or Path(args.trace).with_suffix(".png")
    plot(sim, out, Path(args.trace).stem)
    print(json.dumps({"trace": str(args.trace), **sim.to_json(), "plot": str(out)}, indent=2))
    return 0


def register_autoscale(subparsers: argparse._SubParsersAction) -> None:
    """`ig-gate autoscale simulate`."""
    autoscale = subparsers.add_parser("autoscale", help="replica recommender tools")
    actions = autoscale.add_subparsers(dest="action", required=True, metavar="ACTION")
    sim = actions.add_parser(
        "simulate",
        help="replay a per-minute trace through the recommender and a naive baseline",
        description="Replay TRACE.csv (minute,tenant,profile,requests) through the replica recommender "
        "configured in --config (autoscale.*, tenants.*.max_qps) and through replicas = ceil(demand / "
        "capacity) each minute; print thrash events, minutes under capacity, pod-minutes and cost per 1k "
        "requests of both and of the clairvoyant floor (the cheapest fleet with no minute under capacity), "
        "and draw demand, capacity and replicas (PNG).",
    )
    sim.add_argument("trace", metavar="TRACE.csv", help="the per-minute trace")
    sim.add_argument("--config", help="an ig-gate YAML config (its autoscale and tenants sections)")
    sim.add_argument("--component", help="the component to simulate (default: the first in profiles)")
    sim.add_argument("--start", default="2026-12-01T00:00:00+00:00",
                     help="wall-clock time of minute 0 (ISO 8601; scheduled events are matched to it)")
    sim.add_argument("--startup-min", type=int, default=1, help="minutes a new pod is billed before serving")
    sim.add_argument("--drain-min", type=int, default=1, help="minutes a removed pod is still billed")
    sim.add_argument("--pod-minute-cost", type=float, default=1.0, help="cost of one pod-minute")
    sim.add_argument("--plot", type=Path, help="where to write the PNG (default: TRACE.png)")
    sim.set_defaults(handler=_simulate)
