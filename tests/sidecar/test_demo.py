"""`make demo` end to end: the demo process signs the example bundle, serves the protected app, and
`sh .demo/curl.sh` gets exactly the answers it promises — on every run, and still after the demo has been
up for 6 minutes (past the step-up `max_age` of 300 s and the lifetime of nothing minted at start).

Time is moved for real, not mocked: the demo server and curl.sh (whose `ig-gate dev token` mints the
tokens) run under Debian's libfaketime, reading their clock offset from a file the test rewrites (the
wall clock and the monotonic one jump together, as 6 minutes passing would move both)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from ig_gate.bundles.cli import main as policy_main
from ig_gate.sidecar.cli import main as cli_main
from ig_gate.sidecar.dev_cli import main as dev_main
from tests.support.procs import free_port, running

EXPECTED = {
    "allow: low-risk session": 200,
    "step-up (401, RFC 9470)": 401,
    "allow: the same medium-risk user after step-up": 200,
    "step-up (401): a write with alice's device attestation by bob": 401,
    "deny (403): high-risk session": 403,
    "deny (403): jailbroken device": 403,
    "deny (403): outside the tenant's allowed countries": 403,
    "deny (403): no X-Forwarded-For, so no country": 403,
    "401: no token": 401,
}
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")  # Debian package faketime
REPO = Path(__file__).parents[2]


def run_curl_script(script: Path, env: dict[str, str]) -> dict[str, str]:
    """Run `sh curl.sh`; return each section's output by its `### what` title."""
    done = subprocess.run(
        ["sh", str(script)], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    sections = re.split(r"^### ", done.stdout, flags=re.MULTILINE)[1:]
    return dict(section.split("\n", 1) for section in sections)


def check_answers(sections: dict[str, str], run: str) -> None:
    assert len(sections) == len(EXPECTED) + 1, (run, list(sections))
    for what, output in sections.items():
        if what == "metrics":
            assert "ig_gate_decisions_total" in output, run
            continue
        expected = next(code for prefix, code in EXPECTED.items() if what.startswith(prefix))
        status = re.search(r"^HTTP/\S+ (\d{3})", output, flags=re.MULTILINE)
        assert status and int(status[1]) == expected, (run, what, output[:600])
        if expected == 401 and "step-up" in what:
            assert 'error="insufficient_user_authentication"' in output, (run, what)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    """The demo served under libfaketime; curl.sh run twice, then again 6 minutes later (its outputs)."""
    assert LIBFAKETIME.exists(), "Debian package faketime is needed (make test installs it)"
    tmp_path = tmp_path_factory.mktemp("demo")
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
    }
    port = free_port()
    workdir = tmp_path / "demo"
    argv = [sys.executable, "-m", "ig_gate.sidecar.demo", "--port", str(port), "--workdir", str(workdir)]
    with running(argv, port=port, log=tmp_path / "demo.log", cwd=REPO, env=env):
        script_env = {**os.environ, **env}
        runs = [run_curl_script(workdir / "curl.sh", script_env) for _ in range(2)]
        clock.write_text("+360\n")  # the demo (and whoever runs curl.sh) is now 6 minutes later
        runs.append(run_curl_script(workdir / "curl.sh", script_env))
    return workdir, runs


@pytest.mark.integration
def test_curl_script_answers_as_printed_twice_and_after_six_minutes(demo_runs):
    workdir, runs = demo_runs
    for run, sections in zip(("first run", "second run", "after 6 minutes"), runs, strict=True):
        check_answers(sections, run)
    for reason in ("geo_fenced", "geo_unknown"):
        labels = f'outcome="deny",profile="read",reason="{reason}",tenant="acme"'
        assert f"ig_gate_decisions_total{{{labels}}} 3.0" in runs[-1]["metrics"]
    assert (workdir / "dist" / "policy.tgz.sig").exists()
    lines = (workdir / "decisions.jsonl").read_text().splitlines()
    assert len(lines) >= 3 * len(EXPECTED)
    # the attestation bob presented was alice's: ignored (posture unknown), and the log says why
    devices = [json.loads(line)["input"].get("device", {}) for line in lines]
    assert {"posture": "unknown", "reason": "device_binding_mismatch"} in devices


@pytest.mark.integration
def test_decisions_explain_shows_the_rule_behind_a_logged_refusal(demo_runs, capsys):
    workdir, runs = demo_runs
    output = next(out for what, out in runs[-1].items() if what.startswith("deny (403): outside"))
    decision_id = re.search(r'"decision_id":\s*"([^"]+)"', output)[1]  # in the 403 body
    bundle = str(workdir / "dist/policy.tgz")
    argv = ["decisions", "explain", decision_id, "--log", str(workdir), "--bundle", bundle]
    assert cli_main([*argv, "--key", str(workdir / "keys/bundle.pub")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["same_result"] and report["result"]["reasons"] == ["geo_fenced"]
    (rule,) = [r for r in report["rules"] if r["in_result"]]
    assert (rule["reason"], rule["file"]) == ("geo_fenced", "ig/zt.rego")
    assert rule["rule"] == "data.ig.zt.deny_reasons"
    assert report["input"]["geo"]["country"] == "AU" and report["input"]["session"]["subject"] == "carol"
    # another revision of the policy is refused: it might explain other reasons than those that decided
    other = workdir / "other.tgz"
    assert policy_main(["pack", "build", str(REPO / "policies"), "--out", str(other), "--version", "9"]) == 0
    assert policy_main(["pack", "sign", str(other), "--key", str(workdir / "keys/bundle.key")]) == 0
    capsys.readouterr()
    argv[-1] = str(other)
    assert cli_main([*argv, "--key", str(workdir / "keys/bundle.pub")]) == 1
    err = capsys.readouterr().err
    assert "revision 9+" in err and "was made with revision 1.0.0+" in err and err.count("\n") == 1


def test_dev_token_mints_with_the_demo_keys_issuer_and_audience(tmp_path: Path, capsys):
    from ig_gate.sidecar.demo import prepare

    prepare(tmp_path / "demo", REPO / "policies")
    capsys.readouterr()  # what `ig-policy` printed while preparing
    config = tmp_path / "demo" / "ig-gate.yaml"
    argv = ["token", "--config", str(config), "--sub", "bob", "--risk", "medium", "--acr", "mfa"]
    assert dev_main([*argv, "--tenant", "globex", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    jwks = jwt.PyJWKSet.from_dict(json.loads((tmp_path / "demo/keys/idp-jwks.json").read_text()))
    claims = jwt.decode(
        token, jwks[jwt.get_unverified_header(token)["kid"]].key, algorithms=["ES256"],
        audience="ig-gateway", issuer="https://idp.example.test",
    )
    expected = ["bob", "medium", "mfa", "globex", ["mfa"]]
    assert [claims[k] for k in ("sub", "risk", "acr", "tenant", "amr")] == expected
    assert claims["exp"] - claims["iat"] == 120 and claims["auth_time"] == claims["iat"]


def test_dev_token_without_the_demo_says_to_run_make_demo(tmp_path: Path, capsys):
    assert dev_main(["token", "--config", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ig-gate: ") and "nope.yaml" in err and "make demo" in err and err.count("\n") == 1
