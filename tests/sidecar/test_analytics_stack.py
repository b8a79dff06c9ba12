"""Tenant analytics end to end with real parts on 127.0.0.1: a Prometheus (1 s scrape and rule evaluation,
with a backfilled history from 2026-11-01) scrapes a running `ig-gate serve` under a locust load of several
tenants and profiles; every analytics recording rule and every Grafana panel query returns data; the
monthly report is generated from that Prometheus; a real Alertmanager routes tenant-anomaly alerts with the
shipped routing tree to the teams' webhooks, served by the test."""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry

from ig_gate.middleware.analytics import HOUR, WEEK, cost_of, export_cost_model
from ig_gate.middleware.settings import CostSettings
from ig_gate.sidecar.cli import main
from tests.middleware.conftest import REPO, World
from tests.sidecar.test_deploy import exported_series
from tests.support import prometheus as prom
from tests.support.procs import free_port, wait_until
from tests.support.sidecar import IG_GATE, serve_sidecar

pytestmark = pytest.mark.skipif(
    prom.PROMETHEUS is None or prom.PROMTOOL is None, reason="Debian package prometheus not installed"
)

DEPLOY = REPO / "deploy"
RULE_FILES = [DEPLOY / "prometheus-analytics-rules.yaml", DEPLOY / "prometheus-rules.yaml"]
LOCUST = Path(sys.executable).with_name("locust")
HISTORY_START = datetime(2026, 11, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
BASE = {"acme": 4.0, "globex": 2.0, "initech": 1.0}  # calls/s of the backfilled history
INITECH_FROM = datetime(2026, 11, 20, tzinfo=UTC)  # a tenant that starts mid-month
SURGE = (datetime(2026, 11, 18, 10, tzinfo=UTC), datetime(2026, 11, 18, 12, tzinfo=UTC))  # globex x6
# (profile, outcome, reason, share)
MIX = (("read", "allow", "ok", 0.72), ("write", "allow", "ok", 0.2), ("read", "deny", "risk_high", 0.07),
       ("read", "error", "no_bundle", 0.01))
CSV = "id,name,amount\n" + "".join(f"{i},item-{i},{i}.50\n" for i in range(200))  # locust's ingest body
COST = {"currency": "EUR", "per_1k_reads": 0.02, "per_1k_writes": 0.1, "per_subscription_minute": 0.0001,
        "per_ingest_mb": 0.05}


def history_rate(tenant: str, at: datetime) -> float:
    """The backfilled calls/s: a daily cycle, quieter weekends, globex's surge, initech from the 20th."""
    if tenant == "initech" and at < INITECH_FROM:
        return 0.0
    rate = BASE[tenant] * (1 + 0.5 * math.sin(2 * math.pi * (at.hour - 6) / 24))
    rate *= 0.6 if at.weekday() >= 5 else 1.0
    if tenant == "globex" and SURGE[0] <= at < SURGE[1]:
        rate *= 6
    return rate


def history(now: datetime) -> tuple[list[str], dict[tuple[str, str, str], float]]:
    """OpenMetrics texts of the history, one a day (promtool reads its whole input once per 2-hour block:
    one file a day keeps that linear): November 2026 (the report's month) and the hours one to four weeks
    before `now` (the same-hour-of-week baseline of the live rules), up to three hours before `now`; and the
    decisions per (tenant, profile, outcome) in November 2026 (what the report must find)."""
    nov, dec = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    windows = [(nov, dec + HOUR)] + [(now - k * WEEK - 2 * HOUR, now - k * WEEK + HOUR) for k in range(1, 5)]
    end = now - 3 * HOUR
    days: dict[int, list[str]] = {}
    november: dict[tuple[str, str, str], float] = {}
    for tenant in BASE:
        for profile, outcome, reason, share in MIX:
            labels = (f'instance="backfill",job="ig-gate",outcome="{outcome}",profile="{profile}",'
                      f'reason="{reason}",tenant="{tenant}"')
            total, at = 0.0, HISTORY_START
            while at <= end:
                if at in (nov, dec):
                    key = (tenant, profile, outcome)
                    november[key] = total - november.get(key, 0.0)
                if any(start <= at <= stop for start, stop in windows):
                    line = f"ig_gate_decisions_total{{{labels}}} {total:.1f} {int(at.timestamp())}"
                    days.setdefault((at - HISTORY_START).days, []).append(line)
                total += history_rate(tenant, at) * share * STEP.total_seconds()
                at += STEP
    texts = ["\n".join(["# TYPE ig_gate_decisions counter", *lines, "# EOF", ""]) for lines in days.values()]
    return texts, november


@dataclass(frozen=True)
class Stack:
    prometheus: str
    config: Path
    november: dict[tuple[str, str, str], float]
    load: dict[str, Any]


@pytest.fixture(scope="module")
def stack(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("analytics")
    datadir = workdir / "tsdb"
    now = datetime.now(UTC)
    texts, november = history(now.replace(minute=0, second=0, microsecond=0))
    prom.backfill(texts, datadir, workdir)
    settings = world.settings(
        metrics={"tenants": ["acme", "globex", "initech", "hooli"]},  # hooli: configured, never calls
        tenants={"initech": {"max_qps": {"read": 5}}},
        cost=COST,
    )
    with serve_sidecar(settings, workdir) as served:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in RULE_FILES],
            "scrape_configs": [{"job_name": "ig-gate",
                                "static_configs": [{"targets": [f"127.0.0.1:{served.admin_port}"]}]}],
        }
        with prom.prometheus(config, workdir, datadir) as url:
            load = run_locust(world, served.url, workdir)
            yield Stack(url, workdir / "sidecar.yaml", november, load)


