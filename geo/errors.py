"""Errors raised by the geo package (configuration and database problems a user can cause)."""

from __future__ import annotations

from ig_gate.errors import IgGateError


class GeoError(IgGateError):
    """Base for user-causable geo problems."""

    code = "geo"
    label = "geo error"


class GeoConfigError(GeoError, ValueError):
    """A geo setting is invalid (bad CIDR, non-positive window or size); the message names it."""

    label = "invalid geo setting"


class GeoDatabaseError(GeoError):
    """A country database cannot be opened or is not a valid MaxMind DB file."""

    label = "geo database unusable"
