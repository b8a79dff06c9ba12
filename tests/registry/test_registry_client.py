"""The OCI client against a real registry: push, resolve, pull by digest, re-tag, and every refusal."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from ig_gate.bundles.registry import (
    BUNDLE_MEDIA_TYPE,
    CONFIG_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    RegistryClient,
    RegistryError,
    build_manifest,
    check_repository,
    sha256_digest,
)
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

ARCHIVE = b"\x1f\x8b not really a bundle, just bytes " + os.urandom(64)
SIGNATURE = b"MEUCIQ-fake-detached-signature=="


@pytest.fixture(scope="module")
def pushed(client) -> str:
    annotations = {"org.opencontainers.image.version": "1.0.0"}
    return client.push("policies/gate", "dev", ARCHIVE, SIGNATURE, annotations)


def test_push_returns_the_digest_the_tag_resolves_to(client, pushed):
    assert pushed.startswith("sha256:")
    assert client.resolve("policies/gate", "dev") == pushed


def test_fetch_by_digest_returns_the_exact_bytes_pushed(client, pushed):
    artifact = client.fetch("policies/gate", pushed)
    assert artifact.archive == ARCHIVE
    assert artifact.signature == SIGNATURE
    assert artifact.digest == pushed == sha256_digest(artifact.manifest)
    assert artifact.bundle_digest == sha256_digest(ARCHIVE)
    assert artifact.annotations == {"org.opencontainers.image.version": "1.0.0"}


def test_manifest_uses_opa_media_types_and_a_signature_layer(client, pushed):
    manifest = json.loads(client.fetch("policies/gate", pushed).manifest)
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert manifest["layers"][0]["mediaType"] == BUNDLE_MEDIA_TYPE
    assert manifest["layers"][1]["mediaType"].startswith("application/vnd.ig-gate.bundle.signature")


def test_retag_keeps_the_digest(client, pushed):
    client.tag("policies/gate", pushed, "staging")
    assert client.resolve("policies/gate", "staging") == pushed
    assert client.fetch_tag("policies/gate", "staging").archive == ARCHIVE


def test_unsigned_push_has_no_signature_layer(client):
    digest = client.push("policies/unsigned", "dev", ARCHIVE)
    assert client.fetch("policies/unsigned", digest).signature is None


def test_unknown_tag_resolves_to_none_and_fetch_tag_says_not_found(client, pushed):
    assert client.resolve("policies/gate", "prod") is None
    with pytest.raises(RegistryError, match="policies/gate:prod: not found"):
        client.fetch_tag("policies/gate", "prod")


def test_unknown_digest_is_not_found(client, pushed):
    with pytest.raises(RegistryError, match="not found"):
        client.fetch("policies/gate", sha256_digest(b"nothing"))


def test_blob_corrupted_in_storage_is_a_digest_mismatch(registry, client):
    archive = b"tamper me " + os.urandom(32)
    digest = client.push("policies/tamper", "dev", archive)
    path = registry.blob_path(sha256_digest(archive))
    path.write_bytes(bytes(b ^ 0x01 for b in path.read_bytes()))
    with pytest.raises(RegistryError, match="digest mismatch"):
        client.fetch("policies/tamper", digest)


def test_blob_of_another_size_is_a_size_mismatch(registry, client):
    archive = b"grow me " + os.urandom(32)
    digest = client.push("policies/grow", "dev", archive)
    registry.blob_path(sha256_digest(archive)).write_bytes(archive[:-4])
    with pytest.raises(RegistryError, match="size mismatch"):
        client.fetch("policies/grow", digest)


def test_manifest_with_a_foreign_layer_is_refused(registry, client):
    manifest, _ = build_manifest(ARCHIVE, None)
    document = json.loads(manifest)
    document["layers"].append({**document["layers"][0], "mediaType": "application/x-evil"})
    raw = json.dumps(document).encode()
    response = requests.put(f"http://{registry.host}/v2/policies/gate/manifests/foreign", data=raw,
                            headers={"Content-Type": MANIFEST_MEDIA_TYPE}, timeout=5)
    assert response.status_code == 201
    with pytest.raises(RegistryError, match="unexpected layer media type"):
        client.fetch("policies/gate", sha256_digest(raw))


def test_unreachable_registry_fails_fast_with_a_clear_error():
    dead = RegistryClient(f"127.0.0.1:{free_port()}", plain_http=True, env={})
    started = time.monotonic()
    with pytest.raises(RegistryError, match="unreachable"):
        dead.resolve("policies/gate", "dev")
    assert time.monotonic() - started < 2.0  # no oras retry-with-sleep


def test_https_is_the_default_and_plain_http_registry_is_refused_over_tls(registry):
    with pytest.raises(RegistryError, match=r"TLS|unreachable"):
        RegistryClient(registry.host, env={}).resolve("policies/gate", "dev")


@pytest.mark.parametrize("name", ["Policies/Gate", "policies//gate", "../etc", "policies/gate:dev", ""])
def test_invalid_repository_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid repository name"):
        check_repository(name)


def test_manifest_corrupted_in_storage_is_a_digest_mismatch(registry, client):
    digest = client.push("policies/manifest-tamper", "dev", b"bundle " + os.urandom(16))
    path = registry.blob_path(digest)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":2 '))
    with pytest.raises(RegistryError, match="digest mismatch: the manifest served"):
        client.fetch("policies/manifest-tamper", digest)
