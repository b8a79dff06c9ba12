"""Settings: YAML + IG_GATE_* env, defaults, clear errors with the key path."""

from pathlib import Path

import pytest

from ig_gate.middleware.settings import ConfigError, Settings, load_settings, settings_from_dict


def test_defaults_work_without_a_file():
    settings = load_settings(None, env={})
    assert settings == Settings()
    assert settings.failure_mode == "closed"
    assert settings.bundle.query == "data.ig.zt.decision"


def test_yaml_file_relative_paths_resolve_against_its_directory(tmp_path: Path):
    config = tmp_path / "conf" / "ig-gate.yaml"
    config.parent.mkdir()
    config.write_text(
        "bundle: {path: dist/policy.tgz, verification_key: keys/dev.pub}\n"
        "identity: {jwks: https://idp.example.test/jwks.json}\n"
        "geo: {trusted_proxies: [10.0.0.0/8]}\n"
    )
    settings = load_settings(config, env={})
    assert settings.bundle.path == str(config.parent / "dist/policy.tgz")
    assert settings.bundle.verification_key == str(config.parent / "keys/dev.pub")
    assert settings.identity.jwks == "https://idp.example.test/jwks.json"
    assert settings.geo.trusted_proxies == ("10.0.0.0/8",)


def test_env_overrides_file_with_nested_sections(tmp_path: Path):
    config = tmp_path / "ig-gate.yaml"
    config.write_text("failure_mode: closed\nidentity: {issuer: https://a}\n")
    env = {
        "IG_GATE_FAILURE_MODE": "open",
        "IG_GATE_IDENTITY__ISSUER": "https://b",
        "IG_GATE_IDENTITY__STEPUP__MAX_AGE": "60",
        "IG_GATE_GEO__TRUSTED_PROXIES": "[10.0.0.0/8, 192.168.0.0/16]",
        "UNRELATED": "x",
    }
    settings = load_settings(config, env=env)
    assert settings.failure_mode == "open"
    assert settings.identity.issuer == "https://b"
    assert settings.identity.stepup.max_age == 60
    assert settings.geo.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"identity": {"leeway_s": "soon"}}, "identity.leeway_s: expected an integer, got 'soon'"),
        ({"identity": {"colour": 1}}, "identity.colour: unknown setting"),
        ({"failure_mode": "sometimes"}, "failure_mode: must be 'closed' or 'open'"),
        ({"identity": {"algorithms": ["ES256", "none"]}}, "identity.algorithms: 'none' is never allowed"),
        ({"identity": {"default_risk": "extreme"}}, "identity.default_risk"),
        ({"rollout": {"stages": [0.5, 0.9]}}, "rollout.stages"),
        ({"geo": "everywhere"}, "geo: expected a mapping"),
        ({"bundle": {"require_digests": {"a": 1}}}, "bundle.require_digests: expected a list"),
    ],
)
def test_bad_settings_name_the_key_path(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        settings_from_dict(raw)


def test_unreadable_and_invalid_yaml_files_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("identity: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(bad, env={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(scalar, env={})
