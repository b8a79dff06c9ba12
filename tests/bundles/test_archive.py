"""Bundle archives: deterministic build, OPA-compatible reading, and refusal of hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from ig_gate.bundles.archive import Limits, build_bundle, pack, read_bundle, replace_files, write_bundle
from ig_gate.bundles.errors import BundleFormatError
from ig_gate.bundles.filehash import file_digest

from .conftest import DATA_JSON, ZT_REGO, member, raw_tgz, write_tree


def test_build_is_deterministic_and_declares_every_rego(policy_src):
    first = build_bundle(policy_src, version="2.1.0", expires="2030-01-01", channel="prod")
    os.utime(policy_src / "ig" / "zt.rego", (1, 1))  # mtimes must not matter
    second = build_bundle(policy_src, version="2.1.0", expires="2030-01-01", channel="prod")
    assert first.archive == second.archive and first.digest == second.digest
    assert sorted(first.files) == [
        ".manifest",
        "data.json",
        "ig/limits/data.json",
        "ig/purpose.rego",
        "ig/zt.rego",
    ]
    declared = {p.path: p.sha256 for p in first.manifest.policies}
    assert declared == {
        "ig/purpose.rego": hashlib.sha256(first.files["ig/purpose.rego"]).hexdigest(),
        "ig/zt.rego": hashlib.sha256(ZT_REGO).hexdigest(),
    }
    assert first.manifest.version == "2.1.0" and first.manifest.channel == "prod"
    assert first.digest == "sha256:" + hashlib.sha256(first.archive).hexdigest()


def test_archive_layout_is_sorted_relative_with_fixed_times(policy_src):
    archive = build_bundle(policy_src).archive
    assert archive[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and not any(n.startswith("/") for n in names)
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}


def test_revision_defaults_to_version_plus_content_hash(policy_src):
    one = build_bundle(policy_src, version="1.0.0").manifest.revision
    (policy_src / "ig" / "zt.rego").write_bytes(ZT_REGO + b"\n# changed\n")
    two = build_bundle(policy_src, version="1.0.0").manifest.revision
    assert one.startswith("1.0.0+") and two.startswith("1.0.0+") and one != two
    assert build_bundle(policy_src, revision="r42").manifest.revision == "r42"


def test_source_manifest_is_the_base(policy_src):
    (policy_src / ".manifest").write_text(
        json.dumps({"roots": [""], "metadata": {"team": "sec"}, "channel": "dev"})
    )
    manifest = build_bundle(policy_src, channel="prod").manifest
    assert manifest.metadata == {"team": "sec"} and manifest.channel == "prod"


def test_build_rejects_non_pep440_version_and_symlinked_policy(policy_src, tmp_path):
    with pytest.raises(BundleFormatError, match="PEP 440"):
        build_bundle(policy_src, version="two")
    (policy_src / "evil.rego").symlink_to(tmp_path / "elsewhere.rego")
    with pytest.raises(BundleFormatError, match="symlink"):
        build_bundle(policy_src)


def test_data_is_merged_at_directory_paths_and_modules_decoded(policy_src):
    bundle = build_bundle(policy_src)
    assert bundle.data["ig"]["limits"] == {"max": 3}
    assert bundle.data["tenants"]["acme"]["allowed_countries"] == ["US", "DE"]
    assert bundle.modules["ig/zt.rego"] == ZT_REGO.decode()
    assert bundle.signatures_json is None


def test_reads_opa_style_leading_slash_members():
    bundle = read_bundle(
        raw_tgz(
            [
                ("/.manifest", b'{"revision": "quickbrownfaux"}'),
                ("/a/b/c/data.json", b"[1,2,3]"),
                ("/example/example.rego", b"package example"),
            ]
        )
    )
    assert sorted(bundle.files) == [".manifest", "a/b/c/data.json", "example/example.rego"]
    assert bundle.manifest.revision == "quickbrownfaux"
    assert bundle.data == {"a": {"b": {"c": [1, 2, 3]}}}


def test_replace_files_repacks_with_added_file(policy_src):
    bundle = build_bundle(policy_src)
    replaced = replace_files(bundle, {"extra/data.json": b'{"x": 1}'})
    assert replaced.files["extra/data.json"] == b'{"x": 1}' and replaced.digest != bundle.digest
    assert read_bundle(replaced.archive).files == replaced.files


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.rego", "traversal"),
        ("ig/../../evil.rego", "traversal"),
        ("//etc/passwd", "absolute"),
        ("ig//zt.rego", "non-canonical"),
        ("./zt.rego", "non-canonical"),
    ],
)
def test_hostile_member_names_are_rejected(name, reason):
    with pytest.raises(BundleFormatError, match=reason):
        read_bundle(raw_tgz([(name, b"package x")]))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (tarfile.SYMTYPE, "link"),
        (tarfile.LNKTYPE, "link"),
        (tarfile.CHRTYPE, "special"),
        (tarfile.BLKTYPE, "special"),
        (tarfile.FIFOTYPE, "special"),
    ],
)
def test_links_and_device_files_are_rejected(kind, reason):
    with pytest.raises(BundleFormatError, match=reason):
        read_bundle(raw_tgz([("ig/zt.rego", ZT_REGO), member("ig/x.rego", kind=kind, link="/etc/passwd")]))


def test_duplicate_members_are_rejected_even_via_leading_slash():
    with pytest.raises(BundleFormatError, match="duplicate"):
        read_bundle(raw_tgz([("data.json", b"{}"), ("/data.json", b'{"a": 1}')]))


def test_per_file_size_limit():
    with pytest.raises(BundleFormatError, match="per-file limit"):
        read_bundle(raw_tgz([("big.rego", b"#" * 2048)]), Limits(max_file_bytes=1024))


def test_member_count_limit():
    members = [(f"d{i}/data.json", b"{}") for i in range(11)]
    with pytest.raises(BundleFormatError, match="more than 10 members"):
        read_bundle(raw_tgz(members), Limits(max_members=10))


def test_zip_bomb_is_stopped_while_decompressing():
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024), compresslevel=9)  # ~16 KB on the wire
    started = time.perf_counter()
    with pytest.raises(BundleFormatError, match="decompressed size exceeds"):
        read_bundle(bomb, Limits(max_total_bytes=1024 * 1024))
    assert time.perf_counter() - started < 2.0  # stopped early, never inflated 16 MB


def test_total_uncompressed_size_limit():
    archive = raw_tgz([("a/data.json", b"{}" + b" " * 600_000), ("b/data.json", b"{}" + b" " * 600_000)])
    with pytest.raises(BundleFormatError, match="exceeds the limit"):
        read_bundle(archive, Limits(max_total_bytes=1_000_000))


@pytest.mark.parametrize(
    ("archive", "reason"),
    [
        (b"PK\x03\x04 not gzip", "not a gzip"),
        (gzip.compress(b"x" * 600)[:40], "truncated|corrupt"),
        (gzip.compress(b"bad tar bytes" * 100), "corrupt tar"),
        (gzip.compress(b"") + b"garbage", "trailing bytes"),
    ],
)
def test_broken_containers_are_named(archive, reason):
    with pytest.raises(BundleFormatError, match=reason):
        read_bundle(archive)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"data.json": b"{not json"}, "data.json: invalid JSON"),
        ({"x/data.json": b"[1, NaN]"}, "x/data.json: invalid JSON"),
        ({".manifest": b'{"revision": '}, ".manifest: invalid JSON"),
        ({".signatures.json": b"signatures"}, ".signatures.json: invalid JSON"),
        ({"data.json": b"[1, 2, 3]"}, "root data document must be a JSON object"),
        ({"ig/zt.rego": b"package \xff"}, "not UTF-8"),
        ({"ig/.signatures.json": b"{}"}, "only allowed at the bundle root"),
    ],
)
def test_invalid_content_is_named(files, reason):
    with pytest.raises(BundleFormatError, match=reason):
        read_bundle(raw_tgz(files.items()))


def test_conflicting_data_files_are_rejected():
    archive = raw_tgz([("a/b/data.json", b'{"c": "foo"}'), ("data.json", b'{"a": {"b": {"c": [123]}}}')])
    with pytest.raises(BundleFormatError, match="conflicts"):
        read_bundle(archive)


def _with_manifest(policies: list[dict], files: dict[str, bytes]) -> bytes:
    return pack({".manifest": json.dumps({"policies": policies}).encode(), **files})


def test_manifest_sha256_mismatch_is_rejected():
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(BundleFormatError, match=r"sha256 of ig/zt\.rego does not match"):
        read_bundle(_with_manifest([{"path": "ig/zt.rego", "sha256": wrong}], {"ig/zt.rego": ZT_REGO}))


def test_manifest_policies_must_cover_the_rego_set_exactly():
    good = hashlib.sha256(ZT_REGO).hexdigest()
    with pytest.raises(BundleFormatError, match="not in the bundle"):
        read_bundle(_with_manifest([{"path": "ig/zt.rego", "sha256": good}], {}))
    with pytest.raises(BundleFormatError, match=r"ig/extra\.rego is not declared"):
        read_bundle(
            _with_manifest(
                [{"path": "ig/zt.rego", "sha256": good}],
                {"ig/zt.rego": ZT_REGO, "ig/extra.rego": b"package extra"},
            )
        )


def test_write_bundle_round_trips_arbitrary_files():
    bundle = write_bundle({"data.json": DATA_JSON, "policy.wasm": b"\0asm"})
    assert read_bundle(bundle.archive).files == {"data.json": DATA_JSON, "policy.wasm": b"\0asm"}


def test_source_must_be_a_directory(tmp_path: Path):
    with pytest.raises(BundleFormatError, match="not a directory"):
        build_bundle(write_tree(tmp_path, {"f": b""}) / "f")


def test_deeply_nested_json_is_a_format_error_not_a_crash():
    with pytest.raises(BundleFormatError, match="nested too deeply"):
        read_bundle(raw_tgz([("x/data.json", b"[" * 100_000 + b"]" * 100_000)]))


def test_data_yaml_is_data_and_json_must_be_utf8():
    bundle = read_bundle(raw_tgz([("/a/b/y/data.yaml", b"foo: 1"), ("/a/b/d/data.json", b"true")]))
    assert bundle.data == {"a": {"b": {"y": {"foo": 1}, "d": True}}}
    with pytest.raises(BundleFormatError, match="invalid JSON"):
        read_bundle(raw_tgz([("data.json", '{"a": 1}'.encode("utf-16"))]))
    with pytest.raises(BundleFormatError, match="invalid YAML"):
        read_bundle(raw_tgz([("data.yaml", b"a: [")]))


def _yaml_alias_bomb(levels: int = 8) -> bytes:
    """~300 bytes that a YAML loader with aliases expands to 10**levels strings."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines).encode()


def test_yaml_aliases_are_refused_before_anything_expands_them():
    with pytest.raises(BundleFormatError, match=r"a/data\.yaml: invalid YAML: YAML aliases are not allowed"):
        read_bundle(raw_tgz([("a/data.yaml", _yaml_alias_bomb())]))
    with pytest.raises(BundleFormatError, match="aliases are not allowed"):
        file_digest("a/data.yaml", _yaml_alias_bomb(2))
