"""Rollback protection (TUF's lesson): never step down to an older, validly signed bundle by accident.

A bundle whose version is lower than the floor (the version of the last-good bundle) is refused,
unless the operator's pin names exactly that version (`==X` or `===X`). Once a versioned bundle has
been active, a bundle without a version (or with one that is not PEP 440) is refused as well: it
cannot be ordered, so it could be an old one.

The floor lives in the state directory (`laststate.FLOOR`), so a state directory that starts empty has
none: the first bundle the channel offers is taken, however old. `bundle.min_version` is a floor from
configuration that holds with an empty state directory and that no pin overrides (`check_min_version`);
the effective floor is the higher of the two (`effective_floor`).
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ig_gate.bundles.errors import PinError


class RollbackError(PinError):
    """A validly signed bundle is older than the last-good one and the pin does not name it."""

    code = "rollback"
    label = "bundle older than the last good one"


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


def check_min_version(version: str | None, min_version: str | None, where: str) -> None:
    """Raise RollbackError when version is older than bundle.min_version (or has none); no pin overrides
    it."""
    if min_version is None:
        return
    if version is None:
        raise RollbackError(f"{where}: bundle has no version but bundle.min_version is {min_version}")
    try:
        older = Version(version) < Version(min_version)
    except InvalidVersion:
        raise RollbackError(f"{where}: bundle version {version!r} cannot be ordered against "
                            f"bundle.min_version {min_version}") from None
    if older:
        raise RollbackError(f"{where}: bundle version {version} is older than bundle.min_version "
                            f"{min_version} (rollback refused)")


def effective_floor(persisted: str | None, min_version: str | None) -> str | None:
    """The floor in force: the higher of the persisted floor and bundle.min_version (None: unset).

    A persisted floor that is not PEP 440 protects nothing (see check_rollback) and counts as unset.
    """
    floors = []
    for value in (persisted, min_version):
        if value is None:
            continue
        try:
            floors.append((Version(value), value))
        except InvalidVersion:
            continue
    return max(floors)[1] if floors else None
