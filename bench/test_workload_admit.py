"""Per-request cost of the workload side of the gate: `Workload.admit()` (tenant bucket + demand count).

Run: .venv/bin/python -m pytest bench/test_workload_admit.py --benchmark-only
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from ig_gate.middleware.settings import settings_from_dict
from ig_gate.middleware.workload import Workload


@pytest.fixture(scope="module")
def workload() -> Workload:
    settings = settings_from_dict({
        "metrics": {"tenants": ["acme", "globex"]},
        "tenants": {"capped": {"max_qps": {"read": 1e12}}},
        "autoscale": {"routes": ["/items/{id}"]},
    })
    return Workload(settings, CollectorRegistry())


def test_admit_uncapped_tenant(benchmark, workload: Workload) -> None:
    benchmark(workload.admit, "acme", "read", "/graphql")


def test_admit_capped_tenant(benchmark, workload: Workload) -> None:
    benchmark(workload.admit, "capped", "read", "/graphql")


def test_admit_route_template(benchmark, workload: Workload) -> None:
    benchmark(workload.admit, "acme", "read", "/items/42")
