"""Run fuzz harnesses: `python fuzz/run.py [--seconds N] [--smoke] [TARGET ...]` (all targets by default).

Default (`make fuzz`): each harness fuzzes for N seconds with fuzz/corpus/<target> as its corpus (and the
words of fuzz/dicts/<target>.dict when there is one), then the corpus is minimised (libFuzzer's -merge=1:
the `seed-*` files, plus the fewest other inputs that keep all the coverage found). A finding stops the
run; libFuzzer saves the input as fuzz/findings/<target>-crash-*.
--smoke (`make test`, tests/fuzz/test_fuzz_smoke.py): new inputs go to a temporary directory, the
checked-in corpus is left as it is.
Prints one line per target: executions, new inputs, and the corpus size.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
TARGETS = ("archive", "signatures", "client_ip", "token", "graphql", "proxy")
_STAT = re.compile(r"stat::(\w+):\s*(\d+)")


def _harness(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    # libFuzzer's -merge re-runs the harness as a command: `python3` must be this interpreter
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, str(FUZZ / f"fuzz_{target}.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


_NOISE = re.compile(r"INFO: Instrumenting |#\d+\s")  # atheris per module; libFuzzer per new input


def report(output: str) -> str:
    """libFuzzer's output without its progress lines and atheris's one line per instrumented module."""
    return "\n".join(line for line in output.splitlines() if not _NOISE.match(line))


def fuzz(target: str, seconds: int, corpus: Path, artifacts: Path, *extra: Path) -> dict[str, int]:
    """Fuzz target for seconds (new inputs into corpus); its final stats, or SystemExit on a finding."""
    words = FUZZ / "dicts" / f"{target}.dict"
    done = _harness(
        target, str(corpus), *map(str, extra), f"-max_total_time={seconds}", "-timeout=20",
        f"-artifact_prefix={artifacts}/{target}-", "-print_final_stats=1",
        *([f"-dict={words}"] if words.exists() else []),
    )  # fmt: skip
    if done.returncode != 0:
        found = report(done.stderr)[-8000:]
        raise SystemExit(f"fuzz_{target} found something (exit {done.returncode}):\n{found}")
    return {name: int(value) for name, value in _STAT.findall(done.stderr)}


def minimise(target: str, corpus: Path) -> None:
    """Replace corpus by its seeds plus the fewest other inputs that keep its coverage."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
        kept = Path(tmp) / "corpus"
        kept.mkdir()
        for seed in corpus.glob("seed-*"):
            shutil.copy2(seed, kept)
        done = _harness(target, "-merge=1", str(kept), str(corpus))
        if done.returncode != 0:
            raise SystemExit(f"fuzz_{target}: corpus merge failed:\n{report(done.stderr)[-4000:]}")
        for old in corpus.iterdir():
            old.unlink()
        for entry in kept.iterdir():
            shutil.move(entry, corpus / entry.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="leave the checked-in corpus as it is")
    args = parser.parse_args(argv)
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    findings = FUZZ / "findings"
    findings.mkdir(exist_ok=True)
    for target in args.targets or TARGETS:
        corpus = FUZZ / "corpus" / target
        if args.smoke:
            with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
                stats = fuzz(target, args.seconds, Path(tmp), findings, corpus)
        else:
            stats = fuzz(target, args.seconds, corpus, findings)
            minimise(target, corpus)
        size = len(list(corpus.iterdir()))
        print(
            f"fuzz_{target}: {stats.get('number_of_executed_units', 0)} executions in {args.seconds} s, "
            f"{stats.get('new_units_added', 0)} new inputs, corpus {size} files, no findings",
            flush=True,
        )


if __name__ == "__main__":
    main()
