"""/v1/status (admin listener) stays a 200 when the geo database's metadata says an impossible build time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.geo.mmdb import write_country_mmdb
from tests.middleware.conftest import NETWORKS
from tests.sidecar.conftest import ADMIN


def test_status_survives_a_geo_database_with_an_out_of_range_build_epoch(
    make_sidecar: Any, tmp_path: Path
) -> None:
    networks = {cidr: country for country, cidrs in NETWORKS.items() for cidr in cidrs}
    database = write_country_mmdb(tmp_path / "odd-epoch.mmdb", networks, build_epoch=2**62)
    response = make_sidecar(geo={"database": str(database)}).get(f"{ADMIN}/v1/status")
    assert response.status_code == 200
    geo = response.json()["geo"]
    assert geo["path"] == str(database)
    assert geo["build_epoch"] is None and geo["built_at"] is None
    assert "build_epoch 4611686018427387904" in geo["problem"]
