"""Build hook for the opt-in compiled request path: `IG_GATE_MYPYC=1 pip install .` compiles the hot
modules (HOT) to C extensions with mypyc. Without the variable (the default) it adds nothing: the wheel is
pure Python. A compiled wheel still holds every .py beside its extensions (Python imports the extension
first); reinstalling without the variable is the fallback. Wheels only: an editable install imports the
source folders, and no extension is ever built into them.

mypy names modules by folder, so the packages are copied into a temporary tree in their installed layout
(`ig_gate/<package>/`, pyproject's package-dir) for the type check and the C code, which is built from
build/mypyc. pip installs mypy for the build (setup_requires: the backend's dynamic build requirements).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent
MYPY = "mypy>=2.4,<3"
# the warm request's steps, by what compiling them saves (bench/RESULTS.md, "Levers measured one by one");
# left out: session.py (tests replace its methods on instances, which compiled classes refuse), risk.py
# (subclasses a builtin), bounded.py (its OrderedDict subclasses crash when compiled), decision_log.py and
# workload.py (a `_thread` attribute: mypyc emits C `__thread`, a keyword of gcc)
HOT = (
    "middleware/asgi.py", "middleware/asgi_body.py", "middleware/gate.py", "middleware/graphql.py",
    "middleware/paths.py", "middleware/extract.py", "middleware/decision.py", "middleware/metrics.py",
)  # fmt: skip
MYPY_FLAGS = ("--explicit-package-bases", "--ignore-missing-imports", "--follow-imports=silent")
TARGET = ROOT / "build" / "mypyc"  # the C code and mypy's cache
_BUILDS = {"bdist_wheel", "build", "build_ext", "install"}  # commands that compile (not metadata ones)


def compiled() -> dict[str, Any]:
    """setup() arguments of the mypyc build when IG_GATE_MYPYC=1, else none."""
    if os.environ.get("IG_GATE_MYPYC", "") != "1":
        return {}
    if "editable_wheel" in sys.argv:
        raise SystemExit("IG_GATE_MYPYC=1 builds a wheel: use `pip install .`, not an editable install")
    if not _BUILDS & set(sys.argv):  # metadata or build requirements: no need for the C code yet
        return {"setup_requires": [MYPY]}
    from mypyc.build import mypycify

    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    with tempfile.TemporaryDirectory(prefix="ig-gate-mypyc-") as stage:
        for package, folder in package_dir.items():
            shutil.copytree(
                ROOT / folder, Path(stage, *package.split(".")),
                ignore=shutil.ignore_patterns("__pycache__", "*.so"),
            )  # fmt: skip
        sources = {folder: package.replace(".", "/") for package, folder in package_dir.items()}
        paths = [str(Path(stage, sources[module.split("/")[0]], module.split("/")[1])) for module in HOT]
        saved = os.environ.get("MYPYPATH")
        os.environ["MYPYPATH"] = stage  # the package base mypy names modules from
        try:
            extensions = mypycify(
                [*MYPY_FLAGS, "--cache-dir", str(TARGET / "mypy-cache"), *paths],
                group_name="ig_gate_hot",
                target_dir=str(TARGET),
            )
        finally:
            if saved is None:
                os.environ.pop("MYPYPATH")
            else:
                os.environ["MYPYPATH"] = saved
    return {"setup_requires": [MYPY], "ext_modules": extensions}


setup(**compiled())
