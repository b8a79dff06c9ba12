"""Real test country databases, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.geo.mmdb import write_country_mmdb

# documentation ranges (RFC 5737 / RFC 3849) mapped to countries
NETWORKS = {
    "192.0.2.0/24": "US",
    "198.51.100.0/24": "DE",
    "203.0.113.0/24": "JP",
    "2001:db8:1::/48": "FR",
}


@pytest.fixture(scope="session")
def geo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("geo")


@pytest.fixture(scope="session")
def maxmind_db(geo_dir: Path) -> Path:
    return write_country_mmdb(geo_dir / "maxmind.mmdb", NETWORKS, layout="maxmind")


@pytest.fixture(scope="session")
def flat_db(geo_dir: Path) -> Path:
    return write_country_mmdb(geo_dir / "flat.mmdb", NETWORKS, layout="flat")
