"""Manifest `roots` are enforced as OPA enforces them: at verify (so at activation) and at `pack build`.

The first table is OPA's own TestReadRootValidation (v1/bundle/bundle_test.go), data patches aside (ig-gate
has no delta bundles), plus the cases issue 9 names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ig_gate.bundles.archive import build_bundle, pack
from ig_gate.bundles.cli import main
from ig_gate.bundles.errors import RootsError
from ig_gate.bundles.policy import StaticPolicySource
from ig_gate.bundles.roots import check_roots
from ig_gate.bundles.verify import VerifyOptions, verify_bundle

from .conftest import write_tree

REPO = Path(__file__).resolve().parents[2]
UNSIGNED = VerifyOptions(key=None)
FOO = b"package foo"


def _manifest(roots: list[str] | None) -> bytes:
    return json.dumps({"revision": "abcd", **({"roots": roots} if roots is not None else {})}).encode()


ACCEPTED = {
    "default full extent": {".manifest": _manifest(None), "data.json": b'{"a": 1}', "x.rego": FOO},
    "explicit full extent": {".manifest": _manifest([""]), "data.json": b'{"a": 1}', "x.rego": FOO},
    "implicit prefixed": {
        ".manifest": _manifest(["a/b", "foo"]), "data.json": b'{"a": {"b": 1}}', "x.rego": b"package foo.bar",
    },
    "partial segment is no overlap": {".manifest": _manifest(["a", "another_root"])},
    "slashes trimmed": {".manifest": _manifest(["/a/", "b"]), "a/data.json": b"{}", "x.rego": b"package b"},
    "bracketed package under its root": {".manifest": _manifest(["x/a%2Fb"]), "x.rego": b'package x["a/b"]'},
    "dotted bracket part is one segment": {".manifest": _manifest(["x/a.b"]), "x.rego": b'package x["a.b"]'},
}
REFUSED = {
    "empty roots with a package": (
        {".manifest": _manifest([]), "x.rego": b"package foo"},
        "roots [] do not permit 'package foo' in module x.rego",
    ),
    "overlapped roots": ({".manifest": _manifest(["a/b", "a"])}, "overlapped roots: 'a/b' and 'a'"),
    "the empty root overlaps every root": ({".manifest": _manifest(["", "ig"])}, "roots: '' and 'ig'"),
    "a duplicated root overlaps itself": ({".manifest": _manifest(["ig", "ig"])}, "roots: 'ig' and 'ig'"),
    "package outside the roots": (
        {".manifest": _manifest(["a", "b", "c/d"]), "a.rego": b"package b.c", "x.rego": b"package c.e"},
        "roots [a b c/d] do not permit 'package c.e' in module x.rego",
    ),
    "package above its root": (
        {".manifest": _manifest(["ig/zt"]), "x.rego": b"package ig"},
        "do not permit 'package ig' in module x.rego",
    ),
    "a bracketed part is not split at its dot": (
        {".manifest": _manifest(["x/a"]), "x.rego": b'package x["a.b"]'},
        "roots [x/a] do not permit 'package x.a.b' in module x.rego",
    ),
    "data outside the roots": (
        {".manifest": _manifest(["a", "b", "c/d"]), "data.json": b'{"a": 1}', "c/e/data.json": b'"bad"'},
        "roots [a b c/d] do not permit data at path '/c/e'",
    ),
    "data beside a root": (
        {".manifest": _manifest(["tenants"]), "data.json": b'{"tenants": {}, "admins": ["mallory"]}'},
        "do not permit data at path '/admins'",
    ),
}


@pytest.mark.parametrize("files", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_bundles_within_their_roots_verify(files: dict[str, bytes]) -> None:
    assert verify_bundle(pack(files), UNSIGNED).bundle.manifest.revision == "abcd"


@pytest.mark.parametrize(("files", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_roots_violations_are_refused_at_verify_with_the_root_or_package_named(
    files: dict[str, bytes], message: str
) -> None:
    with pytest.raises(RootsError, match=f"^\\.manifest .*{re.escape(message)}"):
        verify_bundle(pack(files), UNSIGNED)


@pytest.mark.parametrize(("files", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_roots_violations_are_refused_at_activation(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    path = tmp_path / "bundle.tgz"
    path.write_bytes(pack(files))
    with pytest.raises(RootsError, match=re.escape(message)):
        StaticPolicySource(path, UNSIGNED)


@pytest.mark.parametrize(("files", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_pack_build_refuses_a_source_that_breaks_its_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, bytes], message: str
) -> None:
    source = write_tree(tmp_path / "src", files)
    with pytest.raises(RootsError, match=re.escape(message)):
        build_bundle(source, version="1.0.0")
    assert main(["pack", "build", str(source), "--out", str(tmp_path / "out.tgz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ig-policy: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.tgz").exists()


def test_a_module_that_does_not_parse_is_left_to_the_compiler() -> None:
    files = {".manifest": _manifest(["ig"]), "x.rego": b"package ig.x\n\nr := count(\n"}
    assert verify_bundle(pack(files), UNSIGNED).bundle.manifest.roots == ("ig",)


def test_the_example_policies_build_and_keep_to_their_roots() -> None:
    bundle = build_bundle(REPO / "policies", version="1.0.0")
    assert bundle.manifest.roots == ("ig", "tenants", "purposes")
    check_roots(bundle)
