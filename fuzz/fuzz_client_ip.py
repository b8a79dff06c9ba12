#!/usr/bin/env python3
"""Fuzz the X-Forwarded-For / Forwarded parsers (geo/client_ip.py `ClientIPResolver.resolve`).

Input: one config byte (source = byte % 3 of auto/x-forwarded-for/forwarded; trusted_hops = byte // 3 % 4
of None/1/2/3), then `peer \\n x-forwarded-for \\n forwarded` as latin-1 text (header values as ASGI gives
them; an empty peer is None, as for an Apollo Router coprocessor request).
Expected: nothing; `resolve` never raises. Properties:
- the address is None or a canonical IP literal; a second (cached) answer equals the first;
- the header the source excludes is never read;
- the client controls only the left end of a forwarding header: prepending one more entry on the left
  either leaves the address as it was or makes that entry the client (it never displaces what trusted
  hops wrote).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check, run

with atheris.instrument_imports(include=["ig_gate"]):
    from ig_gate.geo.address import parse_address
    from ig_gate.geo.client_ip import ClientIPResolver

TRUSTED = ("10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32")
SOURCES = ("auto", "x-forwarded-for", "forwarded")
RESOLVERS = [
    ClientIPResolver(TRUSTED, hops, source=source, cache_size=16)  # small caches: eviction is exercised
    for hops in (None, 1, 2, 3)
    for source in SOURCES
]
LEFT = "198.51.100.66"  # an untrusted address no seed uses


def test_one_input(data: bytes) -> None:
    if not data:
        return
    resolver = RESOLVERS[data[0] % len(RESOLVERS)]
    peer, _, rest = data[1:].decode("latin-1").partition("\n")
    xff, _, forwarded = rest.partition("\n")
    args = (peer or None, xff or None, forwarded or None)
    found = resolver.resolve(*args)
    check(found.address is None or getattr(parse_address(found.address), "text", None) == found.address,
          f"not a canonical address: {found.address!r}")
    check(resolver.resolve(*args) == found, "the cached answer differs")
    if resolver.source == "forwarded":
        check(resolver.resolve(args[0], None, args[2]) == found, "X-Forwarded-For read with source=forwarded")
    if resolver.source == "x-forwarded-for":
        check(resolver.resolve(args[0], args[1], None) == found, "Forwarded read with source=x-forwarded-for")
    # when no header entry named the client (found.via_proxy is False), the prepended `for=` can make
    # `for`-less Forwarded elements count: they are hops that did not say (None)
    allowed = (found.address, LEFT) if found.via_proxy else (found.address, LEFT, None)
    for prefixed in (
        (args[0], f"{LEFT}, {xff}", args[2]),
        (args[0], args[1], f"for={LEFT}, {forwarded}"),
    ):
        again = resolver.resolve(*prefixed)
        check(again.address in allowed, f"a prepended entry displaced {found} with {again}")


if __name__ == "__main__":
    run(test_one_input)
