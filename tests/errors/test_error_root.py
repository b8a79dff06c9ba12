"""One exception root: every exception class ig-gate defines derives from IgGateError, problems are told
apart by class (each with a stable `code`), and what a person reads never shows a Python class name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from ig_gate.bundles.errors import BundleError, PinError, RegistryError
from ig_gate.bundles.manager import FAILURE_KINDS, failure_kind
from ig_gate.bundles.rollback import RollbackError
from ig_gate.errors import IgGateError, describe
from ig_gate.geo.errors import GeoDatabaseError
from ig_gate.middleware.config_engine import ConfigError

PACKAGES = ("ig_gate.bundles", "ig_gate.geo", "ig_gate.middleware", "ig_gate.sidecar")
IG_POLICY = Path(sys.executable).with_name("ig-policy")


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            module = importlib.import_module(info.name)
            found += [
                cls for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, BaseException) and cls.__module__ == info.name
            ]
    return found


def test_every_public_exception_class_ig_gate_defines_derives_from_ig_gate_error() -> None:
    classes = [cls for cls in _exception_classes() if not cls.__name__.startswith("_")]  # private: signals
    assert len(classes) > 20
    outside = sorted(f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, IgGateError))
    assert outside == []


def test_bundle_failure_kinds_are_the_error_classes_codes() -> None:
    assert failure_kind(RollbackError("older")) == "rollback"  # before pin: a RollbackError is a PinError
    assert failure_kind(PinError("range")) == "pin"
    assert failure_kind(RegistryError("down")) == "fetch"
    assert failure_kind(BundleError("bad")) == "verify"
    assert failure_kind(KeyError("x")) == "internal"
    codes = {cls.code for cls in _exception_classes() if issubclass(cls, BundleError)}
    assert codes <= set(FAILURE_KINDS)


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (ConfigError("server.port: must be >= 1"), "server.port: must be >= 1"),
        (ConfigError(""), "configuration error"),  # no message: the label, not "ConfigError"
        (GeoDatabaseError(), "geo database unusable"),
        (BundleError("first line\n  second   line"), "first line second line"),
        (FileNotFoundError(2, "No such file", "/nope.pem"), "/nope.pem: No such file"),
        (KeyError(), "no message"),
    ],
)
def test_describe_gives_one_line_without_a_python_class_name(error: BaseException, shown: str) -> None:
    assert describe(error) == shown
    assert type(error).__name__ not in describe(error)


def test_ig_policy_reports_a_bad_bundle_in_one_line_without_a_class_name(tmp_path: Path) -> None:
    bogus = tmp_path / "bundle.tgz"
    bogus.write_bytes(b"not a gzip archive")
    done = subprocess.run(
        [str(IG_POLICY), "pack", "inspect", str(bogus)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("ig-policy: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "not a gzip stream" in done.stderr and "Error" not in done.stderr
