"""`ig-gate decisions verify DIR|GLOB|FILE...`: every writer's chain verified and reported on its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ig_gate.middleware.decision_log import DecisionLog
from ig_gate.sidecar.cli import main


@pytest.fixture
def chains(tmp_path: Path) -> list[Path]:
    """Two writers' files on one configured path, 3 and 4 entries."""
    base = tmp_path / "decisions.jsonl"
    with DecisionLog(base) as first, DecisionLog(base) as second:
        for i in range(4):
            if i < 3:
                first.append({"decision_id": f"a-{i}", "input": {}, "result": {"allow": True}})
            second.append({"decision_id": f"b-{i}", "input": {}, "result": {"allow": True}})
    return [first.path, second.path]


def test_a_directory_verifies_each_chain_with_one_summary_per_file(chains, tmp_path, capsys):
    assert main(["decisions", "verify", str(tmp_path)]) == 0

    out, err = capsys.readouterr()
    reports = {json.loads(line)["file"]: json.loads(line)["entries"] for line in out.splitlines()}
    assert reports == {str(chains[0]): 3, str(chains[1]): 4}
    assert err == ""


def test_a_removed_line_in_one_chain_fails_naming_that_file_and_line(chains, tmp_path, capsys):
    lines = chains[1].read_bytes().splitlines(keepends=True)
    chains[1].write_bytes(b"".join(lines[:1] + lines[2:]))

    assert main(["decisions", "verify", str(tmp_path / "decisions*.jsonl")]) == 1

    out, err = capsys.readouterr()
    assert err.startswith(f"{chains[1]}:2: prev_hash does not match") and err.count("\n") == 1
    assert json.loads(out)["file"] == str(chains[0])


def test_a_glob_or_directory_naming_no_log_exits_2_with_one_line(tmp_path, capsys):
    assert main(["decisions", "verify", str(tmp_path / "none*.jsonl")]) == 2
    pattern = tmp_path / "none*.jsonl"
    assert capsys.readouterr().err == f"ig-gate: cannot read {pattern}: no file matches this pattern\n"
    assert main(["decisions", "verify", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"ig-gate: cannot read {tmp_path}: no *.jsonl decision logs in this directory\n"
    )
