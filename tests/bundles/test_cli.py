"""`ig-policy` end to end: the acceptance flows of issue 2, exit codes and one-line errors."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ig_gate.bundles.cli import main

from .conftest import member, raw_tgz

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("ig-policy")


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `ig-policy ARGV...` in-process; return (exit code, stdout, stderr)."""

    def run(*argv: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_line_error(err: str) -> str:
    assert err.startswith("ig-policy: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def signed(cli, tmp_path, policy_src) -> dict[str, Path]:
    """keygen -> build -> sign; returns the paths involved."""
    prefix = tmp_path / "keys" / "signer"
    archive = tmp_path / "dist" / "policy.tgz"
    assert cli("keygen", "--out", prefix)[0] == 0
    assert (
        cli("pack", "build", policy_src, "--out", archive, "--version", "2.1.0", "--expires", "2099-12-31")[0]
        == 0
    )
    assert cli("pack", "sign", archive, "--key", f"{prefix}.key", "--key-id", "k1", "--scope", "prod")[0] == 0
    return {"archive": archive, "key": Path(f"{prefix}.key"), "pub": Path(f"{prefix}.pub")}


def verify(cli, paths, *extra: str | Path) -> tuple[int, str, str]:
    return cli("pack", "verify", paths["archive"], "--key", paths["pub"], "--scope", "prod", *extra)


def rewrite(archive: Path, mutate: Callable[[list], list]) -> None:
    """Re-pack archive (same member names) after mutate(list of (name, bytes))."""
    with tarfile.open(archive) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    archive.write_bytes(raw_tgz(mutate(members)))
    Path(f"{archive}.sig").unlink(missing_ok=True)  # the detached signature is checked separately


def test_round_trip_keygen_build_sign_verify(cli, signed):
    code, out, err = verify(cli, signed, "--require-version", ">=2,<3", "--require-detached")
    assert (code, err) == (0, "")
    summary = json.loads(out)
    assert summary["version"] == "2.1.0" and summary["key_id"] == "k1" and summary["expires"] == "2099-12-31"
    assert summary["digest"].startswith("sha256:") and summary["files"] == 6 and summary["detached"] is True
    code, _, _ = verify(
        cli, signed, "--require-digest", summary["digest"], "--require-digest", "sha256:" + "0" * 64
    )
    assert code == 0


def test_keygen_writes_private_key_0600_and_refuses_to_overwrite(cli, signed):
    assert stat.S_IMODE(signed["key"].stat().st_mode) == 0o600
    assert signed["key"].read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    prefix = str(signed["key"]).removesuffix(".key")
    code, _, err = cli("keygen", "--out", prefix)
    assert code == 2 and "exists" in one_line_error(err)
    assert cli("keygen", "--out", prefix, "--force", "--alg", "RS256")[0] == 0


def test_detached_signature_is_openssl_verifiable(signed, tmp_path):
    der = tmp_path / "sig.der"
    der.write_bytes(base64.b64decode(Path(f"{signed['archive']}.sig").read_bytes()))
    argv = ["openssl", "dgst", "-sha256", "-verify", signed["pub"], "-signature", der, signed["archive"]]
    assert subprocess.run([str(a) for a in argv], capture_output=True).returncode == 0


def _flip_rego_byte(members):
    return [(n, b[:-2] + bytes([b[-2] ^ 1]) + b[-1:] if n.endswith("zt.rego") else b) for n, b in members]


TAMPERING = {
    "one byte changed in a .rego": (_flip_rego_byte, "zt.rego"),
    "extra file added": (lambda m: [*m, ("extra/data.json", b"{}")], "extra/data.json"),
    "file removed": (lambda m: [x for x in m if x[0] != "ig/limits/data.json"], "ig/limits/data.json"),
    ".signatures.json removed": (lambda m: [x for x in m if x[0] != ".signatures.json"], ".signatures.json"),
    "path-traversal member": (lambda m: [*m, ("../evil.rego", b"package evil")], "traversal"),
    "symlink member": (
        lambda m: [*m, member("ig/link.rego", kind=tarfile.SYMTYPE, link="/etc/passwd")],
        "link",
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampered_bundle_exits_1_with_one_line_reason(cli, signed, case):
    mutate, reason = TAMPERING[case]
    rewrite(signed["archive"], mutate)
    code, out, err = verify(cli, signed)
    assert (code, out) == (1, "")
    assert reason in one_line_error(err)


def test_wrong_public_key_exits_1(cli, signed, tmp_path):
    cli("keygen", "--out", tmp_path / "other")
    code, _, err = cli("pack", "verify", signed["archive"], "--key", tmp_path / "other.pub")
    assert code == 1 and "does not verify" in one_line_error(err)


def test_wrong_scope_exits_1(cli, signed):
    code, _, err = cli("pack", "verify", signed["archive"], "--key", signed["pub"], "--scope", "staging")
    assert code == 1 and "scope 'prod' does not match 'staging'" in one_line_error(err)


def test_hs256_wrong_secret_exits_1(cli, signed, tmp_path):
    secret, wrong = tmp_path / "secret", tmp_path / "wrong"
    secret.write_text("secret\n")
    wrong.write_text("Secret\n")
    assert cli("pack", "sign", signed["archive"], "--key", secret, "--alg", "HS256")[0] == 0
    assert not Path(f"{signed['archive']}.sig").exists()  # no detached signature for a shared secret
    assert (
        cli("pack", "verify", signed["archive"], "--key", secret)[0] == 0
    )  # HS256 inferred from a non-PEM key
    code, _, err = cli("pack", "verify", signed["archive"], "--key", wrong, "--alg", "HS256")
    assert code == 1 and "does not verify" in one_line_error(err)


def test_expired_bundle_exits_1(cli, tmp_path, policy_src, signed):
    archive = tmp_path / "old.tgz"
    cli("pack", "build", policy_src, "--out", archive, "--expires", "2020-01-01", "--force")
    cli("pack", "sign", archive, "--key", signed["key"])
    code, _, err = cli("pack", "verify", archive, "--key", signed["pub"])
    assert code == 1 and "expired" in one_line_error(err)


def test_unsatisfied_version_pin_exits_1(cli, signed):
    code, _, err = verify(cli, signed, "--require-version", ">=3")
    assert code == 1 and "does not satisfy" in one_line_error(err)


def test_different_digest_pin_exits_1(cli, signed):
    code, _, err = verify(cli, signed, "--require-digest", "sha256:" + "0" * 64)
    assert code == 1 and "not one of the pinned digests" in one_line_error(err)


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        (["--require-version", "=>2"], "not a valid version specifier"),
        (["--require-digest", "sha256:abc"], "not of the form sha256:<64 hex>"),
    ],
)
def test_malformed_pins_are_usage_errors(cli, signed, pin, reason):
    code, out, err = verify(cli, signed, *pin)
    assert (code, out) == (2, "") and reason in one_line_error(err)


def test_empty_verification_key_file_is_named(cli, signed, tmp_path):
    (tmp_path / "empty.key").write_bytes(b"")
    code, _, err = cli("pack", "verify", signed["archive"], "--key", tmp_path / "empty.key")
    assert code == 1 and "empty.key: verification key file is empty" in one_line_error(err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["--help"], "Exit codes: 0 ok, 1 verification"), (["pack", "verify", "--help"], "FILE.tgz")],
)
def test_help_names_the_arguments_and_exit_codes(capsys, argv, expected):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0 and expected in capsys.readouterr().out


