"""Reverse-proxy mode throughput: wrk straight to an upstream vs through `ig-gate serve --upstream`.

The upstream (`upstream_app` below: a fixed GraphQL-shaped JSON answer, served by uvicorn with uvloop and
httptools) and the sidecar run pinned to CPU 0, wrk to CPU 1 (`taskset`, when available), so the
proxied figure is what one core does when it runs both the gate+proxy and the upstream. The traffic is
the allow path of bench/traffic.py (`POST /graphql` with a JSON body, low-risk users on managed
devices). A third config, `proxy-only`, sends the same requests to a path the demo config excludes from
the gate, which separates the proxy's own cost from the gate's. Runs alternate direct, proxied,
proxy-only, direct, ... for N rounds after a warm-up; figures are medians with min-max spread, and
CPU µs/request sums the server processes (all threads) a request went through.

    python bench/proxy_throughput.py [--rounds 5] [--duration 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/proxy_throughput.py`: import siblings as `bench.*`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import saturation_table
from bench.serving import REPO, Target
from bench.summary import summarize, unexpected_statuses
from bench.traffic import Mix, client_pool, expected_statuses, wire_pool, write_lua_pool
from bench.wrkrun import WrkResult, pin_prefix, run_wrk
from ig_gate.sidecar.demo import prepare
from tests.support.procs import free_port, running

SERVER_CPU = 0
LOAD_CPU = 1
IG_GATE = Path(sys.executable).with_name("ig-gate")
UPSTREAM_BODY = b'{"data":{"me":{"subject":"bench-user","tenant":"acme","risk":"low"}}}'
_UPSTREAM_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(UPSTREAM_BODY)).encode()),
]
UNGATED_PATH = "/ui"  # in the demo config's exclude_paths: the proxy without the gate's decision


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The upstream: reads the request body, answers 200 with a small JSON document."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": _UPSTREAM_HEADERS})
    await send({"type": "http.response.body", "body": UPSTREAM_BODY})


def upstream_argv(port: int, cpu: int | None = SERVER_CPU) -> list[str]:
    """uvicorn serving `upstream_app` on 127.0.0.1:port (pinned to `cpu` when given)."""
    return [
        *(pin_prefix(cpu) if cpu is not None else []),
        sys.executable, "-m", "uvicorn", "bench.proxy_throughput:upstream_app", "--app-dir", str(REPO),
        "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@contextlib.contextmanager
def serve_upstream(log: Path, cpu: int | None = SERVER_CPU) -> Iterator[Target]:
    """Run `upstream_app` until the block ends."""
    port = free_port()
    with running(upstream_argv(port, cpu), port=port, log=log, cwd=REPO) as process:
        yield Target(f"http://127.0.0.1:{port}", process.pid)


@contextlib.contextmanager
def serve_proxy(config: Path, upstream: str, log: Path, cpu: int | None = SERVER_CPU) -> Iterator[Target]:
    """`ig-gate serve --config CONFIG --upstream UPSTREAM` until the block ends."""
    port = free_port()
    argv = [
        *(pin_prefix(cpu) if cpu is not None else []),
        str(IG_GATE), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
        "--upstream", upstream,
    ]  # fmt: skip
    env = {"IG_GATE_DECISION_LOG__PATH": str(log.with_suffix(".decisions.jsonl"))}
    with running(argv, port=port, log=log, env=env, cwd=config.parent, timeout_s=60) as process:
        yield Target(f"http://127.0.0.1:{port}", process.pid)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/proxy_throughput.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per config (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ig-proxy-bench-") as tmp:
        workdir = Path(tmp)
        with contextlib.redirect_stdout(io.StringIO()):  # ig-policy prints JSON for every step
            idp = prepare(workdir / "demo", REPO / "policies")
        wires = wire_pool(client_pool(idp, Mix(mutations=0.0)), "direct")
        pool = write_lua_pool(wires, workdir / "pool.lua")
        ungated = [dataclasses.replace(w, path=UNGATED_PATH) for w in wires]
        ungated_pool = write_lua_pool(ungated, workdir / "pool-ungated.lua")
        with (
            serve_upstream(workdir / "upstream.log") as upstream,
            serve_proxy(workdir / "demo" / "ig-gate.yaml", upstream.url, workdir / "sidecar.log") as proxy,
        ):
            targets = {
                "direct": (upstream, pool, [upstream]),
                "proxied": (proxy, pool, [proxy, upstream]),
                "proxy-only": (proxy, ungated_pool, [proxy, upstream]),
            }
            for target, requests, _ in targets.values():
                run_wrk(
                    target.url, requests, duration_s=args.warmup, connections=args.connections, cpu=LOAD_CPU
                )
            rounds: dict[str, list[WrkResult]] = {name: [] for name in targets}
            for round_no in range(1, args.rounds + 1):
                for name, (target, requests, processes) in targets.items():
                    before = sum(p.cpu_seconds() for p in processes)
                    result = run_wrk(
                        target.url, requests, duration_s=args.duration, connections=args.connections,
                        cpu=LOAD_CPU,
                    )  # fmt: skip
                    cpu = sum(p.cpu_seconds() for p in processes) - before
                    result = dataclasses.replace(result, server_cpu_s=cpu)
                    rounds[name].append(result)
                    print(
                        f"  round {round_no}/{args.rounds} {name:10s} {result.rps:8.0f} req/s  "
                        f"p50 {result.latency_ms('p50'):6.2f}  p99 {result.latency_ms('p99'):6.2f} ms  "
                        f"CPU {result.cpu_us_per_request:5.0f} µs/req",
                        file=sys.stderr,
                    )
    summaries = summarize(rounds, baseline="direct")
    print(saturation_table(summaries))
    expected = set(expected_statuses(wires))
    problems = {s.name: bad for s in summaries if (bad := unexpected_statuses(s, expected))}
    if problems:
        print(f"bench: unexpected statuses {problems}: these numbers measure the wrong path", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
