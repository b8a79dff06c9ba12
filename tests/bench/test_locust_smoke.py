"""The locustfile's scenarios, headless for a few seconds against the demo served by uvicorn, with the dev
IdP serving step-up tokens (bench/demo_load.py): every scenario runs and no response is unexpected."""

from __future__ import annotations

import json
import subprocess

import pytest

from bench.demo_load import load_target, locust_argv

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
    stats = tmp / "stats.json"  # locust adds the suffix to --json-file
    with load_target(tmp) as target:
        argv = locust_argv(target, users=20, spawn_rate=20, run_time="6s")
        argv += ["--json-file", str(tmp / "stats")]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=tmp)
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
