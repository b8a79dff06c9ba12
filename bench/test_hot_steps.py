"""Two small steps of every request, alone: the metrics record and the path normalisation.

`bench/test_middleware_path.py` measures the whole warm request; these isolate two of its steps
(bench/RESULTS.md, "Where the time goes") so a change to either can be compared without the rest's noise.
Run: `.venv/bin/python -m pytest -q bench/test_hot_steps.py --benchmark-only`.
"""

from __future__ import annotations

from typing import Any

import pytest

from ig_gate.middleware.metrics import BATCH, GateMetrics
from ig_gate.middleware.paths import normalise_scope

ROUNDS, ITERATIONS = 200, 4 * BATCH  # a whole number of flushes per round: their cost is amortized


def test_metrics_record_one_request(benchmark):
    """memo() and observe_decision(), as the gate calls them once per request, with the flushes they cause."""
    metrics = GateMetrics(tenants=("acme", "globex"))
    made = [0]

    def record() -> None:
        made[0] += 1
        metrics.memo(True)
        metrics.observe_decision("allow", "ok", "acme", "read", 1.2e-5, 61)

    benchmark.pedantic(record, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=1)
    labels = {"outcome": "allow", "reason": "ok", "tenant": "acme", "profile": "read"}
    assert metrics.registry.get_sample_value("ig_gate_decisions_total", labels) == made[0]


@pytest.mark.parametrize(
    "raw",
    [b"/graphql", b"/api/v1/tenants/acme/orders", b"/caf%C3%A9/%7euser//x"],
    ids=["graphql", "long-plain", "escapes-and-slashes"],
)
def test_path_normalise_scope(benchmark, raw):
    """normalise_scope() on a server's scope (`raw_path` as sent, `path` as the server decoded it)."""
    path = raw.decode().replace("%C3%A9", "é").replace("%7e", "~")
    scope: dict[str, Any] = {"type": "http", "path": path, "raw_path": raw}

    def normalise() -> str:
        scope["raw_path"], scope["path"] = raw, path
        return normalise_scope(scope)

    benchmark.pedantic(normalise, rounds=ROUNDS, iterations=1000, warmup_rounds=1)
    assert "//" not in scope["path"] and "%7e" not in scope["path"]
