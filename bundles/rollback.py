"""Rollback protection (TUF's lesson): never step down to an older, validly signed bundle by accident.

A bundle whose version is lower than the floor (the version of the last-good bundle) is refused,
unless the operator's pin names exactly that version (`==X` or `===X`). Once a versioned bundle has
been active, a bundle without a version (or with one that is not PEP 440) is refused as well: it
cannot be ordered, so it could be an old one.
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ig_gate.bundles.errors import PinError


class RollbackError(PinError):
    """A validly signed bundle is older than the last-good one and the pin does not name it."""


def explicitly_pinned(version: Version, version_spec: str | None) -> bool:
    """True when version_spec contains `==V` or `===V` for exactly this version (no wildcard)."""
    if not version_spec:
        return False
    try:
        specifiers = SpecifierSet(version_spec)
    except InvalidSpecifier:
        return False
    for spec in specifiers:
        if spec.operator in ("==", "===") and not spec.version.endswith(".*"):
            try:
                if Version(spec.version) == version:
                    return True
            except InvalidVersion:
                continue
    return False


def check_rollback(version: str | None, floor: str | None, version_spec: str | None, where: str) -> None:
    """Raise RollbackError when version would step below floor without an explicit pin."""
    if floor is None:
        return
    try:
        floor_version = Version(floor)
    except InvalidVersion:
        return  # a floor we cannot order against (e.g. written by hand) protects nothing
    if version is None:
        raise RollbackError(f"{where}: bundle has no version but the last-good bundle has version {floor}")
    try:
        candidate = Version(version)
    except InvalidVersion:
        raise RollbackError(f"{where}: bundle version {version!r} cannot be ordered against "
                            f"the last-good version {floor}") from None
    if candidate < floor_version and not explicitly_pinned(candidate, version_spec):
        raise RollbackError(f"{where}: bundle version {version} is older than the last-good version {floor} "
                            f"(rollback refused; pin version =={version} to allow it)")
