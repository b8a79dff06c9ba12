"""Locust load for tests/sidecar/test_analytics_stack.py: forward-auth calls (nginx auth_request style) of
several tenants and profiles. IG_GATE_LOCUST (JSON) gives per tenant its bearer token and a managed-device
attestation, a high-risk token (denied) and the CSV body of the ingest calls."""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, constant, task

SETUP = json.loads(os.environ.get("IG_GATE_LOCUST", '{"tenants": {}, "risky": ""}'))
TENANTS = sorted(SETUP["tenants"])
WEIGHTS = [SETUP["tenants"][t]["weight"] for t in TENANTS]
READ_URI = "/graphql?query=%7Bme%7Bid%7D%7D"
CSV = SETUP.get("csv", "").encode()


def _caller() -> dict[str, str]:
    tenant = SETUP["tenants"][random.choices(TENANTS, WEIGHTS)[0]]
    return {"authorization": f"Bearer {tenant['token']}", "x-device-attestation": tenant["attestation"],
            "x-forwarded-for": "203.0.113.7"}


class Caller(FastHttpUser):
    """One client of the protected app, calling as a random tenant (weighted)."""

    wait_time = constant(0.005)

    def _authz(self, name: str, headers: dict[str, str]) -> None:
        with self.client.get("/authz", headers=headers, name=name, catch_response=True) as response:
            response.success()  # refusals are part of the mix

    @task(8)
    def read(self) -> None:
        self._authz("read", {**_caller(), "x-original-uri": READ_URI, "x-original-method": "GET"})

    @task(3)
    def write(self) -> None:
        self._authz("write", {**_caller(), "x-original-uri": "/api/items", "x-original-method": "POST"})

    @task(1)
    def ingest(self) -> None:  # Envoy ext_authz style: the original path after /authz, the body sent along
        headers = {**_caller(), "content-type": "text/csv"}
        with self.client.post("/authz/api/import", data=CSV, headers=headers, name="ingest",
                              catch_response=True) as response:
            response.success()

    @task(1)
    def denied(self) -> None:
        headers = {"authorization": f"Bearer {SETUP['risky']}", "x-forwarded-for": "203.0.113.7",
                   "x-original-uri": READ_URI, "x-original-method": "GET"}
        self._authz("risky", headers)

    @task(1)
    def anonymous(self) -> None:
        self._authz("anonymous", {"x-original-uri": READ_URI, "x-original-method": "GET"})
