"""`ig-policy publish | promote | pull | channels` against a real registry."""

from __future__ import annotations

import json

import pytest

from ig_gate.bundles.cli import main
from tests.registry.kit import Built, build

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(tmp_path, signer, stranger):
    directory = tmp_path / "keys"
    directory.mkdir()
    return {
        "trusted": signer.write(directory, "release")[1],
        "stranger": stranger.write(directory, "other")[1],
    }


@pytest.fixture
def run(registry, repo, capsys):
    """Run ig-policy with the registry arguments; return (exit code, parsed stdout or None, stderr)."""

    def invoke(*argv: str, registry_args: bool = True) -> tuple[int, object, str]:
        extra = ["--registry", registry.host, "--repo", repo, "--plain-http"] if registry_args else []
        code = main([*argv, *extra])
        out, err = capsys.readouterr()
        return code, json.loads(out) if out.strip() else None, err

    return invoke


def write(tmp_path, built: Built, name: str = "policy.tgz"):
    path = tmp_path / name
    path.write_bytes(built.archive)
    if built.signature is not None:
        path.with_name(f"{name}.sig").write_bytes(built.signature)
    return path


def test_publish_then_promote_through_channels_keeps_one_digest(run, keys, signer, tmp_path, client, repo):
    bundle = write(tmp_path, build(tmp_path, "v1", "1.2.0", signer))
    code, published, _ = run("publish", str(bundle), "--channel", "dev", "--key", str(keys["trusted"]))
    assert code == 0 and published["version"] == "1.2.0"

    code, listing, _ = run("channels")
    assert code == 0 and listing["staging"] is None and listing["prod"] is None
    assert listing["dev"] == {k: published[k] for k in ("digest", "version", "revision")}

    for source, target in (("dev", "staging"), ("staging", "prod")):
        code, promoted, err = run("promote", "--from", source, "--to", target, "--key", str(keys["trusted"]))
        assert code == 0, err
        assert promoted["digest"] == published["digest"]

    code, listing, _ = run("channels")
    assert {channel: entry["digest"] for channel, entry in listing.items()} == dict.fromkeys(
        ("dev", "staging", "prod"), published["digest"]
    )
    assert client.fetch(repo, published["digest"]).archive == bundle.read_bytes()


def test_pull_by_channel_and_by_digest_are_byte_identical_with_signature(run, keys, signer, tmp_path):
    bundle = write(tmp_path, build(tmp_path, "v1", "1.0.0", signer))
    _, published, _ = run("publish", str(bundle), "--channel", "prod", "--key", str(keys["trusted"]))
    by_channel, by_digest = tmp_path / "out" / "by-channel.tgz", tmp_path / "by-digest.tgz"

    assert run("pull", "--channel", "prod", "--out", str(by_channel), "--key", str(keys["trusted"]))[0] == 0
    assert (
        run("pull", "--digest", published["digest"], "--out", str(by_digest), "--key", str(keys["trusted"]))[
            0
        ]
        == 0
    )
    assert by_channel.read_bytes() == by_digest.read_bytes() == bundle.read_bytes()
    assert (tmp_path / "by-digest.tgz.sig").read_bytes() == (tmp_path / "policy.tgz.sig").read_bytes()


@pytest.mark.parametrize("case", ["unsigned", "unknown key", "expired"])
def test_publish_refuses_what_does_not_verify_and_pushes_nothing(
    case, run, keys, signer, stranger, tmp_path, client, repo
):
    key = {"unsigned": None, "unknown key": stranger, "expired": signer}[case]
    bundle = write(
        tmp_path, build(tmp_path, "bad", "1.0.0", key, expires="2020-01-01" if case == "expired" else None)
    )
    code, out, err = run("publish", str(bundle), "--channel", "dev", "--key", str(keys["trusted"]))
    assert (code, out) == (1, None)
    assert err.startswith("ig-policy: error: ") and err.count("\n") == 1
    assert client.resolve(repo, "dev") is None


def test_promote_refuses_a_source_that_does_not_verify(run, keys, tmp_path, client, repo):
    unsigned = build(tmp_path, "unsigned", "1.0.0", None)
    client.push(repo, "dev", unsigned.archive)
    code, _, err = run("promote", "--from", "dev", "--to", "prod", "--key", str(keys["trusted"]))
    assert code == 1 and "signatures" in err
    assert client.resolve(repo, "prod") is None


def test_pull_refuses_a_bundle_signed_by_another_key_and_writes_nothing(
    run, keys, stranger, tmp_path, client, repo
):
    other = build(tmp_path, "other", "1.0.0", stranger)
    client.push(repo, "prod", other.archive, other.signature)
    out = tmp_path / "pulled.tgz"
    code, _, err = run("pull", "--channel", "prod", "--out", str(out), "--key", str(keys["trusted"]))
    assert code == 1 and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "pulled.tgz.sig").exists()


def test_pull_of_a_missing_channel_says_not_found(run, keys, tmp_path):
    code, _, err = run(
        "pull", "--channel", "prod", "--out", str(tmp_path / "x.tgz"), "--key", str(keys["trusted"])
    )
    assert code == 1 and "not found" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["pull", "--out", "x.tgz", "--key", "k.pub"],  # neither --channel nor --digest
        ["pull", "--channel", "prod", "--digest", "sha256:" + "0" * 64, "--out", "x", "--key", "k.pub"],
        ["pull", "--digest", "sha256:zz", "--out", "x", "--key", "k.pub"],
        ["promote", "--from", "dev", "--to", "bad tag!", "--key", "k.pub"],
        ["publish", "missing.tgz", "--channel", "dev", "--key", "k.pub"],
        ["channels", "--repo", "Upper/Case"],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k.pub").write_text("not used")
    code, _, err = run(*argv)
    assert code == 2 and err.count("\n") == 1


def test_unreachable_registry_is_exit_1(run, capsys):
    code = main(["channels", "--registry", "127.0.0.1:9", "--repo", "policies/x", "--plain-http"])
    assert code == 1 and "unreachable" in capsys.readouterr().err


def test_pull_of_an_artifact_without_a_detached_signature_removes_a_stale_one(run, keys, signer, tmp_path):
    out = tmp_path / "pulled.tgz"
    for label, detached in (("v1", True), ("v2", False)):
        bundle = write(tmp_path, build(tmp_path, label, "1.0.0", signer, detached=detached), f"{label}.tgz")
        assert run("publish", str(bundle), "--channel", "prod", "--key", str(keys["trusted"]))[0] == 0
        assert run("pull", "--channel", "prod", "--out", str(out), "--key", str(keys["trusted"]))[0] == 0
        assert (tmp_path / "pulled.tgz.sig").exists() is detached
    verified = main(["pack", "verify", str(out), "--key", str(keys["trusted"])])
    assert verified == 0  # no v1 signature left beside the v2 archive
