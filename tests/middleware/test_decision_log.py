"""DecisionLog: OPA-shaped, hash-chained JSON lines written off the request path; verify_chain."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ig_gate.middleware import decision_log
from ig_gate.middleware.decision_log import (
    GENESIS,
    REDACTED,
    DecisionLog,
    DecisionLogError,
    _Timestamps,
    redact,
    verify_chain,
)


@pytest.fixture(autouse=True, params=decision_log.WRITERS)
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the writer process and with the writer thread (DecisionLog's default)."""
    monkeypatch.setattr(decision_log, "DEFAULT_WRITER", request.param)
    return request.param


def entry(i: int, **extra: object) -> dict:
    return {
        "decision_id": f"d-{i}",
        "input": {"tenant": "acme", "session": {"risk": "low", "subject": "alice"}, "n": i},
        "result": {"allow": True, "reasons": []},
        "revision": "rev-7",
        **extra,
    }


def write_log(path: Path, count: int, start: int = 0) -> None:
    with DecisionLog(path) as log:
        for i in range(start, start + count):
            assert log.append(entry(i))


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in lines(path)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "decisions.log"


def test_n_appends_give_n_lines_in_opa_shape_and_the_chain_verifies(log_path):
    written: list[int] = []
    with DecisionLog(log_path, on_write=written.append) as log:
        for i in range(50):
            log.append(entry(i, outcome="allow"))

    rows = records(log_path)
    assert [r["decision_id"] for r in rows] == [f"d-{i}" for i in range(50)]
    first = rows[0]
    assert first["path"] == "ig/zt/decision"
    assert first["input"]["session"] == {"risk": "low", "subject": "alice"}
    assert first["result"] == {"allow": True, "reasons": []}
    assert first["bundles"] == {"ig": {"revision": "rev-7"}}
    assert first["outcome"] == "allow"
    assert first["labels"]["app"] == "ig-gate"
    assert first["timestamp"].endswith("Z")
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None
    assert sum(written) == 50
    report = verify_chain(log_path)
    assert (report.ok, report.entries, report.first_bad_line) == (True, 50, None)
    assert report.head == sha(lines(log_path)[-1])


def test_each_line_carries_the_sha256_of_the_line_before(log_path):
    write_log(log_path, 4)
    raw = lines(log_path)

    assert records(log_path)[0]["prev_hash"] == GENESIS
    for before, row in zip(raw, records(log_path)[1:], strict=False):
        assert row["prev_hash"] == sha(before)


def test_callers_timestamp_and_bundles_are_kept(log_path):
    with DecisionLog(log_path) as log:
        log.append({"decision_id": "x", "timestamp": 0.5, "bundles": {"ig": {"revision": "r9"}}})

    row = records(log_path)[0]
    assert row["timestamp"] == "1970-01-01T00:00:00.500000Z"
    assert row["bundles"] == {"ig": {"revision": "r9"}}


def test_secrets_are_redacted_at_any_depth(log_path):
    secret_entry = entry(
        1,
        input={
            "headers": {
                "Authorization": "Bearer abc.def.ghi", "X-Device-Attestation": "eyJx.y.z", "accept": "*/*",
            },
            "session": {"risk": "high", "claims": [{"refresh_token": "r", "sub": "alice"}]},
            "form": {"password": "hunter2", "Client-Secret": "s3", "cookie": "sid=1", "X_Api-Key": "k"},
            "note": "Bearer leaked-into-a-value",
            "jwt": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
        },
        debug={"id_token": "t", "nested": [["Bearer zzz"]]},
    )
    with DecisionLog(log_path) as log:
        log.append(secret_entry)

    row = records(log_path)[0]
    text = lines(log_path)[0].decode()
    for secret in ("abc.def.ghi", "eyJx", "hunter2", "s3", "sid=1", "leaked", "eyJhbGci", "zzz",
                   '"r"', '"k"', '"t"'):
        assert secret not in text, secret
    assert row["input"]["headers"] == {
        "Authorization": REDACTED, "X-Device-Attestation": REDACTED, "accept": "*/*",
    }
    assert row["input"]["session"]["claims"] == [{"refresh_token": REDACTED, "sub": "alice"}]
    assert row["debug"] == {"id_token": REDACTED, "nested": [[REDACTED]]}
    assert secret_entry["input"]["form"]["password"] == "hunter2"  # the caller's dict is not changed


