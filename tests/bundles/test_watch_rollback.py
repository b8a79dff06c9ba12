"""A watched bundle file never steps down: an older, validly signed bundle dropped over the active one (or
reloaded by SIGHUP) is refused and the active one stays in force, as the registry's rollback floor does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.bundles.test_watch import signed, signer, source, version  # noqa: F401 (signer: a fixture)
from tests.support.keys import KeyPair


def test_an_older_validly_signed_bundle_file_is_refused_and_the_newer_stays_active(
    tmp_path: Path, signer: KeyPair, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    path = tmp_path / "policy.tgz"
    path.write_bytes(signed(signer, "1.1.0"))
    bundle = source(path, signer, interval_s=None)
    assert bundle.reload() and version(bundle) == "1.1.0"
    good = bundle.current()
    path.write_bytes(signed(signer, "1.0.0"))  # an old release, signed by the right key
    with caplog.at_level(logging.WARNING, logger="ig_gate"):
        assert bundle.reload() is True  # a bundle is active: the kept one
    assert bundle.current() is good and version(bundle) == "1.1.0"
    assert "1.0.0" in caplog.text and "stays in force" in caplog.text
    path.write_bytes(signed(signer, "1.2.0"))
    assert bundle.reload() and version(bundle) == "1.2.0"
