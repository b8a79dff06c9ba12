"""`make bench`: the demo GraphQL app bare and protected, measured side by side with wrk.

Every config is served by uvicorn (uvloop, httptools, one worker, access log off) as a subprocess on a
free loopback port, pinned to CPU 0; wrk runs pinned to CPU 1 (`taskset`, when available). Configs:

- `bare`          the demo app alone (the baseline);
- `middleware`    the demo app behind ZeroTrustMiddleware (metrics and hash-chained decision log on);
- `forward-auth`  the sidecar's `/authz` (Envoy ext_authz style, body forwarded) -- skipped when the
                  sidecar modules are not installed;
- `coprocessor`   the sidecar's Apollo Router coprocessor (`RouterRequest` stage) -- likewise;
- `pyjwt`         the demo app behind what users write by hand instead: a pure-ASGI middleware verifying
                  the JWT with pyjwt on every request (bench/handwritten.py; authentication only, so
                  every request of the pool, step-up and deny included, is answered 200).

Two modes, each after a warm-up and interleaved config by config (A/B/C/D, A/B/C/D, ...) for N rounds:
saturation (closed loop, C connections) and a fixed request rate at `--load` x the bare app's median
saturated throughput ("overhead at normal load"; closed-loop pacing, see bench/wrk/mix.lua). Figures
are medians over rounds with min-max spread; ratios and added latency against bare are paired per round.
Writes bench/results/<timestamp>.json, .md and .png. Exit 1 when a config answered a status its
traffic does not expect (the benchmark then measured the wrong path).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/overhead.py`: import siblings as `bench.*`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import profiling, targets
from bench.machine import describe
from bench.profiling import Profile
from bench.report import (
    FIXED_RATE,
    SATURATION,
    fixed_rate_table,
    plot,
    profile_json,
    profile_table,
    saturation_table,
)
from bench.serving import REPO, Target, serve_target
from bench.summary import BASELINE, ConfigSummary, summarize, unexpected_statuses
from bench.traffic import Mix, client_pool, expected_statuses, wire_pool, write_lua_pool
from bench.wrkrun import WrkResult, pin_prefix, run_wrk
from ig_gate.sidecar.demo import prepare

SERVER_CPU = 0
LOAD_CPU = 1


@dataclass(frozen=True, slots=True)
class Config:
    """A served target: its uvicorn factory in bench/targets.py and the envelope its traffic uses."""

    name: str
    factory: str
    shape: str
    needs_sidecar: bool = False
    authenticates_only: bool = False  # decides no policy: every request of the pool carries a valid token
    by_default: bool = True  # run without --configs (the decomposition configs are asked for by name)


CONFIGS = (
    Config("bare", "bare", "direct"),
    Config("middleware", "middleware", "direct"),
    Config("forward-auth", "sidecar", "forward-auth", needs_sidecar=True),
    Config("coprocessor", "sidecar", "coprocessor", needs_sidecar=True),
    Config("pyjwt", "pyjwt", "direct", authenticates_only=True),
    # the served cost taken apart: body read + replay alone, then the gate without its decision log
    Config("passthrough", "passthrough", "direct", by_default=False),
    Config("middleware-nolog", "middleware_nolog", "direct", by_default=False),
    # a control: unrelated stdlib code as costly in process as the gate (bench/wire_replay.py), served
    Config("stdlib-control", "stdlib_control", "direct", by_default=False),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/overhead.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per mode (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per config (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: one core)")
    parser.add_argument("--load", type=float, default=0.5,
                        help="fixed-rate mode at this fraction of bare capacity; 0 skips it (default 0.5)")
    parser.add_argument("--stepup", type=float, default=0.0, help="share of step-up (401) requests")
    parser.add_argument("--deny", type=float, default=0.0, help="share of denied (403) requests")
    parser.add_argument("--mutations", type=float, default=0.25, help="share of mutations among allowed")
    parser.add_argument("--configs", default=",".join(c.name for c in CONFIGS if c.by_default),
                        help="comma-separated configs to run (default: all available but passthrough, "
                        "middleware-nolog and stdlib-control, which take the served cost apart)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="results directory")
    parser.add_argument("--profile", action="store_true",
                        help="after the measured rounds, one py-spy sampled saturation run per config")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 1 s, 1 s warm-up (smoke tests; numbers are not meaningful)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 1.0
    wanted = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {c.name for c in CONFIGS})
    if unknown:
        parser.error(f"--configs: unknown config {unknown[0]!r}")
    args.selected = [c for c in CONFIGS if c.name in wanted]
    try:
        args.mix = Mix(stepup=args.stepup, deny=args.deny, mutations=args.mutations)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    return args


def available(configs: Sequence[Config]) -> list[Config]:
    """The configs whose modules exist; prints 'skipped' for the others."""
    has_sidecar = targets.sidecar_available()
    kept = []
    for config in configs:
        if config.needs_sidecar and not has_sidecar:
            print(f"{config.name}: skipped (sidecar modules not installed)", file=sys.stderr)
        else:
            kept.append(config)
    return kept


@contextlib.contextmanager
def serve(configs: Sequence[Config], workdir: Path) -> Iterator[dict[str, Target]]:
    """Start one uvicorn process per config (pinned to SERVER_CPU); yield name -> served target."""
    served = {}
    with contextlib.ExitStack() as stack:
        for config in configs:
            env = {
                targets.CONFIG_ENV: str(workdir / "demo" / "ig-gate.yaml"),
                "IG_GATE_DECISION_LOG__PATH": str(workdir / f"decisions-{config.name}.jsonl"),
            }
            log = workdir / f"server-{config.name}.log"
            served[config.name] = stack.enter_context(serve_target(config.factory, env, log, SERVER_CPU))
        yield served


def measure(
    configs: Sequence[Config],
    served: dict[str, Target],
    pools: dict[str, Path],
    args: argparse.Namespace,
    rate: float | None,
) -> dict[str, list[WrkResult]]:
    """`args.rounds` interleaved rounds over `configs`; one wrk run per config per round, with the CPU
    time the server process spent during it."""
    results: dict[str, list[WrkResult]] = {c.name: [] for c in configs}
    mode = f"fixed {rate:.0f} req/s" if rate else "saturation"
    for round_no in range(1, args.rounds + 1):
        for config in configs:
            target = served[config.name]
            cpu_before = target.cpu_seconds()
            result = run_wrk(
                target.url, pools[config.shape], duration_s=args.duration,
                connections=args.connections, threads=args.threads, rate=rate, cpu=LOAD_CPU,
            )  # fmt: skip
            result = dataclasses.replace(result, server_cpu_s=target.cpu_seconds() - cpu_before)
            results[config.name].append(result)
            print(
                f"  {mode} round {round_no}/{args.rounds} {config.name:13s} {result.rps:9.0f} req/s  "
                f"p50 {result.latency_ms('p50'):6.2f}  p95 {result.latency_ms('p95'):6.2f}  "
                f"p99 {result.latency_ms('p99'):6.2f} ms  CPU {result.cpu_us_per_request:5.0f} µs/req",
                file=sys.stderr,
            )
    return results


@dataclass(slots=True)
class BenchRun:
    """Everything one run produced, for the result files."""

    stamp: str
    machine: dict
    modes: dict[str, list[ConfigSummary]] = dataclasses.field(default_factory=dict)
    rate: float | None = None
    profiles: dict[str, Profile] = dataclasses.field(default_factory=dict)
    problems: dict[str, dict[int, int]] = dataclasses.field(default_factory=dict)
    elapsed_s: float = 0.0


def run_modes(
    run: BenchRun, configs: Sequence[Config], served: dict[str, Target], pools: dict[str, Path],
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Warm-up, saturation rounds, then fixed-rate rounds at args.load x bare capacity."""
    print(f"bench: warm-up {args.warmup:g} s per config", file=sys.stderr)
    for config in configs:
        run_wrk(served[config.name].url, pools[config.shape], duration_s=args.warmup,
                connections=args.connections, threads=args.threads, cpu=LOAD_CPU)  # fmt: skip
    run.modes[SATURATION] = summarize(measure(configs, served, pools, args, None))
    base = next((s for s in run.modes[SATURATION] if s.name == BASELINE), None)
    if args.load > 0 and base is not None:
        run.rate = args.load * base.rps.median
        run.modes[FIXED_RATE] = summarize(measure(configs, served, pools, args, run.rate))
    elif args.load > 0:
        print("bench: fixed-rate mode skipped (needs the bare config)", file=sys.stderr)


