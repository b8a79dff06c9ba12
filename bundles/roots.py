"""OPA's manifest `roots` rules (bundle.go `validateAndInjectDefaults`), checked at verify and at build.

A bundle owns the parts of `data` under its roots; OPA refuses a bundle that breaks these rules, so ig-gate
does too (RootsError, which names the root, package or data path):
- roots are trimmed of "/"; no two may overlap (one is a whole-segment prefix of the other; "" overlaps
  everything, "a" and "another" do not);
- every module's package path (`package a.b` -> "a/b", each part escaped as Go's url.PathEscape, as OPA's
  `Ref.Ptr` does) must lie under a root — so `roots: []` permits no package at all;
- every data value must lie under a root. An object above a root is walked into when a segment of its path
  is "" or the first segment of some root (OPA's test, quirks included); anything else is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ig_gate.bundles.engine import package_paths
from ig_gate.bundles.errors import RootsError

if TYPE_CHECKING:
    from ig_gate.bundles.archive import Bundle

_PATH_SEGMENT_SAFE = "$&+:=@"  # what Go's url.PathEscape leaves unescaped besides the unreserved characters


def check_roots(bundle: Bundle) -> None:
    """Raise RootsError when the bundle's roots overlap or a package or data document lies outside them."""
    roots = [root.strip("/") for root in bundle.manifest.roots]
    shown = "[" + " ".join(roots) + "]"  # as OPA prints them
    for i, first in enumerate(roots):
        for second in roots[i + 1 :]:
            if _contains(first, second) or _contains(second, first):
                raise RootsError(f".manifest has overlapped roots: {first!r} and {second!r}")
    modules = bundle.modules
    if modules:
        for file, parts in sorted(package_paths(modules).items()):
            pointer = None if parts is None else "/".join(quote(p, safe=_PATH_SEGMENT_SAFE) for p in parts)
            if pointer is None or not any(_contains(root, pointer) for root in roots):
                package = ".".join(parts) if parts is not None else "(not a constant path)"
                raise RootsError(
                    f".manifest roots {shown} do not permit 'package {package}' in module {file}"
                )
    outside = _data_outside(bundle.data, roots)
    if outside is not None:
        raise RootsError(f".manifest roots {shown} do not permit data at path '/{outside}'")


def _contains(root: str, path: str) -> bool:
    """True when `root` is "" or a whole-segment prefix of `path` (OPA's rootContains)."""
    root_parts, parts = root.split("/"), path.split("/")
    if root_parts == [""]:
        return True
    return len(root_parts) <= len(parts) and parts[: len(root_parts)] == root_parts


def _data_outside(data: dict[str, Any], roots: Sequence[str]) -> str | None:
    """The first data path (sorted walk, iterative) that the roots do not permit, else None."""
    firsts = {root.split("/")[0] for root in roots}
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        raw, value = stack.pop()
        path = raw.strip("/")
        if any(_contains(root, path) for root in roots):
            continue
        if not isinstance(value, dict) or not any(s == "" or s in firsts for s in path.split("/")):
            return path
        stack.extend((f"{raw}/{key}", value[key]) for key in sorted(value, reverse=True))
    return None
