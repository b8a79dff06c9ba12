"""The settings schema validates itself: choices, ranges and unknown keys refused with the key path and,
for YAML, the file, line and column; env overrides only for real setting names; file checks; no Python
class names in any message."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from ig_gate.middleware import settings as settings_module
from ig_gate.middleware.config_engine import key_text, leaves, unwrap
from ig_gate.middleware.settings import ConfigError, check_files, load_settings, settings_from_dict

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "ig-gate.yaml"
    config.write_text(text)
    return config


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("memo:\n  size: -5\n", "2:9", "memo.size: must be >= 1, got -5"),
        ("server:\n  port: 0\n", "2:9", "server.port: must be >= 1, got 0"),
        ("server: {port: 70000}\n", "1:16", "server.port: must be <= 65535, got 70000"),
        ("rollout:\n  sticky_by: tenat\n", "2:14",
         "rollout.sticky_by: must be 'session' or 'tenant', got 'tenat'"),
        ("rollout:\n  stages: [0.5, 2]\n", "2:17", "rollout.stages[1]: must be <= 1.0, got 2"),
        ("memo:\n  ttl_s: 0\n", "2:10", "memo.ttl_s: must be > 0.0, got 0"),
        ("geo:\n  trusted_hops: 0\n", "2:17", "geo.trusted_hops: must be >= 1, got 0"),
        ("geo:\n  forwarded_source: x-real-ip\n", "2:21",
         "geo.forwarded_source: must be one of 'auto', 'forwarded' or 'x-forwarded-for', got 'x-real-ip'"),
        ("failure_mode: sometimes\n", "1:15", "failure_mode: must be 'closed' or 'open', got 'sometimes'"),
        ("identity:\n  leeway_s: soon\n", "2:13", "identity.leeway_s: expected an integer, got 'soon'"),
        ("identity:\n  issuer: ''\n", "2:11", "identity.issuer: must not be empty, got ''"),
        ("bundle:\n  key_alg: none\n", "2:12",
         "bundle.key_alg: must be one of 'ES256', 'HS256', 'PS256', 'RS256' or null, got 'none'"),
        ("identity:\n  issuer: https://a\n  colour: red\n", "3:3", "identity.colour: unknown setting"),
        ("device:\n  algorithms: [ES256, none]\n", "2:15", "device.algorithms: 'none' is never allowed"),
        ("identity:\n  allowed_origins: [https://a.test, a.test]\n", "2:37",
         "identity.allowed_origins[1]: expected scheme://host[:port], got 'a.test'"),
        ("bundle:\n  require_version: '=>2'\n", "2:20",
         "bundle.require_version: not a PEP 440 specifier: '=>2'"),
        ("graphql:\n  paths: [/graphql, api]\n", "2:21",
         "graphql.paths[1]: every GraphQL path must start with '/', got 'api'"),
        ("server:\n  admin_auth: token\n", "2:3",
         "server.admin_token_file: required when admin_auth is token"),
        ("rollout:\n  stages: [0.5, 0.25, 1.0]\n", "2:11",
         "rollout.stages: must be increasing and end with 1.0, got [0.5, 0.25, 1.0]"),
        ("geo: everywhere\n", "1:6", "geo: expected a mapping, got 'everywhere'"),
    ],
)
def test_a_bad_yaml_value_is_refused_with_file_line_column_and_key_path(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    config = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert str(caught.value) == f"{config}:{where}: {message}"


def test_the_same_bad_values_are_refused_from_a_mapping_with_the_key_path() -> None:
    for raw, message in [
        ({"memo": {"size": -5}}, "memo.size: must be >= 1, got -5"),
        ({"server": {"port": 0}}, "server.port: must be >= 1, got 0"),
        ({"rollout": {"sticky_by": "tenat"}},
         "rollout.sticky_by: must be 'session' or 'tenant', got 'tenat'"),
    ]:
        with pytest.raises(ConfigError) as caught:
            settings_from_dict(raw)
        assert str(caught.value) == message


def test_invalid_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    config = _write(tmp_path, "identity:\n  issuer: https://a\n  audience: [unclosed\nmemo: {}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config))}:4:5: invalid YAML: expected ','"):
        load_settings(config, env={})


def test_a_key_set_twice_is_refused_with_both_places(tmp_path: Path) -> None:
    config = _write(tmp_path, "memo:\n  size: 1\n  size: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert str(caught.value) == f"{config}:3:3: memo.size: set twice (first at {config}:2:3)"


def test_an_empty_section_means_its_defaults(tmp_path: Path) -> None:
    config = _write(tmp_path, "ssf:\nmemo:\n  size: 10\n")
    settings = load_settings(config, env={})
    assert settings.ssf == settings_module.SSFSettings() and settings.memo.size == 10


def test_an_env_variable_with_a_typo_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env={"IG_GATE_BUNDEL__PATH": "/srv/policy.tgz"})
    assert str(caught.value) == "IG_GATE_BUNDEL__PATH: unknown setting (did you mean IG_GATE_BUNDLE__PATH?)"
    with pytest.raises(ConfigError, match=r"^IG_GATE_MEMO__SIZZE: unknown setting"):
        load_settings(None, env={"IG_GATE_MEMO__SIZZE": "10"})
    with pytest.raises(ConfigError, match=r"^IG_GATE_IDENTITY__STEPUP: names a section, not a setting"):
        load_settings(None, env={"IG_GATE_IDENTITY__STEPUP": "60"})


def test_an_env_value_refused_names_the_variable_and_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env={"IG_GATE_MEMO__SIZE": "-5"})
    assert str(caught.value) == "IG_GATE_MEMO__SIZE: memo.size: must be >= 1, got -5"
    with pytest.raises(ConfigError, match=r"^IG_GATE_SERVER__PORT: not a YAML value: "):
        load_settings(None, env={"IG_GATE_SERVER__PORT": "[8080"})


def test_registry_credentials_and_other_non_setting_variables_are_ignored() -> None:
    env = {
        "IG_GATE_REGISTRY_USERNAME": "robot",
        "IG_GATE_REGISTRY_PASSWORD": "s3cret",
        "IG_GATE_SOMETHING_ELSE": "x",
        "IG_GATE_FAILURE_MODE": "open",
    }
    settings = load_settings(None, env=env)
    assert settings.failure_mode == "open"
    assert settings == settings_from_dict({"failure_mode": "open"})


def test_env_text_settings_are_verbatim_lists_accept_one_bare_value_and_empty_is_null() -> None:
    settings = load_settings(None, env={
        "IG_GATE_IDENTITY__AUDIENCE": "123",
        "IG_GATE_GEO__TRUSTED_PROXIES": "10.0.0.0/8",
        "IG_GATE_METRICS__TENANTS": "[acme, globex]",
        "IG_GATE_BUNDLE__PATH": "",
        "IG_GATE_SERVER__GC_FREEZE": "false",
    })
    assert settings.identity.audience == "123"
    assert settings.geo.trusted_proxies == ("10.0.0.0/8",)
    assert settings.metrics.tenants == ("acme", "globex")
    assert settings.bundle.path is None
    assert settings.server.gc_freeze is False


def test_command_line_overrides_win_and_are_validated_by_the_schema(tmp_path: Path) -> None:
    config = _write(tmp_path, "server: {port: 9000}\n")
    env = {"IG_GATE_SERVER__PORT": "9001"}
    settings = load_settings(config, env=env, overrides={"server": {"port": 9002}})
    assert settings.server.port == 9002
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={}, overrides={"server": {"port": 0}})
    assert str(caught.value) == "server.port: must be >= 1, got 0"


def test_relative_paths_of_every_path_setting_resolve_against_the_file(tmp_path: Path) -> None:
    config = _write(tmp_path, "decision_log: {path: logs/d.jsonl}\nssf: {transmitter_jwks: keys/ssf.json}\n"
                              "identity: {jwks_ca_file: ca.pem}\nbundle: {remote_opa_url: http://pdp:8181}\n")
    settings = load_settings(config, env={})
    assert settings.decision_log.path == str(tmp_path / "logs/d.jsonl")
    assert settings.ssf.transmitter_jwks == str(tmp_path / "keys/ssf.json")
    assert settings.identity.jwks_ca_file == str(tmp_path / "ca.pem")
    assert settings.bundle.remote_opa_url == "http://pdp:8181"


def test_file_settings_must_exist_at_startup_and_urls_are_not_checked(tmp_path: Path) -> None:
    (tmp_path / "idp.json").write_text("{}")
    ok = settings_from_dict({"identity": {"jwks": str(tmp_path / "idp.json")},
                             "device": {"attestation_jwks": "https://mdm.example.test/jwks.json"}})
    check_files(ok)
    missing = settings_from_dict({"geo": {"database": str(tmp_path / "nope.mmdb")}})
    with pytest.raises(ConfigError) as caught:
        check_files(missing)
    assert str(caught.value) == f"geo.database: no such file: {tmp_path / 'nope.mmdb'}"


def test_no_message_names_a_python_class(tmp_path: Path) -> None:
    classes = {name for name, value in vars(settings_module).items() if isinstance(value, type)}
    classes |= {"int", "str", "float", "bool", "dict", "tuple", "NoneType", "object", "array", "null`"}
    bad_inputs = [
        {"memo": {"size": "big"}}, {"memo": {"enabled": 1}}, {"memo": []}, {"geo": {"trusted_proxies": 5}},
        {"geo": {"trusted_proxies": [1]}}, {"bundle": {"path": 1}}, {"rollout": {"stages": "all"}},
        {"identity": {"stepup": {"max_age": None}}}, {"server": {"port": 1.5}}, {"failure_mode": None},
        {"identity": {"algorithms": ["ES256", "none"]}},
    ]
    for raw in bad_inputs:
        with pytest.raises(ConfigError) as caught:
            settings_from_dict(raw)
        words = set(re.findall(r"[A-Za-z_`]+", str(caught.value)))
        assert not words & classes, (raw, str(caught.value))
        assert "`" not in str(caught.value), str(caught.value)


def test_every_setting_has_a_description_for_the_reference() -> None:
    root = msgspec.inspect.type_info(settings_module.Settings)
    undescribed = [key_text(key) for key, f in leaves(root) if not unwrap(f.type)[2].get("description")]
    assert undescribed == [], "give each a Meta(description=...) in middleware/settings.py"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tenants": {"globex": {}, "acme": {"max_qps": {"read": 0}}}},
         "tenants.acme.max_qps.read: must be >= 1.0, got 0"),
        ({"tenants": {"acme": {"max_qps": {"read": 3, "reads": 10}}}},
         "tenants.acme.max_qps.reads: not a valid key: must be one of 'ingest', 'read', 'subscription' or "
         "'write'"),
        ({"tenants": {"acme": {"colour": 1}}}, "tenants.acme.colour: unknown setting"),
        ({"autoscale": {"profiles": {"a": {}, "gateway": {"min_replicas": 5, "max_replicas": 2}}}},
         "autoscale.profiles.gateway.max_replicas: must be >= min_replicas (5)"),
        ({"autoscale": {"events": [{"name": "launch"}]}}, "autoscale.events[0].start: required"),
        ({"autoscale": {"events": [{"name": "x", "start": "2026-12-24T18:00:00Z",
                                    "end": "2026-12-25T00:00:00Z", "colour": 2}]}},
         "autoscale.events[0].colour: unknown setting"),
    ],
)
def test_settings_inside_mappings_and_lists_are_named_by_their_key_path(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw)
    assert str(caught.value) == message


def test_a_bad_value_under_a_mapping_key_points_at_its_line_and_column(tmp_path: Path) -> None:
    text = "tenants:\n  acme:\n    max_qps: {read: 10}\n  globex:\n    max_qps: {write: 0}\n"
    config = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert str(caught.value) == f"{config}:5:22: tenants.globex.max_qps.write: must be >= 1.0, got 0"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"geo": {"trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]}},
         "geo.trusted_proxies[1]: not a network in CIDR notation (10.0.0.1/8 has host bits set)"),
        ({"bundle": {"require_digests": ["sha256:abc"]}},
         "bundle.require_digests[0]: expected sha256:<64 hex digits>, got 'sha256:abc'"),
    ],
)
def test_networks_and_pinned_digests_are_checked_when_loaded(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw)
    assert str(caught.value) == message
