"""An operator's first hour with `ig-gate serve` (issue 12 B3, B4, B5, B7), against real processes:
what startup says it enforces (one line per bundle activation, JSON logs, the access log), a bundle that
cannot be used at start (exit 2 naming the setting, or wait for it), a bundle file watched and reloaded
(also on SIGHUP), the metrics of a fresh idle server (and the shipped alert on them, through promtool), and
the Data API while no bundle is active (503, as OPA when not ready)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opa_client import OpaClient

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.signing import sign_bundle
from tests.middleware.conftest import REPO, World
from tests.sidecar.test_serve import LOOPBACK_IS_A_PROXY, authz
from tests.support.keys import make_keypair
from tests.support.procs import free_port, wait_until
from tests.support.sidecar import IG_GATE, Served, serve_sidecar, write_config

pytestmark = pytest.mark.integration
DEPLOY = REPO / "deploy"
SECRET_QUERY = "access_token=do-not-log-me"


def signed(world: World, version: str, key: Any = None) -> bytes:
    """The example bundle at `version`, signed with the world's bundle key (or `key`) and its key id."""
    key = key or world.bundle_key
    bundle = build_bundle(REPO / "policies", version=version)
    return sign_bundle(bundle, key.private_pem, key_id=key.kid).archive


def with_key_id(world: World, tmp_path: Path) -> Path:
    path = tmp_path / "policy.tgz"
    path.write_bytes(signed(world, "1.0.0"))
    return path


def active_version(served: Served) -> str | None:
    active = httpx.get(f"{served.admin_url}/v1/status", timeout=10).json()["bundle"].get("active")
    return None if active is None else active["version"]


def json_lines(served: Served) -> list[dict[str, Any]]:
    return [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]


def run_serve(world: World, tmp_path: Path, **overrides: Any) -> subprocess.CompletedProcess[str]:
    """`ig-gate serve` with these settings, until it exits (on a missing bundle today's main never does)."""
    config = write_config(world.settings(**overrides), tmp_path / "ig-gate.yaml")
    argv = [str(IG_GATE), "serve", "--config", str(config), "--port", str(free_port()),
            "--admin-port", str(free_port())]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


# -- B4: a bundle that cannot be used at start -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bundle", "setting"),
    [
        ({"path": "missing.tgz"}, "bundle.path"),
        ({"path": "forged.tgz"}, "bundle.path"),  # signed by another key: unverifiable
        ({"verification_key": "missing.pub"}, "bundle.verification_key"),
    ],
)
def test_serve_exits_2_with_one_line_naming_the_setting_when_the_bundle_cannot_be_loaded(
    world: World, tmp_path: Path, bundle: dict[str, str], setting: str
) -> None:
    (tmp_path / "forged.tgz").write_bytes(signed(world, "1.0.0", make_keypair("ES256", "bundle-1")))
    bundle = {key: str(tmp_path / value) for key, value in bundle.items()}
    done = run_serve(world, tmp_path, bundle=bundle)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("ig-gate: ")]
    assert line.startswith(f"ig-gate: {setting}: ") and "Traceback" not in done.stderr


def test_wait_for_bundle_serves_503_until_the_file_is_copied_into_place_then_allows(
    world: World, tmp_path: Path
) -> None:
    path = tmp_path / "later" / "policy.tgz"
    path.parent.mkdir()
    bundle = {"path": str(path), "wait_for_bundle": True, "watch_interval_s": 0.1}
    with serve_sidecar(world.settings(bundle=bundle, geo=LOOPBACK_IS_A_PROXY), tmp_path) as served:
        assert httpx.get(f"{served.url}/readyz", timeout=10).status_code == 503
        reason = httpx.get(f"{served.admin_url}/readyz", timeout=10).json()["reason"]
        assert reason.startswith("bundle.path: ") and str(path) in reason
        assert authz(served.url, world, "early").status_code == 503  # fails closed meanwhile
        # B7: the Data API is not ready either (OPA: 503), whatever client asks
        data = httpx.post(f"{served.admin_url}/v1/data/ig/zt/decision", json={"input": {}}, timeout=10)
        assert data.status_code == 503 and data.json()["code"] and "not ready" in data.json()["message"]
        opa = OpaClient(host="127.0.0.1", port=served.admin_port)
        try:
            assert opa.check_health({"bundles": True}) is False
            shutil.copy(world.bundle_path, path)
            wait_until(lambda: httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200, 20,
                       "/readyz after the bundle was copied into place")
            assert opa.check_health({"bundles": True}) is True
        finally:
            opa.close_connection()
        assert authz(served.url, world, "late").status_code == 200
        assert active_version(served) == "1.0.0"


def test_a_newly_signed_bundle_file_is_picked_up_and_a_tampered_one_is_refused_keeping_the_last_good(
    world: World, tmp_path: Path
) -> None:
    path = tmp_path / "policy.tgz"
    shutil.copy(world.bundle_path, path)
    bundle = {"path": str(path), "watch_interval_s": 0.1}
    with serve_sidecar(world.settings(bundle=bundle, geo=LOOPBACK_IS_A_PROXY), tmp_path) as served:
        assert active_version(served) == "1.0.0"
        path.write_bytes(signed(world, "2.0.0"))
        wait_until(lambda: active_version(served) == "2.0.0", 20, "the new bundle file to be active")
        metrics = httpx.get(f"{served.admin_url}/metrics", timeout=10).text
        assert re.search(r'^ig_gate_bundle_info\{[^}]*version="2\.0\.0"\} 1\.0$', metrics, re.M)
        assert not re.search(r'^ig_gate_bundle_info\{[^}]*version="1\.0\.0"\}', metrics, re.M)
        tampered = bytearray(signed(world, "3.0.0"))
        tampered[-100] ^= 0xFF
        path.write_bytes(bytes(tampered))
        wait_until(lambda: "stays in force" in served.log.read_text(), 20, "the refusal to be logged")
        assert active_version(served) == "2.0.0"
        assert authz(served.url, world, "kept").status_code == 200
    refusal = next(line for line in served.log.read_text().splitlines() if "stays in force" in line)
    assert f"bundle.path: {path}: " in refusal


