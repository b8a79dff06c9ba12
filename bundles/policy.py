"""What the enforcement core consumes: a verified, compiled policy snapshot and its sources."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ig_gate.bundles.engine import EnginePool
from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.verify import VerifiedBundle, VerifyOptions, verify_bundle


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """A verified bundle with its per-thread engines; immutable, swapped whole on a bundle change."""

    verified: VerifiedBundle
    engines: EnginePool
    revision: str
    digest: str
    cacheable: bool

    @classmethod
    def from_verified(cls, verified: VerifiedBundle) -> PolicySnapshot:
        """Compile once on the calling thread: a bad policy fails here (PolicyCompileError), not later."""
        engines = EnginePool.from_bundle(verified.bundle)
        engines.engine()
        return cls(verified, engines, verified.revision, verified.digest, verified.cacheable)

    def evaluate(self, query: str, input: Mapping[str, Any]) -> Any:
        """Evaluate on the calling thread's engine: JSON-friendly, None when undefined (PolicyEvalError)."""
        return self.engines.evaluate(query, input)


class PolicySource(Protocol):
    """Anything that can say which policy is in force."""

    def current(self) -> PolicySnapshot | None:
        """The active snapshot, or None when there is no usable bundle (callers fail closed)."""
        ...


class StaticPolicySource:
    """One bundle file, read, verified and compiled once at construction (raises BundleError)."""

    def __init__(self, path: str | Path, options: VerifyOptions) -> None:
        self.path = Path(path)
        try:
            archive = self.path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{self.path}: cannot read policy bundle: {exc.strerror or exc}") from exc
        self._snapshot = PolicySnapshot.from_verified(verify_bundle(archive, options))

    def current(self) -> PolicySnapshot:
        """The bundle loaded at construction."""
        return self._snapshot


ActivationHook = Callable[[PolicySnapshot, str], None]
"""Told of each bundle that becomes active, with where it came from (metrics: `ig_gate_bundle_info`)."""
_activations = logging.getLogger("ig_gate")


def log_activation(snapshot: PolicySnapshot, source: str, hook: ActivationHook | None = None) -> None:
    """The one INFO line on logger `ig_gate` per activation: version, digest, signing key id, source (a file
    path, `registry/repo@sha256:...`); a JSON log carries the same as fields (middleware/logs.py). Then
    `hook(snapshot, source)` when given (metrics); a failing hook is logged, not raised."""
    verified = snapshot.verified
    key_id = verified.signature.key_id if verified.signature is not None else None
    signer = "(unsigned)" if verified.signature is None else key_id or "(no key id)"
    fields = {
        "event": "bundle_activated",
        "version": verified.version,
        "revision": snapshot.revision,
        "digest": snapshot.digest,
        "key_id": key_id,
        "source": source,
    }
    _activations.info(
        "policy bundle activated: version %s, digest %s, signed by key %s, from %s",
        fields["version"] or "(none)", fields["digest"], signer, source,
        extra={"ig_gate": fields},
    )
    if hook is None:
        return
    try:
        hook(snapshot, source)
    except Exception:
        _activations.exception("bundle activation hook failed")