KEYS = st.sampled_from(["tenant", "risk", "Api_Key", "X-Auth-Token", "SET-COOKIE", "pass_word", "sub", "Ä"])
VALUES = st.sampled_from(["ok", "Bearer x", "bearer\ty", "eyJa.b.c", "EYJa.b.", "eyj", "Zürich", 1, None])
NESTED = st.recursive(
    VALUES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def test_written_inputs_equal_fully_redacted_inputs(tmp_path):
    log = DecisionLog(tmp_path / "decisions.log")
    given_inputs: list = []

    @settings(max_examples=150, deadline=None)
    @given(NESTED)
    def write(value):
        given_inputs.append(value)
        log.append({"decision_id": "p", "input": value})

    try:
        write()
    finally:
        log.close()
    written = [row["input"] for row in records(tmp_path / "decisions.log")]
    assert written == [json.loads(json.dumps(redact(value))) for value in given_inputs]
    assert any(REDACTED in json.dumps(row) for row in written)


def test_an_entry_without_secrets_is_written_as_given(log_path):
    given = entry(1, note="Zürich \u2028 tab\t", reasons=["geo_fenced"], auth_age_s=12)
    with DecisionLog(log_path) as log:
        log.append(given)

    row = records(log_path)[0]
    assert row["input"] == given["input"]
    assert (row["note"], row["reasons"], row["auth_age_s"]) == (given["note"], ["geo_fenced"], 12)


def test_an_edited_line_is_reported_at_its_own_line_number(log_path):
    write_log(log_path, 5)
    raw = lines(log_path)
    raw[2] = raw[2].replace(b'"risk":"low"', b'"risk":"high"')
    log_path.write_bytes(b"\n".join(raw) + b"\n")

    report = verify_chain(log_path)
    assert (report.ok, report.first_bad_line, report.entries) == (False, 3, 2)
    assert "edited" in report.reason


def test_an_edited_last_line_is_reported(log_path):
    write_log(log_path, 3)
    log_path.write_bytes(log_path.read_bytes().replace(b'"d-2"', b'"d-X"'))

    assert verify_chain(log_path).first_bad_line == 3


def test_a_rewritten_line_with_a_fresh_entry_hash_breaks_the_next_line(log_path):
    write_log(log_path, 4)
    raw = lines(log_path)
    body = raw[1][:-81].replace(b'"risk":"low"', b'"risk":"high"') + b"}"
    raw[1] = body[:-1] + b',"entry_hash":"' + sha(body).encode() + b'"}'
    log_path.write_bytes(b"\n".join(raw) + b"\n")

    report = verify_chain(log_path)
    assert report.first_bad_line == 3
    assert "prev_hash" in report.reason


def test_a_removed_line_is_reported_where_it_was(log_path):
    write_log(log_path, 5)
    raw = lines(log_path)
    del raw[1]
    log_path.write_bytes(b"\n".join(raw) + b"\n")

    report = verify_chain(log_path)
    assert (report.ok, report.first_bad_line) == (False, 2)
    assert "removed" in report.reason


def test_a_removed_first_line_is_reported(log_path):
    write_log(log_path, 3)
    log_path.write_bytes(b"\n".join(lines(log_path)[1:]) + b"\n")

    assert verify_chain(log_path).first_bad_line == 1


def test_reordered_lines_are_reported(log_path):
    write_log(log_path, 5)
    raw = lines(log_path)
    raw[2], raw[3] = raw[3], raw[2]
    log_path.write_bytes(b"\n".join(raw) + b"\n")

    assert verify_chain(log_path).first_bad_line == 3


@pytest.mark.parametrize(
    ("damage", "bad_line", "word"),
    [
        (lambda data: data[:-40], 3, "truncated"),  # torn write at the end
        (lambda data: data.replace(b'"d-1"', b'"d-1', 1), 2, "edited"),
        (lambda data: data.replace(b"\n", b"\n\x00garbage\n", 1), 2, "garbled"),
        (lambda data: data.replace(b"\n", b"\n\n", 1), 2, "garbled"),
    ],
)
def test_truncated_and_garbled_lines_are_reported(log_path, damage, bad_line, word):
    write_log(log_path, 3)
    log_path.write_bytes(damage(log_path.read_bytes()))

    report = verify_chain(log_path)
    assert (report.ok, report.first_bad_line) == (False, bad_line)
    assert word in report.reason


def test_an_empty_log_verifies(log_path):
    log_path.write_bytes(b"")
    report = verify_chain(log_path)
    assert (report.ok, report.entries, report.head) == (True, 0, GENESIS)


def test_the_chain_continues_across_reopen(log_path):
    write_log(log_path, 3)
    write_log(log_path, 2, start=3)

    raw = lines(log_path)
    assert len(raw) == 5
    assert records(log_path)[3]["prev_hash"] == sha(raw[2])
    assert verify_chain(log_path).ok


def test_the_chain_continues_after_a_last_line_longer_than_the_read_block(log_path):
    with DecisionLog(log_path) as log:
        log.append(entry(0))
        log.append(entry(1, blob="x" * 200_000))
    write_log(log_path, 1, start=2)

    assert records(log_path)[2]["prev_hash"] == sha(lines(log_path)[1])
    assert verify_chain(log_path).entries == 3


def test_reopening_after_a_torn_write_chains_after_the_torn_line(log_path):
    write_log(log_path, 2)
    with log_path.open("ab") as f:
        f.write(b'{"decision_id":"torn')
    write_log(log_path, 1, start=2)

    raw = lines(log_path)
    assert raw[2] == b'{"decision_id":"torn'
    assert json.loads(raw[3])["prev_hash"] == sha(raw[2])
    report = verify_chain(log_path)
    assert (report.ok, report.first_bad_line) == (False, 3)


def test_a_full_queue_drops_counts_and_never_blocks(log_path):
    entered, release = threading.Event(), threading.Event()
    dropped: list[int] = []

    def hold_writer(count: int) -> None:
        entered.set()
        release.wait(30)

    log = DecisionLog(log_path, queue_size=3, on_drop=lambda: dropped.append(1), on_write=hold_writer)
    try:
        assert log.append(entry(0))
        assert entered.wait(10), "writer never picked up the first entry"
        started = time.perf_counter()
        accepted = [log.append(entry(i)) for i in range(1, 101)]
        elapsed = time.perf_counter() - started
    finally:
        release.set()
        log.close()

    assert accepted == [True] * 3 + [False] * 97
    assert elapsed < 0.5  # 100 appends against a stuck writer: no waiting on it
    assert len(dropped) == log.dropped == 97
    assert [r["decision_id"] for r in records(log_path)] == ["d-0", "d-1", "d-2", "d-3"]
    assert verify_chain(log_path).ok


def test_flush_makes_queued_entries_readable_before_close(log_path):
    with DecisionLog(log_path, flush_interval_s=60) as log:
        for i in range(10):
            log.append(entry(i))
        log.flush()
        assert len(lines(log_path)) == 10


def test_unserialisable_values_are_stringified_and_a_failing_entry_is_dropped(log_path):
    circular: dict = {}
    circular["self"] = circular
    with DecisionLog(log_path) as log:
        log.append(entry(0, groups={"b", "a"}, where=Path("/x")))
        log.append(entry(1, bad=circular))
        log.append(entry(2))

    rows = records(log_path)
    assert [r["decision_id"] for r in rows] == ["d-0", "d-2"]
    assert rows[0]["groups"] == ["a", "b"]
    assert rows[0]["where"] == "/x"
    assert log.dropped == 1
    assert verify_chain(log_path).ok


def test_append_after_close_is_dropped_and_counted(log_path):
    log = DecisionLog(log_path)
    log.close()
    log.close()

    assert log.append(entry(0)) is False
    assert log.dropped == 1
    assert log_path.read_bytes() == b""


def test_an_unwritable_path_is_a_named_error(tmp_path):
    missing = tmp_path / "no-such-dir" / "decisions.log"
    with pytest.raises(DecisionLogError, match=r"no-such-dir/decisions\.log: cannot open"):
        DecisionLog(missing)


def test_a_document_logged_many_times_is_written_the_same_each_time(log_path):
    shared = {"tenant": "acme", "session": {"risk": "low"}}
    with DecisionLog(log_path) as log:
        for i in range(5):
            log.append({"decision_id": f"d-{i}", "input": shared, "result": {"allow": True}})

    assert [row["input"] for row in records(log_path)] == [shared] * 5
    assert verify_chain(log_path).entries == 5


def test_many_short_lived_documents_are_each_written_as_given(log_path):
    # more than the encoder's per-object cache holds, so it is cleared and object ids get reused
    with DecisionLog(log_path, queue_size=5000) as log:
        for i in range(3000):
            log.append({"decision_id": f"d-{i}", "input": {"n": i}, "result": [i], "outcome": f"o{i % 3}"})
            if i % 500 == 0:
                log.flush()

    rows = records(log_path)
    assert [(r["input"]["n"], r["result"], r["outcome"]) for r in rows] == [
        (i, [i], f"o{i % 3}") for i in range(3000)
    ]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**6))
