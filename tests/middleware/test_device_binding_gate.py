"""Through the real middleware: an attestation presented by another user is "unknown", and why is logged
and counted (issue 9 item 4: bob on an unmanaged device sending alice's attestation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.middleware.conftest import World, query

MUTATION = query('mutation Rename { rename(name: "x") { ok } }')
REFUSED = "ig_gate_device_attestation_refused_total"


def post(client: Any, token: str, attestation: str) -> Any:
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    return client.post("/graphql", content=MUTATION, headers={**headers, "x-device-attestation": attestation})


def refused(client: Any, reason: str) -> float:
    value = client.middleware.gate.metrics.registry.get_sample_value(REFUSED, {"reason": reason})
    return value or 0.0


def test_bob_with_alices_attestation_is_unknown_and_the_mismatch_is_logged_and_counted(
    world: World, make_client: Any, tmp_path: Path
) -> None:
    client = make_client()
    alices_laptop = world.attestation("managed", device_id="alice-laptop", sub="alice")
    assert post(client, world.token(sub="alice"), alices_laptop).status_code == 200

    response = post(client, world.token(sub="bob"), alices_laptop)
    assert response.status_code == 401  # posture unknown: a write needs step-up
    assert "device_unmanaged_write" in response.json()["errors"][0]["message"]
    assert refused(client, "device_binding_mismatch") == 1.0
    client.middleware.gate.close()

    entries = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    alice, bob = entries
    assert alice["input"]["device"] == {"posture": "managed"}
    assert bob["input"]["session"]["subject"] == "bob"
    assert bob["input"]["device"] == {"posture": "unknown", "reason": "device_binding_mismatch"}


def test_device_id_mismatch_with_the_idp_token_is_unknown(world: World, make_client: Any) -> None:
    client = make_client()
    laptop = world.attestation("managed", device_id="alice-laptop")
    assert post(client, world.token(device_id="alice-laptop"), laptop).status_code == 200
    assert post(client, world.token(device_id="alice-phone"), laptop).status_code == 401
    assert refused(client, "device_binding_mismatch") == 1.0


def test_issuer_and_audience_mismatch_are_invalid_attestations(world: World, make_client: Any) -> None:
    client = make_client(device={"issuer": "https://mdm.example.test", "audience": "ig-gateway"})
    good = world.attestation("managed", iss="https://mdm.example.test", aud="ig-gateway")
    assert post(client, world.token(), good).status_code == 200
    for wrong in (
        world.attestation("managed", iss="https://elsewhere.test", aud="ig-gateway"),
        world.attestation("managed", iss="https://mdm.example.test", aud="another-gateway"),
    ):
        assert post(client, world.token(), wrong).status_code == 401
    assert refused(client, "device_attestation_invalid") == 2.0
    assert refused(client, "device_binding_mismatch") == 0.0
