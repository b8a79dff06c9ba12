"""verify_bundle: the order of checks and what each configured option demands."""

from __future__ import annotations

import datetime as dt

import pytest

from ig_gate.bundles.archive import SIGNATURES, build_bundle, write_bundle
from ig_gate.bundles.detached import sign_blob
from ig_gate.bundles.errors import BundleFormatError, ExpiredError, PinError, SignatureError
from ig_gate.bundles.pin import Pin
from ig_gate.bundles.signing import VerificationKey, sign_bundle
from ig_gate.bundles.verify import SigstoreOptions, VerifyOptions, verify_bundle

NOW = dt.datetime(2026, 4, 30, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def signed(policy_src, es256):
    return sign_bundle(
        build_bundle(policy_src, version="2.1.0", expires="2026-04-30"), es256.private_pem, key_id="k"
    )


@pytest.fixture
def key(es256):
    return VerificationKey(es256.public_pem)


def test_verified_bundle_exposes_what_consumers_need(signed, key):
    verified = verify_bundle(signed.archive, VerifyOptions(key=key, now=NOW))
    assert verified.digest == signed.digest and verified.version == "2.1.0"
    assert verified.revision == signed.manifest.revision and verified.cacheable is True
    assert verified.signature.key_id == "k" and verified.verified_at == NOW


def test_expires_at_end_of_the_manifest_day(signed, key):
    verify_bundle(signed.archive, VerifyOptions(key=key, now=dt.datetime(2026, 4, 30, 23, 59, tzinfo=dt.UTC)))
    later = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    with pytest.raises(ExpiredError, match="2026-05-01T00:00:00"):
        verify_bundle(signed.archive, VerifyOptions(key=key, now=later))
    verify_bundle(signed.archive, VerifyOptions(key=key, now=later, allow_expired=True))


def test_unsigned_bundle_needs_key_none(signed, key):
    unsigned = write_bundle({n: b for n, b in signed.files.items() if n != SIGNATURES})
    assert verify_bundle(unsigned.archive, VerifyOptions(key=None, now=NOW)).signature is None
    with pytest.raises(SignatureError, match=r"no .signatures.json"):
        verify_bundle(unsigned.archive, VerifyOptions(key=key, now=NOW))


def test_format_is_checked_before_signature(key):
    with pytest.raises(BundleFormatError):
        verify_bundle(b"not an archive", VerifyOptions(key=key))


def test_signature_is_checked_before_pin_and_expiry(signed, es256):
    wrong = VerificationKey(es256.public_pem, "ES256", scope="other")
    options = VerifyOptions(
        key=wrong, pin=Pin(version_spec=">=9"), now=dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    )
    with pytest.raises(SignatureError, match="scope"):
        verify_bundle(signed.archive, options)


def test_pin_is_checked_before_expiry(signed, key):
    options = VerifyOptions(key=key, pin=Pin(version_spec=">=9"), now=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(PinError):
        verify_bundle(signed.archive, options)


def test_detached_signature_checked_when_present_and_required_on_demand(signed, key, es256):
    good = sign_blob(signed.archive, es256.private_pem)
    verify_bundle(
        signed.archive, VerifyOptions(key=key, detached_signature=good, require_detached=True, now=NOW)
    )
    bad = sign_blob(signed.archive + b"x", es256.private_pem)
    with pytest.raises(SignatureError, match="detached signature does not match"):
        verify_bundle(signed.archive, VerifyOptions(key=key, detached_signature=bad, now=NOW))
    with pytest.raises(SignatureError, match="detached signature required"):
        verify_bundle(signed.archive, VerifyOptions(key=key, require_detached=True, now=NOW))


def test_detached_signature_needs_a_public_key(signed, es256):
    good = sign_blob(signed.archive, es256.private_pem)
    with pytest.raises(SignatureError, match="no public key"):
        verify_bundle(signed.archive, VerifyOptions(key=None, detached_signature=good, now=NOW))
    verify_bundle(
        signed.archive,
        VerifyOptions(key=None, detached_signature=good, detached_key_pem=es256.public_pem, now=NOW),
    )


def test_sigstore_is_consulted_when_configured(signed, key):
    sigstore = SigstoreOptions(b"{}", b"{}", identity="ci@example.test", issuer="https://issuer.example.test")
    with pytest.raises(SignatureError, match="sigstore"):
        verify_bundle(signed.archive, VerifyOptions(key=key, sigstore=sigstore, now=NOW))
