"""`ig-gate serve` as a real process: config errors at start, graceful shutdown, multi-worker metrics."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from ig_gate.sidecar.cli import main
from tests.middleware.conftest import REPO, US_IP, World
from tests.support.echo_upstream import argv as echo_upstream
from tests.support.procs import free_port, running, wait_until
from tests.support.sidecar import IG_GATE, serve_sidecar, write_config

pytestmark = pytest.mark.integration
LOOPBACK_IS_A_PROXY = {"trusted_proxies": ["127.0.0.1/32"]}  # the test client stands in for a proxy


def authz(url: str, world: World, sub: str) -> httpx.Response:
    headers = {
        "authorization": f"Bearer {world.token(sub=sub)}",
        "x-device-attestation": world.attestation("managed", sub=sub),
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


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "0"], ["--workers", "0"]])
def test_out_of_range_listen_options_are_config_errors_before_anything_is_built(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    config = write_config(world.settings(), tmp_path / "ig-gate.yaml")
    assert main(["serve", "--config", str(config), *args]) == 2
    err = capsys.readouterr().err
    key = "server." + args[0].removeprefix("--")
    assert err.count("\n") == 1 and err.startswith(f"ig-gate: {key}: must be") and "Error" not in err


def test_serve_help_names_the_endpoints_the_unauthenticated_ones_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("/apollo/coprocessor", "/authz", "/v1/data", "/ssf/events", "/readyz", "--upstream",
                  "without authentication", "127.0.0.1", "2 on a configuration error"):
        assert words in text


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


def test_sigterm_lets_an_in_flight_proxied_request_finish(world: World, tmp_path: Path) -> None:
    upstream_port = free_port()
    echo = running(echo_upstream(upstream_port), port=upstream_port, log=tmp_path / "echo.log", cwd=REPO)
    settings = world.settings(geo=LOOPBACK_IS_A_PROXY, server={"graceful_timeout_s": 10})
    with echo, serve_sidecar(settings, tmp_path, "--upstream", f"http://127.0.0.1:{upstream_port}") as served:
        headers = {
            "authorization": f"Bearer {world.token(sub='drain')}",
            "x-device-attestation": world.attestation("managed", sub="drain"),
            "x-forwarded-for": US_IP,
        }
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                httpx.get, f"{served.url}/items", params={"delay_ms": 1500}, headers=headers, timeout=20
            )
            wait_until(lambda: _connections_to(upstream_port) > 0, 10, "the proxied request upstream")
            served.process.send_signal(signal.SIGTERM)
            response = slow.result(20)
        assert response.status_code == 200 and response.json()["x-auth-subject"] == "drain"
        assert served.process.wait(15) in (0, -signal.SIGTERM)


def _connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    target = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[2] == target and line.split()[3] == "01")


def test_two_workers_aggregate_metrics_in_multiprocess_mode(world: World, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    settings = world.settings(geo=LOOPBACK_IS_A_PROXY)
    with serve_sidecar(settings, tmp_path, "--workers", "2", env=env) as served:
        requests = 40
        for i in range(requests):
            assert authz(served.url, world, f"mw-{i}").status_code == 200
        assert httpx.get(f"{served.url}/metrics", timeout=10).status_code == 404  # the client port
        text = httpx.get(f"{served.admin_url}/metrics", timeout=10).text
        allowed = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('ig_gate_decisions_total{outcome="allow"')
        )
        assert allowed == requests  # every worker's decisions, whichever worker answers /metrics
        assert httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200
    worker_pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}
    assert len(worker_pids) == 3  # each worker writes its own files (and the parent's config check did)

