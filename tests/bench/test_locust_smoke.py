"""The locustfile's scenarios, headless for a few seconds against the demo served by uvicorn, with the dev
IdP serving step-up tokens: every scenario runs and no response is unexpected."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from bench import targets
from bench.serving import REPO, serve_target
from ig_gate.sidecar.demo import prepare

SCENARIOS = (
    "read: query",
    "read: mutation",
    "write burst: mutation",
    "step-up: challenged mutation",
    "step-up: IdP token",
    "step-up: retried mutation",
    "denied device: query",
    "geo-fenced: query",
)


@pytest.fixture(scope="module")
def locust_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    tmp = tmp_path_factory.mktemp("locust")
    with contextlib.redirect_stdout(io.StringIO()):
        idp = prepare(tmp / "demo", REPO / "policies")
    targets.write_idp_keys(idp, tmp / "keys")
    env = {
        targets.CONFIG_ENV: str(tmp / "demo" / "ig-gate.yaml"),
        targets.IDP_DIR_ENV: str(tmp / "keys"),
        "IG_GATE_DECISION_LOG__PATH": str(tmp / "decisions.jsonl"),
    }
    with (
        serve_target("middleware", env, tmp / "demo.log") as demo,
        serve_target("devidp", env, tmp / "idp.log") as idp_server,
    ):
        argv = [
            sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locustfile.py"), "--headless",
            "-u", "20", "-r", "20", "-t", "6s", "--host", demo.url, "--only-summary",
            "--json-file", str(tmp / "stats"),
            "--idp-key", str(tmp / "keys" / "idp.key"), "--mdm-key", str(tmp / "keys" / "mdm.key"),
            "--idp-url", idp_server.url, "--stop-timeout", "5",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=tmp)
    stats = tmp / "stats.json"
    assert stats.exists(), f"locust wrote no stats:\n{done.stderr[-3000:]}"
    return done, {entry["name"]: entry for entry in json.loads(stats.read_text())}


def test_every_scenario_ran_without_failures(locust_run: tuple[subprocess.CompletedProcess, dict]) -> None:
    done, rows = locust_run
    assert done.returncode == 0, done.stderr[-3000:]
    for name in SCENARIOS:
        assert rows[name]["num_requests"] > 0, f"scenario request {name!r} never ran"
    assert sum(entry["num_failures"] for entry in rows.values()) == 0


def test_refusals_are_all_expected_and_counted(locust_run: tuple[subprocess.CompletedProcess, dict]) -> None:
    done, rows = locust_run
    report = {
        int(fields[2]): (int(fields[3]), int(fields[4]))
        for line in done.stdout.splitlines()
        if line.startswith("ig-gate outcomes:") and (fields := line.split())[2].isdigit()
    }
    assert set(report) == {401, 403}, done.stdout
    expected_401, unexpected_401 = report[401]
    expected_403, unexpected_403 = report[403]
    assert (unexpected_401, unexpected_403) == (0, 0)
    assert expected_401 == rows["step-up: challenged mutation"]["num_requests"]
    denied = rows["denied device: query"]["num_requests"] + rows["geo-fenced: query"]["num_requests"]
    assert expected_403 == denied
    assert "other unexpected statuses 0" in done.stdout
