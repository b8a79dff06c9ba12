"""`ig-gate` in an operator's first hour (issue 12 B9, B10): `--version`, and `decisions explain` refusing
what it cannot explain with one line naming why."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from ig_gate.sidecar.cli import main


def test_version_names_the_installed_distribution():
    done = subprocess.run(
        [sys.executable, "-m", "ig_gate.sidecar.cli", "--version"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"ig-gate {version('ig-gate')}"


def _explain(tmp_path: Path, capsys, entry: dict, decision_id: str) -> tuple[int, str]:
    log = tmp_path / "decisions.jsonl"
    log.write_text(json.dumps(entry) + "\n")
    argv = ["decisions", "explain", decision_id, "--log", str(log)]
    code = main([*argv, "--bundle", str(tmp_path / "b.tgz"), "--key", str(tmp_path / "k.pub")])
    return code, capsys.readouterr().err


def test_explain_of_an_id_not_in_the_log_says_so(tmp_path, capsys):
    code, err = _explain(tmp_path, capsys, {"decision_id": "a-1"}, "b-2")
    assert code == 1 and err == f"ig-gate: decision b-2 is not in {tmp_path / 'decisions.jsonl'}\n"


def test_explain_of_a_refusal_made_before_the_policy_says_there_is_nothing_to_evaluate(tmp_path, capsys):
    entry = {
        "decision_id": "a-1", "outcome": "unauthenticated", "input": {"request": {"method": "POST"}},
        "result": {"reasons": ["token_missing"]}, "bundles": {"ig": {"revision": "1.0.0+abc"}},
    }
    code, err = _explain(tmp_path, capsys, entry, "a-1")
    assert code == 1 and "before the policy was consulted" in err and "token_missing" in err
    assert err.count("\n") == 1
