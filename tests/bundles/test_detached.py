"""Detached cosign-style signatures: base64(DER ECDSA-P256 over SHA-256(archive)), checked by openssl too."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from ig_gate.bundles.detached import sign_blob, verify_blob
from ig_gate.bundles.errors import SignatureError
from tests.support.keys import make_keypair

ARCHIVE = b"\x1f\x8b pretend this is a bundle archive" * 100


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_openssl_accepts_the_detached_signature(tmp_path, alg):
    pair = make_keypair(alg)
    _, pub = pair.write(tmp_path, "k")
    (tmp_path / "blob").write_bytes(ARCHIVE)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(sign_blob(ARCHIVE, pair.private_pem)))
    argv = ["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "sig.der")]
    assert subprocess.run([*argv, str(tmp_path / "blob")], capture_output=True).returncode == 0
    (tmp_path / "blob").write_bytes(ARCHIVE + b"!")
    assert subprocess.run([*argv, str(tmp_path / "blob")], capture_output=True).returncode != 0


def test_signature_is_base64_der_ecdsa_and_verifies(es256):
    signature = sign_blob(ARCHIVE, es256.private_pem)
    assert base64.b64decode(signature)[0] == 0x30  # DER SEQUENCE, not raw r||s
    verify_blob(ARCHIVE, signature + b"\n", es256.public_pem)  # trailing newline as written to FILE.sig


@pytest.mark.parametrize(
    ("data", "signature_of", "reason"),
    [
        (ARCHIVE + b"x", ARCHIVE, "does not match"),
        (ARCHIVE, b"other", "does not match"),
    ],
)
def test_mismatch_fails(es256, data, signature_of, reason):
    with pytest.raises(SignatureError, match=reason):
        verify_blob(data, sign_blob(signature_of, es256.private_pem), es256.public_pem)


def test_wrong_key_and_garbage_fail(es256):
    signature = sign_blob(ARCHIVE, es256.private_pem)
    with pytest.raises(SignatureError, match="does not match"):
        verify_blob(ARCHIVE, signature, make_keypair("ES256").public_pem)
    with pytest.raises(SignatureError, match="not valid base64"):
        verify_blob(ARCHIVE, b"%%%not base64", es256.public_pem)
    with pytest.raises(SignatureError, match="cannot load public key"):
        verify_blob(ARCHIVE, signature, b"secret")
