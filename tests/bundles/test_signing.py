"""OPA `.signatures.json`: our signatures verify, OPA's signatures verify, and every tampering is refused."""

from __future__ import annotations

import json
import warnings

import pytest

from ig_gate.bundles.archive import SIGNATURES, build_bundle, read_bundle, replace_files, write_bundle
from ig_gate.bundles.errors import SignatureError
from ig_gate.bundles.signing import (
    VerificationKey,
    decode_unverified,
    sign_bundle,
    verify_bundle_signature,
    verify_token,
)
from tests.support.keys import make_keypair

from . import opa_vectors as opa
from .conftest import raw_tgz


def _signatures(token: str) -> bytes:
    return json.dumps({"signatures": [token]}).encode()


@pytest.fixture
def bundle(policy_src):
    return build_bundle(policy_src, version="1.0.0")


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256"])
def test_sign_and_verify_round_trip(bundle, alg):
    pair = make_keypair(alg)
    signed = sign_bundle(bundle, pair.private_pem, alg=alg, key_id="k1", scope="prod")
    info = verify_bundle_signature(
        read_bundle(signed.archive), VerificationKey(pair.public_pem, alg, scope="prod")
    )
    assert (info.key_id, info.alg, info.scope, info.files) == ("k1", alg, "prod", len(bundle.files))


def test_payload_lists_every_file_with_sha256_and_header_kid(bundle, es256):
    signed = sign_bundle(bundle, es256.private_pem, key_id="k1", scope="prod")
    header, payload, _ = decode_unverified(signed.signatures_json["signatures"][0])
    assert header == {"alg": "ES256", "typ": "JWT", "kid": "k1"}
    assert {f["name"] for f in payload["files"]} == set(bundle.files)
    assert {f["algorithm"] for f in payload["files"]} == {"SHA-256"}
    assert payload["keyid"] == "k1" and payload["scope"] == "prod" and isinstance(payload["iat"], int)


def test_hs256_with_a_six_byte_secret_signs_and_verifies_without_warnings(bundle):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        signed = sign_bundle(bundle, b"secret", alg="HS256")
        info = verify_bundle_signature(signed, VerificationKey(b"secret", "HS256"))
    assert info.alg == "HS256"
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle_signature(signed, VerificationKey(b"secreT", "HS256"))


# --- OPA-generated signatures ---------------------------------------------------------------------------


def test_a_whole_bundle_signed_by_opa_verifies():
    archive = raw_tgz([*opa.BASE_DIR_FILES, ("/.signatures.json", _signatures(opa.BASE_DIR_TOKEN))])
    info = verify_bundle_signature(read_bundle(archive), VerificationKey(opa.SECRET, "HS256", scope="write"))
    assert (info.key_id, info.scope, info.files) == ("foo", "write", 3)


def test_opa_signed_bundle_with_one_byte_changed_fails():
    files = [(n, b.replace(b"example", b"exampl3")) for n, b in opa.BASE_DIR_FILES]
    archive = raw_tgz([*files, ("/.signatures.json", _signatures(opa.BASE_DIR_TOKEN))])
    with pytest.raises(SignatureError, match=r"policy.rego: digest mismatch"):
        verify_bundle_signature(read_bundle(archive), VerificationKey(opa.SECRET, "HS256"))


def test_opa_digest_mismatch_case_is_refused():
    archive = raw_tgz(
        [
            ("/.signatures.json", _signatures(opa.DIGEST_MISMATCH_TOKEN)),
            ("/a/b/c/data.json", b"[1,2,3]"),
            ("/.manifest", b'{"revision": "quickbrownfaux"}'),
        ]
    )
    with pytest.raises(SignatureError, match=r"a/b/c/data.json: digest mismatch .*a615eeaee21de517"):
        verify_bundle_signature(read_bundle(archive), VerificationKey(opa.SECRET, "HS256", scope="write"))


@pytest.mark.parametrize(
    ("token", "configured_kid", "expected_kid"),
    [
        (opa.TOKEN_KID_FOO, None, "foo"),  # header kid
        (opa.TOKEN_KEYID_CLAIM, None, "foo"),  # deprecated payload keyid claim
        (opa.TOKEN_KID_BAR, "foo", "foo"),  # configured key id takes precedence over the header
    ],
)
def test_opa_hs256_tokens_verify_with_key_id_resolution(token, configured_kid, expected_kid):
    payload, key_id = verify_token(token, VerificationKey(opa.SECRET, "HS256", configured_kid, "write"))
    assert key_id == expected_kid and payload["scope"] == "write" and len(payload["files"]) == 2


def test_opa_rs256_token_verifies_with_its_public_key_only():
    _, key_id = verify_token(opa.TOKEN_RS256, VerificationKey(opa.RS256_PUBLIC_KEY, "RS256", scope="write"))
    assert key_id == "foo"
    with pytest.raises(SignatureError, match="does not verify"):
        verify_token(opa.TOKEN_RS256, VerificationKey(opa.RS256_OTHER_PUBLIC_KEY, "RS256"))


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (VerificationKey(b"bad_secret", "HS256"), "does not verify"),
        (VerificationKey(opa.SECRET, "HS256", scope="bad_scope"), "scope 'write' does not match 'bad_scope'"),
        (VerificationKey(opa.RS256_PUBLIC_KEY, "RS256"), "alg 'HS256' is not the configured RS256"),
    ],
)
def test_opa_hs256_token_refused_for_wrong_secret_scope_or_algorithm(key, reason):
    with pytest.raises(SignatureError, match=reason):
        verify_token(opa.TOKEN_KID_FOO, key)


