"""bench/overhead.py end to end in --quick mode (real uvicorn processes, real wrk), and the pieces it is
built from: the request mix, wrk's result line, the per-round pairing of ratios."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import targets
from bench.profiling import read_profile
from bench.serving import REPO
from bench.summary import Spread, summarize, unexpected_statuses
from bench.traffic import Mix, WireRequest, client_pool, expected_statuses, wire_pool
from bench.wrkrun import WrkError, WrkResult, parse
from ig_gate.sidecar.devidp import DevIdP, DevKey


@pytest.fixture(scope="module")
def idp() -> DevIdP:
    return DevIdP(DevKey.generate("bench-idp"), DevKey.generate("bench-mdm"))


def _run(rps: float, p95_ms: float, statuses: dict[int, int] | None = None) -> WrkResult:
    latency = {"p50": p95_ms * 500, "p95": p95_ms * 1000, "p99": p95_ms * 2000}
    return WrkResult(int(rps * 10), 10.0, latency, statuses or {200: int(rps * 10)})


def test_pool_holds_the_requested_shares_of_stepup_and_deny(idp: DevIdP) -> None:
    pool = client_pool(idp, Mix(stepup=0.1, deny=0.1, mutations=0.5), size=40)
    assert expected_statuses(wire_pool(pool, "direct")) == {200: 32, 401: 4, 403: 4}
    allowed = [r for r in pool if r.expected_status == 200]
    assert sum("mutation" in r.body for r in allowed) == 16


def test_coprocessor_envelope_wraps_the_same_client_request(idp: DevIdP) -> None:
    pool = client_pool(idp, Mix(deny=0.5), size=4)
    wires = wire_pool(pool, "coprocessor")
    payload = json.loads(wires[0].body)
    assert wires[0].path == "/apollo/coprocessor"
    assert (payload["stage"], payload["version"]) == ("RouterRequest", 1)
    assert payload["body"] == pool[0].body
    assert payload["headers"]["authorization"] == [dict(pool[0].headers)["Authorization"]]
    assert {w.expected_status for w in wires} == {200}  # refusals travel inside the 200 answer


def test_mix_rejects_shares_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="stepup"):
        Mix(stepup=1.5)
    with pytest.raises(ValueError, match="must not exceed"):
        Mix(stepup=0.6, deny=0.6)


def test_wrk_result_line_is_parsed_and_missing_line_is_an_error() -> None:
    line = (
        'IGBENCH {"requests": 2000, "duration_us": 2000000, "bytes": 1, "errors": {"connect": 0, "read": 1,'
        ' "write": 0, "status": 5, "timeout": 2}, "latency_us": {"p50": 1500, "p95": 3000, "p99": 4000,'
        ' "mean": 1.0, "stdev": 1.0, "max": 9000}, "statuses": {"200": 1995, "403": 5}}'
    )
    result = parse("Running 2s test\n" + line + "\n")
    assert (result.rps, result.latency_ms("p95"), result.statuses, result.socket_errors) == (
        1000.0, 3.0, {200: 1995, 403: 5}, 3,
    )  # fmt: skip
    with pytest.raises(WrkError, match="no IGBENCH line"):
        parse("wrk: connection refused\n")


def test_ratios_and_added_latency_are_paired_within_each_round() -> None:
    rounds = {
        "bare": [_run(10_000, 2.0), _run(5_000, 4.0)],  # round 2 ran on a busier machine
        "middleware": [_run(9_000, 2.1), _run(4_500, 4.1)],
    }
    base, protected = summarize(rounds)
    assert base.throughput_ratio is None and base.added_ms == {}
    assert protected.throughput_ratio == Spread(0.9, 0.9, 0.9)
    assert protected.added_ms["p95"].median == pytest.approx(0.1)
    assert protected.rps == Spread(6_750, 4_500, 9_000)


def test_statuses_no_request_expects_are_reported() -> None:
    (summary,) = summarize({"bare": [_run(100, 1.0, {200: 990, 500: 10})]})
    assert unexpected_statuses(summary, {200}) == {500: 10}
    assert unexpected_statuses(summary, {200, 500}) == {}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (make bench installs it)")
def test_quick_run_writes_json_markdown_and_png(tmp_path: Path) -> None:
    argv = [
        sys.executable, str(REPO / "bench" / "overhead.py"), "--quick",
        "--configs", "bare,middleware,coprocessor", "--stepup", "0.1", "--deny", "0.1",
        "--connections", "8", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("*.json")
    document = json.loads(result.read_text())
    saturation, fixed = document["modes"]["saturation"], document["modes"]["fixed_rate"]
    assert set(saturation["middleware"]["statuses"]) == {"200", "401", "403"}
    assert set(saturation["bare"]["statuses"]) == {"200"}
    assert set(saturation["coprocessor"]["statuses"]) == {"200"}  # a payload it cannot parse gets 400
    assert 0 < saturation["middleware"]["throughput_ratio"]["median"] < 2
    target = document["settings"]["fixed_rate_rps"]  # half the saturated rate: unpaced runs would reach ~2x
    assert 0.5 * target < fixed["bare"]["rps"]["median"] < 1.2 * target
    assert document["unexpected_statuses"] == {}
    assert result.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "| middleware |" in result.with_suffix(".md").read_text()


def test_profile_shares_count_a_function_once_per_stack_and_keep_own_code(tmp_path: Path) -> None:
    folded = tmp_path / "run.folded"
    folded.write_text(
        "thread (7): MainThread;run (asyncio/runners.py:118);Gate.decide (middleware/gate.py:240);"
        "Gate.decide (middleware/gate.py:250) 3\n"
        "thread (7): MainThread;run (asyncio/runners.py:118);send (starlette/middleware/errors.py:1) 5\n"
        "thread (9): decision-log:d.jsonl;DecisionLog._run (middleware/decision_log.py:9) 2\n"
    )
    profile = read_profile(folded)
    assert profile.samples == 10
    assert profile.threads == {"MainThread": 0.8, "decision-log:d.jsonl": 0.2}
    assert profile.top(5) == [
        ("Gate.decide (middleware/gate.py)", 0.3),
        ("DecisionLog._run (middleware/decision_log.py)", 0.2),
    ]  # starlette/middleware/... is not ours


def test_profile_steps_charge_each_sample_to_its_innermost_step_and_the_app_apart(tmp_path: Path) -> None:
    serve = "thread (7): MainThread;run (asyncio/r.py:1);ProxyHeadersMiddleware.__call__ (uvicorn/p.py:6)"
    call = f"{serve};ZeroTrustMiddleware.__call__ (middleware/asgi.py:121)"
    folded = tmp_path / "run.folded"
    folded.write_text(
        f"{call};Gate.decide (middleware/gate.py:240);Gate._decide (middleware/gate.py:9);"
        "Classifier.kind (middleware/graphql.py:1);Cache.get (cachetools/__init__.py:1) 4\n"
        f"{call};Gate.decide (middleware/gate.py:240);Gate._record (middleware/gate.py:9) 2\n"
        f"{call};normalise_scope (middleware/paths.py:85) 1\n"
        f"{call};Starlette.__call__ (starlette/applications.py:96);graphql (sidecar/demo_app.py:40) 5\n"
        f"{serve};Starlette.__call__ (starlette/applications.py:96) 3\n"
        "thread (7): MainThread;run (asyncio/runners.py:1) 3\n"
        "thread (9): decision-log:d.jsonl;DecisionLog._run (middleware/decision_log.py:9) 2\n"
    )
    steps = read_profile(folded).steps
    assert steps == {
        "the app": 0.4, "classifier": 0.2, "server, outside the middleware (uvicorn, event loop)": 0.15,
        "gate bookkeeping (trace, ids, record)": 0.1, "decision-log writer thread": 0.1,
        "path normalisation": 0.05,
    }


def test_stdlib_control_answers_every_pool_request_as_the_bare_app_does(idp: DevIdP) -> None:
    """The control config changes the cost, never the answer: same status and body as the bare app."""

    async def answer(app: Any, request: WireRequest) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []
        headers = [(k.lower().encode(), v.encode()) for k, v in request.headers]
        scope = {
            "type": "http", "method": request.method, "path": request.path, "raw_path": request.path.encode(),
            "query_string": b"", "headers": headers, "root_path": "", "scheme": "http", "state": {},
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": request.body.encode(), "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    control, bare = targets.stdlib_control(), targets.bare()
    for request in wire_pool(client_pool(idp, Mix()), "direct")[:8]:
        expected = asyncio.run(answer(bare, request))
        assert expected[0] == 200
        assert asyncio.run(answer(control, request)) == expected
