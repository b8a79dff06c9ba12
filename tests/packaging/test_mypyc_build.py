"""The opt-in compiled build (setup.py, `IG_GATE_MYPYC=1 pip install .`) against the request-path tests.

A wheel is built with IG_GATE_MYPYC=1 from a copy of the files git would commit (nothing is written into
the checkout), unpacked into a temporary directory and put first on PYTHONPATH; the middleware tests of
the request path then run against it in a subprocess, after a check that its hot modules import from
their extensions. mypyc turns annotations into run-time checks, so an annotation the code does not keep
(a str where `bytes | None` is declared) fails here, not in the pure-Python run of the same tests, which
`make test` runs. Slow (mypy, then gcc on ~100k lines of C: 1.5-3 min here), so it runs from
`make test-mypyc` only (IG_GATE_TEST_MYPYC=1); needs gcc, the Python headers and the package index
(pip installs mypy into the isolated build environment)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.packaging.test_runtime_install import _source_copy

REPO = Path(__file__).resolve().parents[2]
# the request path's tests: every module setup.py compiles is exercised by them
SUBSET = (
    "tests/middleware/test_asgi_tokens.py",
    "tests/middleware/test_asgi_signals.py",
    "tests/middleware/test_asgi_body.py",
    "tests/middleware/test_asgi_transport.py",
    "tests/middleware/test_gate_single_pass.py",
    "tests/middleware/test_gate_units.py",
    "tests/middleware/test_gate_fuzz.py",
    "tests/middleware/test_paths.py",
    "tests/middleware/test_classification.py",
    "tests/middleware/test_metrics.py",
    "tests/middleware/test_preauth_bounds.py",
    "tests/middleware/test_websocket_guard.py",
    "bench/test_middleware_path.py",
)
WHERE = """
import importlib, json, sys
print(json.dumps({name: importlib.import_module(name).__file__ for name in sys.argv[1:]}))
"""

pytestmark = pytest.mark.skipif(
    os.environ.get("IG_GATE_TEST_MYPYC") != "1", reason="slow: run by `make test-mypyc`"
)


def _env(site: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return {**env, "PYTHONPATH": str(site)}


@pytest.fixture(scope="module")
def compiled_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The IG_GATE_MYPYC=1 wheel of the working tree, unpacked."""
    source = _source_copy(tmp_path_factory.mktemp("mypyc-source"))
    wheels = tmp_path_factory.mktemp("mypyc-wheel")
    env = {**os.environ, "IG_GATE_MYPYC": "1"}
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    (wheel,) = wheels.glob("ig_gate-*.whl")
    site = tmp_path_factory.mktemp("mypyc-site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    shutil.rmtree(source)
    return site


def test_the_mypyc_wheel_imports_its_hot_modules_from_extensions(compiled_site: Path):
    extensions = sorted(compiled_site.glob("ig_gate/middleware/*.so"))
    modules = [f"ig_gate.middleware.{path.name.partition('.')[0]}" for path in extensions]
    assert {"ig_gate.middleware.gate", "ig_gate.middleware.asgi"} <= set(modules)
    argv = [sys.executable, "-c", WHERE, *modules]
    done = subprocess.run(argv, env=_env(compiled_site), cwd=REPO, capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert {name: Path(file).parent for name, file in loaded.items()} == dict.fromkeys(
        modules, compiled_site / "ig_gate" / "middleware"
    )
    assert all(file.endswith(".so") for file in loaded.values()), loaded


def test_the_request_path_tests_pass_against_the_compiled_modules(compiled_site: Path):
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
        "-m", "not integration", *SUBSET,
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=_env(compiled_site), cwd=REPO, capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, done.stdout[-6000:]