def profile_configs(
    run: BenchRun, configs: Sequence[Config], served: dict[str, Target], pools: dict[str, Path],
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """One extra saturation run per config under py-spy (not counted in the figures); the collapsed
    stacks go to <out>/<stamp>-<config>.folded."""
    for config in configs:
        out = args.out / f"{run.stamp}-{config.name}.folded"
        sampler = profiling.start(served[config.name].pid, args.duration, out)
        run_wrk(served[config.name].url, pools[config.shape], duration_s=args.duration,
                connections=args.connections, threads=args.threads, cpu=LOAD_CPU)  # fmt: skip
        profiling.finish(sampler)
        run.profiles[config.name] = profiling.read_profile(out)
        print(f"  profiled {config.name}: {out}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configs = available(args.selected)
    if not configs:
        print("bench: no config to run", file=sys.stderr)
        return 2
    if args.profile:
        profiling.py_spy()  # fail before measuring for minutes
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    run = BenchRun(datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ"), describe(REPO))
    with tempfile.TemporaryDirectory(prefix="ig-bench-") as tmp:
        workdir = Path(tmp)
        with contextlib.redirect_stdout(io.StringIO()):  # ig-policy prints JSON for every step
            idp = prepare(workdir / "demo", REPO / "policies")
        client = client_pool(idp, args.mix)
        wires = {shape: wire_pool(client, shape) for shape in {c.shape for c in configs}}
        pools = {shape: write_lua_pool(w, workdir / f"pool-{shape}.lua") for shape, w in wires.items()}
        with serve(configs, workdir) as served:
            run_modes(run, configs, served, pools, args)
            if args.profile:
                profile_configs(run, configs, served, pools, args)
    expected = {
        c.name: {200} if c.authenticates_only else set(expected_statuses(wires[c.shape])) for c in configs
    }
    run.problems = {
        f"{mode}/{s.name}": bad
        for mode, summaries in run.modes.items()
        for s in summaries
        if (bad := unexpected_statuses(s, expected[s.name]))
    }
    run.elapsed_s = time.monotonic() - started
    paths = write_results(args, run)
    print(paths["md"].read_text())
    print(f"bench: wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if run.problems:
        print(f"bench: unexpected statuses {run.problems}: wrong path measured", file=sys.stderr)
        return 1
    return 0


def write_results(args: argparse.Namespace, run: BenchRun) -> dict[str, Path]:
    """<out>/<timestamp>.{json,md,png}."""
    settings = {
        "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
        "connections": args.connections, "wrk_threads": args.threads, "load": args.load,
        "fixed_rate_rps": round(run.rate, 1) if run.rate else None, "mix": {
            "stepup": args.mix.stepup, "deny": args.mix.deny, "mutations": args.mix.mutations},
        "pinned": bool(pin_prefix(SERVER_CPU)) and bool(pin_prefix(LOAD_CPU)),
    }  # fmt: skip
    machine = run.machine
    title = (
        f"ig-gate overhead {run.stamp} · {machine['cpu_model']} · {machine['cores']} cores · "
        f"{args.rounds}x{args.duration:g}s, {args.connections} conns"
    )
    document = {
        "timestamp": run.stamp,
        "elapsed_s": round(run.elapsed_s, 1),
        "machine": machine,
        "loadavg_end": list(os.getloadavg()),  # other processes on the machine skew every figure but CPU/req
        "settings": settings,
        "modes": {mode: {s.name: s.to_json() for s in summaries} for mode, summaries in run.modes.items()},
        "profiles": {name: profile_json(p) for name, p in run.profiles.items()},
        "unexpected_statuses": {k: {str(s): n for s, n in v.items()} for k, v in run.problems.items()},
    }
    base = args.out / run.stamp
    paths = {suffix: base.with_suffix(f".{suffix}") for suffix in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(document, indent=2) + "\n")
    sections = [f"## {title}", "", "Saturation (closed loop), median (min … max) over rounds:", ""]
    sections += [saturation_table(run.modes[SATURATION]), ""]
    if FIXED_RATE in run.modes and run.rate:
        sections += [f"Fixed rate {run.rate:.0f} req/s ({args.load:.0%} of bare capacity):", ""]
        sections += [fixed_rate_table(run.modes[FIXED_RATE], run.rate), ""]
    if run.profiles:
        sections += [profile_table(run.profiles), ""]
    paths["md"].write_text("\n".join(sections))
    plot(run.modes, paths["png"], title)
    return paths


if __name__ == "__main__":
    raise SystemExit(main())
