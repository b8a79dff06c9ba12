"""Locust scenarios against a GraphQL endpoint protected by ig-gate (middleware or sidecar).

    locust -f bench/locustfile.py --host https://gateway.example --idp-key idp.pem --mdm-key mdm.pem

Users (weights in brackets):

- `ReadHeavyTenant` [6]  low-risk sessions on managed devices: mostly queries, some mutations -> 200;
- `WriteBurst` [2]       low-risk sessions sending bursts of mutations -> 200;
- `StepUpFlow` [1]       a medium-risk session mutates -> 401 with an RFC 9470 challenge; the user fetches
                         a stepped-up token (acr from the challenge) from `--idp-url` (POST /token, as the
                         dev IdP serves it) or, without it, mints one with `--idp-key`, and retries -> 200;
- `DeniedDevice` [1]     a jailbroken device attestation -> 403;
- `GeoFencedTenant` [1]  a client address outside the tenant's allowed countries -> 403.

Tokens are minted locally with the key the user passes (the IdP signing key the gateway's JWKS holds,
the MDM key for device attestations); the client address travels in `X-Forwarded-For`, so the locust
host must be a trusted proxy of the gateway (the demo trusts 127.0.0.1). Every request says which status
it expects: a 401/403 that the scenario expects is a success, anything else a failure. At the end the
share of expected vs unexpected 401/403 is printed, and the exit code is 1 when any response was
unexpected (also in distributed runs: workers report their counts to the master).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.user.wait_time import constant_pacing

from ig_gate.sidecar.devidp import DEFAULT_AUDIENCE, DEFAULT_ISSUER, DevIdP, DevKey

QUERY = {"query": "query Me { me { subject tenant risk } }"}
MUTATION = {"query": 'mutation Update { update(name: "load") { ok } }', "variables": {"name": "load"}}
REFUSALS = (401, 403)
_ACR_VALUES = re.compile(r'acr_values="([^"]*)"')
Check = Callable[[Any], str | None]  # a response -> what is wrong with it, or None


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser  # locust's own parser (argument groups do not take include_in_web_ui)
    group.add_argument("--idp-key", env_var="IG_LOAD_IDP_KEY", default="",
                       help="PEM private key that signs session tokens (ES256)", include_in_web_ui=False)
    group.add_argument("--idp-kid", env_var="IG_LOAD_IDP_KID", default="demo-idp-1", help="its key id")
    group.add_argument("--mdm-key", env_var="IG_LOAD_MDM_KEY", default="",
                       help="PEM private key that signs device attestations (ES256)", include_in_web_ui=False)
    group.add_argument("--mdm-kid", env_var="IG_LOAD_MDM_KID", default="demo-mdm-1", help="its key id")
    group.add_argument("--idp-url", env_var="IG_LOAD_IDP_URL", default="",
                       help="a dev IdP base URL whose POST /token issues stepped-up tokens (optional)")
    group.add_argument("--issuer", env_var="IG_LOAD_ISSUER", default=DEFAULT_ISSUER, help="token iss")
    group.add_argument("--audience", env_var="IG_LOAD_AUDIENCE", default=DEFAULT_AUDIENCE, help="token aud")
    group.add_argument("--tenant", env_var="IG_LOAD_TENANT", default="acme", help="tenant of the sessions")
    group.add_argument("--graphql-path", env_var="IG_LOAD_GRAPHQL_PATH", default="/graphql")
    group.add_argument("--client-ip", env_var="IG_LOAD_CLIENT_IP", default="8.8.8.8",
                       help="X-Forwarded-For inside the tenant's geo-fence")
    group.add_argument("--fenced-ip", env_var="IG_LOAD_FENCED_IP", default="1.1.1.1",
                       help="X-Forwarded-For outside the tenant's geo-fence")
    group.add_argument("--pacing", env_var="IG_LOAD_PACING", type=float, default=0.1,
                       help="seconds between the starts of a user's tasks (constant pacing)")  # fmt: skip


class Outcomes:
    """401/403 responses counted as expected or unexpected, plus any other unexpected status."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, status: int, expected: int) -> None:
        if status in REFUSALS or status != expected:
            self.counts[f"{status} {'expected' if status == expected else 'unexpected'}"] += 1

    def merge(self, counts: Mapping[str, int]) -> None:
        self.counts.update(counts)

    def drain(self) -> dict[str, int]:
        counts, self.counts = dict(self.counts), Counter()
        return counts

    @property
    def unexpected(self) -> int:
        return sum(n for key, n in self.counts.items() if key.endswith("unexpected"))

    def report(self) -> str:
        lines = ["ig-gate outcomes: status  expected  unexpected  expected share"]
        for status in REFUSALS:
            good, bad = self.counts[f"{status} expected"], self.counts[f"{status} unexpected"]
            share = f"{100 * good / (good + bad):.1f}%" if good + bad else "-"
            lines.append(f"ig-gate outcomes: {status:6d}  {good:8d}  {bad:10d}  {share:>14s}")
        refusals = {f"{status} unexpected" for status in REFUSALS}
        others = sum(n for k, n in self.counts.items() if k.endswith("unexpected") and k not in refusals)
        lines.append(f"ig-gate outcomes: other unexpected statuses {others}")
        return "\n".join(lines)


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    outcomes = Outcomes()
    worker = isinstance(environment.runner, WorkerRunner)

    @environment.events.request.add_listener
    def _record(context: dict, response: Any, **__: Any) -> None:
        if "expected" in context:
            outcomes.record(getattr(response, "status_code", 0) or 0, context["expected"])

    @environment.events.report_to_master.add_listener
    def _to_master(data: dict, **__: Any) -> None:
        data["ig_gate_outcomes"] = outcomes.drain()

    @environment.events.worker_report.add_listener
    def _from_worker(data: dict, **__: Any) -> None:
        outcomes.merge(data.get("ig_gate_outcomes", {}))

    @environment.events.quitting.add_listener
    def _report(environment: Environment, **__: Any) -> None:
        if worker:
            return
        print(outcomes.report(), flush=True)
        if outcomes.unexpected:
            environment.process_exit_code = 1