def run_locust(world: World, url: str, workdir: Path) -> dict[str, Any]:
    """A headless locust run (12 users, 12 s); returns its totals."""
    tenants = {name: {"token": world.token(tenant=name, sub=f"user-{name}"), "weight": weight,
                      "attestation": world.attestation("managed", sub=f"user-{name}")}
               for name, weight in (("acme", 5), ("globex", 3), ("initech", 4), ("umbrella", 1))}
    setup = {"tenants": tenants, "risky": world.token(risk="high", tenant="globex"), "csv": CSV}
    argv = [str(LOCUST), "-f", str(REPO / "tests/sidecar/locust_tenants.py"), "--headless", "-u", "12",
            "-r", "12", "-t", "12s", "--host", url, "--only-summary", "--csv", str(workdir / "locust"),
            "--stop-timeout", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"IG_GATE_LOCUST": json.dumps(setup), "PATH": str(LOCUST.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (workdir / "locust_stats.csv").read_text().splitlines()
    header, total = rows[0].split(","), rows[-1].split(",")
    stats = dict(zip(header, total, strict=True))
    assert int(stats["Request Count"]) > 500 and int(stats["Failure Count"]) == 0
    return stats


def query(url: str, expr: str) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def empty_queries(url: str, exprs: list[str]) -> list[str]:
    return [expr for expr in exprs if not query(url, expr)]


def test_every_analytics_recording_rule_returns_data_from_the_scraped_gate(stack: Stack) -> None:
    groups = yaml.safe_load(RULE_FILES[0].read_text())["groups"]
    records = sorted({rule["record"] for group in groups for rule in group["rules"] if "record" in rule})
    assert len(records) >= 25
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not empty_queries(stack.prometheus, records), 20, "every recording rule has data")
    assert not empty_queries(stack.prometheus, records)
    calls = {r["metric"]["tenant"] for r in query(stack.prometheus, "tenant:ig_gate_calls:rate5m")}
    assert {"acme", "globex", "initech", "other"} <= calls  # umbrella is not configured: "other"
    z = query(stack.prometheus, "tenant:ig_gate_calls:z_hour_of_week")  # live vs the backfilled weeks
    assert {r["metric"]["tenant"] for r in z} >= {"acme", "globex", "initech"}
    weeks = query(stack.prometheus, 'tenant:ig_gate_calls:rate1h_how_weeks{tenant="acme"}')
    assert float(weeks[0]["value"][1]) == 4
    cost = query(stack.prometheus, 'tenant:ig_gate_cost_per_hour:rate5m{tenant="acme"}')
    assert float(cost[0]["value"][1]) > 0
    over_cap = query(stack.prometheus, "sum by (tenant) (ig_gate_tenant_over_cap_total)")
    assert {r["metric"]["tenant"] for r in over_cap if float(r["value"][1]) > 0} == {"initech"}
    print(f"\nlocust: {stack.load['Request Count']} requests, {float(stack.load['Requests/s']):.0f} req/s, "
          f"p95 {stack.load['95%']} ms")


def test_rules_and_panels_name_only_metrics_the_sidecar_declares() -> None:
    """`or vector(0)` would hide a misspelt counter: every ig_gate_ name must be one the sidecar declares."""
    registry = CollectorRegistry()
    export_cost_model(registry, CostSettings())
    declared = exported_series() | {family.name for family in registry.collect()}  # the price gauge
    declared |= {name.removesuffix("_bucket") for name in declared}  # a histogram named in a comment
    texts = [RULE_FILES[0].read_text(), *(p.read_text() for p in (DEPLOY / "grafana").glob("*.json"))]
    used = {name for text in texts for name in re.findall(r"(?<![:\w])ig_gate_[a-z_]+", text)}
    assert len(used) > 25 and used <= declared, sorted(used - declared)


def dashboard_queries() -> list[tuple[str, str, str]]:
    queries = []
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                queries.append((path.stem, panel["title"], target["expr"].replace("$tenant", ".*")))
    return queries


def test_every_grafana_panel_query_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    assert {d for d, _, _ in queries} == {"ig-gate-rollout", "ig-gate-decisions", "ig-gate-workload",
                                          "ig-gate-tenants"}

    def missing() -> list[tuple[str, str, str]]:
        return [q for q in queries if not query(stack.prometheus, q[2])]

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not missing(), 20, "every panel query has data")
    assert not missing()


