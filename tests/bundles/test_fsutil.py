"""Atomic file writes."""

from __future__ import annotations

import stat

from ig_gate.bundles.fsutil import write_atomic


def test_write_atomic_creates_parents_sets_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "dist" / "policy.tgz"
    write_atomic(target, b"one", mode=0o600)
    write_atomic(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["policy.tgz"]
