"""Through the real middleware (Starlette TestClient): session risk, step-up, device posture, geo-fencing,
trusted and untrusted proxies, impossible travel — against the signed example bundle."""

from __future__ import annotations

import time

import pytest

from tests.middleware.conftest import DE_IP, FR_IP, JP_IP, PROXY, US_IP, query

JSON = {"content-type": "application/json"}
MUTATION = query('mutation Rename { rename(name: "x") { ok } }')


def post(client, token: str | None, body: str | None = None, **headers: str):
    headers = {**JSON, **headers}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return client.post("/graphql", content=body or query(), headers=headers)


def graphql_error(response) -> dict:
    (error,) = response.json()["errors"]
    return error


def test_low_risk_is_allowed_and_the_app_sees_the_identity_and_the_unchanged_body(world, make_client):
    body = query("query Me { me { id } }", variables={"a": "ü"})
    response = post(make_client(), world.token(risk="low"), body)

    assert response.status_code == 200
    seen = response.json()
    assert seen["body"] == body.encode().decode("latin-1")
    identity = seen["identity"]
    assert identity["subject"] == "alice" and identity["tenant"] == "acme" and identity["risk"] == "low"
    assert identity["country"] == "US" and identity["posture"] == "unknown" and identity["profile"] == "read"
    assert identity["decision_id"]


def test_medium_risk_without_step_up_gets_an_rfc9470_challenge(world, make_client):
    response = post(make_client(), world.token(risk="medium"))

    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="mfa"' in challenge and "max_age=300" in challenge
    assert 'error_description="' in challenge
    error = graphql_error(response)
    assert error["extensions"]["code"] == "STEP_UP_REQUIRED" and error["extensions"]["decision_id"]
    assert "stepup_required" in error["message"]


@pytest.mark.parametrize("claims", [{"acr": "mfa"}, {"amr": ["pwd", "mfa"]}, {"amr": ["hwk"]}])
def test_medium_risk_with_fresh_strong_authentication_is_allowed(world, make_client, claims):
    token = world.token(risk="medium", auth_time=int(time.time()) - 60, **claims)
    response = post(make_client(), token)

    assert response.status_code == 200
    assert response.json()["identity"]["risk"] == "medium"


def test_medium_risk_with_strong_but_stale_authentication_needs_step_up_again(world, make_client):
    token = world.token(risk="medium", acr="mfa", auth_time=int(time.time()) - 301 - 30)
    response = post(make_client(), token)

    assert response.status_code == 401
    assert 'error="insufficient_user_authentication"' in response.headers["www-authenticate"]


def test_medium_risk_with_a_weak_acr_needs_step_up(world, make_client):
    token = world.token(risk="medium", acr="pwd", auth_time=int(time.time()))
    assert post(make_client(), token).status_code == 401


def test_high_risk_is_denied_with_403(world, make_client):
    response = post(make_client(), world.token(risk="high"))

    assert response.status_code == 403
    error = graphql_error(response)
    assert error["extensions"]["code"] == "FORBIDDEN" and "risk_high" in error["message"]
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("posture", ["jailbroken", "untrusted"])
def test_jailbroken_and_untrusted_devices_are_denied(world, make_client, posture):
    response = post(make_client(), world.token(), **{"x-device-attestation": world.attestation(posture)})

    assert response.status_code == 403
    assert f"device_{posture}" in graphql_error(response)["message"]


def test_managed_device_may_write(world, make_client):
    response = post(
        make_client(), world.token(), MUTATION, **{"x-device-attestation": world.attestation("managed")}
    )

    assert response.status_code == 200
    assert response.json()["identity"]["posture"] == "managed"
    assert response.json()["identity"]["profile"] == "write"


def test_unknown_device_may_read_but_must_step_up_to_write(world, make_client):
    client = make_client()
    assert post(client, world.token()).json()["identity"]["posture"] == "unknown"

    response = post(client, world.token(), MUTATION)
    assert response.status_code == 401
    assert "device_unmanaged_write" in graphql_error(response)["message"]


def test_attestation_signed_by_another_key_is_unknown_not_trusted(world, make_client):
    from tests.support.keys import make_keypair
    from tests.support.tokens import attestation

    forged = attestation(make_keypair("ES256", world.mdm.kid), "managed")
    response = post(make_client(), world.token(), MUTATION, **{"x-device-attestation": forged})

    assert response.status_code == 401  # posture unknown: a write needs step-up
    assert "device_unmanaged_write" in graphql_error(response)["message"]


def test_fenced_country_is_denied(world, make_client):
    response = post(make_client(peer=(FR_IP, 5000)), world.token())

    assert response.status_code == 403
    assert "geo_fenced" in graphql_error(response)["message"]


