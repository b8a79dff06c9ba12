"""`pip install .` without [dev] gives a working product: in a fresh venv, every ig_gate module imports (a
module for an optional extra, e.g. [demo], may miss only that extra's packages), both CLIs answer --help,
the package data (geo database, py.typed) ships, and the build prints no setuptools deprecation warning.

The venv with the dependencies is cached under pytest's temp root, keyed by pyproject.toml (a changed
dependency list builds a new one); the project itself is rebuilt from the working tree on every run,
from a copy of the files git would commit (tracked and untracked, not ignored) so nothing is written into
the checkout. Needs the package index, like any `pip install`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
_OPTIONAL = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
_EXTRAS = {  # optional extras (not [dev]): a runtime install may lack them
    canonicalize_name(Requirement(line).name)
    for name, lines in _OPTIONAL.items()
    if name != "dev"
    for line in lines
}
# the top-level modules those extras provide (looked up here, where [dev] installed them)
OPTIONAL_MODULES = sorted(
    module for module, dists in importlib.metadata.packages_distributions().items()
    if {canonicalize_name(dist) for dist in dists} & _EXTRAS
)
PACKAGES = ("ig_gate.errors", "ig_gate.bundles", "ig_gate.geo", "ig_gate.middleware", "ig_gate.sidecar")

IMPORT_ALL = """
import importlib, importlib.resources, json, pkgutil, sys
optional, packages = set(sys.argv[1].split(",")), sys.argv[2:]
failed, count = {}, 0
for name in packages:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        count += 1
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in optional:
                failed[info.name] = f"ModuleNotFoundError: {exc}"
        except Exception as exc:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
untyped = [name for name in packages if not importlib.resources.files(name).joinpath("py.typed").is_file()]
database = importlib.resources.files("ig_gate.geo").joinpath("data", "dbip-country.mmdb").is_file()
print(json.dumps({"modules": count, "failed": failed, "untyped": untyped, "geo_database": database}))
"""


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=600, check=False, cwd=cwd, env=env
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def _source_copy(target: Path) -> Path:
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(venv bin directory, pip's build output) with the project installed from a copy of the tree."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    home = tmp_path_factory.getbasetemp().parent / f"ig-gate-runtime-venv-{key}"
    bin_dir = home / "bin"
    if not (home / ".complete").exists():
        shutil.rmtree(home, ignore_errors=True)
        venv.create(home, with_pip=True)
        _run(bin_dir / "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
        first = True
    else:
        first = False
    source = _source_copy(tmp_path_factory.mktemp("ig-gate-source"))
    # with its dependencies the first time; afterwards the same dependencies are there, only ours changes
    reinstall = [] if first else ["--no-deps", "--force-reinstall"]
    build = _run(bin_dir / "python", "-m", "pip", "install", "-v", *reinstall, source)
    (home / ".complete").touch()
    return bin_dir, build.stdout + build.stderr


@pytest.mark.integration
def test_a_runtime_install_without_dev_extras_imports_every_module_and_runs_both_clis(
    runtime_venv: tuple[Path, str],
) -> None:
    bin_dir, _ = runtime_venv
    optional = ",".join(OPTIONAL_MODULES)
    report = json.loads(_run(bin_dir / "python", "-c", IMPORT_ALL, optional, *PACKAGES, cwd=bin_dir).stdout)
    assert report["failed"] == {} and report["modules"] > 50, report
    assert report["untyped"] == [] and report["geo_database"] is True, report
    for cli, expected in (("ig-gate", "serve"), ("ig-policy", "verify")):
        assert expected in _run(bin_dir / cli, "--help", cwd=bin_dir).stdout
    installed = _run(bin_dir / "python", "-m", "pip", "list", "--format=json").stdout
    names = {entry["name"].lower() for entry in json.loads(installed)}
    assert not names & {"pytest", "httpx2", "hypothesis"}, "a runtime install pulled in [dev] packages"


@pytest.mark.integration
def test_building_the_package_prints_no_setuptools_deprecation_warning(
    runtime_venv: tuple[Path, str],
) -> None:
    _, output = runtime_venv
    warnings = [line.strip() for line in output.splitlines() if "Warning:" in line and "setuptools" in line]
    assert warnings == [], warnings
