"""Cost of one offline keyless Sigstore verification (trusted root parse + bundle parse + all checks)."""

from __future__ import annotations

from ig_gate.bundles.sigstore_verify import verify_sigstore_bundle
from tests.support.sigstore_ca import make_world

IDENTITY = "release-bot@ig-gate.test"
ISSUER = "https://idp.ig-gate.test"


def test_verify_sigstore_bundle(benchmark):
    world = make_world()
    artifact = bytes(range(256)) * 256  # 64 KiB, the size of a small policy bundle
    bundle = world.sign(artifact, identity=IDENTITY, issuer=ISSUER)
    trusted_root = world.trusted_root_json()
    benchmark(verify_sigstore_bundle, artifact, bundle, trusted_root, identity=IDENTITY, issuer=ISSUER)
