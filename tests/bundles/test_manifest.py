"""Manifest parsing: OPA fields, the project's fields, expiry semantics, named errors."""

from __future__ import annotations

import datetime as dt

import pytest

from ig_gate.bundles.errors import BundleFormatError
from ig_gate.bundles.manifest import Manifest, PolicyRef

SHA = "ab" * 32


def test_seed_manifest_parses_with_unknown_fields_kept():
    seed = {
        "version": "2.1.0",
        "policies": [{"path": "/ig/purpose.rego", "sha256": SHA}],
        "expires": "2026-04-30",
        "signature": "...",
    }
    manifest = Manifest.from_json(seed)
    assert manifest.version == "2.1.0"
    assert manifest.policies == (PolicyRef("ig/purpose.rego", SHA),)
    assert manifest.expires == dt.date(2026, 4, 30)
    assert manifest.roots == ("",) and manifest.revision == "" and manifest.cacheable is True
    assert manifest.to_json()["signature"] == "..."


def test_opa_fields_and_round_trip():
    obj = {
        "revision": "r1",
        "roots": ["ig", "tenants"],
        "metadata": {"team": "sec"},
        "channel": "prod",
        "cacheable": False,
        "expires": "2030-01-02T03:04:05+00:00",
    }
    manifest = Manifest.from_json(obj)
    assert manifest.roots == ("ig", "tenants") and manifest.metadata == {"team": "sec"}
    assert manifest.cacheable is False and manifest.channel == "prod"
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_date_expires_at_end_of_that_day_utc():
    manifest = Manifest.from_json({"expires": "2026-04-30"})
    assert not manifest.is_expired(dt.datetime(2026, 4, 30, 23, 59, 59, tzinfo=dt.UTC))
    assert manifest.is_expired(dt.datetime(2026, 5, 1, 0, 0, 0, tzinfo=dt.UTC))


def test_datetime_expiry_is_exact_and_naive_means_utc():
    manifest = Manifest.from_json({"expires": "2026-04-30T12:00:00"})
    assert not manifest.is_expired(dt.datetime(2026, 4, 30, 11, 59, tzinfo=dt.UTC))
    assert manifest.is_expired(dt.datetime(2026, 4, 30, 12, 0))
    assert not Manifest.from_json({}).is_expired(dt.datetime(9999, 1, 1, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"revision": 7}, "revision"),
        ({"roots": "ig"}, "roots"),
        ({"roots": [1]}, "roots"),
        ({"version": 2}, "version"),
        ({"cacheable": "yes"}, "cacheable"),
        ({"expires": "next tuesday"}, "expires"),
        ({"policies": [{"path": "a.rego", "sha256": "XYZ"}]}, "sha256"),
        ({"policies": [{"sha256": SHA}]}, "path"),
        ({"policies": {}}, "policies"),
    ],
)
def test_bad_fields_are_named(obj, field):
    with pytest.raises(BundleFormatError, match=field):
        Manifest.from_json(obj)


def test_manifest_must_be_an_object():
    with pytest.raises(BundleFormatError, match="object"):
        Manifest.from_json([1, 2])
