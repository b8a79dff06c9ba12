#!/usr/bin/env python3
"""Fuzz the token reader (middleware/extract.py `header_map`, `TokenReader`, `label`) and the JWS header
and token parsing (middleware/jws.py `strict_header`, `verify_compact`; middleware/jwks.py `JWKSet.decode`).

Input: one mode byte (% 3), then the payload:
  0: request headers, one `name: value` a line (names lower-cased, as ASGI gives them; repeats kept);
     the bearer token found (Authorization, else the `session` cookie) goes on to mode 2;
  1: a JOSE header and a payload (JSON or not), separated by the first newline, signed here with the
     ES256 and HS256 test keys of tests/middleware/test_jws.py (so the checks behind the signature run);
  2: a compact token as the client sends it.
Expected: MalformedRequest from the reader, JWTRejected from JWKSet.decode. Properties: a token read is a
well-formed b64token of at most 8192 bytes taken from the request; strict_header never raises;
verify_compact and JWKSet.decode give the same answer as pyjwt (the reference test_jws.py holds them to).
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.*
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check, run

with atheris.instrument_imports(include=["ig_gate"]):
    from ig_gate.middleware.extract import (
        MAX_TOKEN_BYTES,
        MalformedRequest,
        TokenReader,
        ascii_or_none,
        header_map,
        label,
    )
    from ig_gate.middleware.jwks import JWKSet  # noqa: F401 - instrumented before test_jws imports it
    from ig_gate.middleware.jws import strict_header

from tests.middleware.test_jws import KEY_SETS, agree, decoded, reference_decode, sign

READER = TokenReader("session")
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _headers(payload: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for line in payload.split(b"\n"):
        name, _, value = line.partition(b":")
        pairs.append((name.strip().lower(), value.strip()))
    return pairs


def _read_token(payload: bytes) -> str | None:
    pairs = _headers(payload)
    headers = header_map(pairs)
    check(header_map(headers) is headers, "header_map of a HeaderMap is itself")
    ascii_or_none(headers.get(b"x-device-attestation"))
    for name in (b"x-tenant", b"x-purpose"):
        with contextlib.suppress(MalformedRequest):
            label(headers.get(name), name.decode())
    try:
        token = READER.token(headers)
    except MalformedRequest:
        return None
    check(READER.token(headers) == token, "the cached answer differs")
    if token is not None:
        check(len(token) <= MAX_TOKEN_BYTES and B64TOKEN.fullmatch(token) is not None, "malformed token read")
        check(any(token.encode() in value for _, value in pairs), "token not taken from the request")
    return token


def _check_token(token: str) -> None:
    strict_header(token)
    agree(token, "HS256")
    for key_set in KEY_SETS.values():
        check(decoded(token, key_set) == reference_decode(token, key_set), "JWKSet.decode differs from pyjwt")


def test_one_input(data: bytes) -> None:
    mode, payload = (data[0] % 3, data[1:]) if data else (2, b"")
    if mode == 0:
        token = _read_token(payload)
        if token is not None:
            _check_token(token)
    elif mode == 1:
        header, _, claims = payload.partition(b"\n")
        for name in ("ES256", "HS256"):
            _check_token(sign(name, header, claims))
    else:
        _check_token(payload.decode("latin-1"))


if __name__ == "__main__":
    run(test_one_input)
