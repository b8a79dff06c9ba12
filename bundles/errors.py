"""Named errors for everything a user can get wrong about a policy bundle.

`code` is the failure kind the BundleManager counts and reports (`fetch`, `pin`, `rollback`, `expiry`,
`compile`, `verify`); a subclass without its own code counts as its parent's.
"""

from __future__ import annotations

from ig_gate.errors import IgGateError


class BundleError(IgGateError):
    """Base class for all user-causable bundle problems."""

    code = "verify"
    label = "bundle rejected"


class BundleFormatError(BundleError):
    """Malformed archive: traversal, link/device, duplicate, size limit, bad JSON, manifest mismatch."""

    label = "malformed bundle"


class RootsError(BundleFormatError):
    """The manifest's `roots` overlap, or a package or data document lies outside them (OPA's rules)."""


class SignatureError(BundleError):
    """Missing or invalid signature, wrong key, file list/hash mismatch, scope, detached/sigstore failure."""

    label = "bundle signature not valid"


class PinError(BundleError):
    """Version spec or digest pin not satisfied (includes rollback protection)."""

    code = "pin"
    label = "bundle not allowed by the pin"


class ExpiredError(BundleError):
    """The manifest's `expires` lies in the past."""

    code = "expiry"
    label = "bundle expired"


class PolicyCompileError(BundleError):
    """A Rego module failed to compile (the message names file and line)."""

    code = "compile"
    label = "policy does not compile"
    excerpt = ""  # regorus's whole report (source line and caret), for a terminal; the message is one line


class PolicyEvalError(BundleError):
    """Evaluating a query failed (engine panics are converted to this)."""

    label = "policy evaluation failed"


class RegistryError(BundleError):
    """The registry is unreachable, refused us, lacks something, or served bytes that do not match."""

    code = "fetch"
    label = "registry error"
