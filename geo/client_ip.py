"""The client's IP address: the socket peer, or forwarding headers written by trusted proxies.

Trust model
-----------
CIDR mode (always on): forwarding headers are read only when the socket peer is inside
`trusted_proxies`. Each proxy appends the address it received the request from, so the
header is walked right to left: trusted proxy addresses are skipped and the first untrusted
entry is the client. When every entry is a trusted proxy, the leftmost one is the client
(an internal caller). From an untrusted peer the headers are never parsed (fast path).

Hops mode (`trusted_hops=N`): for callers that have no socket peer at all, such as an
Apollo Router coprocessor request, which carries the client request's headers but not its
connection. The N rightmost entries are taken as written by our own infrastructure, so the
client is the N-th entry from the right (the leftmost entry when the header is shorter);
trusted-proxy addresses left of it are skipped as in CIDR mode. It applies only when `peer`
is None or not an IP address. Hop counting is only as good as the count: a request that can
reach the outermost counted hop by another path can forge the entry that hop is trusted for.

Header choice (`source`): "auto" reads `X-Forwarded-For` when it has entries, else
`Forwarded` (RFC 7239 `for=`). nginx, Envoy, cloud load balancers and CDNs append to
X-Forwarded-For, so its presence wins over a client-forged `Forwarded`. Behind a proxy that
writes only `Forwarded`, set source="forwarded" so that a client-forged X-Forwarded-For is
never read (and source="x-forwarded-for" for the converse).

Values: IPv4, IPv6 (bare, or in brackets), optionally with a port (`1.2.3.4:80`,
`[2001:db8::1]:443`, obfuscated `_port`). IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4.
`unknown` and obfuscated identifiers (`_hidden`) are valid but name no address; anything
else is malformed. When the walk stops at such an entry the address is None (unknown):
an address further left could have been written by the client itself. A malformed entry
sets `ClientIP.malformed` so that the caller can count it; only entries the walk reaches
are examined.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

from ig_gate.geo.address import parse_address
from ig_gate.geo.errors import GeoConfigError

Source = Literal["auto", "x-forwarded-for", "forwarded"]
_SOURCES = ("auto", "x-forwarded-for", "forwarded")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientIP:
    """The resolved client address (None when unknown) and how it was found."""

    address: str | None  # normalized: IPv4-mapped IPv6 -> IPv4
    via_proxy: bool  # taken from a forwarding header written by trusted proxies
    malformed: bool  # the header entry at the client position was malformed


class _Node(NamedTuple):
    """One classified address text (socket peer or header entry)."""

    address: str | None  # normalized IP; None for unknown, obfuscated or malformed
    trusted: bool
    malformed: bool
    as_peer: ClientIP  # the result when this text is an untrusted socket peer


_MAX_CACHED_TEXT = 256  # longer header values and entries bypass the LRUs (bounded memory per entry)
_NO_ADDRESS = ClientIP(None, via_proxy=False, malformed=False)
_UNKNOWN = _Node(None, trusted=False, malformed=False, as_peer=_NO_ADDRESS)
_MALFORMED = _Node(None, trusted=False, malformed=True, as_peer=_NO_ADDRESS)

_PORT = re.compile(r"\d{1,5}|_[A-Za-z0-9._-]+")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# one `name=value` pair, or junk up to the next separator, then `,` / `;` / end of header
_FORWARDED_PART = re.compile(
    rf'[ \t]*(?:(?P<name>{_TOKEN})=(?P<value>"(?:[^"\\]|\\.)*"|[^\s",;]+)[ \t]*|(?P<junk>[^,;]*))'
    r"(?P<sep>[,;]|\Z)",
    re.DOTALL,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _host(text: str) -> str | None:
    """The address part of a node (brackets and port removed); None when the syntax is broken."""
    if text.startswith("["):
        close = text.find("]")
        rest = text[close + 1 :]
        if close < 0 or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest, 1))):
            return None
        return text[1:close]
    if text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        host, port = text.split(":")
        return host if _PORT.fullmatch(port) else None
    return text


def _classifier(networks: tuple[_Network, ...]) -> Callable[[str | None], _Node]:
    """A function that parses, normalizes and trust-checks one address text (None = broken)."""
    masks = {
        version: tuple(
            (int(net.network_address), int(net.netmask)) for net in networks if net.version == version
        )
        for version in (4, 6)
    }

    def classify(raw: str | None) -> _Node:
        if raw is None:
            return _MALFORMED
        text = raw.strip()
        if text.startswith("_") or text.lower() == "unknown":
            return _UNKNOWN
        host = _host(text)
        ip = parse_address(host) if host is not None else None
        if ip is None:
            return _MALFORMED
        trusted = any(ip.value & mask == network for network, mask in masks[ip.version])
        return _Node(ip.text, trusted, False, ClientIP(ip.text, via_proxy=False, malformed=False))

    return classify


def _xff_entries(header: str) -> list[str | None]:
    """X-Forwarded-For entries, left to right, empty list elements dropped."""
    return [part for part in header.split(",") if part.strip()]


def _forwarded_entries(header: str) -> list[str | None]:
    """The `for=` node of every RFC 7239 element, left to right.

    A syntactically broken element (junk, duplicate `for`) gives None; an element without
    `for` gives "unknown" (that hop did not say whom it received the request from). A header
    with neither a `for` nor a broken element carries no client address and gives [].
    """
    entries: list[str | None] = []
    found = False
    node: str | None = "unknown"
    used = broken = has_for = False
    pos = 0
    while True:
        part = _FORWARDED_PART.match(header, pos)
        assert part is not None  # the junk branch matches anything up to a separator
        if part["name"] is not None:
            used = True
            if part["name"].lower() == "for":
                broken = broken or has_for
                value = part["value"]
                node = _QUOTED_PAIR.sub(r"\1", value[1:-1]) if value[0] == '"' else value
                found = has_for = True
        elif part["junk"].strip():
            used = broken = found = True
        if part["sep"] != ";":
            if used:
                entries.append(None if broken else node)
            node, used, broken, has_for = "unknown", False, False, False
        if not part["sep"]:
            return entries if found else []
        pos = part.end()


class ClientIPResolver:
    """Resolves the client IP of a request; build once from settings, call `resolve` per request."""

    def __init__(
        self,
        trusted_proxies: Iterable[str],
        trusted_hops: int | None = None,
        *,
        source: Source = "auto",
        cache_size: int = 8192,
    ) -> None:
        networks: list[_Network] = []
        for cidr in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(cidr.strip()))
            except (ValueError, TypeError, AttributeError) as exc:
                raise GeoConfigError(
                    f"geo.trusted_proxies: {cidr!r} is not an IP network in CIDR notation ({exc})"
                ) from None
        if trusted_hops is not None and (isinstance(trusted_hops, bool) or trusted_hops < 1):
            raise GeoConfigError(f"geo.trusted_hops: must be an integer >= 1 or null, got {trusted_hops!r}")
        if source not in _SOURCES:
            raise GeoConfigError(f"geo.forwarded_source: must be one of {'/'.join(_SOURCES)}, got {source!r}")
        if cache_size < 1:
            raise GeoConfigError(f"client IP cache_size must be >= 1, got {cache_size!r}")
        self.trusted_proxies = tuple(networks)
        self.trusted_hops = trusted_hops
        self.source = source
        self._classify = _classifier(self.trusted_proxies)
        self._node = lru_cache(maxsize=cache_size)(self._classify)
        self._from_headers_cached = lru_cache(maxsize=cache_size)(self._from_headers)

    def resolve(
        self, peer: str | None, x_forwarded_for: str | None = None, forwarded: str | None = None
    ) -> ClientIP:
        """The client address for a request from `peer` carrying these header values. Never raises."""
        node = self._node(peer)
        if node.trusted:
            hops = 1  # the peer is a trusted proxy: the rightmost entry is the first candidate
        elif node.address is not None or self.trusted_hops is None:
            return node.as_peer
        else:
            hops = self.trusted_hops
        size = len(x_forwarded_for or "") + len(forwarded or "")
        cached = size <= _MAX_CACHED_TEXT  # long values bypass the caches: bounded memory per entry
        found = (self._from_headers_cached if cached else self._from_headers)(
            x_forwarded_for, forwarded, hops
        )
        return node.as_peer if found is None else found

    def _from_headers(self, x_forwarded_for: str | None, forwarded: str | None, hops: int) -> ClientIP | None:
        """The client among the header entries; None if there are none.

        The `hops` rightmost entries were written by trusted hops, so `entries[-hops]` (or the
        leftmost) is the first candidate; trusted proxies from there leftwards are skipped.
        """
        entries = self._entries(x_forwarded_for, forwarded)
        if not entries:
            return None
        node = _UNKNOWN
        for raw in reversed(entries[: max(len(entries) - hops + 1, 1)]):
            node = self._node(raw) if raw is None or len(raw) <= _MAX_CACHED_TEXT else self._classify(raw)
            if not node.trusted:
                break
        return ClientIP(node.address, via_proxy=True, malformed=node.malformed)

    def _entries(self, x_forwarded_for: str | None, forwarded: str | None) -> list[str | None]:
        """Entries of the forwarding header chosen by `source`, left to right."""
        if x_forwarded_for and self.source != "forwarded":
            entries = _xff_entries(x_forwarded_for)
            if entries or self.source == "x-forwarded-for":
                return entries
        if forwarded and self.source != "x-forwarded-for":
            return _forwarded_entries(forwarded)
        return []
