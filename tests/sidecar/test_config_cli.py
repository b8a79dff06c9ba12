"""`ig-gate config check|schema|reference`, and docs/config.md kept equal to what the schema generates."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from ig_gate.middleware.config_reference import REGENERATE, markdown
from ig_gate.sidecar.cli import main
from tests.middleware.conftest import World
from tests.support.sidecar import serve_sidecar, write_config

REPO = Path(__file__).resolve().parents[2]


def test_docs_config_md_is_what_the_schema_generates() -> None:
    docs = REPO / "docs" / "config.md"
    assert docs.is_file() and docs.read_text() == markdown(), f"docs/config.md is stale: run `{REGENERATE}`"


def test_config_check_of_a_valid_file_exits_0_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IG_GATE_REGISTRY_USERNAME", "robot")  # registry credentials: not settings
    monkeypatch.setenv("IG_GATE_REGISTRY_PASSWORD", "s3cret")
    (tmp_path / "bundle.pub").write_text("-----BEGIN PUBLIC KEY-----\n")
    config = tmp_path / "ig-gate.yaml"
    config.write_text(
        "bundle: {registry: registry.example.test, repository: p/ig, verification_key: bundle.pub}\n"
        "identity: {jwks: https://idp.example.test/jwks.json}\n"
    )
    assert main(["config", "check", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (f"ok: {config}: bundles from registry.example.test/p/ig:prod (verified with "
                   f"{tmp_path / 'bundle.pub'}); tokens from https://idp.example.test; failure_mode closed; "
                   "decision log off; sidecar on 127.0.0.1:8181\n")
    assert "s3cret" not in out


@pytest.mark.parametrize(
    ("text", "env", "line"),
    [
        ("rollout:\n  sticky_by: tenat\n", {},
         "{config}:2:14: rollout.sticky_by: must be 'session' or 'tenant', got 'tenat'"),
        ("identity: {jwks: keys/idp.json}\n", {}, "identity.jwks: no such file: {dir}/keys/idp.json"),
        ("memo: {}\n", {"IG_GATE_BUNDEL__PATH": "x"},
         "IG_GATE_BUNDEL__PATH: unknown setting (did you mean IG_GATE_BUNDLE__PATH?)"),
    ],
)
def test_config_check_of_a_bad_file_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    text: str, env: dict[str, str], line: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "ig-gate.yaml"
    config.write_text(text)
    assert main(["config", "check", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "ig-gate: " + line.format(config=config, dir=tmp_path) + "\n"


def test_config_schema_is_a_json_schema_with_ranges_choices_and_markers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    sections = schema["$defs"]
    assert all(d["title"] == name for name, d in sections.items())
    assert sections["memo"]["properties"]["size"]["minimum"] == 1
    assert sections["server"]["properties"]["port"]["maximum"] == 65535
    assert sorted(sections["rollout"]["properties"]["sticky_by"]["enum"]) == ["session", "tenant"]
    assert schema["properties"]["failure_mode"]["enum"] == ["closed", "open"]
    assert schema["properties"]["server"]["x-sidecar-only"] is True
    assert schema["properties"]["identity"]["$ref"] == "#/$defs/identity"
    assert "Settings" not in json.dumps(schema)  # no class names shown to the editor's user


def test_an_editor_validating_with_the_schema_agrees_with_the_loader(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "schema"]) == 0
    validator = jsonschema.Draft202012Validator(json.loads(capsys.readouterr().out))
    manifests = yaml.safe_load_all((REPO / "deploy" / "ig-gate-config.yaml").read_text())
    deploy = next(m for m in manifests if m["metadata"]["name"] == "ig-gate-config")["data"]["ig-gate.yaml"]
    assert list(validator.iter_errors(yaml.safe_load(deploy))) == []
    for bad in ({"memo": {"size": -5}}, {"server": {"port": 0}}, {"rollout": {"sticky_by": "tenat"}},
                {"identity": {"colour": "red"}}, {"tenants": {"acme": {"max_qps": {"reads": 5}}}},
                {"autoscale": {"events": [{"name": "launch"}]}}):
        assert list(validator.iter_errors(bad)), bad


def test_config_reference_marks_sidecar_only_sections_and_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "reference"]) == 0
    text = capsys.readouterr().out
    assert "## `server` (sidecar only)" in text
    assert "## `memo`\n" in text and "## `ssf`\n" in text  # the middleware serves POST /ssf/events too
    row = next(line for line in text.splitlines() if line.startswith("| `jwks`"))
    assert "IG_GATE_IDENTITY__JWKS" in row and "*(file: must exist)*" in row


def test_serve_runs_with_the_documented_registry_credential_variables_set(
    world: World, tmp_path: Path
) -> None:
    env = {"IG_GATE_REGISTRY_USERNAME": "robot", "IG_GATE_REGISTRY_PASSWORD": "s3cret"}
    with serve_sidecar(world.settings(), tmp_path, env=env) as served:
        assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
    assert "s3cret" not in served.log.read_text()


def test_serve_exits_2_naming_a_file_setting_whose_file_is_missing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "keys" / "mdm.json"
    settings = world.settings(device={"attestation_jwks": str(missing)})
    config = write_config(settings, tmp_path / "ig-gate.yaml")
    assert main(["serve", "--config", str(config), "--port", "1"]) == 2
    assert capsys.readouterr().err == f"ig-gate: device.attestation_jwks: no such file: {missing}\n"


def test_serve_refuses_an_env_typo_before_anything_is_built(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IG_GATE_BUNDEL__PATH", "/srv/policy.tgz")
    config = write_config(world.settings(), tmp_path / "ig-gate.yaml")
    assert main(["serve", "--config", str(config), "--port", "1"]) == 2
    assert capsys.readouterr().err == (
        "ig-gate: IG_GATE_BUNDEL__PATH: unknown setting (did you mean IG_GATE_BUNDLE__PATH?)\n"
    )
