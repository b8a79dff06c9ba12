"""Run the sidecar for tests: write a Settings tree as ig-gate.yaml, start `ig-gate serve` on free ports
(the client listener and the admin listener)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ig_gate.middleware.settings import Settings
from tests.support.procs import free_port, port_open, running, wait_until

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
    """A running `ig-gate serve`: the client listener's base URL and port, the admin listener's (Data
    API, /metrics, /v1/status), its process and log file."""

    url: str
    port: int
    process: Any
    log: Path
    admin_url: str
    admin_port: int


@contextlib.contextmanager
def serve_sidecar(
    settings: Settings, workdir: Path, *args: str, env: dict[str, str] | None = None, name: str = "sidecar"
) -> Iterator[Served]:
    """`ig-gate serve --config <workdir>/<name>.yaml --port <free> --admin-port <free> [args]`; stopped
    by PID. `args` may name its own `--admin-port`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(settings, workdir / f"{name}.yaml")
    port = free_port()
    admin_port = int(args[args.index("--admin-port") + 1]) if "--admin-port" in args else free_port()
    log = workdir / f"{name}.log"
    argv = [str(IG_GATE), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    if "--admin-port" not in args:
        argv += ["--admin-port", str(admin_port)]
    with running([*argv, *args], port=port, log=log, env=env) as process:
        wait_until(lambda: port_open(admin_port), 10, f"the admin listener on port {admin_port}")
        yield Served(
            f"http://127.0.0.1:{port}", port, process, log, f"http://127.0.0.1:{admin_port}", admin_port
        )
