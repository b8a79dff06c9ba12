"""Parsing one IP address literal the way every geo module needs it."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address


def parse_address(text: str) -> IPAddress | None:
    """The address in `text`, IPv4-mapped IPv6 (`::ffff:a.b.c.d`) turned into IPv4; None if invalid.

    Strict (dotted quads only, no zone ids such as `%eth0`), and several times faster than
    `ipaddress.ip_address` because the C `inet_pton` does the parsing.
    """
    try:
        if ":" not in text:
            return IPv4Address(socket.inet_pton(socket.AF_INET, text))
        ip = IPv6Address(socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):  # ValueError: embedded NUL
        return None
    return ip if ip.ipv4_mapped is None else ip.ipv4_mapped
