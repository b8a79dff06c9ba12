"""Named errors for everything a user can get wrong about a policy bundle."""

from __future__ import annotations


class BundleError(Exception):
    """Base class for all user-causable bundle problems."""


class BundleFormatError(BundleError):
    """Malformed archive: traversal, link/device, duplicate, size limit, bad JSON, manifest mismatch."""


class RootsError(BundleFormatError):
    """The manifest's `roots` overlap, or a package or data document lies outside them (OPA's rules)."""


class SignatureError(BundleError):
    """Missing or invalid signature, wrong key, file list/hash mismatch, scope, detached/sigstore failure."""


class PinError(BundleError):
    """Version spec or digest pin not satisfied (includes rollback protection)."""


class ExpiredError(BundleError):
    """The manifest's `expires` lies in the past."""


class PolicyCompileError(BundleError):
    """A Rego module failed to compile (the message names file and line)."""


class PolicyEvalError(BundleError):
    """Evaluating a query failed (engine panics are converted to this)."""
