"""Run the sidecar for tests: write a Settings tree as ig-gate.yaml, start `ig-gate serve` on a free port."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ig_gate.middleware.settings import Settings
from tests.support.procs import free_port, running

IG_GATE = Path(sys.executable).with_name("ig-gate")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def write_config(settings: Settings, path: Path) -> Path:
    """Write settings as a YAML file that load_settings() reads back to the same Settings."""
    path.write_text(yaml.safe_dump(_plain(dataclasses.asdict(settings)), sort_keys=False), encoding="utf-8")
    return path


@dataclasses.dataclass(frozen=True)
class Served:
    """A running `ig-gate serve`: its base URL, port, process and log file."""

    url: str
    port: int
    process: Any
    log: Path


@contextlib.contextmanager
def serve_sidecar(
    settings: Settings, workdir: Path, *args: str, env: dict[str, str] | None = None, name: str = "sidecar"
) -> Iterator[Served]:
    """`ig-gate serve --config <workdir>/<name>.yaml --port <free> [args]`; stopped by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(settings, workdir / f"{name}.yaml")
    port = free_port()
    log = workdir / f"{name}.log"
    argv = [str(IG_GATE), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), *args]
    with running(argv, port=port, log=log, env=env) as process:
        yield Served(f"http://127.0.0.1:{port}", port, process, log)
