"""ClientIPResolver: which address is the client, and which headers may be believed."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ig_gate.geo import ClientIP, ClientIPResolver, GeoConfigError

PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]
LB = "10.0.0.2"
EDGE = "10.0.0.3"
CLIENT = "203.0.113.9"


@pytest.fixture
def resolver() -> ClientIPResolver:
    return ClientIPResolver(PROXIES)


def test_untrusted_peer_is_the_client(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(CLIENT, None, None) == ClientIP(CLIENT, via_proxy=False, malformed=False)


def test_spoofed_x_forwarded_for_from_untrusted_peer_is_ignored(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(CLIENT, "192.0.2.1", None) == ClientIP(CLIENT, False, False)


def test_spoofed_forwarded_from_untrusted_peer_is_ignored(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(CLIENT, None, "for=192.0.2.1") == ClientIP(CLIENT, False, False)


def test_headers_from_untrusted_peer_are_not_even_parsed(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(CLIENT, "garbage", 'for="[broken') == ClientIP(CLIENT, False, False)


def test_trusted_peer_forwards_the_client(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, CLIENT, None) == ClientIP(CLIENT, via_proxy=True, malformed=False)


def test_trusted_peer_without_headers_is_the_client(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, None, None) == ClientIP(LB, via_proxy=False, malformed=False)
    assert resolver.resolve(LB, " , ,", "") == ClientIP(LB, via_proxy=False, malformed=False)


def test_trusted_hops_are_skipped_right_to_left(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, f"{CLIENT}, {EDGE}, 10.9.9.9", None).address == CLIENT


def test_rightmost_untrusted_address_wins_over_client_supplied_entries(resolver: ClientIPResolver) -> None:
    # the client sent "X-Forwarded-For: 192.0.2.1, 198.51.100.1"; the edge appended the real address
    header = f"192.0.2.1, 198.51.100.1, {CLIENT}, {EDGE}"
    assert resolver.resolve(LB, header, None).address == CLIENT


def test_all_trusted_chain_gives_the_leftmost_address(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, f"10.1.1.1, {EDGE}", None) == ClientIP("10.1.1.1", True, False)


def test_long_chains_are_walked_like_short_ones(resolver: ClientIPResolver) -> None:
    hops = ", ".join(f"10.0.{i}.1" for i in range(40))  # longer than what the LRUs keep
    assert resolver.resolve(LB, f"192.0.2.1, {CLIENT}, {hops}", None) == ClientIP(CLIENT, True, False)
    assert resolver.resolve(LB, f"{'x' * 300}, {hops}", None) == ClientIP(None, True, True)


def test_empty_list_elements_are_skipped(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, f",{CLIENT},, {EDGE} ,", None) == ClientIP(CLIENT, True, False)


@pytest.mark.parametrize(
    ("xff", "client"),
    [
        ("203.0.113.9:51234", CLIENT),
        ("2001:db8:1::7", "2001:db8:1::7"),
        ("[2001:db8:1::7]", "2001:db8:1::7"),
        ("[2001:db8:1::7]:443", "2001:db8:1::7"),
        ("2001:DB8:1:0:0:0:0:7", "2001:db8:1::7"),
        ("::ffff:203.0.113.9", CLIENT),
        ("[::ffff:203.0.113.9]:80", CLIENT),
    ],
)
def test_x_forwarded_for_value_forms(resolver: ClientIPResolver, xff: str, client: str) -> None:
    assert resolver.resolve(LB, f"{xff}, {EDGE}", None) == ClientIP(client, True, False)


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("for=203.0.113.9", CLIENT),
        ('for="203.0.113.9"', CLIENT),
        ('For="203.0.113.9:4711"', CLIENT),
        ("for=203.0.113.9;proto=https;by=10.0.0.2;host=api.example.test", CLIENT),
        ('proto=https; for="203.0.113.9" ;by=_edge', CLIENT),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
        ('for="[2001:db8:cafe::17]:_port"', "2001:db8:cafe::17"),
        ('for="[::ffff:203.0.113.9]"', CLIENT),
        ('for="\\203.0.113.9"', CLIENT),  # quoted-pair
        ("for=192.0.2.1, for=203.0.113.9, for=10.0.0.3", CLIENT),
        ('for=192.0.2.1,for="203.0.113.9";proto=http , for="10.0.0.3"', CLIENT),
    ],
)
def test_forwarded_header_variants(resolver: ClientIPResolver, forwarded: str, client: str) -> None:
    assert resolver.resolve(LB, None, forwarded) == ClientIP(client, True, False)


@pytest.mark.parametrize(
    "forwarded",
    ["for=_hidden", 'for="_SEVKISEK"', "for=unknown", "for=UNKNOWN", "for=192.0.2.1, proto=https"],
)
def test_obfuscated_or_unknown_client_is_unknown_not_malformed(
    resolver: ClientIPResolver, forwarded: str
) -> None:
    # never fall through to an address further left: the client could have written it
    assert resolver.resolve(LB, None, forwarded) == ClientIP(None, via_proxy=True, malformed=False)


def test_forwarded_without_any_for_parameter_carries_no_client(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, None, "proto=https;host=api.example.test") == ClientIP(LB, False, False)


@pytest.mark.parametrize(
    ("xff", "forwarded"),
    [
        ("not-an-ip", None),
        ("203.0.113.999", None),
        ("203.0.113", None),
        ("203.0.29449", None),  # inet_aton shorthand, not an address literal
        ("fe80::1%eth0", None),  # zone ids are not client addresses
        ("203.0.113.9:http", None),
        ("203.0.113.9:123456", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("192.0.2.1, 203.0.113.9 203.0.113.8", None),
        (None, 'for="[2001:db8::1"'),
        (None, 'for="unterminated'),
        (None, "for="),
        (None, "for=203.0.113.9;for=192.0.2.1"),
        (None, "for=203.0.113.9 junk"),
        (None, "just junk"),
        (None, "for=192.0.2.1, junk"),
    ],
)
def test_malformed_client_entry_gives_no_address_and_is_flagged(
    resolver: ClientIPResolver, xff: str | None, forwarded: str | None
) -> None:
    assert resolver.resolve(LB, xff, forwarded) == ClientIP(None, via_proxy=True, malformed=True)


def test_malformed_entry_left_of_the_client_is_never_reached(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, f"garbage, {CLIENT}", None) == ClientIP(CLIENT, True, False)
    assert resolver.resolve(LB, None, f'for="[junk, for={CLIENT}') == ClientIP(CLIENT, True, False)


def test_quoted_comma_does_not_split_forwarded_elements(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, None, f'for=192.0.2.1;ext="a,b", for={CLIENT}').address == CLIENT
    assert resolver.resolve(LB, None, f'for={CLIENT};ext="a,for=192.0.2.1"').address == CLIENT


def test_ipv6_peer_and_ipv6_trusted_network(resolver: ClientIPResolver) -> None:
    assert resolver.resolve("2001:db8:ffff::1", "2001:db8:1::7", None).address == "2001:db8:1::7"
    assert resolver.resolve("2001:db8:1::1", CLIENT, None) == ClientIP("2001:db8:1::1", False, False)


def test_ipv4_mapped_peer_is_normalized_and_matches_ipv4_networks(resolver: ClientIPResolver) -> None:
    assert resolver.resolve("::ffff:10.0.0.2", CLIENT, None) == ClientIP(CLIENT, True, False)
    assert resolver.resolve("::ffff:203.0.113.9", "192.0.2.1", None) == ClientIP(CLIENT, False, False)


def test_ipv4_mapped_proxy_entry_is_skipped_as_trusted(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, f"{CLIENT}, ::ffff:10.0.0.3", None).address == CLIENT


def test_non_ip_or_missing_peer_without_hops_is_unknown(resolver: ClientIPResolver) -> None:
    for peer in (None, "", "testclient", "unix:/run/ig.sock"):
        assert resolver.resolve(peer, CLIENT, f"for={CLIENT}") == ClientIP(None, False, False)


def test_auto_source_prefers_x_forwarded_for(resolver: ClientIPResolver) -> None:
    assert resolver.resolve(LB, CLIENT, "for=192.0.2.1").address == CLIENT
    assert resolver.resolve(LB, " ", f"for={CLIENT}").address == CLIENT


def test_forwarded_source_ignores_x_forwarded_for() -> None:
    resolver = ClientIPResolver(PROXIES, source="forwarded")
    assert resolver.resolve(LB, "192.0.2.1", f"for={CLIENT}").address == CLIENT
    assert resolver.resolve(LB, "192.0.2.1", None) == ClientIP(LB, False, False)


def test_x_forwarded_for_source_ignores_forwarded() -> None:
    resolver = ClientIPResolver(PROXIES, source="x-forwarded-for")
    assert resolver.resolve(LB, None, "for=192.0.2.1") == ClientIP(LB, False, False)
    assert resolver.resolve(LB, CLIENT, "for=192.0.2.1").address == CLIENT


class TestTrustedHops:
    """No socket peer (Apollo Router coprocessor): trust the N rightmost header entries."""

    def test_one_hop_takes_the_rightmost_entry(self) -> None:
        resolver = ClientIPResolver([], trusted_hops=1)
        assert resolver.resolve(None, f"192.0.2.1, {CLIENT}", None) == ClientIP(CLIENT, True, False)

    def test_two_hops_take_the_second_entry_from_the_right(self) -> None:
        resolver = ClientIPResolver([], trusted_hops=2)
        assert resolver.resolve(None, f"192.0.2.1, {CLIENT}, 198.51.100.1", None).address == CLIENT

    def test_short_header_gives_its_leftmost_entry(self) -> None:
        resolver = ClientIPResolver([], trusted_hops=3)
        assert resolver.resolve(None, f"{CLIENT}, 198.51.100.1", None).address == CLIENT

    def test_trusted_proxies_left_of_the_counted_hops_are_skipped(self) -> None:
        resolver = ClientIPResolver(PROXIES, trusted_hops=1)
        assert resolver.resolve(None, f"192.0.2.1, {CLIENT}, {EDGE}", None).address == CLIENT

    def test_works_with_forwarded(self) -> None:
        resolver = ClientIPResolver([], trusted_hops=1)
        assert resolver.resolve(None, None, f'for=192.0.2.1, for="{CLIENT}"').address == CLIENT

    def test_no_header_gives_no_address(self) -> None:
        resolver = ClientIPResolver([], trusted_hops=1)
        assert resolver.resolve(None, None, None) == ClientIP(None, False, False)

    def test_malformed_counted_entry_is_flagged(self) -> None:
        resolver = ClientIPResolver([], trusted_hops=1)
        assert resolver.resolve(None, f"{CLIENT}, bogus", None) == ClientIP(None, True, True)

    def test_a_real_peer_overrides_hop_counting(self) -> None:
        resolver = ClientIPResolver([], trusted_hops=1)
        assert resolver.resolve(CLIENT, "192.0.2.1", None) == ClientIP(CLIENT, False, False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trusted_proxies": ["10.0.0.0/33"]}, "10.0.0.0/33"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, "has host bits set"),
        ({"trusted_proxies": ["proxy.internal"]}, "proxy.internal"),
        ({"trusted_proxies": [None]}, "None"),
        ({"trusted_proxies": [], "trusted_hops": 0}, "geo.trusted_hops"),
        ({"trusted_proxies": [], "trusted_hops": True}, "geo.trusted_hops"),
        ({"trusted_proxies": [], "source": "x-real-ip"}, "x-real-ip"),
        ({"trusted_proxies": [], "cache_size": 0}, "cache_size"),
    ],
)
def test_invalid_configuration_is_a_named_error(kwargs: dict, message: str) -> None:
    with pytest.raises(GeoConfigError, match=message):
        ClientIPResolver(**kwargs)


def test_single_host_and_ipv6_networks_are_accepted() -> None:
    resolver = ClientIPResolver(["127.0.0.1", " ::1/128 "])
    assert resolver.resolve("::1", CLIENT, None).address == CLIENT
    assert resolver.resolve("127.0.0.1", CLIENT, None).address == CLIENT


# --- property: resolve() never raises, and an address it returns is a normalized IP ---------------

_FRAGMENTS = st.sampled_from(
    ['for=', '"', "[", "]", ":", ",", ";", "\\", " ", "_x", "unknown", "::ffff:", "1.2.3.4", "2001:db8::1",
     "10.0.0.2", "by=", "proto=http", "=", "\t", "\x00", "%eth0"]
)  # fmt: skip
_HEADER = st.one_of(st.none(), st.text(max_size=80), st.lists(_FRAGMENTS, max_size=16).map("".join))


def _assert_normalized(result: ClientIP) -> None:
    assert isinstance(result, ClientIP)
    if result.address is not None:
        ip = ipaddress.ip_address(result.address)
        assert str(ip) == result.address
        assert ip.version == 4 or ip.ipv4_mapped is None


@settings(max_examples=400, deadline=None)
@given(peer=_HEADER, xff=_HEADER, forwarded=_HEADER)
def test_resolve_never_raises_for_arbitrary_header_strings(
    peer: str | None, xff: str | None, forwarded: str | None
) -> None:
    everyone = ClientIPResolver(["0.0.0.0/0", "::/0", "1.2.3.4/32"] if peer else [])
    selective = ClientIPResolver(["10.0.0.0/8"], trusted_hops=2)
    for resolver in (everyone, selective):
        _assert_normalized(resolver.resolve(peer, xff, forwarded))
        _assert_normalized(resolver.resolve("10.0.0.2", xff, forwarded))
