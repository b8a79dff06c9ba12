"""Read and write OPA bundle archives (.tar.gz) safely and deterministically."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import math
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import yaml

from ig_gate.bundles.errors import BundleFormatError
from ig_gate.bundles.filehash import load_yaml, reject_constant
from ig_gate.bundles.manifest import Manifest, PolicyRef, parse_expires

MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
DATA_FILES = frozenset({"data.json", "data.yaml"})
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Read limits. `max_total_bytes` caps the decompressed tar stream (headers included)."""

    max_file_bytes: int = 8 * 1024 * 1024
    max_total_bytes: int = 64 * 1024 * 1024
    max_members: int = 4096


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed bundle: member name (one leading "/" stripped) -> bytes, its manifest and archive digest."""

    files: Mapping[str, bytes]
    manifest: Manifest
    digest: str
    archive: bytes

    @property
    def modules(self) -> dict[str, str]:
        """Rego modules: bundle path -> source text."""
        return {name: body.decode() for name, body in self.files.items() if name.endswith(".rego")}

    @property
    def data(self) -> dict[str, Any]:
        """All data.json / data.yaml documents merged at their directory path (a fresh dict each call)."""
        return _merged_data(self.files)

    @property
    def signatures_json(self) -> dict[str, Any] | None:
        """The parsed `.signatures.json`, or None when the bundle is unsigned."""
        body = self.files.get(SIGNATURES)
        return None if body is None else _load_json(SIGNATURES, body)


def _finite(literal: str) -> float:
    """json.loads hook: a number literal beyond float range (1e999) is refused, not read as infinity."""
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"number {literal[:40]} is out of range")
    return value


def _load_json(name: str, body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=reject_constant, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"{name}: invalid JSON: {exc}") from exc


def _parse_data(name: str, body: bytes) -> Any:
    if name.endswith(".json"):
        return _load_json(name, body)
    try:
        value = load_yaml(body)
        json.dumps(value, allow_nan=False)  # dates, NaN, !!binary, !!set: the engine and OPA need JSON
    except yaml.YAMLError as exc:
        raise BundleFormatError(f"{name}: invalid YAML: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise BundleFormatError(f"{name}: YAML value not representable as JSON: {exc}") from None
    return value


def _merged_data(files: Mapping[str, bytes]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name, body in sorted(files.items()):
        path = PurePosixPath(name)
        if path.name in DATA_FILES:
            _merge_at(merged, path.parent.parts, _parse_data(name, body), name)
    return merged


def _merge_at(root: dict[str, Any], keys: tuple[str, ...], value: Any, name: str) -> None:
    if not keys:
        if not isinstance(value, dict):
            raise BundleFormatError(f"{name}: the root data document must be a JSON object")
        _deep_merge(root, value, name)
        return
    parent = root
    for key in keys[:-1]:
        parent = parent.setdefault(key, {})
        if not isinstance(parent, dict):
            raise BundleFormatError(f"{name}: data path {'/'.join(keys)} conflicts with another data file")
    _deep_merge(parent, {keys[-1]: value}, name)


def _deep_merge(target: dict[str, Any], value: dict[str, Any], name: str) -> None:
    for key, item in value.items():
        if key in target:
            if not (isinstance(target[key], dict) and isinstance(item, dict)):
                raise BundleFormatError(f"{name}: key {key!r} conflicts with another data file")
            _deep_merge(target[key], item, name)
        else:
            target[key] = item


def _gunzip(archive: bytes, cap: int) -> bytes:
    """Decompress (multi-member) gzip in bounded chunks; never trust headers for sizes."""
    if archive[:2] != b"\x1f\x8b":
        raise BundleFormatError("archive: not a gzip stream")
    out = bytearray()
    pending = archive
    try:
        while pending:
            if pending[:2] != b"\x1f\x8b":
                raise BundleFormatError("archive: trailing bytes after the gzip stream")
            stream = zlib.decompressobj(wbits=31)
            while not stream.eof:
                chunk = stream.decompress(pending, _CHUNK)
                out += chunk
                if len(out) > cap:
                    raise BundleFormatError(f"archive: decompressed size exceeds the limit of {cap} bytes")
                pending = stream.unconsumed_tail
                if not chunk and not pending and not stream.eof:
                    raise BundleFormatError("archive: truncated gzip stream")
            pending = stream.unused_data
    except zlib.error as exc:
        raise BundleFormatError(f"archive: corrupt gzip stream: {exc}") from exc
    return bytes(out)


def _member_name(raw: str, is_dir: bool) -> str:
    """Strip one leading "/"; reject absolute, traversing or non-canonical names."""
    name = raw.removeprefix("/")
    parts = name.removesuffix("/").split("/") if is_dir else name.split("/")
    if name.startswith("/"):
        raise BundleFormatError(f"archive member {raw!r}: absolute path")
    if ".." in parts:
        raise BundleFormatError(f"archive member {raw!r}: path traversal ('..')")
    if any(p in ("", ".") for p in parts) or "\\" in name or "\0" in name:
        raise BundleFormatError(f"archive member {raw!r}: non-canonical path")
    return name


def _read_members(tar_bytes: bytes, limits: Limits) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for count, member in enumerate(tar, 1):
                if count > limits.max_members:
                    raise BundleFormatError(f"archive: more than {limits.max_members} members")
                name = _member_name(member.name, member.isdir())
                if member.isdir():
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    raise BundleFormatError(f"archive member {member.name!r}: {kind} not allowed")
                if member.size > limits.max_file_bytes:
                    raise BundleFormatError(
                        f"archive member {member.name!r}: {member.size} bytes exceeds the per-file limit "
                        f"of {limits.max_file_bytes}"
                    )
                if name in files:
                    raise BundleFormatError(f"archive member {member.name!r}: duplicate")
                handle = tar.extractfile(member)
                body = handle.read() if handle is not None else b""
                if len(body) != member.size:
                    raise BundleFormatError(f"archive member {member.name!r}: truncated")
                files[name] = body
    except tarfile.TarError as exc:
        raise BundleFormatError(f"archive: corrupt tar stream: {exc}") from exc
    return files


def _validate_files(files: Mapping[str, bytes]) -> Manifest:
    """Check data documents, JSON and UTF-8 of every member; parse the manifest and check its policies."""
    _merged_data(files)
    for name, body in files.items():
        base = PurePosixPath(name).name
        if base.endswith("signatures.json") and name != SIGNATURES:
            raise BundleFormatError(f"{name}: a signatures file is only allowed at the bundle root")
        if name.endswith(".rego"):
            try:
                body.decode()
            except UnicodeDecodeError as exc:
                raise BundleFormatError(f"{name}: not UTF-8 text: {exc}") from exc
        elif base == MANIFEST or name == SIGNATURES:  # OPA's hashing parses every `.manifest`
            _load_json(name, body)
    manifest = Manifest.from_json(_load_json(MANIFEST, files[MANIFEST])) if MANIFEST in files else Manifest()
    _check_policies(manifest.policies, files)
    return manifest


def _check_policies(policies: tuple[PolicyRef, ...], files: Mapping[str, bytes]) -> None:
    if not policies:
        return
    declared = {p.path: p.sha256 for p in policies}
    if len(declared) != len(policies):
        raise BundleFormatError(".manifest: policies lists a path twice")
    for path, expected in declared.items():
        if path not in files:
            raise BundleFormatError(f".manifest: declared policy {path} is not in the bundle")
        if hashlib.sha256(files[path]).hexdigest() != expected:
            raise BundleFormatError(f".manifest: sha256 of {path} does not match the declared value")
    undeclared = sorted(n for n in files if n.endswith(".rego") and n not in declared)
    if undeclared:
        raise BundleFormatError(f".manifest: policy {undeclared[0]} is not declared in policies")


def read_bundle(archive: bytes, limits: Limits = Limits()) -> Bundle:
    """Parse and validate a bundle archive; raises BundleFormatError naming what is wrong and where."""
    files = _read_members(_gunzip(archive, limits.max_total_bytes), limits)
    try:
        manifest = _validate_files(files)
    except RecursionError:
        raise BundleFormatError("archive: a JSON document is nested too deeply") from None
    digest = "sha256:" + hashlib.sha256(archive).hexdigest()
    return Bundle(MappingProxyType(files), manifest, digest, archive)


def pack(files: Mapping[str, bytes]) -> bytes:
    """Deterministic .tar.gz: sorted plain relative names, mtime 0, root owner, mode 0644, gzip mtime 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def write_bundle(files: Mapping[str, bytes]) -> Bundle:
    """Pack files into a deterministic archive and read it back (so it is validated like any input)."""
    return read_bundle(pack(files))


