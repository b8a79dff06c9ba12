"""`ig-gate dev token` reads the config as the gate does (load_settings: the file, then `IG_GATE_*`), so the
token it mints names the issuer and audience the gate checks, not what the YAML text alone says."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest

from ig_gate.middleware.settings import load_settings
from ig_gate.sidecar.dev_cli import main as dev_main
from tests.middleware.conftest import REPO


def test_dev_token_names_the_issuer_and_audience_the_gate_reads_with_env_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ig_gate.sidecar.demo import prepare

    prepare(tmp_path / "demo", REPO / "policies")
    capsys.readouterr()
    config = tmp_path / "demo" / "ig-gate.yaml"
    monkeypatch.setenv("IG_GATE_IDENTITY__ISSUER", "https://idp.override.test")
    monkeypatch.setenv("IG_GATE_IDENTITY__AUDIENCE", "other-gateway")
    identity = load_settings(config).identity
    assert dev_main(["token", "--config", str(config)]) == 0
    token = capsys.readouterr().out.strip()
    jwks = jwt.PyJWKSet.from_dict(json.loads(Path(identity.jwks or "").read_text()))
    claims = jwt.decode(token, jwks[jwt.get_unverified_header(token)["kid"]].key, algorithms=["ES256"],
                        audience=identity.audience, issuer=identity.issuer)
    assert claims["iss"] == "https://idp.override.test" and claims["aud"] == "other-gateway"


def test_dev_token_with_an_invalid_config_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ig-gate.yaml"
    config.write_text("identity:\n  isuer: https://typo.test\n")
    assert dev_main(["token", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ig-gate: ") and "identity.isuer" in err and err.count("\n") == 1
