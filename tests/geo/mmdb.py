"""Writing small real .mmdb country databases for tests (mmdb-writer), in either record layout."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from mmdb_writer import MMDBWriter
from netaddr import IPSet

Layout = Literal["maxmind", "flat"]


def country_record(layout: Layout, code: str) -> dict:
    """A record as MaxMind GeoIP2 (`country.iso_code`) or ip-location-db (`country_code`) writes it."""
    if layout == "maxmind":
        return {"country": {"iso_code": code, "names": {"en": code}}, "continent": {"code": "XX"}}
    return {"country_code": code}


class _Writer(MMDBWriter):
    """An MMDBWriter whose metadata can say any `build_epoch` (a uint64 in the format), not just "now"."""

    def __init__(self, build_epoch: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        return meta if self._build_epoch is None else {**meta, "build_epoch": self._build_epoch}


def write_country_mmdb(
    path: Path,
    networks: Mapping[str, str],
    layout: Layout = "maxmind",
    ip_version: int = 6,
    build_epoch: int | None = None,
) -> Path:
    """Write `networks` (CIDR -> ISO code) to `path`; IPv4 networks are also reachable in IPv6 databases.
    `build_epoch` replaces the build time in the metadata (any uint64, e.g. one out of datetime's range)."""
    writer = _Writer(
        build_epoch,
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type="GeoIP2-Country" if layout == "maxmind" else "ig-gate-test-country",
    )
    for cidr, code in networks.items():
        writer.insert_network(IPSet([cidr]), country_record(layout, code))
    writer.to_db_file(str(path))
    return path
