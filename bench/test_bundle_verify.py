"""Benchmark: verify_bundle on a signed 50-file bundle (format, ES256 signature, detached signature, expiry).

Target (issue 2): median <= 15 ms.
"""

from __future__ import annotations

import json

import pytest

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.detached import sign_blob
from ig_gate.bundles.signing import VerificationKey, sign_bundle
from ig_gate.bundles.verify import VerifyOptions, verify_bundle
from tests.support.keys import make_keypair

POLICIES, DATA_FILES = 36, 12  # + .manifest + .signatures.json = 50 files


@pytest.fixture(scope="module")
def signed_50(tmp_path_factory):
    src = tmp_path_factory.mktemp("src50")
    for i in range(POLICIES):
        rule = "\n".join(f'allow if input.role == "role-{i}-{j}"' for j in range(20))
        (src / f"pkg{i}").mkdir()
        policy = f"package bench.p{i}\n\ndefault allow := false\n\n{rule}\n"
        (src / f"pkg{i}" / "policy.rego").write_text(policy)
    for i in range(DATA_FILES):
        (src / f"data{i}").mkdir()
        doc = {"items": [{"id": n, "weight": n / 7, "tags": ["a", "b", "<c>"]} for n in range(60)]}
        (src / f"data{i}" / "data.json").write_text(json.dumps(doc))
    pair = make_keypair("ES256")
    bundle = build_bundle(src, version="1.0.0", expires="2099-12-31")
    signed = sign_bundle(bundle, pair.private_pem, key_id="bench")
    assert len(signed.files) == 50
    options = VerifyOptions(
        key=VerificationKey(pair.public_pem, "ES256"),
        detached_signature=sign_blob(signed.archive, pair.private_pem),
        require_detached=True,
    )
    return signed.archive, options


def test_verify_signed_50_file_bundle(benchmark, signed_50):
    archive, options = signed_50
    verified = benchmark(verify_bundle, archive, options)
    assert verified.signature is not None and verified.signature.files == 49