# --- tampering and configuration errors -----------------------------------------------------------------


@pytest.fixture
def signed(bundle, es256):
    return sign_bundle(bundle, es256.private_pem, key_id="k1")


@pytest.fixture
def es_key(es256):
    return VerificationKey(es256.public_pem, "ES256")


def test_one_byte_changed_in_a_rego_fails(signed, es_key):
    body = bytearray(signed.files["ig/zt.rego"])
    body[-2] ^= 1
    # re-pack without the manifest's own sha256 check tripping first: drop policies from the manifest
    manifest = json.loads(signed.files[".manifest"])
    manifest["policies"] = []
    tampered = write_bundle(
        {**signed.files, "ig/zt.rego": bytes(body), ".manifest": json.dumps(manifest).encode()}
    )
    with pytest.raises(SignatureError, match="digest mismatch"):
        verify_bundle_signature(tampered, es_key)


def test_extra_file_fails(signed, es_key):
    with pytest.raises(SignatureError, match=r"extra/data.json: file is not included"):
        verify_bundle_signature(replace_files(signed, {"extra/data.json": b"{}"}), es_key)


def test_removed_file_fails(signed, es_key):
    files = {n: b for n, b in signed.files.items() if n != "ig/limits/data.json"}
    with pytest.raises(SignatureError, match=r"ig/limits/data.json: file is listed .* missing"):
        verify_bundle_signature(write_bundle(files), es_key)


def test_missing_signatures_file_fails_when_a_key_is_configured(signed, es_key):
    stripped = write_bundle({n: b for n, b in signed.files.items() if n != SIGNATURES})
    with pytest.raises(SignatureError, match=r"no .signatures.json"):
        verify_bundle_signature(stripped, es_key)


def test_wrong_public_key_fails(signed):
    other = make_keypair("ES256")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle_signature(signed, VerificationKey(other.public_pem, "ES256"))


@pytest.mark.parametrize("tokens", [[], ["a.b.c", "d.e.f"], "a.b.c"])
def test_exactly_one_jws_is_required(bundle, tokens, es_key):
    weird = replace_files(bundle, {SIGNATURES: json.dumps({"signatures": tokens}).encode()})
    with pytest.raises(SignatureError, match="exactly one JWS"):
        verify_bundle_signature(weird, es_key)


def test_hs256_token_is_not_accepted_by_an_es256_key(bundle, es256, es_key):
    """Algorithm confusion: a token forged with the public key as HMAC secret must not pass."""
    forged = sign_bundle(bundle, b"not-the-public-key", alg="HS256")
    with pytest.raises(SignatureError, match="alg 'HS256' is not the configured ES256"):
        verify_bundle_signature(forged, es_key)


def test_pem_public_key_is_never_an_hmac_secret(bundle, es256):
    with pytest.raises(SignatureError, match="HS256 key rejected"):
        verify_bundle_signature(
            sign_bundle(bundle, b"x", alg="HS256"), VerificationKey(es256.public_pem, "HS256")
        )


def test_key_type_must_fit_the_algorithm(bundle, es256, rs256):
    with pytest.raises(SignatureError, match="does not fit algorithm RS256"):
        sign_bundle(bundle, es256.private_pem, alg="RS256")
    with pytest.raises(SignatureError, match="does not fit algorithm ES256"):
        sign_bundle(bundle, rs256.private_pem, alg="ES256")
    signed = sign_bundle(bundle, es256.private_pem, alg="ES256")
    with pytest.raises(SignatureError, match="does not fit algorithm ES256"):
        verify_token(signed.signatures_json["signatures"][0], VerificationKey(rs256.public_pem, "ES256"))


def test_verification_key_from_file_infers_algorithm_and_strips_secret_newline(tmp_path, es256, rs256):
    paths = {name: tmp_path / name for name in ("ec.pub", "rsa.pub", "secret")}
    paths["ec.pub"].write_bytes(es256.public_pem)
    paths["rsa.pub"].write_bytes(rs256.public_pem)
    paths["secret"].write_bytes(b"secret\n")
    assert VerificationKey.from_file(paths["ec.pub"]).alg == "ES256"
    assert VerificationKey.from_file(paths["rsa.pub"]).alg == "RS256"
    assert VerificationKey.from_file(paths["secret"]) == VerificationKey(b"secret", "HS256")
    with pytest.raises(SignatureError, match="cannot read"):
        VerificationKey.from_file(tmp_path / "absent.pub")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("only.two", "3 segments"),
        ("a b.c.d", "header is not base64url"),
        (opa.TOKEN_KID_FOO + "$", "signature is not base64url"),
        ("bm90IGpzb24.e30.c2ln", "header is not JSON"),
    ],
)
def test_malformed_tokens_are_named(token, reason):
    with pytest.raises(SignatureError, match=reason):
        verify_token(token, VerificationKey(opa.SECRET, "HS256"))
