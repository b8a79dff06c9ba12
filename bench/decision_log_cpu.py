"""CPU per decision-log line: the writer child (or thread) plus the serving process's feeding thread.

Feeds a real DecisionLog the gate's stream: `append_decision()` with a fresh decision id each time and,
for memo hits, the very same input document and result objects (a `--distinct` share gets new ones, as
memo misses do), paced at `--rate` lines a second in bursts of 64. After a warm-up it reads the CPU time
(utime + stime from /proc) of the writer child and of the feeding thread over `--lines` lines, and the
serving thread's own CPU for the appends (the feeding loop included), then verifies the chain. Several
runs: min and median. `--against REV` interleaves each run with one of git revision REV's code (an
archive of it on PYTHONPATH, also for the child), for an A/B on a busy machine.

    .venv/bin/python bench/decision_log_cpu.py                     # 5 runs x 40 000 lines, process writer
    .venv/bin/python bench/decision_log_cpu.py --against HEAD~1    # the same, interleaved with HEAD~1
    .venv/bin/python bench/decision_log_cpu.py --writer thread --runs 3
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

from ig_gate.middleware.decision_log import DecisionLog, verify_chain

TICK_S = os.sysconf("SC_CLK_TCK")
BURST = 64
WARMUP = 2000
KEYS = ("writer", "writer user", "writer sys", "feeder", "total", "append")


def document(n: int) -> dict:
    """An input document shaped like policy_input()'s."""
    return {
        "tenant": "acme",
        "session": {"risk": "low", "acr": "mfa", "auth_age_s": 12 + n, "subject": f"user-{n % 4}"},
        "stepup": False,
        "device": {"posture": "managed"},
        "geo": {"country": "US", "anomaly": False},
        "request": {"method": "POST", "path": "/graphql", "operation_type": "query", "purpose": None},
    }


def cpu_s(stat: str) -> tuple[float, float]:
    """(utime, stime) of a /proc stat file, in seconds."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK_S, int(fields[12]) / TICK_S


def feed(log: DecisionLog, lines: int, rate: float, distinct: float, start: int) -> float:
    """Append `lines` entries paced at `rate` a second; the serving thread's CPU seconds for the appends."""
    documents = [(document(i), {"allow": True, "reasons": []}) for i in range(4)]
    every = int(1 / distinct) if distinct else 0
    spent = 0.0
    began = time.monotonic()
    for done in range(0, lines, BURST):
        before = time.thread_time()
        for i in range(start + done, start + min(done + BURST, lines)):
            if every and i % every == 0:
                doc, result = document(i), {"allow": True, "reasons": []}
            else:
                doc, result = documents[i % 4]
            log.append_decision(f"3f9a0c2e51d7b864-{i}", "ig/zt/decision", doc, result, "rev-1", "allow")
        spent += time.thread_time() - before
        pause = began + (done + BURST) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return spent


def run(args: argparse.Namespace, directory: Path) -> dict[str, float]:
    """One run: µs a line for the writer (child or thread), the feeder and the appends."""
    path = directory / f"decisions-{time.monotonic_ns()}.jsonl"
    log = DecisionLog(path, queue_size=1_000_000, writer=args.writer)
    try:
        feed(log, WARMUP, args.rate, args.distinct, 0)  # imports, caches, the child's start
        log.flush()
        feeder = f"/proc/self/task/{log._thread.native_id}/stat"
        child = log._sink._child.pid if args.writer == "process" else None
        writer = f"/proc/{child}/stat" if child else feeder
        w0, f0 = cpu_s(writer), cpu_s(feeder)
        appends = feed(log, args.lines, args.rate, args.distinct, WARMUP)
        log.flush()
        w1, f1 = cpu_s(writer), cpu_s(feeder)
    finally:
        log.close()
    report = verify_chain(path)
    assert report.ok and report.entries == args.lines + WARMUP, report
    path.unlink()
    per = 1e6 / args.lines
    user, system = (w1[0] - w0[0]) * per, (w1[1] - w0[1]) * per
    feeder_us = (sum(f1) - sum(f0)) * per if child else 0.0
    values = (user + system, user, system, feeder_us, user + system + feeder_us, appends * per)
    return dict(zip(KEYS, values, strict=True))


def baseline_run(args: argparse.Namespace, tree: Path) -> dict[str, float]:
    """One run of the script with the code of `tree` (an archive of --against) first on PYTHONPATH."""
    command = [
        sys.executable, __file__, "--json", "--runs", "1", "--writer", args.writer,
        "--lines", str(args.lines), "--rate", str(args.rate), "--distinct", str(args.distinct),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)[0]


def table(title: str, runs: list[dict[str, float]]) -> None:
    print(title)
    print("µs a line      min   median  (runs: ...)")
    for key in KEYS:
        values = [r[key] for r in runs]
        listed = " ".join(f"{v:.2f}" for v in values)
        print(f"{key:<13}{min(values):6.2f} {statistics.median(values):8.2f}  ({listed})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writer", choices=("process", "thread"), default="process")
    parser.add_argument("--lines", type=int, default=40_000, help="measured lines per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10_000, help="lines a second")
    parser.add_argument("--distinct", type=float, default=0.01, help="share of new documents (memo misses)")
    parser.add_argument("--against", metavar="REV", help="interleave with runs of this git revision's code")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON only")
    args = parser.parse_args()
    if args.json:
        with tempfile.TemporaryDirectory() as directory:
            print(json.dumps([run(args, Path(directory)) for _ in range(args.runs)]))
        return 0
    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}")
    current: list[dict[str, float]] = []
    baseline: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        tree = Path(directory) / "baseline"
        if args.against:
            (tree / "ig_gate").mkdir(parents=True)
            root = Path(__file__).resolve().parent.parent
            git = ["git", "-C", str(root), "archive", args.against]
            archive = subprocess.run(git, check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(tree / "ig_gate")], input=archive.stdout, check=True)
        for _ in range(args.runs):
            if args.against:
                baseline.append(baseline_run(args, tree))
            current.append(run(args, Path(directory)))
    print(f"loadavg after:  {Path('/proc/loadavg').read_text().strip()}")
    setup = f"{args.writer} writer, {args.lines} lines a run at {args.rate:.0f}/s"
    setup += f", {args.distinct:.0%} new documents"
    if baseline:
        table(f"{args.against}: {setup}", baseline)
    table(f"this checkout: {setup}", current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
