"""A short run of every fuzz harness (fuzz/) over its seed corpus, as `make fuzz` runs them for longer.

Each harness runs coverage-guided for SMOKE_SECONDS in its own process (fuzz/run.py --smoke): the seed
corpus first, then mutations. Any finding (an exception other than the parser's named error, a broken
property, a time bound exceeded) makes libFuzzer exit non-zero and fails the test with the harness's
report. New inputs go to a temporary directory: the checked-in corpus is left as it is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
TARGETS = ("archive", "signatures", "client_ip", "token", "graphql", "proxy")
SMOKE_SECONDS = 2


def test_every_harness_has_a_checked_in_seed_corpus():
    harnesses = {path.name.removeprefix("fuzz_").removesuffix(".py") for path in FUZZ.glob("fuzz_*.py")}
    assert harnesses == set(TARGETS)
    for target in TARGETS:
        assert len(list((FUZZ / "corpus" / target).glob("seed-*"))) >= 5, target


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_fuzz_run_over_the_seed_corpus_finds_nothing(target: str):
    command = [sys.executable, str(FUZZ / "run.py"), "--smoke", "--seconds", str(SMOKE_SECONDS), target]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-8000:]}"
    executed = int(re.search(rf"fuzz_{target}: (\d+) executions", done.stdout)[1])
    seeds = len(list((FUZZ / "corpus" / target).iterdir()))
    assert executed > seeds, done.stdout  # the corpus, then mutations
