"""The writer process splices lines from cached parts (documents by reference, encoded once; a part per
path, input, result and revision; one per outcome): every byte must equal a straightforward encoding of
each entry on its own (json.dumps of the whole record, redact(), SHA-256 of the line) and the thread
writer's lines, including across the serving process's reference cache being cleared mid-batch."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ig_gate.middleware import decision_log, decision_log_process
from ig_gate.middleware.decision_log import GENESIS, REDACTED, DecisionLog, redact, verify_chain

LABELS = {"id": "same"}
TS0 = 1_764_772_800.0  # 2025-12-03T14:40:00Z; + i / 64 stays exact in binary


class Revision:
    """A revision marshal refuses (not a str): it travels to the child as JSON, written as its str()."""

    def __str__(self) -> str:
        return "rev-object"


HOT = [
    {"tenant": "acme", "session": {"risk": "low", "acr": "mfa", "auth_age_s": 12, "subject": "alice"},
     "device": {"posture": "managed"}, "request": {"method": "POST", "path": "/graphql", "purpose": None}},
    {"naïve ключ": "é\u2028🔑", 'quo"te': "back\\slash\ttab", "ctl\x01": "\x7f</script>", "n": 2**70},
    {"tenant": "acme", "headers": {"Authorization": "Bearer abc.def", "x-api_key": "k"}, "note": "eyJa.b.c"},
    {"list": [1, -2, True, None, "x", {"nested": []}], "empty": {}},
]  # fmt: skip
RESULTS = [{"allow": True, "reasons": []}, {"deny": True, "reasons": ["geo_blocked", "ünïcode"]}]


def items(count: int) -> list[tuple[Any, ...]]:
    """append_decision() items: memo hits (the same objects) mixed with memo misses (new objects), odd ids,
    paths, revisions and outcomes, inputs that are not dicts."""
    out = []
    for i in range(count):
        if i % 3 == 0:  # a memo miss: objects logged once
            document: Any = {"tenant": "acme", "n": i, "subject": f"user-{i}"}
            result: Any = {"allow": i % 2 == 0, "reasons": [f"r{i % 5}"]}
        else:
            document, result = HOT[i % len(HOT)], RESULTS[i % len(RESULTS)]
        if i % 97 == 0:
            document = [None, "Bearer xyz", "plain", {"token": "t"}][i // 97 % 4]
        decision_id: Any = f"3f9a0c2e51d7b864-{i}"
        if i % 89 == 0:
            decision_id = ['d"quoted', "dé-1", "Bearer abc", "eyJa.eyJb.c", 7, ""][i // 89 % 6]
        path = "ig/zt/decision" if i % 50 else "ig/zt/dé\\cision"
        revision: Any = ["rev-1", None, "rev-2"][i % 3] if i % 211 else [3, Revision()][i // 211 % 2]
        outcome = ["allow", "deny", "stepup", "allow"][i % 4]
        out.append((TS0 + i / 64, decision_id, path, document, result, revision, outcome))
    return out


def straightforward(entries: list[tuple[Any, ...]]) -> bytes:
    """Each line on its own: the whole record through json.dumps, then its two hashes."""
    labels = {"app": "ig-gate", "id": "same", "version": decision_log._package_version()}
    out, prev = [], GENESIS
    for ts, decision_id, path, document, result, revision, outcome in entries:
        stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        record = redact({
            "decision_id": decision_id, "path": path, "input": document, "result": result,
            "bundles": {"ig": {"revision": revision}}, "timestamp": stamp, "labels": labels,
            "outcome": outcome,
        })  # fmt: skip
        record["prev_hash"] = prev
        body = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        entry_hash = hashlib.sha256(body).hexdigest()
        line = body[:-1] + b',"entry_hash":"' + entry_hash.encode() + b'"}'
        out.append(line + b"\n")
        prev = hashlib.sha256(line).hexdigest()
    return b"".join(out)


def written(path: Path, writer: str, entries: list[tuple[Any, ...]]) -> bytes:
    with DecisionLog(path, writer=writer, labels=LABELS, queue_size=len(entries)) as log:
        for entry in entries:
            assert log._queue(entry)
    assert (log.written, log.dropped) == (len(entries), 0)
    assert verify_chain(path).entries == len(entries)
    return path.read_bytes()


@pytest.mark.parametrize("writer", decision_log.WRITERS)
def test_lines_equal_a_straightforward_encoding_of_each_entry(tmp_path: Path, writer: str) -> None:
    # 6000 entries, 4000 objects logged once: the feeder's reference cache (1024 objects) is cleared
    # mid-batch four times, and the child must keep what the batch still refers to
    entries = items(6000)
    expected = straightforward(entries).splitlines()
    got = written(tmp_path / "decisions.jsonl", writer, entries).splitlines()
    assert len(got) == len(expected)
    for number, (line, want) in enumerate(zip(got, expected, strict=True), start=1):
        assert line == want, f"line {number} differs"


def test_the_spliced_lines_are_redacted_and_escaped(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in written(tmp_path / "d.jsonl", "process", items(400)).splitlines()]
    hot = [row for row in rows if "headers" in (row["input"] if isinstance(row["input"], dict) else {})]
    assert hot and {row["input"]["headers"]["Authorization"] for row in hot} == {REDACTED}
    assert {row["input"]["note"] for row in hot} == {REDACTED}
    assert any(row["input"] == HOT[1] for row in rows)  # unicode, quotes, escapes and a 70-bit integer
    ids = [rows[i]["decision_id"] for i in (0, 89, 178, 267, 356)]
    assert ids == ['d"quoted', "dé-1", REDACTED, REDACTED, 7]
    assert rows[97]["input"] == "[REDACTED]" and rows[0]["input"] is None
    assert rows[50]["path"] == "ig/zt/dé\\cision"


def test_a_document_looked_up_before_the_cache_was_cleared_is_known_to_the_child(tmp_path: Path) -> None:
    # batch 1 fills the feeder's cache (1024 objects); batch 2 refers to the hot document by its old number
    # at both ends while its 1100 new documents clear the cache and take numbers far beyond it
    hot, result = {"tenant": "acme", "hot": True}, {"allow": True}
    first = [{"n": i} for i in range(1022)]
    second = [hot, *({"n": i} for i in range(1022, 2122)), hot]
    batches = [
        [(TS0 + i / 64, f"d-{i}", "ig/zt/decision", document, result, "rev-1", "allow")
         for i, document in enumerate([hot, *first])],
        [(TS0 + i / 64, f"e-{i}", "ig/zt/decision", document, result, "rev-1", "allow")
         for i, document in enumerate(second)],
    ]  # fmt: skip
    labels = {"app": "ig-gate", "id": "same"}
    feeder_file = (tmp_path / "feeder.jsonl").open("ab")
    feeder = decision_log_process.WriterProcess(tmp_path / "feeder.jsonl", feeder_file, labels)
    spliced_path, reference_path = tmp_path / "spliced.jsonl", tmp_path / "reference.jsonl"
    spliced_path.touch()
    reference_path.touch()
    with spliced_path.open("ab") as spliced_file, reference_path.open("ab") as reference_file:
        spliced = decision_log.ChainWriter(spliced_path, spliced_file, labels)
        reference = decision_log.ChainWriter(reference_path, reference_file, labels)
        documents = decision_log_process._Documents()
        for batch in batches:
            payload, sent, failed = feeder._frame(batch, [])
            assert (sent, failed) == (len(batch), 0)
            assert decision_log_process._write_frame(spliced, documents, payload) == (len(batch), 0)
            assert reference.write(batch) == (len(batch), 0)
    feeder.close(0)
    assert spliced_path.read_bytes() == reference_path.read_bytes()
    assert verify_chain(spliced_path).entries == 1023 + 1102


@pytest.mark.parametrize(("writer", "queue_size", "wake_at"), [("process", 10_000, 256), ("process", 100, 50),
                                                                ("thread", 10_000, 64), ("thread", 3, 1)])
def test_the_writer_is_woken_by_a_full_batch_or_half_the_queue(tmp_path, writer, queue_size, wake_at) -> None:
    log = DecisionLog(tmp_path / "d.jsonl", writer=writer, queue_size=queue_size, autostart=False)
    for i in range(wake_at - 1):
        log.append_decision(f"d-{i}", "ig/zt/decision", HOT[0], RESULTS[0], "rev-1", "allow")
    assert not log._wake.is_set()  # the process feeder: one wake-up a batch, not one per 64 entries
    log.append_decision("d-last", "ig/zt/decision", HOT[0], RESULTS[0], "rev-1", "allow")
    assert log._wake.is_set()
    log.close()
    assert verify_chain(log.path).entries == wake_at
