"""`ig-policy` in an operator's first hour (issue 12 B6, B9, B10): a bundle that does not compile is never
built, a past expiry is refused, an undefined query is an error, `--version`, and `eval --explain`."""

# ruff: noqa: F811  (pytest fixtures: the `cli` parameters are the imported fixture)
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import cli  # noqa: F401  the in-process `ig-policy` fixture, shared

REPO = Path(__file__).resolve().parents[2]
BROKEN_PARSE = "package ig.bad\n\nallow if {\n  input.x ==\n}\n"
UNKNOWN_FUNCTION = "package ig.bad\n\nallow if {\n  frobnicate(input.x)\n}\n"


@pytest.fixture
def example(cli, tmp_path) -> Path:
    archive = tmp_path / "policy.tgz"
    assert cli("pack", "build", REPO / "policies", "--out", archive)[0] == 0
    return archive


def _source_with(tmp_path: Path, name: str, text: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.json").write_text("{}")
    (src / name).write_text(text)
    return src


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (BROKEN_PARSE, "bad.rego:5:1", "expecting expression"),
        (UNKNOWN_FUNCTION, "bad.rego:4:3", "frobnicate"),
    ],
)
def test_build_refuses_rego_that_does_not_compile_naming_file_and_line(cli, tmp_path, text, where, what):
    out = tmp_path / "out.tgz"
    code, _, err = cli("pack", "build", _source_with(tmp_path, "bad.rego", text), "--out", out)
    first, *rest = err.splitlines()
    assert code == 1 and first.startswith("ig-policy: error: policy compile error in ") and where in first
    assert what in err and not out.exists()
    if text is BROKEN_PARSE:  # the parse error is shown whole: the source line and the caret under it
        assert "5 | }" in rest and any(line.strip().endswith("^") for line in rest)
        assert "Stack backtrace" not in err


def test_build_refuses_an_expiry_in_the_past_unless_forced_and_warns(cli, tmp_path):
    out = tmp_path / "out.tgz"
    code, _, err = cli("pack", "build", REPO / "policies", "--out", out, "--expires", "2020-01-01")
    assert code == 1 and "in the past" in err and "--force" in err and not out.exists()
    code, _, err = cli("pack", "build", REPO / "policies", "--out", out, "--expires", "2020-01-01", "--force")
    assert code == 0 and out.exists()
    assert err.startswith("ig-policy: warning: --expires 2020-01-01 is in the past")
    code, _, err = cli("pack", "build", REPO / "policies", "--out", out, "--expires", "2099-01-01")
    assert code == 0 and err == ""


def test_eval_of_an_undefined_query_exits_1_saying_undefined(cli, tmp_path, example):
    (tmp_path / "in.json").write_text("{}")
    code, out, err = cli("eval", example, "--input", tmp_path / "in.json", "--query", "data.nope.x")
    assert code == 1 and out == "" and "data.nope.x is undefined" in err


def test_version_names_the_installed_distribution():
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "ig_gate.bundles.cli", "--version"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"ig-policy {version('ig-gate')}"


def test_eval_explain_names_the_rules_behind_each_reason(cli, tmp_path, example):
    document = {
        "tenant": "acme", "stepup": False,
        "session": {"risk": "medium", "acr": None, "auth_age_s": 10, "subject": "bob"},
        "device": {"posture": "jailbroken"}, "geo": {"country": "AU", "anomaly": False},
        "request": {"method": "POST", "path": "/graphql", "operation_type": "query", "purpose": None},
    }
    (tmp_path / "in.json").write_text(json.dumps(document))
    code, out, _ = cli("eval", example, "--input", tmp_path / "in.json", "--explain")
    report = json.loads(out)
    assert code == 0 and report["result"]["reasons"] == ["device_jailbroken", "geo_fenced"]
    fired = {(r["reason"], r["in_result"]): r for r in report["rules"]}
    zt = (REPO / "policies/ig/zt.rego").read_text().splitlines()
    for reason in ("device_jailbroken", "geo_fenced"):
        rule = fired[(reason, True)]
        assert rule["file"] == "ig/zt.rego" and f'contains "{reason}"' in zt[rule["line"] - 1]
        assert rule["rule"] == "data.ig.zt.deny_reasons"
        assert rule["source"].startswith(f'deny_reasons contains "{reason}"')
    # the medium risk asks for step-up too, but deny wins: shown, and marked as not in the result
    assert fired[("stepup_required", False)]["rule"] == "data.ig.zt.stepup_reasons"
    assert report["unexplained"] == [] and "not traced" in report["precision"]
