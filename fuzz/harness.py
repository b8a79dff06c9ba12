"""Shared plumbing for the atheris harnesses in fuzz/ (no ig_gate import here: the harnesses import the
code under test inside `atheris.instrument_imports`, so that its coverage guides the fuzzer).

Every harness is a script: `python fuzz/fuzz_<target>.py [libFuzzer flags] CORPUS_DIR...`; `make fuzz`
and tests/fuzz/test_fuzz_smoke.py run them. The rule of every harness: the parser may refuse an input
only with its documented named error; any other exception, a broken property or a time bound exceeded is
a finding (libFuzzer saves the input as `crash-<sha1>` and exits non-zero).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import atheris
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Fixed key material, so that the seed corpora (signed bundles, signed tokens) verify in every run.
HS256_SECRET = b"ig-gate-fuzz-hs256-secret-0123456789"  # >= 32 bytes: pyjwt does not warn
_EC_SCALAR = 0x1F2E3D4C5B6A798817263544536271809AB8C7D6E5F4A3B2C1D0E0F1A2B3C4D5
_EC_KEY = ec.derive_private_key(_EC_SCALAR, ec.SECP256R1())
ES256_PRIVATE_PEM = _EC_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
ES256_PUBLIC_PEM = _EC_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


class Finding(AssertionError):
    """A property of the code under test does not hold for this input."""


def check(condition: bool, what: str) -> None:
    """Raise Finding(what) unless condition holds."""
    if not condition:
        raise Finding(what)


@contextmanager
def time_bound(size: int, *, base_s: float, per_byte_s: float) -> Iterator[None]:
    """Finding when the body takes more CPU time than base_s + per_byte_s * size (a super-linear cost).

    Process CPU time, not wall time: a busy machine delays the process but does not make it burn more.
    """
    start = time.process_time()
    yield
    spent = time.process_time() - start
    limit = base_s + per_byte_s * size
    check(spent <= limit, f"{spent * 1000:.1f} ms of CPU for {size} bytes (bound {limit * 1000:.1f} ms)")


def run(test_one_input: Callable[[bytes], None]) -> None:
    """Hand test_one_input to libFuzzer with this process's command line (corpus dirs, -flags)."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