def test_sighup_reloads_the_bundle_file_without_watching(world: World, tmp_path: Path) -> None:
    path = tmp_path / "policy.tgz"
    shutil.copy(world.bundle_path, path)
    settings = world.settings(bundle={"path": str(path), "watch_interval_s": None})
    with serve_sidecar(settings, tmp_path) as served:
        path.write_bytes(signed(world, "2.0.0"))
        assert active_version(served) == "1.0.0"  # not watched: nothing happens on its own
        served.process.send_signal(signal.SIGHUP)
        wait_until(lambda: active_version(served) == "2.0.0", 20, "the reload on SIGHUP")
        assert served.process.poll() is None  # SIGHUP did not end the server


# -- B3: what startup says, JSON logs, the access log ----------------------------------------------------


def test_startup_logs_one_line_per_activation_naming_version_digest_key_and_source(
    world: World, tmp_path: Path
) -> None:
    path = with_key_id(world, tmp_path)
    with serve_sidecar(world.settings(bundle={"path": str(path)}), tmp_path) as served:
        wait_until(lambda: "policy bundle activated" in served.log.read_text(), 10, "the activation line")
        digest = httpx.get(f"{served.admin_url}/v1/status", timeout=10).json()["bundle"]["active"]["digest"]
    (line,) = [line for line in served.log.read_text().splitlines() if "policy bundle activated" in line]
    assert " INFO ig_gate: " in line
    for part in ("1.0.0", digest, world.bundle_key.kid, str(path)):
        assert part in line


def test_json_logs_and_the_access_log_give_fields_and_never_the_token_or_query(
    world: World, tmp_path: Path
) -> None:
    path = with_key_id(world, tmp_path)
    settings = world.settings(
        bundle={"path": str(path)}, log={"format": "json", "access": True}, geo=LOOPBACK_IS_A_PROXY
    )
    with serve_sidecar(settings, tmp_path) as served:
        response = authz(served.url, world, "logged")
        assert response.status_code == 200
        decision_id = response.headers["x-auth-decision-id"]
        token = response.request.headers["authorization"].removeprefix("Bearer ")
        refused = httpx.get(f"{served.url}/authz?{SECRET_QUERY}", headers={"x-original-uri": "/"}, timeout=10)
        assert refused.status_code == 401
        wait_until(lambda: len([d for d in json_lines(served) if d.get("event") == "access"]) >= 2, 10,
                   "two access lines")
    lines = json_lines(served)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's lines are JSON too
    (activation,) = [line for line in lines if line.get("event") == "bundle_activated"]
    assert activation["logger"] == "ig_gate" and activation["level"] == "info"
    assert activation["version"] == "1.0.0" and activation["key_id"] == world.bundle_key.kid
    assert activation["source"] == str(path) and activation["digest"].startswith("sha256:")
    allowed, denied = [line for line in lines if line.get("event") == "access"][:2]
    assert {key: allowed[key] for key in ("listener", "method", "path", "status", "decision_id")} == {
        "listener": "client", "method": "GET", "path": "/authz", "status": 200, "decision_id": decision_id,
    }
    assert allowed["duration_ms"] > 0
    assert denied["status"] == 401 and denied["path"] == "/authz"
    assert denied["decision_id"] and denied["decision_id"] != decision_id
    text = served.log.read_text()
    assert "do-not-log-me" not in text and token not in text and token.split(".")[2] not in text


# -- B5: the metrics of a fresh idle server, and the shipped alert on them ------------------------------


def test_a_fresh_idle_server_exports_its_bundle_and_no_rollout_and_the_no_bundle_alert_stays_quiet(
    world: World, tmp_path: Path
) -> None:
    with serve_sidecar(world.settings(), tmp_path) as served:
        text = httpx.get(f"{served.admin_url}/metrics", timeout=10).text  # no request decided yet
    assert "ig_gate_decisions_total{" not in text
    info = re.findall(r"^(ig_gate_bundle_info\{[^}]*\}) 1\.0$", text, re.M)
    assert len(info) == 1 and 'version="1.0.0"' in info[0]
    assert re.search(r"^ig_gate_rollout_stage -1\.0$", text, re.M)  # none: not 0, which means shadow
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    labels = 'job="ig-gate", instance="idle"'
    series = [{"series": f"up{{{labels}}}", "values": "1x20"}]
    series.append({"series": info[0].replace("{", "{" + labels + ", ", 1), "values": "1x20"})
    test = {
        "rule_files": [str(DEPLOY / "prometheus-rules.yaml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [{"eval_time": "15m", "alertname": "IgGateNoActiveBundle", "exp_alerts": []}],
        }],
    }
    (tmp_path / "idle.test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run([promtool, "test", "rules", "idle.test.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
