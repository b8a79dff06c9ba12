"""`ig-gate serve` as a real process: config errors at start, graceful shutdown, multi-worker metrics."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from ig_gate.sidecar.cli import main
from tests.middleware.conftest import US_IP, World
from tests.support.sidecar import IG_GATE, serve_sidecar

pytestmark = pytest.mark.integration
LOOPBACK_IS_A_PROXY = {"trusted_proxies": ["127.0.0.1/32"]}  # the test client stands in for a proxy


def authz(url: str, world: World, sub: str) -> httpx.Response:
    headers = {
        "authorization": f"Bearer {world.token(sub=sub)}",
        "x-device-attestation": world.attestation("managed"),
        "x-forwarded-for": US_IP,
        "x-original-uri": "/graphql?query=%7Bme%7Bid%7D%7D",
    }
    return httpx.get(f"{url}/authz", headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("server:\n  prot: 8080\n", "server.prot"),
        ("identity:\n  jwks: null\n", "identity.jwks"),
        ("geo:\n  trusted_proxies: [not-a-cidr]\n", "geo.trusted_proxies"),
        ("failure_mode: sometimes\n", "failure_mode"),
    ],
)
def test_config_errors_at_start_are_one_line_with_the_key_path_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, key: str
) -> None:
    config = tmp_path / "ig-gate.yaml"
    config.write_text(yaml_text)
    assert main(["serve", "--config", str(config), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err and "Traceback" not in err


def test_sigterm_drains_and_flushes_the_decision_log(world: World, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    settings = world.settings(
        decision_log={"path": str(log)}, server={"graceful_timeout_s": 5}, geo=LOOPBACK_IS_A_PROXY
    )
    with serve_sidecar(settings, tmp_path) as served:
        for i in range(5):
            assert authz(served.url, world, f"serve-{i}").status_code == 200
        served.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has drained and run the lifespan shutdown
        assert served.process.wait(15) in (0, -signal.SIGTERM)
    lines = log.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["outcome"] == "allow" for line in lines)
    verified = subprocess.run([str(IG_GATE), "decisions", "verify", str(log)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr


def test_two_workers_aggregate_metrics_in_multiprocess_mode(world: World, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    settings = world.settings(geo=LOOPBACK_IS_A_PROXY)
    with serve_sidecar(settings, tmp_path, "--workers", "2", env=env) as served:
        requests = 40
        for i in range(requests):
            assert authz(served.url, world, f"mw-{i}").status_code == 200
        text = httpx.get(f"{served.url}/metrics", timeout=10).text
        allowed = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('ig_gate_decisions_total{outcome="allow"')
        )
        assert allowed == requests  # every worker's decisions, whichever worker answers /metrics
        assert httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200
    worker_pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}
    assert len(worker_pids) == 3  # each worker writes its own files (and the parent's config check did)

