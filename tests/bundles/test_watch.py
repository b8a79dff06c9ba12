"""A bundle file followed as `opa run --watch` does (bundles/watch.py): a file that appears later is loaded,
a newly signed version replaces the active one, a bad replacement keeps the last good one and says why;
each activation is one INFO line on the `ig_gate` logger naming version, digest, signing key and source."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.policy import PolicySnapshot
from ig_gate.bundles.signing import VerificationKey, sign_bundle
from ig_gate.bundles.verify import VerifyOptions
from ig_gate.bundles.watch import BundleFile
from tests.middleware.conftest import REPO
from tests.support.keys import KeyPair, make_keypair
from tests.support.procs import wait_until


@pytest.fixture(scope="module")
def signer() -> KeyPair:
    return make_keypair("ES256", "watch-key")


def signed(signer: KeyPair, version: str) -> bytes:
    return sign_bundle(build_bundle(REPO / "policies", version=version), signer.private_pem).archive


def source(path: Path, signer: KeyPair, **options: object) -> BundleFile:
    key = VerificationKey(signer.public_pem, key_id=signer.kid)
    return BundleFile(path, VerifyOptions(key=key), **options)  # type: ignore[arg-type]


def version(bundle: BundleFile) -> str | None:
    snapshot = bundle.current()
    return None if snapshot is None else snapshot.verified.version


def test_a_missing_file_is_not_active_says_why_by_setting_and_is_loaded_when_copied_into_place(
    tmp_path: Path, signer: KeyPair
) -> None:
    path = tmp_path / "policy.tgz"
    activated: list[tuple[PolicySnapshot, str]] = []
    bundle = source(path, signer, interval_s=0.05, on_activate=lambda s, where: activated.append((s, where)))
    assert bundle.reload() is False and bundle.current() is None
    reason = bundle.reason
    assert reason is not None and reason.startswith("bundle.path: ") and str(path) in reason
    bundle.start()
    try:
        staged = tmp_path / "staged.tgz"
        staged.write_bytes(signed(signer, "1.0.0"))
        shutil.copy(staged, path)  # written in place, not renamed: the watcher may see it half-written
        wait_until(lambda: version(bundle) == "1.0.0", 10, "the copied bundle to be active")
    finally:
        bundle.close()
    assert bundle.reason is None
    assert [(s.verified.version, where) for s, where in activated] == [("1.0.0", str(path))]


def test_a_new_signed_version_replaces_the_active_one_and_a_tampered_one_is_refused(
    tmp_path: Path, signer: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.tgz"
    path.write_bytes(signed(signer, "1.0.0"))
    bundle = source(path, signer, interval_s=0.05)
    assert bundle.reload() and version(bundle) == "1.0.0"
    bundle.start()
    try:
        (tmp_path / "next.tgz").write_bytes(signed(signer, "1.1.0"))
        (tmp_path / "next.tgz").replace(path)  # renamed over it: a new inode
        wait_until(lambda: version(bundle) == "1.1.0", 10, "the new version to be active")
        good = bundle.current()
        stranger = make_keypair("ES256", "watch-key")  # same key id, another key: a forged signature
        with caplog.at_level(logging.WARNING, logger="ig_gate"):
            path.write_bytes(signed(stranger, "9.0.0"))
            wait_until(lambda: "stays in force" in caplog.text, 10, "the refusal to be logged")
        assert bundle.current() is good and version(bundle) == "1.1.0"
        (refusal,) = [r for r in caplog.records if "stays in force" in r.getMessage()]
        message = refusal.getMessage()
        assert message.startswith(f"bundle.path: {path}: ") and good.digest in message
    finally:
        bundle.close()


def test_each_activation_is_one_info_line_on_ig_gate_with_version_digest_key_and_source(
    tmp_path: Path, signer: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.tgz"
    path.write_bytes(signed(signer, "2.0.0"))
    bundle = source(path, signer, interval_s=None)
    with caplog.at_level(logging.INFO, logger="ig_gate"):
        assert bundle.reload()
        path.touch()  # the same bundle again: not a new activation
        assert bundle.reload()
    (line,) = [r for r in caplog.records if getattr(r, "ig_gate", {}).get("event") == "bundle_activated"]
    snapshot = bundle.current()
    assert snapshot is not None
    assert line.name == "ig_gate" and line.levelno == logging.INFO
    assert line.ig_gate == {  # type: ignore[attr-defined]
        "event": "bundle_activated", "version": "2.0.0", "revision": snapshot.revision,
        "digest": snapshot.digest, "key_id": "watch-key", "source": str(path),
    }
    for part in ("2.0.0", snapshot.digest, "watch-key", str(path)):
        assert part in line.getMessage()
