"""Interleaved A/B of the in-process warm path between builds of ig_gate (e.g. pure Python vs mypyc).

Each variant is a directory put first on PYTHONPATH (a tree holding `ig_gate/<package>/`, such as a
wheel unpacked or `pip install --target`), or "-" for the ig_gate the interpreter imports by itself.
Every round starts one fresh process per variant, alternating which goes first; each process builds
the test world, warms one request through ZeroTrustMiddleware (decision log and metrics on, as
bench/test_middleware_path.py), freezes the heap and then times CALLS calls of the no-op app alone (a)
and through the middleware (b), REPEATS times each. The figure is the serving thread's CPU per call
(`time.thread_time`), b - a: what the middleware adds, decision-log writer excluded (other thread or
process). Prints per-variant min and median over every repeat of every round, and the load average.

    python bench/warm_ab.py --rounds 5 pure=/tmp/pure compiled=/tmp/compiled
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(calls: int, repeats: int) -> dict[str, object]:
    """In a child: (a, b) serving-thread µs per call for each repeat, and where ig_gate came from."""
    from bench.test_middleware_path import ALLOWED, Request, noop_app, protect
    from ig_gate.middleware import gate
    from ig_gate.middleware.asgi import freeze_heap
    from tests.middleware.conftest import build_world
    from tests.support import tokens

    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp))
        protected = protect(world, Path(tmp) / "decisions.jsonl")
        through = Request(protected, tokens.session_token(world.idp), "203.0.113.5")
        alone = Request(noop_app, "x", "203.0.113.5")
        through.call()
        freeze_heap()
        pairs = []
        for _ in range(repeats):
            row = []
            for request in (alone, through):
                started = time.thread_time()
                for _ in range(calls):
                    request.call()
                row.append((time.thread_time() - started) / calls * 1e6)
            pairs.append(row)
        allowed = protected.gate.metrics.registry.get_sample_value("ig_gate_decisions_total", ALLOWED)
        protected.gate.close()
    if allowed != through.made:  # every timed call was decided (and allowed), in every variant
        raise SystemExit(f"{allowed} requests allowed of {through.made}")
    return {"gate": gate.__file__, "pairs": pairs}


def run_child(path: str, calls: int, repeats: int) -> dict[str, object]:
    env = dict(os.environ)
    if path != "-":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, str(REPO)) if p)
    else:
        env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, __file__, "--child", "--calls", str(calls), "--repeats", str(repeats)]
    out = subprocess.run(argv, env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("variants", nargs="*", help="NAME=DIR (DIR first on PYTHONPATH; '-' for none)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.calls, args.repeats)))
        return
    variants = [tuple(v.split("=", 1)) for v in args.variants]
    added: dict[str, list[float]] = {name: [] for name, _ in variants}
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    for round_no in range(args.rounds):
        order = variants if round_no % 2 == 0 else variants[::-1]
        for name, path in order:
            result = run_child(path, args.calls, args.repeats)
            diffs = [b - a for a, b in result["pairs"]]
            added[name] += diffs
            print(f"round {round_no} {name}: b-a " + " ".join(f"{d:.2f}" for d in diffs)
                  + f"  (a {min(a for a, _ in result['pairs']):.2f}; {Path(str(result['gate'])).name})")
    print(f"loadavg at end: {Path('/proc/loadavg').read_text().strip()}")
    for name, values in added.items():
        print(f"{name}: added µs/request min {min(values):.2f} median {statistics.median(values):.2f}"
              f" (n={len(values)})")


if __name__ == "__main__":
    main()
