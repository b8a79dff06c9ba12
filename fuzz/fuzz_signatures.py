#!/usr/bin/env python3
"""Fuzz the `.signatures.json` and `.manifest` readers (bundles/signing.py, bundles/manifest.py).

Input: one mode byte, then the payload, applied to the example bundle signed by seeds.py:
  0: the whole `.signatures.json` document, verified with the fixed ES256 key;
  1: the JWS payload, signed here with the fixed HS256 secret (so the file list, hashing algorithms and
     scope checks behind the signature are reached), then verified;
  2: the JWS header, signed here likewise;
  3: a `.manifest` document.
Expected: SignatureError (modes 0-2; a document read_bundle refuses is skipped), BundleFormatError
(mode 3). Properties: an accepted manifest round-trips through to_json/from_json and answers is_expired
and expiry_instant for any time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import sys
from pathlib import Path
from types import MappingProxyType

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ES256_PUBLIC_PEM, HS256_SECRET, check, run

with atheris.instrument_imports(include=["ig_gate"]):
    from ig_gate.bundles.archive import SIGNATURES, Bundle, _load_json
    from ig_gate.bundles.errors import BundleFormatError, SignatureError
    from ig_gate.bundles.manifest import Manifest, expiry_instant
    from ig_gate.bundles.signing import VerificationKey, verify_bundle_signature

import seeds

SIGNED = seeds.example_bundle()
ES256 = VerificationKey(ES256_PUBLIC_PEM, "ES256", scope="prod")
HS256 = VerificationKey(HS256_SECRET, "HS256", scope="prod")
_HEADER, _PAYLOAD, _ = json.loads(SIGNED.files[SIGNATURES])["signatures"][0].split(".")
INSTANTS = (dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime.now(dt.UTC), dt.datetime(9999, 12, 31, 23, 59))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_document(header_b64: str, payload_b64: str) -> bytes:
    signing_input = f"{header_b64}.{payload_b64}"
    signature = hmac.new(HS256_SECRET, signing_input.encode(), hashlib.sha256).digest()
    return json.dumps({"signatures": [f"{signing_input}.{_b64(signature)}"]}).encode()


def _with_signatures(document: bytes) -> Bundle:
    files = MappingProxyType({**SIGNED.files, SIGNATURES: document})
    return Bundle(files, SIGNED.manifest, SIGNED.digest, SIGNED.archive)


def _verify(document: bytes, key: VerificationKey) -> None:
    bundle = _with_signatures(document)
    try:
        bundle.signatures_json  # noqa: B018 - read_bundle refuses what does not parse
    except BundleFormatError:
        return
    try:
        info = verify_bundle_signature(bundle, key)
    except SignatureError:
        return
    check(info.files == len(SIGNED.files) - 1, "verified signature counts every file but itself")


def _manifest(document: bytes) -> None:
    try:
        manifest = Manifest.from_json(_load_json(".manifest", document))
    except BundleFormatError:
        return
    again = Manifest.from_json(manifest.to_json()).to_json()
    check(again == manifest.to_json(), "manifest to_json/from_json round trip")
    if manifest.expires is not None:
        expiry_instant(manifest.expires).isoformat()
    for now in INSTANTS:
        manifest.is_expired(now)


def test_one_input(data: bytes) -> None:
    mode, payload = (data[0] % 4, data[1:]) if data else (0, b"")
    if mode == 0:
        _verify(payload, ES256)
    elif mode == 1:
        _verify(_hs256_document(_b64(b'{"alg":"HS256"}'), _b64(payload)), HS256)
    elif mode == 2:
        _verify(_hs256_document(_b64(payload), _PAYLOAD), HS256)
    else:
        _manifest(payload)


if __name__ == "__main__":
    run(test_one_input)
