"""`ig-gate decisions verify FILE`: exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ig_gate.middleware.decision_log import DecisionLog
from ig_gate.sidecar.cli import main

IG_GATE = Path(sys.executable).with_name("ig-gate")


@pytest.fixture
def good_log(tmp_path: Path) -> Path:
    path = tmp_path / "decisions.log"
    with DecisionLog(path) as log:
        for i in range(4):
            log.append({"decision_id": f"d-{i}", "input": {"tenant": "acme"}, "result": {"allow": True}})
    return path


def test_a_verifying_chain_exits_0_with_a_json_summary(good_log, capsys):
    assert main(["decisions", "verify", str(good_log)]) == 0

    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["ok"] is True
    assert summary["entries"] == 4
    assert summary["first_bad_line"] is None
    assert summary["file"] == str(good_log)
    assert err == ""


def test_an_edited_line_exits_1_naming_that_line(good_log, capsys):
    good_log.write_bytes(good_log.read_bytes().replace(b'"d-2"', b'"d-9"'))

    assert main(["decisions", "verify", str(good_log)]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"{good_log}:3: edited line")


@pytest.mark.parametrize(
    "argv", [[], ["decisions"], ["decisions", "verify"], ["bogus"], ["decisions", "sign", "x"]]
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_a_missing_file_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.log"
    assert main(["decisions", "verify", str(missing)]) == 2
    assert capsys.readouterr().err == f"ig-gate: cannot read {missing}: No such file or directory\n"


def test_the_console_script_reports_a_removed_line(good_log):
    raw = good_log.read_bytes().splitlines(keepends=True)
    good_log.write_bytes(b"".join(raw[:1] + raw[2:]))

    argv = [str(IG_GATE), "decisions", "verify", str(good_log)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    assert done.stderr.startswith(f"{good_log}:2: prev_hash does not match")
    assert "Traceback" not in done.stderr
