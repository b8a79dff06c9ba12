"""Pins: a client accepts only bundles whose version satisfies a spec and/or whose digest it allows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ig_gate.bundles.archive import Bundle
from ig_gate.bundles.errors import PinError

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Pin:
    """version_spec: PEP 440 specifiers (">=2.0,<3"); digests: allowed "sha256:<hex>" archive digests."""

    version_spec: str | None = None
    digests: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        normalized = frozenset(d.strip().lower() for d in self.digests)
        bad = sorted(d for d in normalized if not _DIGEST.match(d))
        if bad:
            raise PinError(f"pinned digest {bad[0]!r} is not of the form sha256:<64 hex>")
        object.__setattr__(self, "digests", normalized)
        if self.version_spec is not None:
            self._specifiers()

    def _specifiers(self) -> SpecifierSet:
        try:
            return SpecifierSet(self.version_spec or "")
        except InvalidSpecifier as exc:
            raise PinError(f"version pin {self.version_spec!r} is not a valid version specifier") from exc

    def check(self, bundle: Bundle) -> None:
        """Raise PinError unless bundle satisfies every configured pin."""
        if self.digests and bundle.digest not in self.digests:
            raise PinError(f"bundle digest {bundle.digest} is not one of the pinned digests")
        if self.version_spec is None:
            return
        version = bundle.manifest.version
        if version is None:
            raise PinError(f"bundle has no manifest version but version {self.version_spec!r} is required")
        try:
            parsed = Version(version)
        except InvalidVersion:
            raise PinError(f"bundle version {version!r} is not a PEP 440 version") from None
        if parsed not in self._specifiers():
            raise PinError(f"bundle version {version} does not satisfy the pin {self.version_spec!r}")
