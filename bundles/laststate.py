"""The persisted last-good bundle and the rollback floor, in one state directory.

Layout (all writes are atomic: temp file -> fsync -> rename -> fsync dir):

    last-good/<hex>.tar.gz     the archive, named by its sha256
    last-good/<hex>.sig        its detached signature, when it had one
    last-good.json             the record: digest, version, revision, verified_at, key id, source
    rollback-floor.json        the version of the last activated bundle (kept when last-good is rejected)
    rejected.json              OCI digests the rollout controller reverted (never fetched again)

The archive is written before the record that names it, so a crash never leaves a record that points
at a missing or half-written archive; older archives are removed only after the new record is in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ig_gate.bundles.errors import BundleFormatError
from ig_gate.bundles.fsutil import write_atomic

log = logging.getLogger(__name__)

RECORD = "last-good.json"
FLOOR = "rollback-floor.json"
REJECTED = "rejected.json"
REJECTED_LIMIT = 256  # most recent reverted digests kept
ARCHIVES = "last-good"


@dataclass(frozen=True, slots=True)
class LastGoodRecord:
    """What was verified about the persisted bundle when it became active."""

    digest: str  # sha256 of the archive, "sha256:<hex>"
    version: str | None
    revision: str
    verified_at: str  # ISO 8601 UTC
    key_id: str | None
    source: str  # e.g. "registry.example:5000/policies/gate@sha256:..." or a file path
    channel: str | None = None
    oci_digest: str | None = None
    has_signature: bool = False

    @classmethod
    def from_json(cls, obj: object, where: str) -> LastGoodRecord:
        if not isinstance(obj, dict):
            raise BundleFormatError(f"{where}: not a JSON object")
        try:
            record = cls(**{name: obj[name] for name in cls.__dataclass_fields__ if name in obj})
        except TypeError as exc:
            raise BundleFormatError(f"{where}: missing fields ({exc})") from None
        if not isinstance(record.digest, str) or not record.digest.startswith("sha256:"):
            raise BundleFormatError(f"{where}: digest must be sha256:<hex>")
        return record


@dataclass(frozen=True, slots=True)
class StoredBundle:
    """A last-good bundle read back from disk (its archive matched the record's digest)."""

    record: LastGoodRecord
    archive: bytes
    signature: bytes | None


class LastGoodStore:
    """Reads and writes the last-good bundle and the rollback floor under state_dir."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    @property
    def record_path(self) -> Path:
        return self.state_dir / RECORD

    def _archive_path(self, digest: str, suffix: str) -> Path:
        return self.state_dir / ARCHIVES / f"{digest.removeprefix('sha256:')}{suffix}"

    def save(self, archive: bytes, signature: bytes | None, record: LastGoodRecord) -> None:
        """Persist archive (+ signature) then the record naming it; then drop older archives."""
        if "sha256:" + hashlib.sha256(archive).hexdigest() != record.digest:
            raise ValueError("last-good record digest does not match the archive being saved")
        keep = {self._archive_path(record.digest, ".tar.gz")}
        write_atomic(self._archive_path(record.digest, ".tar.gz"), archive, 0o600)
        if signature is not None:
            keep.add(self._archive_path(record.digest, ".sig"))
            write_atomic(self._archive_path(record.digest, ".sig"), signature, 0o600)
        write_atomic(self.record_path, json.dumps(asdict(record), indent=2).encode() + b"\n", 0o600)
        for old in (self.state_dir / ARCHIVES).iterdir():
            if old not in keep and ".rejected-" not in old.name and not old.name.startswith("."):
                old.unlink(missing_ok=True)  # rejected files stay for forensics; temp files are in flight

    def load(self) -> StoredBundle | None:
        """The persisted last-good, or None when there is none; BundleFormatError when it is damaged."""
        where = str(self.record_path)
        try:
            raw = self.record_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BundleFormatError(f"{where}: last-good record unreadable ({exc.strerror})") from None
        try:
            record = LastGoodRecord.from_json(json.loads(raw), where)
        except ValueError as exc:
            raise BundleFormatError(f"{where}: unreadable record ({exc})") from None
        path = self._archive_path(record.digest, ".tar.gz")
        try:
            archive = path.read_bytes()
            sig_path = self._archive_path(record.digest, ".sig")
            signature = sig_path.read_bytes() if record.has_signature else None
        except OSError as exc:
            raise BundleFormatError(f"{path}: last-good file unreadable ({exc.strerror})") from None
        actual = "sha256:" + hashlib.sha256(archive).hexdigest()
        if actual != record.digest:
            raise BundleFormatError(f"{path}: last-good archive hashes to {actual}, not {record.digest}")
        return StoredBundle(record, archive, signature)

    def move_aside(self, now: dt.datetime) -> list[Path]:
        """Rename the record and its archives to `*.rejected-<UTC timestamp>`; return the new paths."""
        stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        candidates = [self.record_path]
        archives = self.state_dir / ARCHIVES
        if archives.is_dir():
            candidates += [p for p in archives.iterdir() if ".rejected-" not in p.name]
        moved = []
        for path in candidates:
            if path.exists():
                target = path.with_name(f"{path.name}.rejected-{stamp}")
                path.rename(target)
                moved.append(target)
        log.warning("last-good bundle moved aside: %s", ", ".join(str(p) for p in moved))
        return moved

    def read_floor(self) -> str | None:
        """The rollback floor version, or None (no floor, or an unreadable file: logged)."""
        try:
            value = json.loads((self.state_dir / FLOOR).read_bytes()).get("version")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("rollback floor %s unreadable (%s); ignoring it", self.state_dir / FLOOR, exc)
            return None
        return value if isinstance(value, str) else None

    def write_floor(self, version: str | None, digest: str) -> None:
        """Record the version of the bundle just activated (None clears the floor)."""
        body = json.dumps({"version": version, "digest": digest}).encode() + b"\n"
        write_atomic(self.state_dir / FLOOR, body, 0o600)

    def read_rejected(self) -> list[str]:
        """Reverted OCI digests, oldest first ([] when none, or an unreadable file: logged)."""
        path = self.state_dir / REJECTED
        try:
            digests = json.loads(path.read_bytes()).get("digests")
        except FileNotFoundError:
            return []
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("rejected-digest list %s unreadable (%s); ignoring it", path, exc)
            return []
        return [d for d in digests if isinstance(d, str)] if isinstance(digests, list) else []

    def write_rejected(self, digests: list[str]) -> None:
        """Persist the reverted OCI digests (the most recent REJECTED_LIMIT)."""
        body = json.dumps({"digests": digests[-REJECTED_LIMIT:]}, indent=2).encode() + b"\n"
        write_atomic(self.state_dir / REJECTED, body, 0o600)