def _rfc9470_problem(response: Any) -> str | None:
    header = response.headers.get("WWW-Authenticate", "")
    if "insufficient_user_authentication" not in header:
        return f"401 without an RFC 9470 step-up challenge: {header[:120]!r}"
    return None


def _identity(environment: Environment) -> DevIdP:
    options = environment.parsed_options
    if options is None or not options.idp_key or not options.mdm_key:
        raise RuntimeError("ig-gate locustfile: --idp-key and --mdm-key (PEM private keys) are required")
    return DevIdP(
        DevKey.load(Path(options.idp_key), options.idp_kid),
        DevKey.load(Path(options.mdm_key), options.mdm_kid),
        issuer=options.issuer,
        audience=options.audience,
    )


class GatewayUser(FastHttpUser):
    """Shared plumbing: a session token, a device attestation and requests that state their expectation."""

    abstract = True
    risk = "low"
    posture = "managed"

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.idp = _identity(self.environment)
        self.subject = f"load-{type(self).__name__.lower()}-{uuid.uuid4().hex[:8]}"
        self.token = self.idp.session_token(self.subject, tenant=self.options.tenant, risk=self.risk)
        self.device = self.idp.attestation(
            self.posture, device_id=f"{self.subject}-device", subject=self.subject
        )
        self.client_ip = self.options.client_ip

    def wait_time(self) -> float:
        return constant_pacing(self.options.pacing)(self)

    def graphql(
        self, body: dict, expected: int, name: str, token: str | None = None, check: Check | None = None
    ) -> Any:
        """POST the GraphQL body; success exactly when the status is `expected` (and `check` finds no
        problem in the response)."""
        headers = {
            "Authorization": f"Bearer {token or self.token}",
            "X-Device-Attestation": self.device,
            "X-Forwarded-For": self.client_ip,
        }
        with self.client.post(
            self.options.graphql_path, json=body, headers=headers, name=name,
            context={"expected": expected}, catch_response=True,
        ) as response:  # fmt: skip
            problem = f"expected {expected}, got {response.status_code}"
            if response.status_code == expected:
                problem = check(response) if check else None
            if problem:
                response.failure(problem)
            else:
                response.success()
            return response


class ReadHeavyTenant(GatewayUser):
    weight = 6

    @task(9)
    def query(self) -> None:
        self.graphql(QUERY, 200, "read: query")

    @task(1)
    def mutation(self) -> None:
        self.graphql(MUTATION, 200, "read: mutation")


class WriteBurst(GatewayUser):
    weight = 2

    @task
    def burst(self) -> None:
        for _ in range(5):
            self.graphql(MUTATION, 200, "write burst: mutation")


class StepUpFlow(GatewayUser):
    weight = 1
    risk = "medium"

    @task
    def step_up(self) -> None:
        challenge = self.graphql(MUTATION, 401, "step-up: challenged mutation", check=_rfc9470_problem)
        header = challenge.headers.get("WWW-Authenticate", "")
        if challenge.status_code != 401 or _rfc9470_problem(challenge):
            return
        match = _ACR_VALUES.search(header)
        acr = (match.group(1).split() if match else ["mfa"])[0]
        stepped = self._stepped_up_token(acr)
        if stepped:
            self.graphql(MUTATION, 200, "step-up: retried mutation", token=stepped)

    def _stepped_up_token(self, acr: str) -> str | None:
        if not self.options.idp_url:
            return self.idp.session_token(self.subject, tenant=self.options.tenant, risk=self.risk,
                                          acr=acr, amr=[acr])  # fmt: skip
        form = {"sub": self.subject, "tenant": self.options.tenant, "risk": self.risk, "acr": acr, "amr": acr}
        url = self.options.idp_url.rstrip("/") + "/token"
        with self.client.post(url, json=form, name="step-up: IdP token", catch_response=True) as response:
            try:
                token = response.json().get("access_token") if response.status_code == 200 else None
            except (ValueError, AttributeError):
                token = None
            if not token:
                response.failure(f"IdP token endpoint answered {response.status_code} without a token")
            return token


class DeniedDevice(GatewayUser):
    weight = 1
    posture = "jailbroken"

    @task
    def query(self) -> None:
        self.graphql(QUERY, 403, "denied device: query")


class GeoFencedTenant(GatewayUser):
    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.client_ip = self.options.fenced_ip

    @task
    def query(self) -> None:
        self.graphql(QUERY, 403, "geo-fenced: query")
