"""Typed settings for the gate and the sidecar: one schema, built from a YAML file and `IG_GATE_*` env vars.

These dataclasses are the only schema: msgspec validates against them (config_engine.py), the reference
docs/config.md and `ig-gate config schema` are generated from them (config_reference.py). Every setting
has a default that works for the demo. `IG_GATE_IDENTITY__ISSUER=https://idp` sets `identity.issuer`,
`IG_GATE_FAILURE_MODE=open` a top-level key; the exact rule is in config_engine.py and docs/config.md.
Relative paths in a YAML file are resolved against the file's directory.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import msgspec.inspect
from msgspec import Meta
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ig_gate.middleware.config_engine import (
    ConfigError,
    Sources,
    apply,
    check_keys,
    convert,
    env_overrides,
    key_text,
    missing_files,
    read_yaml,
    resolve_paths,
)
from ig_gate.middleware.paths import ExcludedPathError, parse_excluded

ENV_PREFIX = "IG_GATE_"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")  # as bundles/pin.py normalises a pinned digest

# The schema's building blocks. A setting is `name: Annotated[type, Meta(description=...)] = default`
# (msgspec checks the types, `Literal` choices and `Meta` ranges; a section's `__post_init__` checks the
# rest and raises ValueError("field: what is wrong")). Markers, beside the description:
FILE = Meta(extra={"path": "file"})  # a file that must exist at startup when set (URLs are left alone)
PATH = Meta(extra={"path": "path"})  # a path that may not exist yet; both are resolved like FILE
SIDECAR_ONLY = Meta(extra={"sidecar_only": True}, extra_json_schema={"x-sidecar-only": True})
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(gt=0)]
Fraction = Annotated[float, Meta(gt=0, le=1)]
Rate = Annotated[float, Meta(ge=0, le=1)]
Port = Annotated[int, Meta(ge=1, le=65535)]
Text = Annotated[str, Meta(min_length=1)]
RiskLevel = Literal["low", "medium", "high"]
ForwardedSource = Literal["auto", "x-forwarded-for", "forwarded"]
RISK_LEVELS: tuple[RiskLevel, ...] = get_args(RiskLevel)
FORWARDED_SOURCES: tuple[ForwardedSource, ...] = get_args(ForwardedSource)
AdminAuthMode = Literal["none", "token", "jwt"]


@dataclass(frozen=True, slots=True)
class BundleSettings:
    """Where the policy bundle comes from and how it is verified."""

    path: Annotated[
        str | None, PATH, Meta(description="The signed bundle file (.tar.gz) when neither registry nor "
                               "remote_opa_url is set.")
    ] = "dist/policy.tgz"
    verification_key: Annotated[
        str | None, FILE, Meta(description="PEM public key that verifies bundle signatures (for HS256: a "
                               "file with the secret); required unless allow_unsigned.")
    ] = None
    key_alg: Annotated[
        Literal["ES256", "RS256", "PS256", "HS256"] | None,
        Meta(description="Signature algorithm; null: from the key (EC: ES256, RSA: RS256, secret: HS256)."),
    ] = None
    key_id: Annotated[str | None, Meta(description="Key id of verification_key (else the JWS `kid`, then "
                                                  "the payload `keyid`).")] = None
    scope: Annotated[str | None, Meta(description="The scope a bundle signature must carry.")] = None
    query: Annotated[
        Text, Meta(description="The Rego rule whose value is the decision.")
    ] = "data.ig.zt.decision"
    require_version: Annotated[
        str | None, Meta(description="PEP 440 specifier the bundle version must satisfy, e.g. `>=2.0,<3`.")
    ] = None
    min_version: Annotated[
        str | None, Meta(description="PEP 440 version: the rollback floor even with an empty state_dir "
                                     "(older bundles are always refused).")
    ] = None
    require_digests: Annotated[
        tuple[str, ...], Meta(description="Bundle digests (`sha256:...`) allowed; empty: any signed bundle.")
    ] = ()
    allow_unsigned: Annotated[
        bool, Meta(description="Accept bundles without verification: local development only, never in "
                         "production.")
    ] = False
    registry: Annotated[
        str | None, Meta(description="OCI registry (host[:port]) to pull bundles from; when set, the "
                               "bundle manager polls `channel`.")
    ] = None
    repository: Annotated[
        str | None, Meta(description="The bundle's repository in the registry (required with registry).")
    ] = None
    channel: Annotated[Text, Meta(description="The channel (tag) followed: dev, staging, prod...")] = "prod"
    plain_http: Annotated[
        bool, Meta(description="Reach the registry over HTTP, not HTTPS (local only).")
    ] = False
    poll_interval_s: Annotated[Seconds, Meta(description="Seconds between polls of the channel.")] = 30.0
    state_dir: Annotated[
        str, PATH, Meta(description="Directory where the last-good bundle is kept (created if missing).")
    ] = ".ig-gate/state"
    remote_opa_url: Annotated[
        str | None, Meta(description="Ask this OPA-compatible PDP (http(s)://host[:port]) instead of the "
                               "local engine.")
    ] = None
    # the bundle file: `ig-gate serve` exits 2 when it cannot be used at start, unless told to wait for it
    wait_for_bundle: Annotated[
        bool, Meta(description="`ig-gate serve`: start even when bundle.path cannot be used yet (/readyz "
                   "answers 503 until a verified bundle appears there); false: exit 2 naming the setting.")
    ] = False
    watch_interval_s: Annotated[
        Seconds | None,
        Meta(description="Seconds between checks of bundle.path for a new file (mtime, size, inode), as "
             "`opa run --watch`: a changed file is verified, then swapped in; a bad one keeps the last "
             "good bundle. null: no watching (SIGHUP still reloads)."),
    ] = 2.0

    def __post_init__(self) -> None:
        if self.min_version is not None:
            try:
                Version(self.min_version)
            except InvalidVersion:
                raise ConfigError(f"min_version: not a PEP 440 version: {self.min_version!r}") from None
        if self.require_version is not None:
            try:
                SpecifierSet(self.require_version)
            except InvalidSpecifier:
                spec = self.require_version
                raise ConfigError(f"require_version: not a PEP 440 specifier: {spec!r}") from None
        for i, digest in enumerate(self.require_digests):
            if not _DIGEST.match(digest.strip().lower()):
                raise ConfigError(f"require_digests[{i}]: expected sha256:<64 hex digits>, got {digest!r}")


@dataclass(frozen=True, slots=True)
class StepUpSettings:
    """What counts as a satisfied step-up (RFC 9470)."""

    acr_values: Annotated[tuple[str, ...], Meta(description="Token `acr` values that satisfy a step-up.")] = (
        "mfa",
    )
    amr_values: Annotated[
        tuple[str, ...], Meta(description="Token `amr` values that satisfy a step-up.")
    ] = ("mfa", "hwk")
    max_age: Annotated[
        PositiveInt, Meta(description="Seconds since `auth_time` within which a step-up counts.")
    ] = 300


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """The IdP whose bearer tokens establish the session."""

    issuer: Annotated[Text, Meta(description="The `iss` of bearer tokens.")] = "https://idp.example.test"
    audience: Annotated[Text, Meta(description="The `aud` bearer tokens must name.")] = "ig-gateway"
    jwks: Annotated[
        str | None, FILE, Meta(description="The IdP's key set: a JWKS file or an https URL (required).")
    ] = None
    algorithms: Annotated[
        tuple[Text, ...], Meta(min_length=1, description="Token algorithms accepted (`none` never is).")
    ] = ("ES256", "RS256", "PS256", "EdDSA")
    leeway_s: Annotated[NonNegativeInt, Meta(description="Clock skew allowed on exp/nbf/iat, seconds.")] = 30
    cookie: Annotated[
        str | None, Meta(description="Read the bearer token from this cookie when there is no "
                               "Authorization header.")
    ] = None
    allowed_origins: Annotated[
        tuple[str, ...], Meta(description="Origins (scheme://host[:port]) whose pages may open "
                              "cookie-authenticated WebSockets besides the Host's own; any other Origin is "
                              "refused 4403 (cross-site WebSocket hijacking).")
    ] = ()
    tenant_claim: Annotated[Text, Meta(description="The token claim naming the tenant.")] = "tenant"
    tenant_header: Annotated[
        str | None, Meta(description="A header naming the tenant (e.g. X-Tenant-ID), used only when the "
                               "token has no tenant claim.")
    ] = None
    risk_claim: Annotated[Text, Meta(description="The token claim with the IdP's session risk.")] = "risk"
    default_risk: Annotated[RiskLevel, Meta(description="Session risk when the token has none.")] = "medium"
    jwks_refresh_s: Annotated[
        Seconds, Meta(description="Seconds between refreshes of https key sets.")
    ] = 300.0
    jwks_min_refresh_interval_s: Annotated[
        Seconds, Meta(description="Fewest seconds between refreshes that an unknown `kid` triggers.")
    ] = 30.0
    jwks_ca_file: Annotated[
        str | None, FILE, Meta(description="A private CA bundle for https key-set URLs (IdP and MDM).")
    ] = None
    token_cache_size: Annotated[
        NonNegativeInt, Meta(description="Verified tokens kept until their `exp`; 0: no cache.")
    ] = 10_000
    device_claim: Annotated[
        Text, Meta(description="The token claim naming the user's device; when a token carries it, a device "
                               "attestation counts only if its `device.device_id_claim` is the same.")
    ] = "device_id"
    stepup: StepUpSettings = field(default_factory=StepUpSettings)

    def __post_init__(self) -> None:
        _refuse_alg_none(self.algorithms)
        for i, origin in enumerate(self.allowed_origins):
            scheme, sep, host = origin.partition("://")
            if not (scheme and sep and host) or any(c in host for c in "/?#@ "):
                raise ConfigError(f"allowed_origins[{i}]: expected scheme://host[:port], got {origin!r}")


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """Device posture: a signed attestation header (MDM key set) or a token claim."""

    attestation_jwks: Annotated[
        str | None, FILE, Meta(description="The MDM's key set for device attestations: a JWKS file or an "
                               "https URL; null: no attestations.")
    ] = None
    header: Annotated[Text, Meta(description="The request header with the signed attestation.")] = (
        "X-Device-Attestation"
    )
    algorithms: Annotated[
        tuple[Text, ...], Meta(min_length=1, description="Attestation algorithms accepted (`none` never is).")
    ] = ("ES256", "RS256", "EdDSA")
    posture_claim: Annotated[
        str | None, Meta(description="Read the posture from this bearer-token claim when there is no "
                               "attestation.")
    ] = None
    subject_claim: Annotated[
        Text, Meta(description="The attestation claim that must equal the session's subject (an "
                               "attestation counts only for its own user).")
    ] = "sub"
    device_id_claim: Annotated[
        Text, Meta(description="The attestation claim with the device id (matched to "
                               "`identity.device_claim` when the token has one).")
    ] = "device_id"
    issuer: Annotated[
        str | None, Meta(description="When set, the attestation's `iss` must be this (the MDM).")
    ] = None
    audience: Annotated[
        str | None, Meta(description="When set, the attestation's `aud` must name this.")
    ] = None

    def __post_init__(self) -> None:
        _refuse_alg_none(self.algorithms)


@dataclass(frozen=True, slots=True)
class GeoSettings:
    """Client IP and country resolution."""

    database: Annotated[
        str | None, FILE, Meta(description="A country database (.mmdb); null: the embedded DB-IP Lite one.")
    ] = None
    trusted_proxies: Annotated[
        tuple[str, ...], Meta(description="CIDRs of the proxies whose forwarded headers are believed.")
    ] = ("127.0.0.1/32",)
    forwarded_source: Annotated[
        ForwardedSource, Meta(description="Which header carries the client address.")
    ] = "auto"
    trusted_hops: Annotated[
        PositiveInt | None, Meta(description="Without a peer address (coprocessor): trust this many "
                                       "rightmost hops.")
    ] = None
    cache_size: Annotated[
        NonNegativeInt, Meta(description="Addresses whose country is kept; 0: no cache.")
    ] = 65_536
    anomaly_window_s: Annotated[
        Seconds, Meta(description="Two countries for one subject within this many seconds: an anomaly.")
    ] = 3600.0

    def __post_init__(self) -> None:
        for i, cidr in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(cidr.strip())
            except ValueError as exc:
                raise ConfigError(f"trusted_proxies[{i}]: not a network in CIDR notation ({exc})") from None


@dataclass(frozen=True, slots=True)
class MemoSettings:
    """The decision memo (bounded, oldest entry dropped first, short TTL; keyed by revision + input)."""

    enabled: Annotated[bool, Meta(description="Reuse the decision for an identical input.")] = True
    size: Annotated[PositiveInt, Meta(description="Decisions kept (the oldest dropped when full).")] = 8192
    ttl_s: Annotated[Seconds, Meta(description="Seconds a decision is reused.")] = 5.0


@dataclass(frozen=True, slots=True)
class DecisionLogSettings:
    """The hash-chained decision log (JSON lines, OPA's shape)."""

    path: Annotated[str | None, PATH, Meta(description="The log file (JSON lines); null: no log.")] = None
    queue_size: Annotated[
        PositiveInt, Meta(description="Entries waiting for the writer; beyond, new ones are dropped and "
                                "counted.")
    ] = 10_000
    # where lines are encoded, hashed and written (middleware/decision_log_process.py)
    writer: Annotated[
        Literal["process", "thread"],
        Meta(description="`process`: a child process started with the gate writes the log, the serving "
                         "process only forwards compact tuples; `thread`: a thread of the serving process "
                         "(the fallback where starting a process is not allowed)."),
    ] = "process"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Prometheus metrics."""

    tenants: Annotated[
        tuple[str, ...], Meta(description="Tenant label values; every other tenant is counted as `other`.")
    ] = ()


Price = Annotated[float, Meta(ge=0)]


@dataclass(frozen=True, slots=True)
class CostSettings:
    """The cost model of tenant analytics: prices per unit of each workload profile (any currency), exported
    as `ig_gate_cost_price{profile,unit}` for the recording rules (deploy/prometheus-analytics-rules.yaml)."""

    currency: Annotated[str, Meta(min_length=1, description="Currency code shown in reports.")] = "EUR"
    per_1k_reads: Annotated[Price, Meta(description="Price of 1000 read requests.")] = 0.02
    per_1k_writes: Annotated[Price, Meta(description="Price of 1000 write requests.")] = 0.10
    per_subscription_minute: Annotated[
        Price, Meta(description="Price of one open subscription for one minute.")
    ] = 0.0001
    per_ingest_mb: Annotated[Price, Meta(description="Price of one MB (10^6 bytes) of ingested body.")] = 0.05


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    """Staged rollout of a candidate bundle (shadow, then canary stages), ACA-style checks."""

    enabled: Annotated[
        bool, Meta(description="Roll a new bundle out in stages (else it is enforced at once).")
    ] = True
    stages: Annotated[
        tuple[Fraction, ...], Meta(min_length=1, description="Shares of traffic enforced in turn, ending "
                                                            "with 1.0.")
    ] = (0.05, 0.25, 1.0)
    sticky_by: Annotated[
        Literal["tenant", "session"], Meta(description="What keeps a candidate's share stable.")
    ] = "tenant"
    min_samples: Annotated[
        PositiveInt, Meta(description="Decisions compared before a stage is judged.")
    ] = 200
    max_deny_rate_delta: Annotated[
        Rate, Meta(description="Candidate deny rate above baseline that reverts.")
    ] = 0.05
    max_stepup_rate_delta: Annotated[
        Rate, Meta(description="Candidate step-up rate above baseline that reverts.")
    ] = 0.05
    max_error_rate: Annotated[Rate, Meta(description="Candidate error rate that reverts.")] = 0.01
    max_latency_ratio: Annotated[
        float, Meta(ge=1, description="Candidate latency as a multiple of baseline that reverts.")
    ] = 3.0


@dataclass(frozen=True, slots=True)
class RiskStoreSettings:
    """Where IdP risk events raise session risk after issue."""

    ttl_s: Annotated[Seconds, Meta(description="Seconds a raised session risk is kept.")] = 86_400.0
    redis_url: Annotated[
        str | None, Meta(description="redis://host:port/db shared by every process; null: in memory, one "
                               "process.")
    ] = None
    # the request path reads a local view of Redis kept current by a background subscriber (risk_redis.py)
    stale_after_s: Annotated[
        Seconds, Meta(description="Redis: the staleness bound of the local risk view. A view that has not "
                      "heard from Redis for longer is out of sync: sessions it does not know fail by "
                      "failure_mode.")
    ] = 2.0
    max_entries: Annotated[
        PositiveInt, Meta(description="Redis: risk entries (and warm sessions) the local view holds per "
                          "kind; a new one beyond is dropped and counted, and the view is out of sync.")
    ] = 100_000


@dataclass(frozen=True, slots=True)
class SSFSettings:
    """Receiver of Security Event Tokens (RFC 8417 / RFC 8935, CAEP)."""

    transmitter_jwks: Annotated[
        str | None, FILE, Meta(description="The transmitter's key set (JWKS file or https URL); null: "
                               "no receiver.")
    ] = None
    issuer: Annotated[str | None, Meta(description="The `iss` of events (required with a key set).")] = None
    audience: Annotated[str | None, Meta(description="The `aud` of events (required with a key set).")] = None
    algorithms: Annotated[
        tuple[Text, ...], Meta(min_length=1, description="Event algorithms accepted (`none` never is).")
    ] = ("ES256", "RS256")

    def __post_init__(self) -> None:
        _refuse_alg_none(self.algorithms)


@dataclass(frozen=True, slots=True)
class GraphQLSettings:
    """Where requests are GraphQL: only these paths are classified by their operation type."""

    paths: Annotated[
        tuple[str, ...], Meta(description="Exact paths whose requests are GraphQL; everywhere else the HTTP "
                              "method decides.")
    ] = ("/graphql",)
    max_document_bytes: Annotated[
        PositiveInt, Meta(description="Longest GraphQL document (or GET query string) accepted, bytes; a "
                                       "longer one is refused 413.")
    ] = 65_536

    def __post_init__(self) -> None:
        for i, path in enumerate(self.paths):
            if not path.startswith("/"):
                raise ConfigError(f"paths[{i}]: every GraphQL path must start with '/', got {path!r}")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The sidecar service (`ig-gate serve`)."""

    host: Annotated[Text, Meta(description="The client listener's address.")] = "127.0.0.1"
    port: Annotated[Port, Meta(description="The client listener's port.")] = 8181
    workers: Annotated[PositiveInt, Meta(description="Worker processes.")] = 1
    upstream: Annotated[
        str | None, Meta(description="Reverse-proxy mode: every other path goes to this http(s) URL.")
    ] = None
    upstream_timeout_s: Annotated[Seconds, Meta(description="Seconds an upstream answer may take.")] = 30.0
    max_body_bytes: Annotated[PositiveInt, Meta(description="Largest request body read, bytes.")] = 1_048_576
    client_body_timeout_s: Annotated[
        Seconds, Meta(description="Reverse proxy: seconds from a request's start within which its body must "
                      "have fully arrived (else 408). Bodies up to max_body_bytes are read whole before an "
                      "upstream connection is taken; a larger body streams on after that.")
    ] = 30.0
    max_upstream_per_client: Annotated[
        PositiveInt, Meta(description="Reverse proxy: concurrent upstream exchanges per client address "
                          "(as geo resolves it, through trusted proxies); beyond it 429 with Retry-After.")
    ] = 32
    allow_underscore_headers: Annotated[
        bool, Meta(description="Reverse proxy: forward client headers with '_' in their names (off, as "
                   "nginx's underscores_in_headers); never under a name the proxy sets (X_Auth_Subject).")
    ] = False
    coprocessor_trusted_hops: Annotated[
        NonNegativeInt, Meta(description="Coprocessor payloads carry no peer address: this many rightmost "
                             "X-Forwarded-For / Forwarded entries were appended by our own load balancer(s) "
                             "in front of the Router. 0: those client-sent headers are not read, geo is "
                             "unknown.")
    ] = 0
    graceful_timeout_s: Annotated[
        Seconds, Meta(description="Seconds in-flight requests may finish after SIGTERM.")
    ] = 10.0
    admin_host: Annotated[
        Text, Meta(description="The admin listener's address (Data API, /v1/status, /metrics, bundle "
                   "health; never on the client port). Off loopback, admin_auth must be set.")
    ] = "127.0.0.1"
    admin_port: Annotated[Port, Meta(description="The admin listener's port (not port).")] = 8182
    admin_auth: Annotated[
        AdminAuthMode, Meta(description="The admin listener's bearer check: none (loopback only, as OPA), "
                            "token (admin_token_file), jwt (the IdP's tokens, by scope/scp/roles).")
    ] = "none"
    admin_token_file: Annotated[
        str | None, FILE, Meta(description="Lines `TOKEN SCOPE...` (admin_read_scope / admin_write_scope).")
    ] = None
    admin_read_scope: Annotated[
        Text, Meta(description="The scope that allows GET/HEAD on the admin listener.")
    ] = "ig-gate:read"
    admin_write_scope: Annotated[
        Text, Meta(description="The scope that also allows evaluating caller-supplied input (POST, "
                   "?input=); implies read.")
    ] = "ig-gate:admin"
    gc_freeze: Annotated[
        bool, Meta(description="At startup complete, gc.collect() then gc.freeze(): full collections "
                         "skip the startup heap.")
    ] = True

    def __post_init__(self) -> None:
        if self.admin_auth == "token" and not self.admin_token_file:
            raise ConfigError("admin_token_file: required when admin_auth is token")


Profile = Literal["read", "write", "subscription", "ingest"]


@dataclass(frozen=True, slots=True)
class ComponentProfile:
    """What one pod of a component serves per profile, and its replica bounds (`autoscale.profiles.*`)."""

    read_qps_per_pod: Annotated[float, Meta(gt=0, description="Read requests/s one pod serves.")] = 600.0
    write_qps_per_pod: Annotated[float, Meta(gt=0, description="Write requests/s one pod serves.")] = 200.0
    subs_fanout_per_pod: Annotated[
        float, Meta(gt=0, description="Open subscriptions (fan-out) one pod holds.")
    ] = 2000.0
    ingest_qps_per_pod: Annotated[float, Meta(gt=0, description="Ingest requests/s one pod serves.")] = 100.0
    min_replicas: Annotated[PositiveInt, Meta(description="Fewest replicas recommended.")] = 1
    max_replicas: Annotated[PositiveInt, Meta(description="Most replicas recommended.")] = 50

    def __post_init__(self) -> None:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: must be >= min_replicas ({self.min_replicas})")


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    """A known traffic event (`autoscale.events[]`): capacity for `multiplier` x demand from `lead_s` before
    `start` until `end` (ISO 8601 times with a UTC offset, e.g. 2026-12-24T18:00:00Z)."""

    name: Annotated[Text, Meta(description="What the event is (shown in the recommendation).")]
    start: Annotated[Text, Meta(description="When the event starts (ISO 8601 with offset).")]
    end: Annotated[Text, Meta(description="When it ends (ISO 8601 with offset).")]
    multiplier: Annotated[float, Meta(gt=0, description="Expected demand as a multiple of the demand "
                                      "measured when pre-scaling starts.")] = 2.0
    lead_s: Annotated[float, Meta(ge=0, description="Seconds before `start` that pre-scaling begins "
                                  "(at least the pods' start-up time).")] = 600.0

    def __post_init__(self) -> None:
        from datetime import datetime

        try:
            start, end = datetime.fromisoformat(self.start), datetime.fromisoformat(self.end)
        except ValueError as exc:
            raise ValueError(f"start: not an ISO 8601 time ({exc})") from None
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start: give a UTC offset (e.g. Z) on start and end")
        if end <= start:
            raise ValueError(f"end: must be after start ({self.start})")


@dataclass(frozen=True, slots=True)
class AutoscaleSettings:
    """The replica recommender (middleware/autoscale.py) and the demand exporter (middleware/demand.py)."""

    profiles: Annotated[
        dict[str, ComponentProfile], Meta(description="Per component the gate's demand feeds: capacity "
                                          "of one pod per profile, min/max replicas.")
    ] = field(default_factory=lambda: {"gateway": ComponentProfile()})
    routes: Annotated[
        tuple[str, ...], Meta(description="Route templates that get their own `route` label ('/users/{id}'); "
                              "graphql.paths always do; every other path is `other`.")
    ] = ()
    tick_s: Annotated[Seconds, Meta(description="Seconds between EWMA updates and recommendations.")] = 5.0
    ewma_half_life_s: Annotated[Seconds, Meta(description="Half-life of the per-profile rate EWMA.")] = 30.0
    target_utilization: Annotated[
        Fraction, Meta(description="Share of a pod's capacity the recommendation plans to use.")
    ] = 1.0
    dead_band: Annotated[
        Annotated[float, Meta(ge=0, lt=1)], Meta(description="Hysteresis: scale down only when the smaller "
                                                 "fleet would still have this share of its capacity spare, "
                                                 "besides the forecast's headroom (waived while demand "
                                                 "clearly falls).")
    ] = 0.02
    up_cooldown_s: Annotated[
        float, Meta(ge=0, description="Seconds after a step up before the next step up.")
    ] = 60.0
    down_cooldown_s: Annotated[
        float, Meta(ge=0, description="Seconds after a step up before a step down (also the window in "
                    "which a reversal counts as thrash).")
    ] = 600.0
    down_step_s: Annotated[float, Meta(ge=0, description="Seconds after a step down before the next.")] = 60.0
    headroom_sigmas: Annotated[
        float, Meta(ge=0, description="Headroom over the forecast, in standard deviations of Holt's "
                    "one-step forecast error.")
    ] = 2.0
    max_step_up: Annotated[PositiveInt, Meta(description="Most replicas added in one step.")] = 10
    max_step_down: Annotated[PositiveInt, Meta(description="Most replicas removed in one step.")] = 3
    forecast_horizon_s: Annotated[
        float, Meta(ge=0, description="Holt forecast horizon (pod start-up + scrape + decision delay).")
    ] = 240.0
    holt_alpha: Annotated[Fraction, Meta(description="Holt level smoothing (0-1].")] = 0.5
    holt_beta: Annotated[Fraction, Meta(description="Holt trend smoothing (0-1].")] = 0.1
    events: Annotated[
        tuple[ScheduledEvent, ...], Meta(description="Calendar of scheduled events to pre-scale for.")
    ] = ()

    def __post_init__(self) -> None:
        if not self.profiles:
            raise ValueError("profiles: name at least one component")
        for i, route in enumerate(self.routes):
            if not route.startswith("/"):
                raise ValueError(f"routes[{i}]: a route template starts with '/', got {route!r}")


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """One tenant (`tenants.<id>`)."""

    max_qps: Annotated[
        dict[Profile, Annotated[float, Meta(ge=1)]], Meta(description="Requests/s allowed per profile "
                                                          "(>= 1; a missing profile: no cap); beyond: 429.")
    ] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Logging: `ig-gate serve` applies it; the middleware's host app calls
    `ig_gate.middleware.logs.configure(settings)` (or configures the `ig_gate` logger itself)."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"], Meta(description="The `ig_gate` loggers' level.")
    ] = "info"
    format: Annotated[
        Literal["text", "json"], Meta(description="text: one readable line per record; json: one JSON object "
                                      "per line (time, level, logger, message and the record's fields).")
    ] = "text"
    access: Annotated[
        bool, SIDECAR_ONLY, Meta(description="Sidecar: one line per request on `ig_gate.access` (method, "
                                 "normalised path, status, duration, decision id; never a token or a query "
                                 "string).")
    ] = False


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
    cost: CostSettings = field(default_factory=CostSettings)  # tenant analytics' cost model
    risk_store: RiskStoreSettings = field(default_factory=RiskStoreSettings)
    ssf: SSFSettings = field(default_factory=SSFSettings)  # the middleware serves POST /ssf/events too
    graphql: GraphQLSettings = field(default_factory=GraphQLSettings)
    log: LogSettings = field(default_factory=LogSettings)  # applied by `ig-gate serve` (middleware: logs.py)
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)  # recommender, exporter
    tenants: Annotated[
        dict[str, TenantSettings], Meta(description="Per-tenant settings (caps), by tenant id.")
    ] = field(default_factory=dict)
    server: Annotated[ServerSettings, SIDECAR_ONLY] = field(default_factory=ServerSettings)
    failure_mode: Annotated[
        Literal["closed", "open"], Meta(description="No usable bundle, engine or signal error: refuse "
                                            "(closed, 503/403) or let requests through (open).")
    ] = "closed"
    exclude_paths: Annotated[
        tuple[str, ...], Meta(description="Paths the gate lets through undecided, matched against the "
                              "normalised path: '/healthz' exactly, '/public/' (ending in '/') as a prefix. "
                              "Only GET, HEAD and OPTIONS pass unless the entry names its methods before "
                              "the path: 'POST /webhooks/', 'GET,POST /hooks/github'.")
    ] = ("/healthz",)

    def __post_init__(self) -> None:
        for i, entry in enumerate(self.exclude_paths):
            try:
                parse_excluded(entry)
            except ExcludedPathError as exc:
                raise ConfigError(f"exclude_paths[{i}]: {exc}") from None


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
    stages = settings.rollout.stages  # across items: left to the RolloutController when built by hand
    if stages[-1] != 1 or any(a >= b for a, b in itertools.pairwise(stages)):
        raise sources.error(("rollout", "stages"), f"must be increasing and end with 1.0, got {list(stages)}")
    return settings


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    resolve_paths(raw, _schema(), base)


def check_files(settings: Settings) -> None:
    """The startup check: ConfigError for the first FILE setting (a key set, key, CA bundle, database or
    token file) whose file does not exist; URLs are not fetched here."""
    for key, value in missing_files(settings, _schema()):
        raise ConfigError(f"{key_text(key)}: no such file: {value}")


def _refuse_alg_none(algorithms: tuple[str, ...]) -> None:
    if "none" in (a.lower() for a in algorithms):
        raise ConfigError("algorithms: 'none' is never allowed")
