"""Locust load for tests/sidecar/test_tenant_caps_load.py: forward-auth calls of a noisy tenant (far over its
read cap) and a quiet one. IG_GATE_LOCUST (JSON) gives each user class its token and pacing; each request
is named `<tenant> <status>` so the stats count 429s per tenant."""

from __future__ import annotations

import json
import os

from locust import FastHttpUser, constant_pacing, task

SETUP = json.loads(os.environ.get("IG_GATE_LOCUST", "{}"))
READ = {"x-original-uri": "/graphql?query=%7Bme%7Bid%7D%7D", "x-original-method": "GET",
        "x-forwarded-for": "203.0.113.7"}


def _caller(tenant: str) -> type[FastHttpUser]:
    setup = SETUP.get(tenant, {"token": "", "pacing": 1.0, "users": 0})

    class Caller(FastHttpUser):
        fixed_count = setup["users"]
        wait_time = constant_pacing(setup["pacing"])
        headers = {**READ, "authorization": f"Bearer {setup['token']}", **setup.get("headers", {})}

        @task
        def read(self) -> None:
            with self.client.get("/authz", headers=self.headers, catch_response=True) as response:
                response.request_meta["name"] = f"{tenant} {response.status_code}"
                response.success()

    Caller.__name__ = f"{tenant.capitalize()}Caller"
    return Caller


NoisyCaller = _caller("noisy")
QuietCaller = _caller("quiet")