def test_detached_signature_mismatch_and_requirement(cli, signed):
    sig = Path(f"{signed['archive']}.sig")
    good = sig.read_bytes()
    sig.write_bytes(good[:10] + (b"A" if good[10:11] != b"A" else b"B") + good[11:])
    code, _, err = verify(cli, signed)
    assert code == 1 and "detached signature" in one_line_error(err)
    sig.unlink()
    assert verify(cli, signed)[0] == 0
    code, _, err = verify(cli, signed, "--require-detached")
    assert code == 1 and "detached signature required" in one_line_error(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["pack", "verify", "missing.tgz", "--key", "k.pub"],
        ["pack", "verify", "missing.tgz"],
        ["pack", "frobnicate"],
        ["keygen"],
        ["pack", "build", "no-such-dir", "--out", "x.tgz"],
        ["pack", "build", ".", "--out", "x.tgz", "--expires", "tomorrow"],
        ["pack", "build", ".", "--out", "x.tgz", "--version", "banana"],
    ],
)
def test_usage_errors_exit_2_with_one_line(cli, argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*argv)
    assert code == 2
    one_line_error(err)


def test_unwritable_output_is_named_and_nothing_is_left_behind(cli, policy_src, tmp_path):
    (tmp_path / "plain-file").write_bytes(b"")
    out = tmp_path / "plain-file" / "policy.tgz"
    code, _, err = cli("pack", "build", policy_src, "--out", out)
    assert code == 1 and f"{out}: cannot write" in one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain-file", "src"]


