"""`make demo` end to end: the demo process signs the example bundle, serves the protected app, and
the curl examples it prints get exactly the answers they promise."""

import shlex
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.procs import free_port, running

EXPECTED = {
    "allow: low-risk session": 200,
    "step-up (401, RFC 9470)": 401,
    "allow: the same medium-risk user after step-up": 200,
    "step-up (401): a write with alice's device attestation by bob": 401,
    "deny (403): high-risk session": 403,
    "deny (403): jailbroken device": 403,
    "deny (403): outside the tenant's allowed countries": 403,
    "401: no token": 401,
    "metrics": 200,
}


def parse_curl_script(script: str) -> list[tuple[str, list[str]]]:
    """(what, curl argv) pairs from the demo's curl.sh."""
    examples, what = [], None
    for line in script.splitlines():
        if line.startswith("echo '### ") or line.startswith("echo \"### "):
            what = shlex.split(line)[1].removeprefix("### ")
        elif line.startswith("curl "):
            examples.append((what, shlex.split(line)))
    return examples


def send(argv: list[str]) -> httpx.Response:
    url = next(a for a in argv[1:] if a.startswith("http"))
    headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
    data = argv[argv.index("--data") + 1] if "--data" in argv else None
    return httpx.request("POST" if data else "GET", url, headers=headers, content=data, timeout=10)


@pytest.mark.integration
def test_demo_serves_allow_stepup_and_deny_as_printed(tmp_path: Path):
    port = free_port()
    workdir = tmp_path / "demo"
    argv = [sys.executable, "-m", "ig_gate.sidecar.demo", "--port", str(port), "--workdir", str(workdir)]
    with running(argv, port=port, log=tmp_path / "demo.log", cwd=Path(__file__).parents[2]):
        examples = parse_curl_script((workdir / "curl.sh").read_text())
        assert [what for what, _ in examples] and len(examples) == len(EXPECTED)
        for what, curl in examples:
            expected = next(code for prefix, code in EXPECTED.items() if what.startswith(prefix))
            response = send(curl)
            assert response.status_code == expected, (what, response.text)
            if expected == 401 and "step-up" in what:
                assert 'error="insufficient_user_authentication"' in response.headers["www-authenticate"]
        metrics = send(examples[-1][1]).text
        fenced = 'outcome="deny",profile="read",reason="geo_fenced",tenant="acme"'
        assert f"ig_gate_decisions_total{{{fenced}}} 1.0" in metrics
    assert (workdir / "dist" / "policy.tgz.sig").exists()
    assert (workdir / "decisions.jsonl").read_text().count("\n") >= 7
