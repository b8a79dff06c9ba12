"""Apollo Router external coprocessor (protocol version 1): `POST /apollo/coprocessor`.

Stages handled (other request stages pass through with `control: "continue"`; response stages
`RouterResponse`, `SupergraphResponse`, `ExecutionResponse`, `SubgraphResponse` are echoed with no
`control` at all: on a response stage the Router sets the client's HTTP status from `control`, so even
`"continue"` would turn a 401 or 403 from the graph into a 200):

- `RouterRequest`: headers arrive as a map of lists and the body as a JSON *string*. The request is
  decided by the Gate; allowed -> `continue` with the verified identity in
  `context.entries["ig_gate::identity"]`; refused -> `{"break": status}` with a GraphQL error body (a
  string, as the Router stage requires) and, for 401, the RFC 9470 / RFC 6750 `WWW-Authenticate` header.
- `SupergraphRequest` (body is an object): decided the same way; then every name in
  `context.entries["apollo::authorization::required_policies"]` (Apollo's `@policy` directive) is set to
  whether `data.ig.policies[name]` is exactly true for the request's policy input.

Each configured stage is decided (and counted, and logged) on its own: with both stages on, a client
request is decided twice, the second time from the gate's memo.

The payload has no peer address, and the Router forwards the client's own `x-forwarded-for` /
`forwarded` headers: by default (`server.coprocessor_trusted_hops: 0`) they are not read and geo is
unknown. With N > 0 the N rightmost entries are taken as written by our own load balancer(s) in front
of the Router, so the client is the N-th entry from the right (`geo.trusted_proxies` left of it are
skipped); see docs/listeners.md. `id`, `version`, `stage` (and `subgraphRequestId`) are echoed unchanged.

Malformed payloads never cause a 500: a body that is not a JSON object with `version: 1` and a `stage`
gets HTTP 400 with a JSON error (the Router then fails the client request); a well-formed envelope with
bad fields gets `{"break": 400}` and a GraphQL error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.routing import BaseRoute, Route

from ig_gate.bundles.errors import PolicyEvalError
from ig_gate.errors import IgGateError
from ig_gate.middleware.decision import Decision
from ig_gate.middleware.gate import GateRequest, evaluate_policy
from ig_gate.sidecar.asgi_io import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    dumps,
    read_body,
    respond_json,
)
from ig_gate.sidecar.wiring import Sidecar, SidecarEndpoint

log = logging.getLogger("ig_gate.sidecar.coprocessor")

PATH = "/apollo/coprocessor"
VERSION = 1
IDENTITY_KEY = "ig_gate::identity"
POLICIES_KEY = "apollo::authorization::required_policies"
POLICY_PACKAGE = "data.ig.policies"
_ECHOED = ("version", "stage", "id", "subgraphRequestId")
_JSON_CONTENT = [(b"content-type", b"application/json")]
_MAX_POLICIES = 64


class PayloadError(IgGateError, ValueError):
    """A coprocessor payload field has the wrong shape; the message names the field."""


class Coprocessor(SidecarEndpoint):
    """The pure-ASGI coprocessor endpoint."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            await _invalid(send, 413, f"coprocessor payload exceeds {self.max_body_bytes} bytes")
            return
        if raw is None:
            return
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            await _invalid(send, 400, "coprocessor payload is not valid JSON")
            return
        if not isinstance(payload, dict):
            await _invalid(send, 400, "coprocessor payload must be a JSON object")
            return
        if payload.get("version") != VERSION or not isinstance(payload.get("stage"), str):
            await _invalid(send, 400, f"coprocessor payload needs version {VERSION} and a stage")
            return
        await respond_json(send, 200, await self.handle(payload), _JSON_CONTENT)

    async def handle(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The response payload for a well-formed envelope (never raises)."""
        stage = payload["stage"]
        answer = {key: payload[key] for key in _ECHOED if key in payload}
        if stage.endswith("Response"):
            return answer  # no control: the Router would rewrite the response status from it
        answer["control"] = "continue"
        if stage not in ("RouterRequest", "SupergraphRequest"):
            return answer
        string_body = stage == "RouterRequest"
        try:
            request = _gate_request(payload, string_body)
        except PayloadError as exc:
            return self._refuse(answer, self.sidecar.malformed(str(exc), graphql=True), string_body)
        decision = await self.gate.decide_async(request)
        if not decision.passes:
            return self._refuse(answer, decision, string_body)
        entries = _entries(payload)
        identity = decision.identity
        if identity is not None:
            entries[IDENTITY_KEY] = {
                "subject": identity.subject,
                "tenant": identity.tenant,
                "risk": identity.risk,
                "posture": identity.posture,
                "country": identity.country,
                "acr": identity.acr,
                "stepup": identity.stepup,
                "decision_id": identity.decision_id,
            }
        required = entries.get(POLICIES_KEY)
        if stage == "SupergraphRequest" and isinstance(required, Mapping):
            entries[POLICIES_KEY] = await self.policies(required, decision)
        context = payload.get("context")
        answer["context"] = {**(context if isinstance(context, dict) else {}), "entries": entries}
        return answer

    async def policies(self, required: Mapping[str, Any], decision: Decision) -> dict[str, bool]:
        """name -> whether `data.ig.policies[name]` is exactly true for the decision's input."""
        snapshot = self.gate.policy.current()
        document = decision.input
        granted: dict[str, bool] = {}
        for index, name in enumerate(required):
            granted[name] = False
            if snapshot is None or document is None or index >= _MAX_POLICIES:
                continue
            try:
                query = f"{POLICY_PACKAGE}[{json.dumps(name)}]"
                granted[name] = await evaluate_policy(snapshot, query, document) is True
            except PolicyEvalError as exc:
                log.warning("@policy %.64r could not be evaluated: %s", name, str(exc)[:200])
        return granted

    def _refuse(self, answer: dict[str, Any], decision: Decision, string_body: bool) -> dict[str, Any]:
        status, headers, body = self.responses.http(decision._replace(graphql=True))
        answer["control"] = {"break": status}
        answer["body"] = body.decode() if string_body else json.loads(body)
        answer["headers"] = {
            name.decode("latin-1"): [value.decode("latin-1")]
            for name, value in headers
            if name != b"content-length"
        }
        return answer


def _gate_request(payload: Mapping[str, Any], string_body: bool) -> GateRequest:
    """The client request the payload describes; PayloadError on fields of the wrong shape."""
    headers = _headers(payload.get("headers"))
    body = payload.get("body")
    if body is None:
        raw_body = None
    elif isinstance(body, str):
        raw_body = body.encode()
    elif isinstance(body, dict) and not string_body:
        raw_body = dumps(body)
        if not any(name == b"content-type" for name, _ in headers):
            headers.append((b"content-type", b"application/json"))
    else:
        raise PayloadError("body: must be a JSON string (Router stages) or an object (Supergraph stages)")
    method = payload.get("method") or "POST"
    target = payload.get("path") or "/"
    if not isinstance(method, str) or not isinstance(target, str):
        raise PayloadError("method and path: must be strings")
    path, _, query = target.partition("?")
    # the Router's endpoint is GraphQL whatever its path: the operation type is read from the body
    return GateRequest(method.upper(), path or "/", query, headers, None, raw_body, graphql=True)


def _headers(raw: Any) -> list[tuple[bytes, bytes]]:
    """Apollo's `{name: [values]}` map as ASGI raw header pairs (lower-case names)."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise PayloadError("headers: must be an object mapping names to lists of strings")
    pairs = []
    for name, values in raw.items():
        for value in [values] if isinstance(values, str) else values if isinstance(values, list) else [None]:
            if not isinstance(value, str):
                raise PayloadError(f"headers.{name[:64]}: values must be strings")
            pairs.append((name.lower().encode("latin-1", "replace"), value.encode("utf-8", "replace")))
    return pairs


def _entries(payload: Mapping[str, Any]) -> dict[str, Any]:
    context = payload.get("context")
    entries = context.get("entries") if isinstance(context, dict) else None
    return dict(entries) if isinstance(entries, dict) else {}


async def _invalid(send: Send, status: int, message: str) -> None:
    await respond_json(send, status, {"error": "invalid_coprocessor_payload", "message": message})


def routes(sidecar: Sidecar) -> list[BaseRoute]:
    """`POST /apollo/coprocessor`."""
    return [Route(PATH, Coprocessor(sidecar), methods=["POST"])]
