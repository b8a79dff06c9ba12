"""What a request over its tenant's cap costs the gate, against the same request admitted under a cap it does
not reach: ZeroTrustMiddleware driven directly (no server, no event loop; warm token, metrics and the
decision log on), as bench/test_middleware_path.py does. The refusal is still authenticated (the tenant
comes from the verified token), classified (caps are per profile) and recorded with its reason; its body
is encoded once per kind of refusal (middleware/responses.py). Serving-thread CPU per call is in
extra_info (~21 µs refused, ~25 µs admitted here; ~30-37 µs refused when each body was JSON-encoded
per request); a server adds its own HTTP handling (~60-80 µs per request with uvicorn here).

Run: .venv/bin/python -m pytest bench/test_tenant_cap_refusal.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.test_middleware_path import Request, noop_app, timed
from ig_gate.middleware.asgi import ZeroTrustMiddleware
from tests.middleware.conftest import World, build_world
from tests.support import tokens


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("bench-caps-world"))


def _protected(world: World, log: Path, cap: float) -> ZeroTrustMiddleware:
    settings = world.settings(
        tenants={"acme": {"max_qps": {"read": cap}}},
        decision_log={"path": str(log), "queue_size": 10_000_000},
    )
    protected = ZeroTrustMiddleware(noop_app, config=settings)
    protected.system.start()
    return protected


@pytest.mark.parametrize(("cap", "outcome"), [(1.0, "too_many_requests"), (1e12, "allow")],
                         ids=["over_cap_refused_429", "under_cap_admitted"])
def test_request_over_or_under_its_tenants_cap(
    benchmark: Any, world: World, tmp_path: Path, cap: float, outcome: str
) -> None:
    protected = _protected(world, tmp_path / "decisions.jsonl", cap)
    request = Request(protected, tokens.session_token(world.idp), "203.0.113.5")
    request.call()  # warm: the token verified, the decision memoized (or the bucket emptied)
    timed(benchmark, request, rounds=100, iterations=200)
    protected.gate.close()
    decisions = protected.gate.metrics.registry.get_sample_value
    labels = {"outcome": outcome, "tenant": "acme", "profile": "read"}
    labels["reason"] = "tenant_over_cap" if cap == 1.0 else "ok"
    assert (decisions("ig_gate_decisions_total", labels) or 0) >= request.made - 1
