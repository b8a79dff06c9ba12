"""Parsing one IP address literal the way every geo module needs it, without `ipaddress` on hot paths."""

from __future__ import annotations

import socket
from ipaddress import IPv6Address
from typing import NamedTuple

_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


class Address(NamedTuple):
    """A parsed IP address: canonical text, version and integer value."""

    text: str  # canonical form; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes the IPv4 address
    version: int  # 4 or 6
    value: int


def parse_address(text: str) -> Address | None:
    """The address in `text`, or None if it is not a plain IPv4 or IPv6 literal.

    Strict: dotted quads only (no `192.0.513` shorthand, no leading zeros), no zone ids such as
    `%eth0`, no surrounding spaces. The C `inet_pton` parses; an IPv4 literal it accepts is
    already canonical, so IPv4 never pays for `ipaddress` formatting.
    """
    try:
        if ":" not in text:
            return Address(text, 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text)))
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):  # ValueError: embedded NUL
        return None
    if packed.startswith(_MAPPED_PREFIX):
        return Address(socket.inet_ntop(socket.AF_INET, packed[12:]), 4, int.from_bytes(packed[12:]))
    value = int.from_bytes(packed)
    return Address(str(IPv6Address(value)), 6, value)