def test_timestamps_are_rfc3339_utc_with_microseconds(micros):
    ts = micros / 10**6
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert _Timestamps()(ts).decode() == expected


def test_append_decision_writes_the_line_append_writes(tmp_path):
    document, result = {"tenant": "acme", "note": "Bearer x"}, {"allow": True, "reasons": []}
    by_dict, by_args = tmp_path / "dict.log", tmp_path / "args.log"
    for path, add in ((by_dict, "dict"), (by_args, "args")):
        with DecisionLog(path, labels={"id": "same"}) as log:
            for outcome in ("allow", "deny", "allow"):
                if add == "dict":
                    log.append({"decision_id": "d-1", "path": "ig/zt/decision", "input": document,
                                "result": result, "revision": None, "outcome": outcome, "timestamp": 5.0})
                else:
                    log._queue((5.0, "d-1", "ig/zt/decision", document, result, None, outcome))

    assert by_args.read_bytes() == by_dict.read_bytes()
    assert records(by_args)[0]["input"]["note"] == REDACTED
    assert verify_chain(by_args).entries == 3


def test_append_decision_is_queued_with_the_time_of_the_call(log_path):
    with DecisionLog(log_path) as log:
        before = time.time()
        log.append_decision("d-1", "ig/zt/decision", {"tenant": "acme"}, {"allow": True}, "r1", "allow")
        after = time.time()

    row = records(log_path)[0]
    written = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).timestamp()
    assert before - 1e-6 <= written <= after + 1e-6
    assert (row["decision_id"], row["bundles"]) == ("d-1", {"ig": {"revision": "r1"}})
    assert row["outcome"] == "allow"
