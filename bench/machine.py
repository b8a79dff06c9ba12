"""Describe the machine a benchmark ran on: CPU, cores, load, Python, package and tool versions, commit."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "gordon-to-regorus",
    "pyjwt",
    "cryptography",
    "maxminddb",
    "prometheus-client",
    "orjson",
    "locust",
)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first `model name` of /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _command(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def describe(repo: Path) -> dict[str, Any]:
    """A JSON-friendly description of this machine and checkout."""
    commit = _command(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = _command(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "loadavg": list(os.getloadavg()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": _versions(),
        "wrk": _command(["wrk", "-v"]),
        "commit": commit + ("+dirty" if dirty else ""),
    }
