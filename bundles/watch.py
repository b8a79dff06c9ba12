"""A bundle file as a policy source that follows the file, as `opa run --watch` does.

`BundleFile.reload()` reads, verifies, checks `bundle.min_version` and that it is not older than the active
bundle (bundles/rollback.py: a restart may step down, a reload never), compiles the file, then swaps it in
(one reference: a reader sees the old snapshot or the new one). Anything that fails keeps the last good
bundle and says why (one WARNING line, and `reason` while nothing is active). `start()` polls the file's
(mtime, size, inode) every `interval_s` in a daemon thread and reloads when they change, so a file copied
into place later, or replaced by a newly signed version, is picked up without a restart; `ig-gate serve`
also reloads on SIGHUP.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.policy import ActivationHook, PolicySnapshot, log_activation
from ig_gate.bundles.rollback import check_min_version, check_rollback
from ig_gate.bundles.ticker import Ticker
from ig_gate.bundles.verify import VerifyOptions, verify_bundle

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): what tells a changed file apart


class BundleFile:
    """`bundle.path` as a PolicySource: the last bundle from that file that verified (None before one did)."""

    def __init__(
        self,
        path: str | Path,
        options: VerifyOptions,
        *,
        min_version: str | None = None,
        interval_s: float | None = 2.0,
        on_activate: ActivationHook | None = None,
        setting: str = "bundle.path",
    ) -> None:
        self.path = Path(path)
        self.options = options
        self.min_version = min_version
        self.interval_s = interval_s
        self.on_activate = on_activate
        self.setting = setting  # named in every message: the setting an operator fixes
        self.reason: str | None = f"{setting}: {self.path}: not loaded yet"  # why nothing is active
        self._active: PolicySnapshot | None = None
        self._seen: Stamp | None = None  # the file last tried (good or bad): not tried again until it changes
        self._reload = threading.Lock()
        self._watcher = Ticker("bundle-file-watch", self._check, lambda: interval_s or 0.0)

    def current(self) -> PolicySnapshot | None:
        """The active snapshot (None: no bundle from the file has verified yet). Lock-free."""
        return self._active

    def reload(self) -> bool:
        """Load the file now; True when a bundle from it is active afterwards (the new one, or the last
        good one kept because the file is missing or refused: then one WARNING line says why)."""
        with self._reload:
            stamp = _stamp(self.path)
            self._seen = stamp
            try:
                snapshot = self._load()
            except (BundleError, OSError) as exc:
                self._refused(str(exc) if isinstance(exc, BundleError) else _os_reason(exc))
                return self._active is not None
            except Exception as exc:  # a bug must not kill the watcher or drop the last good bundle
                log.exception("%s: %s: reload failed unexpectedly", self.setting, self.path)
                self._refused(f"unexpected {type(exc).__name__}")
                return self._active is not None
            if self._active is not None and snapshot.digest == self._active.digest:
                return True  # touched, not changed
            self._active, self.reason = snapshot, None
        log_activation(snapshot, str(self.path), self.on_activate)
        return True

    def _load(self) -> PolicySnapshot:
        archive = self.path.read_bytes()
        try:
            verified = verify_bundle(archive, self.options)
        except BundleError as exc:
            raise type(exc)(f"{self.path}: {exc}") from exc
        check_min_version(verified.version, self.min_version, str(self.path))
        active = self._active  # never step down to an older release by a validly signed file (a restart may)
        check_rollback(verified.version, active.verified.version if active else None, None, str(self.path))
        return PolicySnapshot.from_verified(verified)

    def _refused(self, why: str) -> None:
        message = f"{self.setting}: {why}"
        if self._active is None:
            self.reason = message
            log.warning("%s; no policy bundle is active", message)
        else:
            log.warning("%s; the active bundle %s stays in force", message, self._active.digest)

    # -- watching ------------------------------------------------------------------------------

    def start(self) -> None:
        """Check the file's stamp every interval_s in a daemon thread (no thread when interval_s is None)."""
        if self.interval_s is not None:
            self._watcher.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop watching (the active snapshot stays readable)."""
        self._watcher.stop(timeout_s)

    def _check(self) -> None:
        if _stamp(self.path) != self._seen:
            self.reload()


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _os_reason(exc: OSError) -> str:
    name = exc.filename if exc.filename is not None else "the bundle file"
    return f"{name}: cannot read: {exc.strerror or exc}"
