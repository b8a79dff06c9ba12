"""The decision log's writer process: started with the gate, not at construction; survives Ctrl-C to the
process group; a killed child is logged once, its lost entries counted, and it is replaced."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from ig_gate.middleware import decision_log_process
from ig_gate.middleware.compose import compose
from ig_gate.middleware.decision_log import DecisionLog, DecisionLogError, verify_chain
from ig_gate.middleware.decision_log_process import RESTART_S
from ig_gate.middleware.settings import ConfigError, settings_from_dict


def entry(i: int) -> dict:
    return {"decision_id": f"d-{i}", "input": {"tenant": "acme", "n": i}, "result": {"allow": True}}


def child_of(log: DecisionLog):  # the live child process, None before start()
    return log._sink._child


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.01)


def test_construction_starts_no_process_start_does_and_close_ends_it(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl", writer="process", autostart=False)
    assert child_of(log) is None
    log.start()
    child = child_of(log)
    assert child is not None and child.poll() is None
    log.append(entry(0))
    log.close()
    assert child.returncode == 0
    assert verify_chain(log.path).entries == 1


def test_sigint_to_the_process_group_leaves_the_child_to_the_parents_close(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "decisions.jsonl", writer="process") as log:
        log.append(entry(0))
        log.flush()
        os.kill(child_of(log).pid, signal.SIGINT)
        log.append(entry(1))
        log.flush()
        assert child_of(log).poll() is None
    assert (verify_chain(log.path).entries, log.dropped) == (2, 0)


def test_a_killed_child_is_logged_once_counted_and_replaced_and_the_chain_verifies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dropped: list[int] = []
    log = DecisionLog(tmp_path / "decisions.jsonl", writer="process", on_drop=lambda: dropped.append(1))
    appended = 0
    try:
        for appended in range(10):
            assert log.append(entry(appended))
        log.flush()
        first = child_of(log)
        first.kill()
        first.wait()
        started = time.perf_counter()
        while log.written <= 10:  # appends keep being accepted or dropped at once, never waited on
            appended += 1
            log.append(entry(appended))
            time.sleep(0.005)
            assert time.perf_counter() - started < 10 * RESTART_S + 20, "no new child wrote anything"
        log.flush()
        assert child_of(log) is not first
    finally:
        log.close()
    appended += 1  # count, from the last index
    assert log.written + log.dropped == appended
    assert len(dropped) == log.dropped
    report = verify_chain(log.path)
    assert (report.ok, report.entries) == (True, log.written)
    deaths = [r for r in caplog.records if r.levelno == logging.ERROR and "exited" in r.getMessage()]
    assert len(deaths) == 1


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_the_gate_writes_with_the_configured_writer_started_by_the_system(world, tmp_path, writer) -> None:
    settings = world.settings(decision_log={"path": str(tmp_path / "decisions.jsonl"), "writer": writer})
    system = compose(settings)
    log = system.gate.decision_log
    assert log.writer == writer
    assert writer == "thread" or child_of(log) is None  # construction starts nothing
    system.start()
    try:
        assert writer == "thread" or child_of(log).poll() is None
    finally:
        system.close()
    assert verify_chain(log.path).ok


def test_an_unknown_writer_is_refused_with_its_key_path() -> None:
    expected = r"^decision_log\.writer: must be 'process' or 'thread', got 'fork'"
    with pytest.raises(ConfigError, match=expected):
        settings_from_dict({"decision_log": {"writer": "fork"}})


def test_a_document_logged_again_is_encoded_once_in_the_serving_process(tmp_path, monkeypatch) -> None:
    encoded: list[object] = []
    dumps = decision_log_process._dumps

    def counting_dumps(value: object) -> bytes:
        encoded.append(value)
        return dumps(value)

    monkeypatch.setattr(decision_log_process, "_dumps", counting_dumps, raising=True)
    document, result = {"tenant": "acme", "session": {"risk": "low"}}, {"allow": True}
    with DecisionLog(tmp_path / "decisions.jsonl", writer="process") as log:
        for i in range(100):
            log.append_decision(f"d-{i}", "ig/zt/decision", document, result, "r1", "allow")
    assert [value for value in encoded if value is document or value is result] == [document, result]
    rows = [json.loads(line) for line in log.path.read_bytes().splitlines()]
    assert [(row["input"], row["result"]) for row in rows] == [(document, result)] * 100
    assert verify_chain(log.path).entries == 100


def test_a_writer_process_that_cannot_start_is_a_named_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(decision_log_process.sys, "executable", str(tmp_path / "no-such-python"))
    log = DecisionLog(tmp_path / "decisions.jsonl", writer="process", autostart=False)
    with pytest.raises(DecisionLogError, match=r"cannot start the writer process .*writer: thread"):
        log.start()
