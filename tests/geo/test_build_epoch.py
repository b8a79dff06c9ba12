"""A database whose metadata carries a build epoch out of datetime's range still describes itself."""

from __future__ import annotations

import json
from pathlib import Path

import maxminddb
import pytest

from ig_gate.geo.lookup import GeoReader
from tests.geo.conftest import NETWORKS
from tests.geo.mmdb import write_country_mmdb


@pytest.mark.parametrize("epoch", [2**62, 2**64 - 1, 253402300800])  # the last: year 10000
def test_out_of_range_build_epoch_is_reported_as_invalid_not_raised(tmp_path: Path, epoch: int) -> None:
    path = write_country_mmdb(tmp_path / "odd.mmdb", NETWORKS, build_epoch=epoch)
    with maxminddb.open_database(str(path)) as raw:
        assert raw.metadata().build_epoch == epoch  # the real file says so
    reader = GeoReader(path)
    described = reader.metadata().to_json()
    json.dumps(described)  # a status document can carry it
    assert described["build_epoch"] is None and described["built_at"] is None
    assert described["problem"] == f"metadata build_epoch {str(epoch)[:40]} is not a representable time"
    assert reader.country("192.0.2.1") == "US"  # lookups are unaffected


def test_a_valid_build_epoch_is_reported_with_its_time(tmp_path: Path) -> None:
    reader = GeoReader(write_country_mmdb(tmp_path / "ok.mmdb", NETWORKS, build_epoch=1_700_000_000))
    described = reader.metadata().to_json()
    assert described["build_epoch"] == 1_700_000_000
    assert described["built_at"] == "2023-11-14T22:13:20+00:00"
    assert described["problem"] is None