def replace_files(bundle: Bundle, files: Mapping[str, bytes]) -> Bundle:
    """Re-pack bundle with files added or replaced (used by signing)."""
    return write_bundle({**bundle.files, **files})


def _source_files(src_dir: Path) -> dict[str, bytes]:
    """Collect *.rego, data.json, data.yaml and .manifest under src_dir; hidden directories are skipped."""
    if not src_dir.is_dir():
        raise BundleFormatError(f"{src_dir}: bundle source is not a directory")
    files: dict[str, bytes] = {}
    for path in sorted(src_dir.rglob("*")):
        rel = path.relative_to(src_dir)
        if any(part.startswith(".") for part in rel.parts[:-1]) or (path.is_dir() and not path.is_symlink()):
            continue
        wanted = path.suffix == ".rego" or path.name in DATA_FILES or rel.as_posix() == MANIFEST
        if wanted and path.is_symlink():
            raise BundleFormatError(f"{path}: symlinks are not allowed in a bundle source")
        if wanted and path.is_file():
            files[rel.as_posix()] = path.read_bytes()
    return files


def _tree_hash(files: Mapping[str, bytes]) -> str:
    tree = hashlib.sha256()
    for name in sorted(files):
        tree.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    return tree.hexdigest()


def build_bundle(
    src_dir: Path,
    *,
    version: str | None = None,
    expires: str | dt.date | None = None,
    channel: str | None = None,
    revision: str | None = None,
) -> Bundle:
    """Build a deterministic bundle from a source directory.

    Every .rego file (tests included, as `opa build` does) is declared in `policies` with its SHA-256.
    A `.manifest` in the source is the base; arguments override it. Without a revision the manifest gets
    `<version>+<tree hash>` (or the tree hash alone) so that different contents never share a revision.
    """
    from packaging.version import InvalidVersion, Version

    from ig_gate.bundles.roots import check_roots  # the Rego parser loads only when building

    files = _source_files(Path(src_dir))
    base = _load_json(MANIFEST, files.pop(MANIFEST)) if MANIFEST in files else {}
    if not isinstance(base, dict):
        raise BundleFormatError(f"{src_dir}/{MANIFEST}: expected a JSON object")
    version = version if version is not None else base.get("version")
    if version is not None:
        try:
            Version(version)
        except (InvalidVersion, TypeError) as exc:
            raise BundleFormatError(f"version {version!r} is not a PEP 440 version") from exc
    tree = _tree_hash(files)
    obj = {
        **base,
        "revision": revision or base.get("revision") or (f"{version}+{tree[:12]}" if version else tree[:16]),
        "policies": [
            {"path": n, "sha256": hashlib.sha256(b).hexdigest()} for n, b in sorted(files.items())
            if n.endswith(".rego")
        ],
    }
    exp = parse_expires(expires, "expires") if expires is not None else base.get("expires")
    for key, value in (("version", version), ("expires", exp), ("channel", channel or base.get("channel"))):
        if value is not None:
            obj[key] = value
    manifest = Manifest.from_json(obj).to_json()
    files[MANIFEST] = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    bundle = write_bundle(files)
    check_roots(bundle)  # what OPA and verify_bundle would refuse is not built
    return bundle
