"""OPA's bundle file hashing: structured files as canonical JSON, everything else as raw bytes.

`.manifest`, `data.json` and `data.yaml` (by base name) are parsed and re-encoded as compact JSON with
sorted keys, numbers exactly as written and no HTML escaping (Go's encoder with SetEscapeHTML(false),
which still escapes U+2028/U+2029) before hashing. Algorithms are the ones OPA accepts in a payload.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import yaml

from ig_gate.bundles.errors import BundleFormatError, SignatureError

STRUCTURED = frozenset({".manifest", "data.json", "data.yaml"})
ALGORITHMS: dict[str, Callable[[], Any]] = {
    "MD5": hashlib.md5,
    "SHA-1": hashlib.sha1,
    "SHA-224": hashlib.sha224,
    "SHA-256": hashlib.sha256,
    "SHA-384": hashlib.sha384,
    "SHA-512": hashlib.sha512,
    "SHA-512-224": lambda: hashlib.new("sha512_224"),
    "SHA-512-256": lambda: hashlib.new("sha512_256"),
}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: a few hundred bytes of nested aliases expand to 10^8 values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed in bundle data", mark)
        return super().compose_node(parent, index)


def load_yaml(body: bytes) -> Any:
    """Parse a data.yaml document (safe types, no aliases); yaml.YAMLError on bad input."""
    return yaml.load(body, Loader=_NoAliasLoader)  # a SafeLoader subclass: safe types only


class Number(str):
    """A JSON number literal kept exactly as written (`1.50` stays `1.50`)."""


def reject_constant(value: str) -> Any:
    """json.loads hook refusing NaN/Infinity, which JSON does not have."""
    raise ValueError(f"non-standard JSON constant {value}")


def load_literal_json(body: bytes, number: Callable[[str], Any] = Number) -> Any:
    """Parse UTF-8 JSON turning every number literal into number(literal); ValueError on bad input."""
    text = body.decode("utf-8")
    return json.loads(text, parse_float=number, parse_int=number, parse_constant=reject_constant)


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys, as OPA hashes structured documents."""
    if isinstance(value, Number):
        return str.__str__(value)
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return json.dumps(value, allow_nan=False)
    if isinstance(value, dict):
        items = (f"{_string(str(k))}:{canonical_json(value[k])}" for k in sorted(value, key=str))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_MARKED_NUMBER = re.compile(r'"\\u0000([^"\\]*)\\u0000"')


def _literal(match: re.Match[str]) -> str:
    """The number literal inside a marked number (a callable: ~10x cheaper than a template per match)."""
    return match[1]


def _marked_number(text: str) -> str:
    return f"\0{text}\0"


def canonical_document(body: bytes) -> bytes:
    """Canonical JSON of a JSON document, number literals kept.

    Fast path: numbers become NUL-marked strings, the C encoder sorts and compacts, and the marks are
    replaced by the literals. A document that itself spells a NUL (\\u0000) takes the slow path, so no
    string can pose as a number.
    """
    if b"\\u0000" in body:
        return canonical_json(load_literal_json(body)).encode()
    value = load_literal_json(body, _marked_number)
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    text = _MARKED_NUMBER.sub(_literal, text)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def hash_input(name: str, body: bytes) -> bytes:
    """The bytes OPA hashes for a bundle file."""
    base = PurePosixPath(name).name
    if base not in STRUCTURED:
        return body
    try:
        if base == "data.yaml":
            return canonical_json(load_yaml(body)).encode()
        return canonical_document(body)
    except (ValueError, TypeError, RecursionError, yaml.YAMLError) as exc:
        raise BundleFormatError(f"{name}: cannot hash structured file: {exc}") from exc


def file_digest(name: str, body: bytes, algorithm: str = "SHA-256") -> str:
    """Hex digest of a bundle file under OPA's hashing rule; SignatureError on an unknown algorithm."""
    factory = ALGORITHMS.get(algorithm)
    if factory is None:
        raise SignatureError(f"{name}: unsupported hashing algorithm {algorithm!r}")
    digest = factory()
    digest.update(hash_input(name, body))
    return digest.hexdigest()
