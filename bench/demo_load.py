"""Run the locust scenarios headless against the protected demo: `python bench/demo_load.py -t 30s`.

Builds the demo world in a temporary directory, serves the demo app behind ZeroTrustMiddleware and the
dev IdP (`POST /token`, for step-up) with uvicorn on free loopback ports, runs
`locust -f bench/locustfile.py --headless ...` against them and exits with locust's exit code (1 when
any response was unexpected). Extra arguments after `--` go to locust.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/demo_load.py`: import siblings as `bench.*`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import targets
from bench.serving import REPO, serve_target
from ig_gate.sidecar.demo import prepare


@dataclass(frozen=True, slots=True)
class LoadTarget:
    """The protected demo, the dev IdP and the private keys locust mints tokens with."""

    demo_url: str
    idp_url: str
    keys: Path


@contextlib.contextmanager
def load_target(workdir: Path) -> Iterator[LoadTarget]:
    """Prepare the demo world in `workdir` and serve it until the block ends."""
    with contextlib.redirect_stdout(io.StringIO()):  # ig-policy prints JSON for every step
        idp = prepare(workdir / "demo", REPO / "policies")
    targets.write_idp_keys(idp, workdir / "keys")
    env = {
        targets.CONFIG_ENV: str(workdir / "demo" / "ig-gate.yaml"),
        targets.IDP_DIR_ENV: str(workdir / "keys"),
        "IG_GATE_DECISION_LOG__PATH": str(workdir / "decisions.jsonl"),
    }
    with (
        serve_target("middleware", env, workdir / "demo.log") as demo,
        serve_target("devidp", env, workdir / "idp.log") as dev_idp,
    ):
        yield LoadTarget(demo.url, dev_idp.url, workdir / "keys")


def locust_argv(target: LoadTarget, *, users: int, spawn_rate: float, run_time: str) -> list[str]:
    """The headless locust command line against `target`."""
    return [
        sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locustfile.py"), "--headless",
        "-u", str(users), "-r", f"{spawn_rate:g}", "-t", run_time, "--host", target.demo_url,
        "--idp-key", str(target.keys / "idp.key"), "--mdm-key", str(target.keys / "mdm.key"),
        "--idp-url", target.idp_url, "--stop-timeout", "5", "--only-summary",
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/demo_load.py", description=__doc__.splitlines()[0])
    parser.add_argument("-u", "--users", type=int, default=20)
    parser.add_argument("-r", "--spawn-rate", type=float, default=20)
    parser.add_argument("-t", "--run-time", default="30s")
    parser.add_argument("locust_args", nargs="*", help="more locust arguments (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ig-load-") as tmp, load_target(Path(tmp)) as target:
        command = locust_argv(target, users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time)
        return subprocess.run([*command, *args.locust_args], cwd=tmp, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
