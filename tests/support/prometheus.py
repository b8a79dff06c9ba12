"""Run the real Prometheus and Alertmanager (Debian `prometheus`, `prometheus-alertmanager`) for tests, on
127.0.0.1 and free ports, stopped by PID; backfill history with `promtool tsdb create-blocks-from
openmetrics`."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support.procs import free_port, running, wait_until

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def backfill(openmetrics: Sequence[str], datadir: Path, workdir: Path) -> None:
    """Write each OpenMetrics text (ending in `# EOF`) as TSDB blocks into datadir. promtool writes (and
    syncs) one block per 2 hours and reads its whole input for each: small inputs, eight at a time."""
    assert PROMTOOL is not None

    def create(index: int) -> None:
        source = workdir / f"backfill-{index}.om"
        source.write_text(openmetrics[index], encoding="utf-8")
        argv = [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(datadir)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(len(openmetrics))))


@contextlib.contextmanager
def prometheus(config: dict[str, Any], workdir: Path, datadir: Path) -> Iterator[str]:
    """A Prometheus with this configuration (rule file paths absolute) and data dir; yields its URL once
    ready. Retention is long enough to keep backfilled months."""
    assert PROMETHEUS is not None
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    argv = [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={datadir}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=3650d"]
    url = f"http://127.0.0.1:{port}"
    with running(argv, port=port, log=workdir / "prometheus.log", timeout_s=60):
        wait_until(lambda: _ok(f"{url}/-/ready"), 60, "Prometheus ready")
        yield url


@contextlib.contextmanager
def alertmanager(config: str, workdir: Path) -> Iterator[str]:
    """An Alertmanager with this configuration (YAML text), clustering off; yields its URL once ready."""
    assert ALERTMANAGER is not None
    path = workdir / "alertmanager.yml"
    path.write_text(config, encoding="utf-8")
    port = free_port()
    argv = [ALERTMANAGER, f"--config.file={path}", f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    url = f"http://127.0.0.1:{port}"
    with running(argv, port=port, log=workdir / "alertmanager.log"):
        wait_until(lambda: _ok(f"{url}/-/ready"), 20, "Alertmanager ready")
        yield url


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
