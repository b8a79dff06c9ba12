"""One pass per request: `Gate.begin` authenticates a request before its body is read, and decide()
continues from what it returned instead of doing phase one again (issue 10 item 6, the warm path)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.decision import Decision
from ig_gate.middleware.gate import Gate, GateRequest
from tests.middleware.conftest import World, query

DECIDED = "ig_gate_decisions_total"


@pytest.fixture
def gate(world: World) -> Iterator[Gate]:
    built = build_gate(world.settings(decision_log={"path": None}))
    yield built
    built.close()


def request(token: str, body: bytes | None = None) -> GateRequest:
    """A GraphQL POST announcing a body of len(query()) bytes; `body` None: not read yet."""
    headers = {
        "content-type": "application/json",
        "content-length": str(len(query().encode())),
        "authorization": f"Bearer {token}",
    }
    return GateRequest("POST", "/graphql", b"", headers, "203.0.113.5", body)


def decided(gate: Gate, outcome: str) -> float:
    samples = gate.metrics.registry.collect()
    return sum(
        s.value for m in samples for s in m.samples if s.name == DECIDED and s.labels["outcome"] == outcome
    )


def test_begin_verifies_the_token_once_and_decide_records_one_decision(world: World, gate: Gate) -> None:
    body = query().encode()
    verified: list[str] = []
    verify = gate.sessions.verify

    def counting(token: str, tenant: str | None) -> object:
        verified.append(token)
        return verify(token, tenant)

    gate.sessions.verify = counting  # type: ignore[method-assign]
    token = world.token(sub="one-pass")
    authenticated = gate.begin(request(token))
    assert type(authenticated) is not Decision
    assert decided(gate, "allow") == 0  # nothing recorded before the body is read
    decision = asyncio.run(gate.decide_async(request(token, body), authenticated))
    assert decision.passes and decision.identity.subject == "one-pass"
    assert len(verified) == 1  # phase two did not authenticate again
    assert decided(gate, "allow") == 1
    sent = {"tenant": "acme", "profile": "read"}
    assert gate.metrics.registry.get_sample_value("ig_gate_request_bytes_total", sent) == len(body)


def test_decide_uses_the_headers_the_token_was_verified_from(world: World, gate: Gate) -> None:
    """A second GateRequest cannot swap the credentials: the headers begin() read are the ones decided."""
    body = query().encode()
    authenticated = gate.begin(request(world.token(sub="first-user")))
    assert type(authenticated) is not Decision
    swapped = request(world.token(sub="someone-else"), body)
    decision = gate.decide(swapped, authenticated)
    assert decision.passes and decision.identity.subject == "first-user"


def test_begin_refuses_a_bad_token_unread_and_records_it_once(world: World, gate: Gate) -> None:
    refusal = gate.begin(request("not-a-jwt"))
    assert type(refusal) is Decision and refusal.outcome == "unauthenticated"
    assert decided(gate, "unauthenticated") == 1


def test_authenticate_still_returns_the_session_for_other_transports(world: World, gate: Gate) -> None:
    session = gate.authenticate(request(world.token(sub="ws-user")))
    assert session.subject == "ws-user"  # type: ignore[union-attr]
    decision = gate.decide(request(world.token(sub="ws-user"), query().encode()), session)
    assert decision.passes
