"""Grafana dashboards for ig-gate, built from code: `python deploy/grafana/dashboards.py` rewrites the JSON
files beside it (a test fails while they differ from what this script builds).

Each panel names its PromQL; the recording rules they use are in deploy/prometheus-analytics-rules.yaml.
`$tenant` (a multi-value variable, "All" = `.*`) filters the tenant dashboard. `or vector(0)` marks
counters that have no series until their first event (a revert, a failure, a scale event).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
T = "$tenant"

# uid -> (title, [(panel title, unit, [(expr, legend)])])
DASHBOARDS: dict[str, tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = {
    "ig-gate-rollout": (
        "ig-gate: policy rollout status",
        [
            (
                "Active bundle",
                "none",
                [("max by (revision, version) (ig_gate_bundle_info)", "{{revision}} {{version}}")],
            ),
            ("Rollout stage", "none", [("max(ig_gate_rollout_stage)", "stage")]),
            (
                "Decisions by rollout role",
                "reqps",
                [
                    (
                        "sum by (role, outcome) (rate(ig_gate_decisions_by_role_total[5m])) or vector(0)",
                        "{{role}} {{outcome}}",
                    ),
                ],
            ),
            (
                "Automatic reverts (24h)",
                "none",
                [("sum(increase(ig_gate_rollout_reverts_total[24h]))", "reverts")],
            ),
            (
                "Bundle events (1h)",
                "none",
                [("sum by (kind) (increase(ig_gate_bundle_events_total[1h])) or vector(0)", "{{kind}}")],
            ),
            (
                "Rollback floor unset",
                "none",
                [("max by (instance) (ig_gate_rollback_floor_unset)", "{{instance}}")],
            ),
        ],
    ),
    "ig-gate-decisions": (
        "ig-gate: zero-trust decisions",
        [
            (
                "Decisions by outcome",
                "reqps",
                [("sum by (outcome) (tenant_outcome:ig_gate_decisions:rate5m)", "{{outcome}}")],
            ),
            (
                "Top refusal reasons",
                "reqps",
                [
                    (
                        'topk(10, sum by (reason) (rate(ig_gate_decisions_total{outcome!="allow"}[5m])))',
                        "{{reason}}",
                    ),
                ],
            ),
            ("Decision time", "s", [("quantile:ig_gate_decision_seconds:rate5m", "p{{quantile}}")]),
            (
                "Availability error-budget burn (1h, 6h)",
                "none",
                [
                    ("tenant:ig_gate_slo_availability_burn:rate1h", "{{tenant}} 1h"),
                    ("tenant:ig_gate_slo_availability_burn:rate6h", "{{tenant}} 6h"),
                ],
            ),
            (
                "Latency error-budget burn (1h, 6h)",
                "none",
                [
                    (":ig_gate_slo_latency_burn:rate1h", "1h"),
                    (":ig_gate_slo_latency_burn:rate6h", "6h"),
                ],
            ),
            (
                "Decision memo hit ratio",
                "percentunit",
                [
                    (
                        '(sum(rate(ig_gate_memo_lookups_total{result="hit"}[5m])) or vector(0))'
                        " / sum(rate(ig_gate_memo_lookups_total[5m]))",
                        "hit ratio",
                    ),
                ],
            ),
            (
                "Failure mode",
                "reqps",
                [
                    (
                        "sum by (kind, mode) (rate(ig_gate_failure_mode_total[5m])) or vector(0)",
                        "{{kind}} {{mode}}",
                    )
                ],
            ),
            (
                "Impossible-travel anomalies (1h)",
                "none",
                [
                    (
                        "sum by (tenant) (increase(ig_gate_geo_anomalies_total[1h])) or vector(0)",
                        "{{tenant}}",
                    ),
                ],
            ),
        ],
    ),
    "ig-gate-workload": (
        "ig-gate: workload profiles vs pods",
        [
            (
                "Requests by profile",
                "reqps",
                [("sum by (profile) (tenant_profile:ig_gate_calls:rate5m)", "{{profile}}")],
            ),
            (
                "Profile rate (EWMA; subscription: open)",
                "reqps",
                [
                    ("sum by (profile) (ig_gate_profile_rate)", "{{profile}}"),
                ],
            ),
            (
                "Demand and forecast",
                "reqps",
                [
                    (
                        "max by (component, profile) (ig_gate_autoscale_demand)",
                        "{{component}} {{profile}} demand",
                    ),
                    (
                        "max by (component, profile) (ig_gate_autoscale_forecast)",
                        "{{component}} {{profile}} forecast",
                    ),
                ],
            ),
            (
                "Replicas: recommended, raw, running pods",
                "none",
                [
                    ("max by (component) (ig_gate_autoscale_desired_replicas)", "{{component}} recommended"),
                    ("max by (component) (ig_gate_autoscale_raw_replicas)", "{{component}} raw"),
                    ('count(up{job="ig-gate"} == 1)', "pods scraped"),
                ],
            ),
            (
                "Dominant profile",
                "none",
                [("max by (component, profile) (ig_gate_profile_dominant)", "{{component}} {{profile}}")],
            ),
            (
                "Scale events, holds and thrash (1h)",
                "none",
                [
                    (
                        "sum by (component, direction) (increase(ig_gate_autoscale_scale_events_total[1h]))"
                        " or vector(0)",
                        "{{component}} {{direction}}",
                    ),
                    (
                        "sum by (reason) (increase(ig_gate_autoscale_held_total[1h])) or vector(0)",
                        "held {{reason}}",
                    ),
                    (
                        "sum by (component) (increase(ig_gate_autoscale_thrash_total[1h])) or vector(0)",
                        "thrash {{component}}",
                    ),
                ],
            ),
        ],
    ),
    "ig-gate-tenants": (
        "ig-gate: tenant usage and cost",
        [
            ("Calls per tenant", "reqps", [(f'tenant:ig_gate_calls:rate5m{{tenant=~"{T}"}}', "{{tenant}}")]),
            (
                "Outcomes per tenant",
                "reqps",
                [
                    (f'tenant_outcome:ig_gate_decisions:rate5m{{tenant=~"{T}"}}', "{{tenant}} {{outcome}}"),
                ],
            ),
            (
                "Cost per hour",
                "currency",
                [(f'tenant:ig_gate_cost_per_hour:rate5m{{tenant=~"{T}"}}', "{{tenant}}")],
            ),
            (
                "Cost by profile (per hour)",
                "currency",
                [
                    (
                        f'sum by (profile) (tenant_profile:ig_gate_cost:rate5m{{tenant=~"{T}"}}) * 3600',
                        "{{profile}}",
                    ),
                ],
            ),
            (
                "Usage z-scores (alert at |z| >= 3 on both)",
                "none",
                [
                    (f'tenant:ig_gate_calls:z_hour_of_week{{tenant=~"{T}"}}', "{{tenant}} hour of week"),
                    (f'tenant:ig_gate_calls:z_rolling{{tenant=~"{T}"}}', "{{tenant}} rolling 1d"),
                ],
            ),
            (
                "Refused over cap",
                "reqps",
                [
                    (
                        "sum by (tenant, profile) "
                        f'(rate(ig_gate_tenant_over_cap_total{{tenant=~"{T}"}}[5m]))',
                        "{{tenant}} {{profile}}",
                    ),
                ],
            ),
            (
                "Caps (requests/s)",
                "reqps",
                [
                    (
                        f'max by (tenant, profile) (ig_gate_tenant_cap_qps{{tenant=~"{T}"}})',
                        "{{tenant}} {{profile}}",
                    )
                ],
            ),
            (
                "Calls in the last 30 days",
                "none",
                [
                    (
                        f'sum by (tenant) (increase(ig_gate_decisions_total{{tenant=~"{T}"}}[30d]))',
                        "{{tenant}}",
                    ),
                ],
            ),
        ],
    ),
}


def panel(index: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    """A time-series panel, two per row."""
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": 12 * (index % 2), "y": 8 * (index // 2), "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str) -> dict[str, Any]:
    """The dashboard `uid` as Grafana's JSON model."""
    title, panels = DASHBOARDS[uid]
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
    ]
    if any(T in expr for _, _, targets in panels for expr, _ in targets):
        variables.append(
            {
                "name": "tenant",
                "type": "query",
                "datasource": DATASOURCE,
                "label": "Tenant",
                "query": {"query": "label_values(ig_gate_decisions_total, tenant)", "refId": "tenants"},
                "refresh": 2,
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["ig-gate"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": variables},
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def render(uid: str) -> str:
    """The JSON file text of dashboard `uid`."""
    return json.dumps(dashboard(uid), indent=2) + "\n"


def main() -> int:
    for uid in DASHBOARDS:
        (HERE / f"{uid}.json").write_text(render(uid), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
