"""Fixtures for bundle tests: a small policy source tree, fresh keys, and hand-made (hostile) archives."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.support.keys import KeyPair, make_keypair

ZT_REGO = b"""package ig.zt

default allow := false

allow if input.session.risk == "low"
"""
PURPOSE_REGO = b"""package ig.purpose

default ok := false

ok if input.purpose in data.tenants[input.tenant].purposes
"""
DATA_JSON = b'{"tenants": {"acme": {"allowed_countries": ["US", "DE"], "purposes": ["support"]}}, "r": 1.50}'


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write files (relative path -> bytes) under root; return root."""
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return root


@pytest.fixture
def policy_src(tmp_path: Path) -> Path:
    """A bundle source directory with two policies, root data and nested data."""
    return write_tree(
        tmp_path / "src",
        {
            "ig/zt.rego": ZT_REGO,
            "ig/purpose.rego": PURPOSE_REGO,
            "data.json": DATA_JSON,
            "ig/limits/data.json": b'{"max": 3}',
            "README.md": b"not part of the bundle",
            ".git/config": b"hidden, skipped",
        },
    )


@pytest.fixture(scope="session")
def es256() -> KeyPair:
    return make_keypair("ES256", kid="es-key")


@pytest.fixture(scope="session")
def rs256() -> KeyPair:
    return make_keypair("RS256", kid="rs-key")


def member(name: str, body: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[Any, bytes]:
    """A tar member of any type (regular file, symlink, hardlink, device, fifo)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(body) if kind == tarfile.REGTYPE else 0
    return info, body


def raw_tgz(members: Iterable[tuple[tarfile.TarInfo, bytes] | tuple[str, bytes]]) -> bytes:
    """A .tar.gz exactly as given (no validation), e.g. with traversal, links or duplicates."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry, body in members:
            info = entry if isinstance(entry, tarfile.TarInfo) else member(entry, body)[0]
            tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
    return gzip.compress(raw.getvalue(), mtime=0)
