"""Pins: version specifiers and digest allow-lists."""

from __future__ import annotations

import pytest

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.errors import PinError
from ig_gate.bundles.pin import Pin


@pytest.fixture
def bundle(policy_src):
    return build_bundle(policy_src, version="2.1.0")


@pytest.mark.parametrize("spec", [">=2.0,<3", "==2.1.*", "~=2.1", ">2.0.9"])
def test_satisfied_version_specs_pass(bundle, spec):
    Pin(version_spec=spec).check(bundle)


@pytest.mark.parametrize("spec", [">=3", "<2.1", "==2.0.*"])
def test_unsatisfied_version_spec_fails(bundle, spec):
    with pytest.raises(PinError, match="does not satisfy"):
        Pin(version_spec=spec).check(bundle)


def test_digest_allow_list(bundle):
    Pin(digests=frozenset({bundle.digest.upper().replace("SHA256", "sha256"), "sha256:" + "0" * 64})).check(
        bundle
    )
    with pytest.raises(PinError, match="not one of the pinned digests"):
        Pin(digests=frozenset({"sha256:" + "0" * 64})).check(bundle)


def test_unversioned_bundle_fails_a_version_pin(policy_src):
    with pytest.raises(PinError, match="no manifest version"):
        Pin(version_spec=">=1").check(build_bundle(policy_src))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"version_spec": "at least two"}, "not a valid version specifier"),
        ({"digests": frozenset({"abc"})}, "sha256:"),
    ],
)
def test_malformed_pins_are_refused_up_front(kwargs, reason):
    with pytest.raises(PinError, match=reason):
        Pin(**kwargs)