def test_dashboards_json_is_what_their_generator_builds() -> None:
    generator = DEPLOY / "grafana" / "dashboards.py"
    done = subprocess.run([sys.executable, "-c", "import runpy, sys; g = runpy.run_path(sys.argv[1]); "
                           "print(__import__('json').dumps({u: g['render'](u) for u in g['DASHBOARDS']}))",
                           str(generator)], capture_output=True, text=True, timeout=30, check=True)
    for uid, text in json.loads(done.stdout).items():
        assert (DEPLOY / "grafana" / f"{uid}.json").read_text() == text, f"run {generator}"


def report(stack: Stack, month: str, out: Path) -> dict[str, Any]:
    argv = [str(IG_GATE), "analytics", "report", "--prometheus", stack.prometheus, "--month", month,
            "--out", str(out), "--config", str(stack.config)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("report.csv", "index.html", "calls_per_day.png", "outcomes.png", "cost.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "report.json").read_text())


def test_monthly_report_for_a_backfilled_month_from_the_test_prometheus(stack: Stack, tmp_path: Path) -> None:
    data = report(stack, "2026-11", tmp_path)
    assert data["partial"] is False and data["start"] == "2026-11-01T00:00:00+00:00"
    rows = {row["tenant"]: row for row in data["tenants"]}
    assert set(rows) == {"acme", "globex", "initech", "hooli"}
    assert rows["hooli"] == {**rows["hooli"], "has_data": False, "calls": 0, "cost": 0, "coverage": 0}
    for tenant in ("acme", "globex", "initech"):
        expected = {k: v for k, v in stack.november.items() if k[0] == tenant}
        assert rows[tenant]["calls"] == pytest.approx(sum(expected.values()), rel=0.01)
        reads = sum(v for (_, p, _), v in expected.items() if p == "read")
        writes = sum(v for (_, p, _), v in expected.items() if p == "write")
        assert rows[tenant]["cost"] == pytest.approx(
            cost_of({"reads": reads, "writes": writes}, CostSettings(**COST)), rel=0.01)
        assert rows[tenant]["error_ratio"] == pytest.approx(0.01, rel=0.05)
    assert rows["initech"]["first_seen"].startswith("2026-11-20") and 0.3 < rows["initech"]["coverage"] < 0.4
    assert rows["acme"]["coverage"] > 0.99 and rows["acme"]["anomalies"] == 0
    flagged = [a for a in data["anomalies"] if a["tenant"] == "globex"]
    assert flagged and all(a["at"].startswith("2026-11-18T1") and a["team"] == "finops" for a in flagged)
    assert data["fleet"]["decision_seconds"]["0.95"] is None  # no decision in November was timed here
    csv_header = (tmp_path / "report.csv").read_text().splitlines()[0]
    assert csv_header.startswith("tenant,has_data,calls,")


def test_monthly_report_for_the_current_month_is_partial_with_the_load(stack: Stack, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    data = report(stack, f"{now:%Y-%m}", tmp_path)
    assert data["partial"] is True and data["end"] <= datetime.now(UTC).isoformat()
    rows = {row["tenant"]: row for row in data["tenants"]}
    assert rows["other"]["calls"] > 0 and rows["initech"]["too_many_requests"] > 0  # umbrella; initech's 429s
    ingested = sum(r["ingest_mb"] for r in data["tenants"])  # locust's ingest calls send a 3.6 kB CSV body
    assert ingested > 0 and rows["acme"]["ingest_calls"] > 0
    calls = sum(r["ingest_calls"] for r in data["tenants"])
    assert ingested == pytest.approx(calls * len(CSV) / 1e6, rel=0.1)
    assert data["fleet"]["decision_seconds"]["0.95"] is not None


class _Hooks(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def webhooks() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    received: list[tuple[str, dict[str, Any]]] = []
    server.RequestHandlerClass = type("Hooks", (_Hooks,), {"received": received})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def anomaly_labels(team: str) -> dict[str, str]:
    """The labels the shipped IgGateTenantUsageAnomaly rule for `team` gives its alerts."""
    groups = yaml.safe_load(RULE_FILES[0].read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"]
               if r.get("alert") == "IgGateTenantUsageAnomaly" and r["labels"]["team"] == team]
    return {"alertname": rule["alert"], **rule["labels"]}


@pytest.mark.skipif(prom.ALERTMANAGER is None, reason="Debian package prometheus-alertmanager not installed")
def test_alertmanager_routes_tenant_anomalies_to_the_teams_webhooks(
    webhooks: tuple[str, list[tuple[str, dict[str, Any]]]], tmp_path: Path
) -> None:
    base, received = webhooks
    shipped = yaml.safe_load((DEPLOY / "alertmanager.yaml").read_text())["data"]["alertmanager.yml"]
    config = shipped.replace("http://alert-router.monitoring.svc:8080", base).replace("group_wait: 30s",
                                                                                      "group_wait: 1s")
    assert config.count(base) == 3
    alerts = [
        {"labels": {**anomaly_labels("finops"), "tenant": "globex"}, "annotations": {"summary": "surge"}},
        {"labels": {**anomaly_labels("cs"), "tenant": "acme"}, "annotations": {"summary": "drop"}},
        {"labels": {"alertname": "IgGateFailureMode", "severity": "critical", "instance": "a"}},
    ]
    with prom.alertmanager(config, tmp_path) as url:
        response = requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=10)
        assert response.status_code == 200
        wait_until(lambda: len(received) >= 3, 20, "the three webhooks called")
    by_path = {path: body for path, body in received}
    assert set(by_path) == {"/hooks/finops", "/hooks/cs", "/hooks/platform"}
    finops, cs = by_path["/hooks/finops"], by_path["/hooks/cs"]
    assert finops["receiver"] == "finops" and finops["status"] == "firing"
    ((alert,),) = [finops["alerts"]]
    assert alert["labels"] == {**anomaly_labels("finops"), "tenant": "globex"}
    assert alert["labels"]["team"] == "finops" and finops["groupLabels"] == {
        "alertname": "IgGateTenantUsageAnomaly", "tenant": "globex"}
    assert cs["receiver"] == "customer-success" and cs["alerts"][0]["labels"]["team"] == "cs"
    assert cs["alerts"][0]["labels"]["tenant"] == "acme" and cs["alerts"][0]["labels"]["direction"] == "drop"
    assert by_path["/hooks/platform"]["receiver"] == "platform-oncall"


def test_report_refuses_a_bad_month_and_says_when_prometheus_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["analytics", "report", "--prometheus", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path)]
    assert main([*base, "--month", "2026-13"]) == 2
    assert capsys.readouterr().err == "ig-gate: --month: expected YYYY-MM, got '2026-13'\n"
    assert main([*base, "--month", "2099-01"]) == 2
    assert "2099-01 has not begun" in capsys.readouterr().err
    assert main([*base, "--month", "2026-11"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ig-gate: cannot reach Prometheus at http://127.0.0.1:") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing half-written
