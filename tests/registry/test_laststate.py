"""The persisted last-good bundle: atomic layout, damage detection, moving aside, rollback floor."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from ig_gate.bundles.errors import BundleFormatError
from ig_gate.bundles.laststate import LastGoodRecord, LastGoodStore

NOW = dt.datetime(2026, 11, 5, 12, 0, tzinfo=dt.UTC)


def record_for(archive: bytes, **extra) -> LastGoodRecord:
    digest = "sha256:" + hashlib.sha256(archive).hexdigest()
    return LastGoodRecord(digest=digest, version="1.0", revision="r1", verified_at=NOW.isoformat(),
                          key_id="k1", source="test", **extra)


def test_save_then_load_round_trips_archive_signature_and_record(tmp_path):
    store = LastGoodStore(tmp_path)
    record = record_for(b"archive-1", has_signature=True)
    store.save(b"archive-1", b"sig-1", record)
    loaded = store.load()
    assert (loaded.archive, loaded.signature, loaded.record) == (b"archive-1", b"sig-1", record)
    assert (tmp_path / "last-good.json").stat().st_mode & 0o777 == 0o600


def test_saving_a_new_bundle_removes_the_old_archive(tmp_path):
    store = LastGoodStore(tmp_path)
    store.save(b"archive-1", b"sig-1", record_for(b"archive-1", has_signature=True))
    store.save(b"archive-2", None, record_for(b"archive-2"))
    assert len(list((tmp_path / "last-good").iterdir())) == 1
    assert store.load().archive == b"archive-2"


def test_empty_state_dir_has_no_last_good(tmp_path):
    assert LastGoodStore(tmp_path / "missing").load() is None


def test_corrupted_archive_is_detected(tmp_path):
    store = LastGoodStore(tmp_path)
    record = record_for(b"archive-1")
    store.save(b"archive-1", None, record)
    (tmp_path / "last-good" / (record.digest.removeprefix("sha256:") + ".tar.gz")).write_bytes(b"archive-X")
    with pytest.raises(BundleFormatError, match="hashes to"):
        store.load()


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"digest": "sha256:00"}', b'{"digest": 5}'])
def test_damaged_record_is_detected(tmp_path, body):
    store = LastGoodStore(tmp_path)
    store.save(b"archive-1", None, record_for(b"archive-1"))
    (tmp_path / "last-good.json").write_bytes(body)
    with pytest.raises(BundleFormatError):
        store.load()


def test_move_aside_renames_everything_and_leaves_no_last_good(tmp_path):
    store = LastGoodStore(tmp_path)
    store.save(b"archive-1", b"sig", record_for(b"archive-1", has_signature=True))
    moved = store.move_aside(NOW)
    assert len(moved) == 3 and all(".rejected-20261105T120000" in p.name for p in moved)
    assert store.load() is None
    store.save(b"archive-2", None, record_for(b"archive-2"))
    assert all(p.exists() for p in moved)  # kept for forensics


def test_save_refuses_a_record_for_other_bytes(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        LastGoodStore(tmp_path).save(b"archive-1", None, record_for(b"archive-2"))


def test_rollback_floor_round_trips_and_survives_moving_last_good_aside(tmp_path):
    store = LastGoodStore(tmp_path)
    assert store.read_floor() is None
    store.save(b"archive-1", None, record_for(b"archive-1"))
    store.write_floor("3.1", "sha256:abc")
    store.move_aside(NOW)
    assert store.read_floor() == "3.1"
    (tmp_path / "rollback-floor.json").write_text("garbage")
    assert store.read_floor() is None


def test_an_unreadable_record_is_a_format_error_not_a_crash(tmp_path):
    (tmp_path / "last-good.json").mkdir()  # reading it fails with an OSError other than "not found"
    with pytest.raises(BundleFormatError, match="last-good record unreadable"):
        LastGoodStore(tmp_path).load()