def test_forwarded_address_from_a_trusted_proxy_is_used(world, make_client):
    client = make_client(peer=(PROXY, 5000))

    allowed = post(client, world.token(sub="bob"), **{"x-forwarded-for": f"{DE_IP}, 10.0.0.9"})
    assert allowed.status_code == 200 and allowed.json()["identity"]["country"] == "DE"

    fenced = post(client, world.token(sub="carol"), **{"x-forwarded-for": FR_IP})
    assert fenced.status_code == 403 and "geo_fenced" in graphql_error(fenced)["message"]

    rfc7239 = post(client, world.token(sub="dave"), forwarded=f'for="{FR_IP}:4711";proto=https')
    assert rfc7239.status_code == 403


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(world, make_client):
    from_fenced_country = make_client(peer=(FR_IP, 5000))
    spoofed = post(from_fenced_country, world.token(), **{"x-forwarded-for": US_IP}, forwarded=f"for={US_IP}")
    assert spoofed.status_code == 403 and "geo_fenced" in graphql_error(spoofed)["message"]

    from_us = make_client()
    ignored = post(from_us, world.token(sub="erin"), **{"x-forwarded-for": FR_IP})
    assert ignored.status_code == 200 and ignored.json()["identity"]["country"] == "US"


def test_unknown_country_fails_closed(world, make_client):
    response = post(
        make_client(peer=("10.200.0.1", 5000)), world.token()
    )  # trusted proxy, no header: private

    assert response.status_code == 403
    assert "geo_unknown" in graphql_error(response)["message"]


def test_impossible_travel_asks_for_step_up_and_a_fresh_step_up_satisfies_it(world, make_client, caplog):
    client = make_client(peer=(PROXY, 5000))
    assert post(client, world.token(sub="gina"), **{"x-forwarded-for": US_IP}).status_code == 200

    travelled = post(client, world.token(sub="gina"), **{"x-forwarded-for": DE_IP})
    assert travelled.status_code == 401
    assert 'error="insufficient_user_authentication"' in travelled.headers["www-authenticate"]
    assert "geo_anomaly" in graphql_error(travelled)["message"]
    metrics = client.middleware.gate.metrics
    assert metrics.registry.get_sample_value("ig_gate_geo_anomalies_total", {"tenant": "acme"}) == 1

    stepped_up = world.token(sub="gina", acr="mfa", auth_time=int(time.time()))
    assert post(client, stepped_up, **{"x-forwarded-for": DE_IP}).status_code == 200
    assert post(client, world.token(sub="other"), **{"x-forwarded-for": DE_IP}).status_code == 200
    # one anomaly is one event: counted and logged once however many requests it flags
    assert metrics.registry.get_sample_value("ig_gate_geo_anomalies_total", {"tenant": "acme"}) == 1
    (line,) = [r.getMessage() for r in caplog.records if "geo anomaly" in r.getMessage()]
    assert "'gina'" in line and "DE" in line


def test_unknown_tenant_is_denied(world, make_client):
    response = post(make_client(), world.token(tenant="umbrella"))

    assert response.status_code == 403
    assert "unknown_tenant" in graphql_error(response)["message"]


def test_tenant_from_the_configured_header_when_the_token_has_none(world, make_client):
    client = make_client(identity={"tenant_header": "X-Tenant-ID"})
    token = world.token(tenant=None)

    assert post(client, token, **{"x-tenant-id": "acme"}).json()["identity"]["tenant"] == "acme"
    assert post(client, token, **{"x-tenant-id": "bad tenant!"}).status_code == 400


def test_purpose_header_reaches_the_policy(world, make_client):
    client = make_client(peer=(US_IP, 5000))  # initech: US only, requires a purpose
    token = world.token(tenant="initech", sub="hank")

    assert post(client, token).status_code == 403
    assert post(client, token, **{"x-purpose": "support"}).status_code == 200
    assert (
        post(
            client,
            token,
            MUTATION,
            **{"x-purpose": "support", "x-device-attestation": world.attestation("managed", sub="hank")},
        ).status_code
        == 403
    )


def test_embedded_default_database_resolves_8_8_8_8_to_us(world, make_client):
    client = make_client(peer=("8.8.8.8", 5000), geo={"database": None})
    response = post(client, world.token())

    assert response.status_code == 200
    assert response.json()["identity"]["country"] == "US"


def test_country_of_an_ipv6_peer(world, make_client):
    client = make_client(peer=("2001:db8:de::5", 5000))
    assert post(client, world.token()).json()["identity"]["country"] == "DE"


def test_jp_is_outside_every_example_fence(world, make_client):
    assert post(make_client(peer=(JP_IP, 1)), world.token(tenant="globex")).status_code == 403
