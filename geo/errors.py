"""Errors raised by the geo package (configuration and database problems a user can cause)."""

from __future__ import annotations


class GeoError(Exception):
    """Base for user-causable geo problems."""


class GeoConfigError(GeoError, ValueError):
    """A geo setting is invalid (bad CIDR, non-positive window or size); the message names it."""


class GeoDatabaseError(GeoError):
    """A country database cannot be opened or is not a valid MaxMind DB file."""
