"""GeoReader against real .mmdb files: test databases in both record layouts and the embedded default."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from ig_gate.geo import DEFAULT_DATABASE, GeoDatabaseError, GeoReader
from tests.geo.mmdb import write_country_mmdb


@pytest.fixture(params=["maxmind_db", "flat_db"])
def reader(request: pytest.FixtureRequest) -> Iterator[GeoReader]:
    geo = GeoReader(request.getfixturevalue(request.param))
    yield geo
    geo.close()


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("192.0.2.10", "US"),
        ("198.51.100.200", "DE"),
        ("203.0.113.1", "JP"),
        ("2001:db8:1::42", "FR"),
        ("::ffff:198.51.100.7", "DE"),  # IPv4-mapped IPv6 is looked up as IPv4
    ],
)
def test_both_record_layouts_give_the_iso_code(reader: GeoReader, ip: str, country: str) -> None:
    assert reader.country(ip) == country


@pytest.mark.parametrize(
    "ip",
    [
        None,
        "",
        "not-an-ip",
        "192.0.2.256",
        "192.0.513",  # inet_aton shorthand for 192.0.2.1: the bare reader would say US
        "3221225985",
        " 192.0.2.1",
        "192.0.2.1\x00",
        "10.0.0.1",
        "2001:db8:2::1",
        "::1",
    ],
)
def test_invalid_private_or_unlisted_addresses_give_none(reader: GeoReader, ip: str | None) -> None:
    assert reader.country(ip) is None


def test_cached_answer_matches_the_first(reader: GeoReader) -> None:
    assert [reader.country("192.0.2.10") for _ in range(3)] == ["US", "US", "US"]
    assert reader.cached == 1


def test_records_without_a_usable_country_and_lowercase_codes(tmp_path: Path) -> None:
    path = tmp_path / "odd.mmdb"
    write_country_mmdb(path, {"192.0.2.0/24": "nl"}, layout="flat")
    assert GeoReader(path).country("192.0.2.1") == "NL"
    # a MaxMind record with only a continent (anycast ranges look like this) has no country
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    writer.insert_network(IPSet(["192.0.2.0/24"]), {"continent": {"code": "EU"}})
    writer.insert_network(IPSet(["198.51.100.0/24"]), {"country": {"iso_code": 7}})
    writer.to_db_file(str(path))
    geo = GeoReader(path)
    assert geo.country("192.0.2.1") is None
    assert geo.country("198.51.100.1") is None


def test_ipv4_only_database_answers_none_for_ipv6(tmp_path: Path) -> None:
    path = write_country_mmdb(tmp_path / "v4.mmdb", {"192.0.2.0/24": "US"}, layout="flat", ip_version=4)
    geo = GeoReader(path)
    assert geo.country("192.0.2.1") == "US"
    assert geo.country("2001:db8:1::1") is None


def test_lru_keeps_the_most_recently_used_addresses(maxmind_db: Path) -> None:
    geo = GeoReader(maxmind_db, cache_size=2)
    geo.country("192.0.2.1")
    geo.country("198.51.100.1")
    geo.country("192.0.2.1")  # refresh: 198.51.100.1 is now the least recently used
    geo.country("203.0.113.1")
    assert geo.cached == 2
    geo.close()  # from here only cached answers can come back
    assert geo.country("192.0.2.1") == "US"
    assert geo.country("203.0.113.1") == "JP"
    assert geo.country("198.51.100.1") is None


def test_cache_size_zero_disables_caching(maxmind_db: Path) -> None:
    geo = GeoReader(maxmind_db, cache_size=0)
    assert geo.country("192.0.2.1") == "US"
    assert geo.cached == 0


def test_metadata_describes_the_database(maxmind_db: Path) -> None:
    meta = GeoReader(maxmind_db).metadata()
    assert meta.path == str(maxmind_db)
    assert not meta.embedded
    assert meta.database_type == "GeoIP2-Country"
    assert meta.ip_version == 6
    assert meta.to_json()["built_at"].startswith(("20", "19"))


def test_embedded_default_resolves_google_dns_to_us() -> None:
    geo = GeoReader()
    assert geo.country("8.8.8.8") == "US"
    assert geo.country("::ffff:8.8.8.8") == "US"
    assert geo.country("10.1.2.3") is None
    meta = geo.metadata()
    assert meta.embedded
    assert meta.path == str(DEFAULT_DATABASE)
    assert meta.ip_version == 6


def test_embedded_default_is_attributed() -> None:
    notice = (DEFAULT_DATABASE.parent / "NOTICE").read_text(encoding="utf-8")
    assert "IP geolocation by DB-IP.com, CC BY 4.0" in notice
    assert "https://db-ip.com" in notice
    # the NOTICE names the build of the database it ships with
    epoch = re.search(r"build epoch\s+(\d+)", notice)
    assert epoch is not None
    assert int(epoch.group(1)) == GeoReader().metadata().build_epoch


def test_missing_database_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError, match=r"missing\.mmdb: cannot open"):
        GeoReader(tmp_path / "missing.mmdb")


def test_non_mmdb_file_is_a_named_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mmdb"
    bogus.write_bytes(b"not a maxmind database" * 10)
    with pytest.raises(GeoDatabaseError, match=r"bogus\.mmdb: not a valid MaxMind DB"):
        GeoReader(bogus)


@pytest.fixture(scope="module")
def small_cache_reader(maxmind_db: Path) -> GeoReader:
    return GeoReader(maxmind_db, cache_size=4)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60) | st.ip_addresses().map(str))
def test_country_never_raises_for_arbitrary_text(small_cache_reader: GeoReader, text: str) -> None:
    code = small_cache_reader.country(text)
    assert code is None or (len(code) == 2 and code.isupper())
