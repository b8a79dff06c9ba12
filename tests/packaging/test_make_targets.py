"""`make demo` installs what the demo runs, not the `[dev]` extras (issue 12 B2: a 583 MB venv and ~107 s
before); `make test` still gets them. Checked with `make -n` on a copy of the Makefile, without a venv."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def planned(tmp_path: Path, target: str) -> list[str]:
    """The pip commands `make TARGET` would run in a checkout without .venv."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    done = subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    return [line for line in lines if "pip install" in line and "--upgrade pip" not in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_the_runtime_and_the_demo_extra_alone(tmp_path: Path):
    assert planned(tmp_path, "demo") == [".venv/bin/pip install -q -e '.[demo]'"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_adds_the_dev_extras(tmp_path: Path):
    assert planned(tmp_path, "test")[-1] == ".venv/bin/pip install -q -e '.[dev]'"