def test_inspect_shows_manifest_files_and_unverified_signature(cli, signed):
    code, out, _ = cli("pack", "inspect", signed["archive"])
    report = json.loads(out)
    assert code == 0 and report["manifest"]["version"] == "2.1.0"
    assert [f["name"] for f in report["files"]][:2] == [".manifest", "data.json"]
    assert report["signature"]["kid"] == "k1" and report["signature"]["verified"] is False
    assert report["signature"]["alg"] == "ES256" and report["detached_signature"] is True


def test_seed_flow_build_creates_dist(tmp_path):
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    argv = [str(CONSOLE_SCRIPT), "pack", "build", "policies/", "--out", "dist/policy.tgz"]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dist" / "policy.tgz").is_file()
    assert "ig/zt.rego" in json.loads(result.stdout)["files"]


def test_console_script_failure_is_one_line_without_traceback(tmp_path):
    (tmp_path / "junk.tgz").write_bytes(b"definitely not gzip")
    argv = [str(CONSOLE_SCRIPT), "pack", "inspect", str(tmp_path / "junk.tgz")]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == "ig-policy: error: archive: not a gzip stream\n"


# --- eval on the example bundle (policies/) -----------------------------------------------------------


@pytest.fixture
def example_bundle(cli, tmp_path, signed) -> Path:
    archive = tmp_path / "example.tgz"
    assert cli("pack", "build", REPO / "policies", "--out", archive, "--version", "1.0.0")[0] == 0
    assert cli("pack", "sign", archive, "--key", signed["key"])[0] == 0
    return archive


@pytest.mark.parametrize(
    ("risk", "posture", "stepup", "outcome", "reasons"),
    [
        ("low", "managed", False, "allow", []),
        ("low", "managed", True, "allow", []),
        ("medium", "managed", False, "stepup", ["stepup_required"]),
        ("medium", "managed", True, "allow", []),
        ("high", "managed", False, "deny", ["risk_high"]),
        ("high", "managed", True, "deny", ["risk_high"]),
        ("low", "jailbroken", False, "deny", ["device_jailbroken"]),
        ("low", "jailbroken", True, "deny", ["device_jailbroken"]),
    ],
)
def test_eval_example_bundle_decisions(
    cli, tmp_path, example_bundle, signed, risk, posture, stepup, outcome, reasons
):
    doc = {
        "tenant": "acme",
        "session": {"risk": risk, "subject": "alice"},
        "stepup": stepup,
        "device": {"posture": posture},
        "geo": {"country": "US"},
        "request": {"method": "POST", "path": "/graphql", "operation_type": "query"},
    }
    (tmp_path / "input.json").write_text(json.dumps(doc))
    code, out, err = cli("eval", example_bundle, "--input", tmp_path / "input.json", "--key", signed["pub"])
    assert (code, err) == (0, "")
    decision = json.loads(out)
    assert decision == {"allow": False, "stepup": False, "deny": False, outcome: True, "reasons": reasons}


def test_eval_refuses_a_bundle_that_does_not_verify(cli, tmp_path, example_bundle):
    cli("keygen", "--out", tmp_path / "other")
    (tmp_path / "input.json").write_text("{}")
    code, out, err = cli(
        "eval", example_bundle, "--input", tmp_path / "input.json", "--key", tmp_path / "other.pub"
    )
    assert (code, out) == (1, "") and "does not verify" in one_line_error(err)


def test_rego_unit_tests_of_the_example_policies_pass(cli):
    code, out, err = cli("test", REPO / "policies")
    assert (code, err) == (0, "") and out.strip().endswith("passed")


def test_eval_without_a_key_ignores_signatures_but_not_expiry(cli, tmp_path, example_bundle, policy_src):
    doc = {
        "tenant": "acme",
        "session": {"risk": "high"},
        "device": {"posture": "managed"},
        "geo": {"country": "US"},
    }
    (tmp_path / "input.json").write_text(json.dumps(doc))
    code, out, _ = cli("eval", example_bundle, "--input", tmp_path / "input.json")
    assert code == 0 and json.loads(out)["deny"] is True
    expired = tmp_path / "expired.tgz"
    cli("pack", "build", REPO / "policies", "--out", expired, "--expires", "2000-01-01", "--force")
    code, _, err = cli("eval", expired, "--input", tmp_path / "input.json")
    assert code == 1 and "expired" in one_line_error(err)
