"""One writer, one file, one chain: concurrent decision logs on one configured path never share a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ig_gate.middleware import decision_log
from ig_gate.middleware.decision_log import DecisionLog, log_files, verify_chain, writer_path


@pytest.fixture(autouse=True, params=decision_log.WRITERS)
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the writer process and with the writer thread (DecisionLog's default)."""
    monkeypatch.setattr(decision_log, "DEFAULT_WRITER", request.param)
    return request.param


def write(log: DecisionLog, count: int, tag: str) -> None:
    for i in range(count):
        log.append({"decision_id": f"{tag}-{i}", "input": {"tenant": "acme"}, "result": {"allow": True}})
    log.flush()


def test_a_single_writer_keeps_the_configured_file_name(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "decisions.jsonl") as log:
        write(log, 3, "a")
    assert log.path == log.base == tmp_path / "decisions.jsonl"
    assert [p.name for p in tmp_path.iterdir()] == ["decisions.jsonl"]


def test_concurrent_writers_on_one_path_each_get_their_own_chain(tmp_path: Path) -> None:
    base = tmp_path / "decisions.jsonl"
    with DecisionLog(base) as first, DecisionLog(base) as second, DecisionLog(base) as third:
        for _ in range(5):  # interleaved, as workers are
            write(first, 2, "a")
            write(second, 3, "b")
            write(third, 1, "c")
    assert [first.path, second.path, third.path] == [
        base, tmp_path / "decisions.1.jsonl", tmp_path / "decisions.2.jsonl"
    ]
    assert [verify_chain(log.path).entries for log in (first, second, third)] == [10, 15, 5]
    assert all(verify_chain(log.path).ok for log in (first, second, third))


def test_a_restarted_writer_takes_the_same_file_and_continues_its_chain(tmp_path: Path) -> None:
    base = tmp_path / "decisions.jsonl"
    with DecisionLog(base) as first, DecisionLog(base) as second:
        write(first, 2, "a")
        write(second, 2, "b")
    with DecisionLog(base) as again, DecisionLog(base) as again_second:
        write(again, 2, "a2")
        write(again_second, 2, "b2")
    assert (again.path, again_second.path) == (first.path, second.path)
    assert [verify_chain(p).entries for p in (first.path, second.path)] == [4, 4]


def test_a_writer_in_another_process_holds_its_file(tmp_path: Path) -> None:
    base = tmp_path / "decisions.jsonl"
    code = (
        "import sys; from ig_gate.middleware.decision_log import DecisionLog\n"
        "log = DecisionLog(sys.argv[1]); print(log.path, flush=True); sys.stdin.read(); log.close()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code, str(base)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == str(base)
        with DecisionLog(base) as mine:
            write(mine, 1, "mine")
        assert mine.path == tmp_path / "decisions.1.jsonl"
    finally:
        other.communicate("", timeout=30)
    with DecisionLog(base) as after:  # the other process has gone: its slot is free again
        assert after.path == base


def test_writer_paths_keep_the_suffix(tmp_path: Path) -> None:
    assert writer_path(tmp_path / "d.jsonl", 0) == tmp_path / "d.jsonl"
    assert writer_path(tmp_path / "d.jsonl", 7) == tmp_path / "d.7.jsonl"
    assert writer_path(tmp_path / "audit.log", 2) == tmp_path / "audit.2.log"


def test_log_files_takes_a_file_a_directory_or_a_glob(tmp_path: Path) -> None:
    for name in ("decisions.jsonl", "decisions.1.jsonl", "other.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub.jsonl").mkdir()
    both = [tmp_path / "decisions.1.jsonl", tmp_path / "decisions.jsonl"]
    assert log_files(tmp_path) == both
    assert log_files(str(tmp_path / "decisions*")) == both
    assert log_files(tmp_path / "other.txt") == [tmp_path / "other.txt"]
    assert log_files(tmp_path / "missing.jsonl") == [tmp_path / "missing.jsonl"]  # the read reports it
    with pytest.raises(FileNotFoundError, match="no file matches"):
        log_files(str(tmp_path / "nothing*.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"no \*.jsonl decision logs"):
        log_files(tmp_path / "sub.jsonl")
