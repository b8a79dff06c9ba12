"""Regression tests for what the fuzz harnesses (fuzz/) found: each input as the fuzzer reduced it."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ig_gate.bundles.archive import pack, read_bundle
from ig_gate.bundles.errors import BundleFormatError
from ig_gate.bundles.filehash import file_digest
from ig_gate.bundles.manifest import Manifest, expiry_instant
from ig_gate.bundles.verify import VerifyOptions, verify_bundle

REGO = {"ig/zt.rego": b"package ig.zt\n"}


def test_a_nested_manifest_that_is_not_json_is_refused_at_read_as_hashing_it_would_fail():
    """fuzz_archive: `x/.manifest` was accepted unread, but OPA's hashing rule parses every `.manifest`."""
    archive = pack({**REGO, "ig/.manifest": b"max: 3\n"})
    with pytest.raises(BundleFormatError, match=r"ig/\.manifest: invalid JSON"):
        read_bundle(archive)


@pytest.mark.parametrize(
    "yaml_text",
    [b"since: 2020-01-01\n", b"ratio: .nan\n", b"blob: !!binary aGk=\n", b"tags: !!set {a}\n"],
    ids=["date", "nan", "binary", "set"],
)
def test_data_yaml_with_values_json_cannot_hold_is_refused_at_read(yaml_text):
    """fuzz_archive: such a data.yaml was accepted, then the engine's data and signing could not use it."""
    with pytest.raises(BundleFormatError, match=r"ig/data\.yaml: .*not representable as JSON"):
        read_bundle(pack({**REGO, "ig/data.yaml": yaml_text}))


@pytest.mark.parametrize("name", ["data.json", ".manifest", "ig/data.json"])
def test_a_json_number_beyond_float_range_is_refused_at_read_not_read_as_infinity(name):
    """fuzz_archive: data.json `{"n": 1e999}` was accepted and gave the engine `inf` as data."""
    with pytest.raises(BundleFormatError, match=rf"{name}: invalid JSON: number 1e999 is out of range"):
        read_bundle(pack({**REGO, name: b'{"n": [1.5, 1e999]}'}))


def test_every_structured_file_of_an_accepted_bundle_hashes():
    """The property fuzz_archive checks, on a bundle with one structured file of each kind."""
    files = {**REGO, "ig/.manifest": b'{"a": 1.50}', "ig/data.yaml": b"n: 1\n", "data.json": b"{}"}
    bundle = read_bundle(pack(files))
    assert {name: len(file_digest(name, body)) for name, body in bundle.files.items()} == dict.fromkeys(
        files, 64
    )


@pytest.mark.parametrize("expires", ["9999-12-31", "9999-12-31T23:59:59-23:59"])
def test_a_bundle_expiring_at_the_end_of_the_calendar_is_not_expired_and_verifies(expires):
    """fuzz_signatures (with its dictionary): `expires: 9999-12-31` made is_expired, and so verify_bundle,
    raise OverflowError."""
    manifest = Manifest.from_json({"expires": expires})
    assert manifest.is_expired(dt.datetime(2030, 1, 1, tzinfo=dt.UTC)) is False
    assert expiry_instant(manifest.expires) > dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.UTC)
    verified = verify_bundle(pack({**REGO, ".manifest": json.dumps({"expires": expires}).encode()}),
                             VerifyOptions(key=None))
    assert verified.bundle.manifest.expires == manifest.expires
