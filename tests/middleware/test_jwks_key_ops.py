"""RFC 7517 §4.3: a JWK whose `key_ops` does not include "verify" never verifies a signature."""

from __future__ import annotations

import time

import pytest

from ig_gate.middleware.jwks import JWKSError, JWKSet, JWTRejected
from tests.support.keys import make_keypair
from tests.support.tokens import mint

ALGS = ("ES256",)


NOT_VERIFY = [["sign"], ["encrypt", "decrypt"], [], ["wrapKey"], "verify", [["verify"]], ["verify", "verify"]]


@pytest.mark.parametrize("key_ops", NOT_VERIFY)
def test_a_key_whose_key_ops_lack_verify_does_not_verify_tokens(key_ops: object) -> None:
    usable, restricted = make_keypair(kid="usable"), make_keypair(kid="restricted")
    key_set = JWKSet.from_keys([usable.jwk(), {**restricted.jwk(), "key_ops": key_ops}])
    assert key_set.key("restricted") is None
    with pytest.raises(JWTRejected, match="signing key unknown"):
        key_set.decode(mint(restricted), algorithms=ALGS, now=time.time(), require=())


def test_a_key_with_verify_in_key_ops_verifies_tokens() -> None:
    pair = make_keypair(kid="k")
    key_set = JWKSet.from_keys([{**pair.jwk(), "key_ops": ["verify"]}])
    assert key_set.decode(mint(pair), algorithms=ALGS, now=time.time(), require=())["sub"] == "alice"


def test_key_ops_without_verify_and_use_sig_disagreeing_still_refuse_the_key() -> None:
    pair = make_keypair(kid="k")
    with pytest.raises(JWKSError, match="no usable signing key"):
        JWKSet.from_keys([{**pair.jwk(), "use": "sig", "key_ops": ["sign"]}])


def test_key_ops_with_verify_on_an_encryption_key_refuse_the_key() -> None:
    pair = make_keypair(kid="k")
    with pytest.raises(JWKSError, match="no usable signing key"):
        JWKSet.from_keys([{**pair.jwk(), "use": "enc", "key_ops": ["verify"]}])
