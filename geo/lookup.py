"""Country of an IP address from a MaxMind DB file, with a bounded LRU in front.

Accepts both record layouts: MaxMind GeoIP2/GeoLite2 (`{"country": {"iso_code": "US"}}`) and
ip-location-db / DB-IP Lite (`{"country_code": "US"}`). Without a path the embedded DB-IP Lite
country database in `geo/data/` is used (CC BY 4.0, attribution in `geo/data/NOTICE`).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import maxminddb

from ig_gate.geo.address import parse_address
from ig_gate.geo.errors import GeoConfigError, GeoDatabaseError

DEFAULT_DATABASE = Path(__file__).parent / "data" / "dbip-country.mmdb"


@dataclass(frozen=True, slots=True)
class GeoMetadata:
    """What a status page says about the database in use."""

    path: str
    embedded: bool
    database_type: str
    build_epoch: int | None  # None when the file's value is no representable time (see `problem`)
    ip_version: int
    node_count: int
    problem: str | None = None

    @property
    def built_at(self) -> str | None:
        """Build time of the database, ISO 8601 UTC (None when unknown)."""
        return None if self.build_epoch is None else _utc_iso(self.build_epoch)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict, with `built_at` added."""
        return {**asdict(self), "built_at": self.built_at}


def _utc_iso(epoch: int) -> str | None:
    """`epoch` as ISO 8601 UTC, or None when no datetime (or the platform's time_t) can hold it."""
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def _build_epoch(value: Any) -> tuple[int | None, str | None]:
    """(the build epoch, None) when it is a representable time, else (None, what is wrong)."""
    if isinstance(value, int) and not isinstance(value, bool) and _utc_iso(value) is not None:
        return value, None
    return None, f"metadata build_epoch {str(value)[:40]} is not a representable time"


def _iso_code(record: Any) -> str | None:
    """The ISO 3166-1 alpha-2 country code in either record layout, else None."""
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else record.get("country_code")
    return code.upper() if isinstance(code, str) and code else None


class GeoReader:
    """IP -> ISO country code. Thread-tolerant: concurrent callers may at worst repeat a lookup.

    The LRU is the policy of middleware/bounded.py's `LRU` (lock-free reads), kept by hand here: geo lies
    below middleware and imports nothing of it (tests/packaging/test_import_graph.py).
    """

    def __init__(self, path: str | Path | None = None, cache_size: int = 65_536) -> None:
        if cache_size < 0:
            raise GeoConfigError(f"geo.cache_size: must be >= 0, got {cache_size!r}")
        self.path = Path(path) if path is not None else DEFAULT_DATABASE
        self.embedded = path is None
        try:
            self._reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
        except OSError as exc:
            raise GeoDatabaseError(f"{self.path}: cannot open the geo database: {exc.strerror}") from None
        except (maxminddb.InvalidDatabaseError, ValueError):
            raise GeoDatabaseError(f"{self.path}: not a valid MaxMind DB (.mmdb) file") from None
        self.cache_size = cache_size
        self._cache: OrderedDict[str, str | None] = OrderedDict()

    def country(self, ip: str | None) -> str | None:
        """ISO country code of `ip`; None for None, invalid, private or unlisted addresses."""
        if ip is None:
            return None
        cache = self._cache
        try:
            code = cache[ip]
        except KeyError:
            code = self._lookup(ip)
            if self.cache_size:
                cache[ip] = code
                if len(cache) > self.cache_size:
                    self._evict_oldest()
            return code
        try:  # noqa: SIM105 -- contextlib.suppress costs ~0.4 us on this hot path
            cache.move_to_end(ip)
        except KeyError:  # evicted by another thread in between
            pass
        return code

    def _evict_oldest(self) -> None:
        with contextlib.suppress(KeyError):  # emptied by another thread in between
            self._cache.popitem(last=False)

    def _lookup(self, ip: str) -> str | None:
        address = parse_address(ip)  # strict: the reader itself would take "8.8.8" for 8.8.0.8
        if address is None:
            return None
        try:
            return _iso_code(self._reader.get(address.text))
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoDatabaseError(f"{self.path}: corrupt record while looking up {ip}: {exc}") from None

    @property
    def cached(self) -> int:
        """Number of addresses in the LRU."""
        return len(self._cache)

    def metadata(self) -> GeoMetadata:
        """Database path, type and build time, for status endpoints and logs (odd metadata never raises)."""
        meta = self._reader.metadata()
        build_epoch, problem = _build_epoch(meta.build_epoch)
        return GeoMetadata(
            path=str(self.path),
            embedded=self.embedded,
            database_type=meta.database_type,
            build_epoch=build_epoch,
            ip_version=meta.ip_version,
            node_count=meta.node_count,
            problem=problem,
        )

    def close(self) -> None:
        """Release the database file."""
        self._reader.close()
