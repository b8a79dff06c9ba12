"""Registry credentials: env vars or the Docker config file, against a real htpasswd registry."""

from __future__ import annotations

import base64
import json
import logging
import warnings

import pytest

from ig_gate.bundles.cli import main
from ig_gate.bundles.registry import RegistryClient, RegistryError
from ig_gate.bundles.registry_auth import Credentials, find_credentials
from tests.registry.conftest import start_registry

pytestmark = pytest.mark.integration

USER, PASSWORD = "publisher", "pw-Xq7-never-print-me"


def leaked(text: str) -> bool:
    """Whether text carries the password, plainly or as a Basic credential (any of its base64 forms)."""
    forms = {PASSWORD, "pw-Xq7"}
    for secret in (f"{USER}:{PASSWORD}", f"{USER}:{PASSWORD}-wrong"):
        forms.add(base64.b64encode(secret.encode()).decode().rstrip("="))
    return any(form in text for form in forms)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd, from libc's crypt (cost 4, fast for tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt")
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    assert hashed and hashed.startswith("$2"), "libc crypt has no bcrypt"
    return hashed


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    directory = tmp_path_factory.mktemp("auth-registry")
    (directory / "htpasswd").write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    local = start_registry(
        directory, f"auth:\n  htpasswd:\n    realm: ig-test\n    path: {directory / 'htpasswd'}\n"
    )
    try:
        yield local
    finally:
        local.stop()


def test_env_credentials_authenticate_push_and_pull_and_are_never_logged(auth_registry, caplog):
    caplog.set_level(logging.DEBUG)  # every library's debug output too (oras, requests, urllib3)
    env = {"IG_GATE_REGISTRY_USERNAME": USER, "IG_GATE_REGISTRY_PASSWORD": PASSWORD}
    client = RegistryClient(auth_registry.host, plain_http=True, env=env)
    digest = client.push("policies/private", "dev", b"archive bytes")
    assert client.fetch("policies/private", digest).archive == b"archive bytes"
    assert caplog.records and not leaked(caplog.text) and not leaked(repr(client))


def test_docker_config_credentials_authenticate(auth_registry, tmp_path):
    config = tmp_path / "config.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    client = RegistryClient(auth_registry.host, plain_http=True, env={"DOCKER_CONFIG": str(tmp_path)})
    assert client.push("policies/private", "dockercfg", b"more bytes").startswith("sha256:")


def test_missing_credentials_say_authentication_required(auth_registry, tmp_path):
    client = RegistryClient(auth_registry.host, plain_http=True, env={"DOCKER_CONFIG": str(tmp_path)})
    with pytest.raises(RegistryError, match="authentication required"):
        client.resolve("policies/private", "dev")


def test_wrong_password_fails_without_printing_it(auth_registry, monkeypatch, capsys, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("IG_GATE_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("IG_GATE_REGISTRY_PASSWORD", PASSWORD + "-wrong")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    code = main(["channels", "--registry", auth_registry.host, "--repo", "policies/private", "--plain-http"])
    out, err = capsys.readouterr()
    assert code == 1 and "authentication failed" in err
    assert not leaked(out + err + caplog.text)


def test_env_credentials_win_over_docker_config_and_repr_hides_the_password(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"reg:5000": {"username": "a", "password": "b"}}})
    )
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert find_credentials("reg:5000", env) == Credentials("a", "b")
    env |= {"IG_GATE_REGISTRY_USERNAME": "u", "IG_GATE_REGISTRY_PASSWORD": "secret-p"}
    found = find_credentials("reg:5000", env)
    assert found == Credentials("u", "secret-p") and "secret-p" not in repr(found)
    assert find_credentials("other:5000", {"DOCKER_CONFIG": str(tmp_path)}) is None


@pytest.mark.parametrize(
    "body", ["not json", '{"auths": {"reg:5000": {"auth": "!!!"}}}', '{"auths": [1]}', "[]"]
)
def test_unreadable_docker_config_means_no_credentials(tmp_path, body):
    (tmp_path / "config.json").write_text(body)
    assert find_credentials("reg:5000", {"DOCKER_CONFIG": str(tmp_path)}) is None
