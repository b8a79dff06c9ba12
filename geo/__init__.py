"""Client IP resolution, country lookup, tenant geo-fences and travel anomalies."""

from ig_gate.geo.anomaly import TravelAnomalyDetector
from ig_gate.geo.client_ip import ClientIP, ClientIPResolver
from ig_gate.geo.errors import GeoConfigError, GeoDatabaseError, GeoError
from ig_gate.geo.lookup import DEFAULT_DATABASE, GeoMetadata, GeoReader

__all__ = [
    "DEFAULT_DATABASE",
    "ClientIP",
    "ClientIPResolver",
    "GeoConfigError",
    "GeoDatabaseError",
    "GeoError",
    "GeoMetadata",
    "GeoReader",
    "TravelAnomalyDetector",
]
