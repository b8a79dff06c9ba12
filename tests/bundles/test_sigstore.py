"""Keyless Sigstore verification against an operator-supplied trusted root, offline.

A test CA, CT log and transparency log are minted once per module (tests/support/sigstore_ca.py).
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.resources
import json
import socket
from collections.abc import Callable

import pytest

from ig_gate.bundles.cli import main as cli_main
from ig_gate.bundles.errors import SignatureError
from ig_gate.bundles.sigstore_verify import verify_sigstore_bundle
from tests.support.sigstore_ca import SigstoreWorld, make_ca, make_world, new_key

IDENTITY = "release-bot@ig-gate.test"
ISSUER = "https://idp.ig-gate.test"
ARTIFACT = b"\x1f\x8b policy bundle archive bytes \x00\xff"


@pytest.fixture(scope="module")
def world() -> SigstoreWorld:
    return make_world()


@pytest.fixture(scope="module")
def trusted_root(world: SigstoreWorld) -> bytes:
    return world.trusted_root_json()


@pytest.fixture(scope="module")
def bundle(world: SigstoreWorld) -> bytes:
    return world.sign(ARTIFACT, identity=IDENTITY, issuer=ISSUER)


def _rejected(bundle: bytes, trusted_root: bytes, *, artifact: bytes = ARTIFACT, identity: str = IDENTITY,
              issuer: str = ISSUER) -> str:
    """Verify expecting failure; return the one-line message."""
    with pytest.raises(SignatureError) as caught:
        verify_sigstore_bundle(artifact, bundle, trusted_root, identity=identity, issuer=issuer)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _edit_entry(bundle: bytes, edit: Callable[[dict], None]) -> bytes:
    doc = json.loads(bundle)
    edit(doc["verificationMaterial"]["tlogEntries"][0])
    return json.dumps(doc).encode()


def test_valid_bundle_verifies_with_network_disabled(bundle, trusted_root, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("sigstore verification tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert verify_sigstore_bundle(ARTIFACT, bundle, trusted_root, identity=IDENTITY, issuer=ISSUER) is None


def test_uri_identity_verifies(world, trusted_root):
    workflow = "https://ci.ig-gate.test/policies/.ci/release.yml@refs/heads/main"
    signed = world.sign(ARTIFACT, identity=workflow, issuer=ISSUER)
    verify_sigstore_bundle(ARTIFACT, signed, trusted_root, identity=workflow, issuer=ISSUER)


def test_wrong_identity_is_rejected(bundle, trusted_root):
    message = _rejected(bundle, trusted_root, identity="mallory@ig-gate.test")
    assert "SANs do not match mallory@ig-gate.test" in message


def test_wrong_issuer_is_rejected(bundle, trusted_root):
    message = _rejected(bundle, trusted_root, issuer="https://evil.example.test")
    assert "OIDCIssuer does not match" in message


@pytest.mark.parametrize("identity, issuer", [("", ISSUER), (IDENTITY, "")])
def test_empty_identity_or_issuer_is_refused(bundle, trusted_root, identity, issuer):
    assert "identity and an issuer" in _rejected(bundle, trusted_root, identity=identity, issuer=issuer)


def test_tampered_artifact_is_rejected(bundle, trusted_root):
    tampered = ARTIFACT[:-1] + bytes([ARTIFACT[-1] ^ 1])
    assert "digest mismatch" in _rejected(bundle, trusted_root, artifact=tampered)


def test_signature_not_over_artifact_is_rejected(bundle, trusted_root):
    """Without the digest hint, the ECDSA signature itself must fail on other bytes."""
    doc = json.loads(bundle)
    del doc["messageSignature"]["messageDigest"]
    message = _rejected(json.dumps(doc).encode(), trusted_root, artifact=b"another archive")
    assert "Signature is invalid for input" in message


@pytest.mark.parametrize(
    "component, expected",
    [
        ("ca", "certificate chain"),
        ("ctlog_key", "SCT"),
        ("rekor_key", "invalid log entry"),
    ],
)
def test_bundle_from_a_world_not_in_the_trusted_root_is_rejected(world, trusted_root, component, expected):
    """Replace one trust anchor (CA, CT log or transparency log) with one the trusted root does not list."""
    replacement = make_ca() if component == "ca" else new_key()
    rogue = dataclasses.replace(world, **{component: replacement})
    signed = rogue.sign(ARTIFACT, identity=IDENTITY, issuer=ISSUER)
    assert expected in _rejected(signed, trusted_root)


def _flip_root_hash(entry: dict) -> None:
    proof = entry["inclusionProof"]
    root = bytearray(base64.b64decode(proof["rootHash"]))
    root[0] ^= 0xFF
    proof["rootHash"] = base64.b64encode(bytes(root)).decode()


def _add_bogus_sibling(entry: dict) -> None:
    entry["inclusionProof"]["hashes"].append(base64.b64encode(bytes(32)).decode())


@pytest.mark.parametrize(
    "corrupt, expected",
    [(_flip_root_hash, "invalid root hash"), (_add_bogus_sibling, "inclusion proof has wrong size")],
)
def test_corrupted_inclusion_proof_is_rejected(bundle, trusted_root, corrupt, expected):
    assert expected in _rejected(_edit_entry(bundle, corrupt), trusted_root)


def test_forged_inclusion_promise_is_rejected(bundle, trusted_root):
    def forge(entry: dict) -> None:
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)

    assert "inclusion promise" in _rejected(_edit_entry(bundle, forge), trusted_root)


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"{}", b'{"mediaType": "application/x-unknown"}', b"\xff\xfe"]
)
def test_malformed_bundle_json_is_rejected(trusted_root, raw):
    assert "sigstore bundle invalid" in _rejected(raw, trusted_root)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"mediaType": "x", "tlogs": []}'])
def test_malformed_trusted_root_is_rejected(bundle, raw):
    assert "sigstore trusted root invalid" in _rejected(bundle, raw)


def test_trusted_root_without_transparency_logs_is_rejected(bundle, trusted_root):
    root = json.loads(trusted_root)
    root["tlogs"] = []
    assert "no transparency log" in _rejected(bundle, json.dumps(root).encode())


def test_public_good_trusted_root_loads_and_does_not_trust_the_test_ca(bundle):
    """The production trusted_root.json that `sigstore` ships parses; our test CA is not in it."""
    production = importlib.resources.files("sigstore._store") / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    message = _rejected(bundle, (production / "trusted_root.json").read_bytes())
    assert "certificate chain" in message


@pytest.fixture(scope="module")
def signed_archive(world, trusted_root, tmp_path_factory) -> dict[str, str]:
    """A real bundle built, signed (OPA + detached) and Sigstore-signed through `ig-policy`; paths by role."""
    root = tmp_path_factory.mktemp("sigstore-cli")
    src = root / "src"
    (src / "ig").mkdir(parents=True)
    (src / "ig" / "t.rego").write_text("package ig.t\n\nallow := true\n")
    (src / "data.json").write_text('{"tenants": {}}')
    archive = root / "policy.tgz"
    prefix = str(root / "signer")
    assert cli_main(["keygen", "--out", prefix]) == 0
    assert cli_main(["pack", "build", str(src), "--out", str(archive), "--version", "1.0.0"]) == 0
    assert cli_main(["pack", "sign", str(archive), "--key", f"{prefix}.key"]) == 0
    sigstore_bundle = root / "policy.tgz.sigstore.json"
    sigstore_bundle.write_bytes(world.sign(archive.read_bytes(), identity=IDENTITY, issuer=ISSUER))
    root_file = root / "trusted_root.json"
    root_file.write_bytes(trusted_root)
    return {"archive": str(archive), "pub": f"{prefix}.pub", "bundle": str(sigstore_bundle),
            "root": str(root_file)}


def _cli_verify(paths: dict[str, str], identity: str) -> int:
    return cli_main([
        "pack", "verify", paths["archive"], "--key", paths["pub"], "--sigstore-bundle", paths["bundle"],
        "--trusted-root", paths["root"], "--identity", identity, "--issuer", ISSUER,
    ])


def test_cli_pack_verify_accepts_a_valid_sigstore_bundle(signed_archive, capsys):
    assert _cli_verify(signed_archive, IDENTITY) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1.0.0"


def test_cli_pack_verify_exits_1_on_wrong_sigstore_identity(signed_archive, capsys):
    assert _cli_verify(signed_archive, "mallory@ig-gate.test") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SANs do not match mallory@ig-gate.test" in err
