"""The bundle `.manifest`: OPA's fields plus this project's version, policies, expires, channel."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ig_gate.bundles.errors import BundleFormatError

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Expiry = dt.date | dt.datetime


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """One policy module declared by the manifest: its bundle path and the SHA-256 hex of its bytes."""

    path: str
    sha256: str


def parse_expires(value: str | dt.date | None, where: str = ".manifest expires") -> Expiry | None:
    """Parse `YYYY-MM-DD` (a date) or an ISO 8601 datetime (naive means UTC)."""
    if value is None or isinstance(value, dt.date):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value
    if not isinstance(value, str):
        raise BundleFormatError(f"{where}: expected a date string, got {type(value).__name__}")
    try:
        if _DATE_ONLY.match(value):
            return dt.date.fromisoformat(value)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise BundleFormatError(f"{where}: not an ISO 8601 date or datetime: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def expiry_instant(expires: Expiry) -> dt.datetime:
    """The UTC instant at which a bundle expires; a bare date expires at the end of that day UTC."""
    if isinstance(expires, dt.datetime):
        return expires
    if expires == dt.date.max:  # the day after does not exist: the bundle expires at the end of time
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(expires + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def _typed(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = obj.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise BundleFormatError(f".manifest: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _policies(raw: Any) -> tuple[PolicyRef, ...]:
    if not isinstance(raw, list):
        raise BundleFormatError(".manifest: field 'policies' must be a list")
    refs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise BundleFormatError(f".manifest: policies[{i}] needs a string 'path'")
        digest = item.get("sha256")
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
            raise BundleFormatError(f".manifest: policies[{i}] ({item['path']}) needs a lower-hex 'sha256'")
        refs.append(PolicyRef(item["path"].removeprefix("/"), digest))
    return tuple(refs)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed `.manifest`; `raw` keeps the JSON object exactly as read (unknown fields included)."""

    revision: str = ""
    roots: tuple[str, ...] = ("",)
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    version: str | None = None
    policies: tuple[PolicyRef, ...] = ()
    expires: Expiry | None = None
    channel: str | None = None
    cacheable: bool = True
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        """Validate and parse a manifest JSON object; raises BundleFormatError naming the bad field."""
        if not isinstance(obj, dict):
            raise BundleFormatError(".manifest: expected a JSON object")
        roots = _typed(obj, "roots", list, None)
        if roots is not None and not all(isinstance(r, str) for r in roots):
            raise BundleFormatError(".manifest: 'roots' must be a list of strings")
        return cls(
            revision=_typed(obj, "revision", str, ""),
            roots=tuple(roots) if roots is not None else ("",),
            metadata=MappingProxyType(_typed(obj, "metadata", dict, {})),
            version=_typed(obj, "version", str, None),
            policies=_policies(obj["policies"]) if "policies" in obj else (),
            expires=parse_expires(obj.get("expires")),
            channel=_typed(obj, "channel", str, None),
            cacheable=_typed(obj, "cacheable", bool, True),
            raw=MappingProxyType(dict(obj)),
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object: unknown fields from `raw`, then every set known field."""
        out: dict[str, Any] = dict(self.raw)
        out["revision"] = self.revision
        out["roots"] = list(self.roots)
        optional = {
            "metadata": dict(self.metadata) or None,
            "version": self.version,
            "policies": [{"path": p.path, "sha256": p.sha256} for p in self.policies] or None,
            "expires": self.expires.isoformat() if self.expires is not None else None,
            "channel": self.channel,
            "cacheable": None if self.cacheable else False,
        }
        for key, value in optional.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    def is_expired(self, now: dt.datetime) -> bool:
        """True when `now` (aware; naive means UTC) is at or past the expiry instant."""
        if self.expires is None:
            return False
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        return now >= expiry_instant(self.expires)
