"""Typed settings for the gate and the sidecar: one tree, built from a YAML file and `IG_GATE_*` env vars.

Every setting has a default that works for the demo. Env vars override the file:
`IG_GATE_IDENTITY__ISSUER=https://idp` sets `identity.issuer` (sections joined by `__`, values parsed
as YAML scalars, so `IG_GATE_FAILURE_MODE=open` and `IG_GATE_GEO__TRUSTED_PROXIES=[10.0.0.0/8]` work).
Relative file paths in a YAML file are resolved against the file's directory.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
from packaging.version import InvalidVersion, Version

from ig_gate.middleware.config_engine import (
    ConfigError,
    Sources,
    apply,
    check_keys,
    convert,
    env_overrides,
    read_yaml,
)

ENV_PREFIX = "IG_GATE_"
RISK_LEVELS = ("low", "medium", "high")
FORWARDED_SOURCES = ("auto", "x-forwarded-for", "forwarded")


@dataclass(frozen=True, slots=True)
class BundleSettings:
    """Where the policy bundle comes from and how it is verified."""

    path: str | None = "dist/policy.tgz"
    verification_key: str | None = None  # PEM public key, or for HS256 a file with the secret
    key_alg: str | None = None  # None: inferred from the key (EC -> ES256, RSA -> RS256, secret -> HS256)
    key_id: str | None = None
    scope: str | None = None
    query: str = "data.ig.zt.decision"
    require_version: str | None = None  # PEP 440 specifier, e.g. ">=2.0,<3"
    # PEP 440 version: the rollback floor even with an empty state_dir (older bundles are always refused)
    min_version: str | None = None
    require_digests: tuple[str, ...] = ()
    allow_unsigned: bool = False  # only for local development; never in production
    # registry distribution (OCI); when `registry` is set the bundle manager polls `channel`
    registry: str | None = None
    repository: str | None = None
    channel: str = "prod"
    plain_http: bool = False
    poll_interval_s: float = 30.0
    state_dir: str = ".ig-gate/state"
    remote_opa_url: str | None = None  # ask a remote OPA-compatible PDP instead of the local engine


@dataclass(frozen=True, slots=True)
class StepUpSettings:
    """What counts as a satisfied step-up (RFC 9470)."""

    acr_values: tuple[str, ...] = ("mfa",)
    amr_values: tuple[str, ...] = ("mfa", "hwk")
    max_age: int = 300


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """The IdP whose bearer tokens establish the session."""

    issuer: str = "https://idp.example.test"
    audience: str = "ig-gateway"
    jwks: str | None = None  # a JWKS file path or an https URL
    algorithms: tuple[str, ...] = ("ES256", "RS256", "PS256", "EdDSA")
    leeway_s: int = 30
    cookie: str | None = None  # read the bearer token from this cookie when no Authorization header
    tenant_claim: str = "tenant"
    tenant_header: str | None = None  # e.g. X-Tenant-ID; used only when the token has no tenant claim
    risk_claim: str = "risk"
    default_risk: str = "medium"
    jwks_refresh_s: float = 300.0
    jwks_min_refresh_interval_s: float = 30.0
    jwks_ca_file: str | None = None  # a private CA bundle for https JWKS URLs (IdP and MDM key sets)
    token_cache_size: int = 10_000
    stepup: StepUpSettings = field(default_factory=StepUpSettings)


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """Device posture: a signed attestation header (MDM key set) or a token claim."""

    attestation_jwks: str | None = None
    header: str = "X-Device-Attestation"
    algorithms: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
    posture_claim: str | None = None  # read posture from this bearer-token claim when no attestation


@dataclass(frozen=True, slots=True)
class GeoSettings:
    """Client IP and country resolution."""

    database: str | None = None  # None: the embedded DB-IP Lite country database
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32",)
    forwarded_source: str = "auto"  # auto | x-forwarded-for | forwarded: which header carries the client
    trusted_hops: int | None = None  # no peer address (coprocessor): trust this many rightmost hops
    cache_size: int = 65_536
    anomaly_window_s: float = 3600.0  # two countries for one subject within this window = anomaly


@dataclass(frozen=True, slots=True)
class MemoSettings:
    """The decision memo (bounded LRU with a short TTL, keyed by bundle revision + input)."""

    enabled: bool = True
    size: int = 8192
    ttl_s: float = 5.0


@dataclass(frozen=True, slots=True)
class DecisionLogSettings:
    """The hash-chained decision log (JSON lines, OPA's shape)."""

    path: str | None = None  # None: decision logging off
    queue_size: int = 10_000


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Prometheus metrics."""

    tenants: tuple[str, ...] = ()  # tenant label values allowed; every other tenant is "other"


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    """Staged rollout of a candidate bundle (shadow, then canary stages), ACA-style checks."""

    enabled: bool = True
    stages: tuple[float, ...] = (0.05, 0.25, 1.0)
    sticky_by: str = "tenant"  # tenant | session
    min_samples: int = 200
    max_deny_rate_delta: float = 0.05
    max_stepup_rate_delta: float = 0.05
    max_error_rate: float = 0.01
    max_latency_ratio: float = 3.0


@dataclass(frozen=True, slots=True)
class RiskStoreSettings:
    """Where IdP risk events raise session risk after issue."""

    ttl_s: float = 86_400.0
    redis_url: str | None = None


@dataclass(frozen=True, slots=True)
class SSFSettings:
    """Receiver of Security Event Tokens (RFC 8417 / RFC 8935, CAEP)."""

    transmitter_jwks: str | None = None
    issuer: str | None = None
    audience: str | None = None
    algorithms: tuple[str, ...] = ("ES256", "RS256")


@dataclass(frozen=True, slots=True)
class GraphQLSettings:
    """Where requests are GraphQL: only these paths are classified by their operation type."""

    paths: tuple[str, ...] = ("/graphql",)  # exact paths; everywhere else the HTTP method decides
    max_document_bytes: int = 65_536  # a longer GraphQL document (or GET query string) is refused 413


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The sidecar service (`ig-gate serve`)."""

    host: str = "127.0.0.1"
    port: int = 8181
    workers: int = 1
    upstream: str | None = None  # reverse-proxy mode: every other path goes to this URL
    upstream_timeout_s: float = 30.0
    max_body_bytes: int = 1_048_576
    coprocessor_trusted_hops: int = 1  # Apollo Router is a trusted hop in x-forwarded-for
    graceful_timeout_s: float = 10.0
    # at startup complete: gc.collect() then gc.freeze(), so full collections skip the startup heap
    gc_freeze: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings of the gate (middleware) and the sidecar."""

    bundle: BundleSettings = field(default_factory=BundleSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    device: DeviceSettings = field(default_factory=DeviceSettings)
    geo: GeoSettings = field(default_factory=GeoSettings)
    memo: MemoSettings = field(default_factory=MemoSettings)
    decision_log: DecisionLogSettings = field(default_factory=DecisionLogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    risk_store: RiskStoreSettings = field(default_factory=RiskStoreSettings)
    ssf: SSFSettings = field(default_factory=SSFSettings)
    graphql: GraphQLSettings = field(default_factory=GraphQLSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    failure_mode: str = "closed"  # closed | open
    exclude_paths: tuple[str, ...] = ("/healthz",)


# keys whose values are file paths, resolved against the YAML file's directory
_PATH_KEYS = {
    ("bundle", "path"),
    ("bundle", "verification_key"),
    ("bundle", "state_dir"),
    ("identity", "jwks"),
    ("identity", "jwks_ca_file"),
    ("device", "attestation_jwks"),
    ("geo", "database"),
    ("decision_log", "path"),
    ("ssf", "transmitter_jwks"),
}


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build Settings from an optional YAML file, then `IG_GATE_*` overrides from `env` (default
    os.environ), then `overrides` ({section: {key: value}}, e.g. command-line options); ConfigError names
    the key path and where the value was set (file:line:column or the variable)."""
    sources = Sources()
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        raw = read_yaml(path, sources)
        _resolve_paths(raw, path.resolve().parent)
    for key, value, name in env_overrides(os.environ if env is None else env, ENV_PREFIX, _schema()):
        apply(raw, key, value, name, sources)
    for section, changes in (overrides or {}).items():
        for name, value in changes.items():
            apply(raw, (section, name), value, None, sources)
    return _settings(raw, sources)


def settings_from_dict(raw: Mapping[str, Any]) -> Settings:
    """Build Settings from a nested mapping (as parsed from YAML); unknown keys are errors."""
    return _settings(copy.deepcopy(dict(raw)), Sources())


@functools.cache
def _schema() -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(Settings)


def _settings(raw: dict[str, Any], sources: Sources) -> Settings:
    check_keys(raw, _schema(), sources)
    settings = convert(raw, Settings, _schema(), sources)
    _validate_sections(settings, "")
    return settings


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    for section, key in _PATH_KEYS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and "://" not in value and not os.path.isabs(value):
            raw[section][key] = str(base / value)


def _validate_sections(built: Any, where: str) -> None:
    _validate(built, where)
    for f in dataclasses.fields(built):
        value = getattr(built, f.name)
        if dataclasses.is_dataclass(value):
            _validate_sections(value, _join(where, f.name))


def _validate(built: Any, where: str) -> None:
    if isinstance(built, Settings) and built.failure_mode not in ("closed", "open"):
        raise ConfigError(f"{_join(where, 'failure_mode')}: must be 'closed' or 'open'")
    if isinstance(built, IdentitySettings):
        if built.default_risk not in RISK_LEVELS:
            raise ConfigError(f"{_join(where, 'default_risk')}: must be one of {RISK_LEVELS}")
        if "none" in (a.lower() for a in built.algorithms):
            raise ConfigError(f"{_join(where, 'algorithms')}: 'none' is never allowed")
    if isinstance(built, GraphQLSettings):
        if any(not p.startswith("/") for p in built.paths):
            raise ConfigError(f"{_join(where, 'paths')}: every GraphQL path must start with '/'")
        if built.max_document_bytes < 1:
            raise ConfigError(f"{_join(where, 'max_document_bytes')}: must be at least 1")
    if isinstance(built, BundleSettings) and built.min_version is not None:
        try:
            Version(built.min_version)
        except InvalidVersion:
            key = _join(where, "min_version")
            raise ConfigError(f"{key}: not a PEP 440 version: {built.min_version!r}") from None
    if isinstance(built, GeoSettings) and built.forwarded_source not in FORWARDED_SOURCES:
        raise ConfigError(f"{_join(where, 'forwarded_source')}: must be one of {FORWARDED_SOURCES}")
    if isinstance(built, RolloutSettings) and (
        not built.stages or any(not 0 < s <= 1 for s in built.stages) or built.stages[-1] != 1
    ):
        raise ConfigError(f"{_join(where, 'stages')}: fractions in (0, 1], ending with 1.0")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
