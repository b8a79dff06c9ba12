#!/usr/bin/env python3
"""Fuzz the bundle archive reader (bundles/archive.py `read_bundle`).

Input: one mode byte, then the payload. Random bytes almost never pass gzip's CRC or tar's header
checksums, so the mode says which layer the payload stands for (mode % 3):
  0: a list of members, packed here into a tar (GNU, or PAX when mode // 3 is odd) and gzipped: members
     are separated by "\n@@"; each starts with a type character (tar's: "0" file, "5" directory, "2"
     symlink, ...) and a name up to the first newline, the rest is its body (names, types, duplicates
     and every document's content are what the fuzzer mutates);
  1: a tar stream, gzipped here;
  2: the archive itself (the gunzip layer).
Expected: BundleFormatError. Properties of an accepted bundle: its modules, data and signatures document
read without error, its data is JSON (the engine and OPA load it as JSON), every file hashes under OPA's
rule (so signing it cannot fail), and its manifest survives a to_json/from_json round trip.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import sys
import tarfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check, run

with atheris.instrument_imports(include=["ig_gate"]):
    from ig_gate.bundles.archive import Limits, read_bundle
    from ig_gate.bundles.errors import BundleFormatError
    from ig_gate.bundles.filehash import file_digest
    from ig_gate.bundles.manifest import Manifest

LIMITS = Limits(max_file_bytes=256 * 1024, max_total_bytes=1024 * 1024, max_members=64)


def members_tar(payload: bytes, tar_format: int) -> bytes:
    """A tar of the members listed in payload (see the module docstring), exactly as listed."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tar_format) as tar:
        for entry in payload.split(b"\n@@"):
            head, _, body = entry.partition(b"\n")
            info = tarfile.TarInfo(head[1:].decode("utf-8", "surrogateescape"))
            info.type = head[:1] or tarfile.REGTYPE
            info.size = len(body) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            info.linkname = body.decode("utf-8", "surrogateescape") if info.issym() or info.islnk() else ""
            try:
                tar.addfile(info, io.BytesIO(body))
            except (ValueError, UnicodeEncodeError):  # a name tar itself cannot write: not our input
                continue
    return raw.getvalue()


def archive_of(data: bytes) -> bytes:
    """The archive bytes an input stands for (see the module docstring)."""
    mode, payload = (data[0], data[1:]) if data else (2, b"")
    if mode % 3 == 0:
        tar_format = tarfile.PAX_FORMAT if mode // 3 % 2 else tarfile.GNU_FORMAT
        return gzip.compress(members_tar(payload, tar_format), compresslevel=1, mtime=0)
    if mode % 3 == 1:
        return gzip.compress(payload, compresslevel=1, mtime=0)
    return payload


def test_one_input(data: bytes) -> None:
    try:
        bundle = read_bundle(archive_of(data), LIMITS)
    except BundleFormatError:
        return
    check(isinstance(bundle.modules, dict), "modules")
    bundle.signatures_json  # noqa: B018 - must read without error once accepted
    json.dumps(bundle.data, allow_nan=False)  # accepted data must be JSON
    for name, body in bundle.files.items():
        file_digest(name, body)
    manifest = bundle.manifest
    manifest.is_expired(dt.datetime.now(dt.UTC))  # verify_bundle asks this of every accepted bundle
    again = Manifest.from_json(manifest.to_json()).to_json()
    check(again == manifest.to_json(), "manifest to_json/from_json round trip")


if __name__ == "__main__":
    run(test_one_input)
