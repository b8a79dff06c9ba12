"""Request paths, normalised once, and the `exclude_paths` that match them.

A raw request path (the bytes on the request line) is normalised before anything matches or forwards it:
percent-escapes of unreserved characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`) are decoded, the other
escapes are written in upper case, bytes outside `pchar` are percent-encoded, and repeated slashes are
collapsed (as nginx's `merge_slashes`). What an upstream could resolve differently is refused
(`AmbiguousPath`, a 400 with reason `ambiguous_path`): an encoded `/` or `\\` (`%2F`, `%5C`), a `\\`
itself, a dot segment (`.` or `..`, also written `%2e`, or with a `;` parameter as Tomcat reads `..;`),
a malformed escape, a path that does not start with `/`. The normalised raw form is what is forwarded;
its decoded form (ASGI's `path`) is what the gate judges and `exclude_paths` match.

Up to `REMEMBERED` raw paths of at most `REMEMBERED_BYTES` are remembered with their two forms (refusals
never are): a path seen before costs one dict read instead of the checks and the decoding. The memory is a
plain dict emptied when full, not a `bounded.FIFO`, whose locked insert and eviction made every miss
(distinct paths, e.g. ids in REST paths) cost more than the old checks (bench/RESULTS.md, "Levers measured
one by one"). A flood of distinct paths only makes each of them a miss.

`exclude_paths` entries: `"/healthz"` matches that path exactly, `"/public/"` (ending in `/`) every path
under it; either passes only GET, HEAD and OPTIONS without a decision unless the entry names its methods
before the path, comma-separated: `"POST /webhooks/"`, `"GET,POST /hooks/github"`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from ig_gate.errors import IgGateError

UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_PCHAR = UNRESERVED + b"!$&'()*+,;=:@"  # RFC 3986 pchar, without "%" (escapes are handled apart)
_PLAIN = _PCHAR + b"/"  # bytes that never need a second look (dots only after a slash)
_PLAIN_MARK = bytes(1 if byte in _PLAIN else 0 for byte in range(256))  # translate: 0 marks the others
_UNSAFE = re.compile(rb"[^" + re.escape(_PCHAR + b"/%") + rb"]")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_SEPARATOR_ESCAPE = re.compile(rb"%(?:2[Ff]|5[Cc])")
_SLASHES = re.compile(rb"//+")
_DOT_SEGMENT = re.compile(rb"/\.\.?(?:(?:;|%3B)[^/]*)?(?:/|$)")  # `..;x` is `..` to Tomcat
_HEX = b"0123456789abcdefABCDEF"
_DECODED = {  # the two hex digits of an escape -> the unreserved byte, or the escape in upper case
    pair: bytes([value]) if (value := int(pair, 16)) in UNRESERVED else b"%" + pair.upper()
    for pair in (bytes([high, low]) for high in _HEX for low in _HEX)
}
REMEMBERED = 1024  # raw paths remembered with their normalised forms
REMEMBERED_BYTES = 512  # longer raw paths are normalised every time
_NORMALISED: dict[bytes, tuple[bytes, str]] = {}  # raw -> (normalised raw, decoded); emptied when full
AMBIGUOUS_PATH = "ambiguous_path"  # the reason recorded for a refused path
DEFAULT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT"})


class AmbiguousPath(IgGateError, ValueError):
    """A request path an upstream could resolve differently from the gate; the message says why."""


class ExcludedPathError(IgGateError, ValueError):
    """An `exclude_paths` entry that cannot be read; the message says what is wrong."""


def normalise_raw(raw: bytes) -> bytes:
    """The normalised form of a raw request path (percent-encoded bytes); AmbiguousPath when it has none."""
    if raw[:1] != b"/":
        raise AmbiguousPath("the path must start with '/'")
    if _already_normal(raw) is not None:
        return raw
    if b"\\" in raw:
        raise AmbiguousPath("the path contains a backslash")
    if _BAD_ESCAPE.search(raw):
        raise AmbiguousPath("the path contains a malformed percent-escape")
    if _SEPARATOR_ESCAPE.search(raw):
        raise AmbiguousPath("the path contains an encoded '/' or '\\'")
    normal = _UNSAFE.sub(lambda m: b"%%%02X" % m[0][0], raw)
    normal = _SLASHES.sub(b"/", _ESCAPE.sub(lambda m: _DECODED[m[1]], normal))
    if _DOT_SEGMENT.search(normal):
        raise AmbiguousPath("the path contains a dot segment")
    return normal


def _already_normal(raw: bytes) -> str | None:
    """The decoded form of a raw path that is already normal (starts with '/', no escape, no repeated slash,
    no segment starting with a dot, nothing to encode), else None. Checked on a str and with a translate
    table: `in` on bytes tries the needle as an int first and costs ~3x more (normalise_scope of `/graphql`
    0.43 vs 0.94 µs with the bytes checks; bench/RESULTS.md, "Levers measured one by one")."""
    text = raw.decode("latin-1")
    if text[:1] == "/" and "//" not in text and "/." not in text and 0 not in raw.translate(_PLAIN_MARK):
        return text
    return None


def decoded(normal: bytes) -> str:
    """The decoded form (ASGI `path`) of a normalised raw path, decoded as uvicorn decodes it."""
    text = normal.decode("ascii")
    return unquote(text) if "%" in text else text


def _normalised(raw: bytes) -> tuple[bytes, str]:
    """(the normalised raw path, its decoded form), remembered for a short raw path; AmbiguousPath."""
    known = _NORMALISED.get(raw)
    if known is None:
        path = _already_normal(raw)
        if path is not None:
            known = (raw, path)
        else:
            normal = normalise_raw(raw)
            known = (normal, decoded(normal))
        if len(raw) <= REMEMBERED_BYTES:
            if len(_NORMALISED) >= REMEMBERED:  # a race with another thread here costs a miss, nothing else
                _NORMALISED.clear()
            _NORMALISED[raw] = known
    return known


def normalise_scope(scope: MutableMapping[str, Any]) -> str:
    """Normalise an HTTP/WebSocket scope's path in place (`raw_path` and `path`, so that the app and a
    proxy see exactly the normalised form) and return its decoded form; AmbiguousPath when refused."""
    raw = scope.get("raw_path")
    if raw is None:  # the server gave only the decoded path: nothing in it is an escape any more
        raw = quote(scope["path"], safe="/" + _PCHAR.decode()).encode("ascii")
    # both from the raw path, never the server's `path`: the two cannot disagree
    scope["raw_path"], scope["path"] = known = _normalised(raw)
    return known[1]


def normalise_path(raw: bytes) -> str:
    """The decoded normalised form of a raw path (as a forward-auth request names the original one);
    AmbiguousPath when it is refused."""
    return _normalised(raw)[1]


@dataclass(frozen=True, slots=True)
class ExcludedPath:
    """One `exclude_paths` entry: a path (a prefix when it ends in "/") and the methods it lets through."""

    path: str
    methods: frozenset[str]

    @property
    def prefix(self) -> bool:
        return self.path.endswith("/")


def parse_excluded(entry: str) -> ExcludedPath:
    """Read an `exclude_paths` entry (`"/path"`, `"/prefix/"`, `"POST,PUT /path"`); ExcludedPathError."""
    parts = entry.split()
    if len(parts) not in (1, 2):
        raise ExcludedPathError(f"expected '/path' or 'METHOD[,METHOD...] /path', got {entry!r}")
    path = parts[-1]
    methods = DEFAULT_METHODS
    if len(parts) == 2:
        methods = frozenset(parts[0].split(","))
        unknown = sorted(methods - KNOWN_METHODS)
        if unknown:
            raise ExcludedPathError(f"unknown method {unknown[0]!r} in {entry!r} (methods are upper case)")
    try:
        normal = decoded(normalise_raw(quote(path, safe="/" + _PCHAR.decode()).encode("ascii")))
    except AmbiguousPath as exc:
        raise ExcludedPathError(f"{entry!r}: {exc}") from None
    if normal != path:
        raise ExcludedPathError(f"{entry!r}: write the path in its normalised form, {normal!r}")
    return ExcludedPath(path, methods)


class ExcludedPaths:
    """The `exclude_paths` entries, ready to match a method and a normalised (decoded) path."""

    def __init__(self, entries: Iterable[str]) -> None:
        parsed = [parse_excluded(entry) for entry in entries]
        self._exact: dict[str, frozenset[str]] = {}
        for entry in parsed:
            if not entry.prefix:
                self._exact[entry.path] = self._exact.get(entry.path, frozenset()) | entry.methods
        self._prefixes = tuple((entry.path, entry.methods) for entry in parsed if entry.prefix)
        self._any_prefix = tuple(path for path, _ in self._prefixes)

    def match(self, method: str, path: str) -> bool:
        """Whether a request passes without a decision."""
        methods = self._exact.get(path)
        if methods is not None and method in methods:
            return True
        if not self._any_prefix or not path.startswith(self._any_prefix):
            return False
        return any(path.startswith(prefix) and method in methods for prefix, methods in self._prefixes)
