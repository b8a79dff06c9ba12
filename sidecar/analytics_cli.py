"""`ig-gate analytics report`: the monthly per-tenant report from Prometheus (CSV, JSON, HTML, PNG charts).

It asks the Prometheus HTTP API (`/api/v1/query` with `@` timestamps for the month's totals,
`/api/v1/query_range` for the hourly rates) the same expressions the recording rules use, so the report
works on raw history too (backfilled blocks, or a month before the rules were deployed). The math is in
middleware/analytics.py; the charts need matplotlib (`pip install 'ig-gate[analytics]'`).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from ig_gate.errors import IgGateError
from ig_gate.middleware.analytics import (
    WEEK,
    WEEKS,
    AnalyticsError,
    Month,
    MonthData,
    build_report,
    daily_calls,
    month_window,
)
from ig_gate.middleware.metrics import OUTCOMES
from ig_gate.middleware.settings import ConfigError, CostSettings, load_settings

FAILED, USAGE = 1, 2
QUANTILES = ("0.5", "0.95", "0.99")
CSV_COLUMNS = (
    "tenant", "has_data", "calls", "read_calls", "write_calls", "subscription_calls", "ingest_calls",
    *OUTCOMES, "error_ratio", "availability_budget_burn",
    "subscription_minutes", "ingest_mb", "cost", "first_seen", "last_seen", "coverage", "anomalies",
)


class PrometheusError(IgGateError, RuntimeError):
    """Prometheus could not be reached or refused a query (the message names the URL or the query)."""


class Prometheus:
    """A small client of the Prometheus HTTP API."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            response = self.session.get(self.url + path, params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise PrometheusError(f"cannot reach Prometheus at {self.url} ({reason})") from None
        try:
            body = response.json()
        except ValueError:
            status = response.status_code
            raise PrometheusError(f"{self.url}{path}: HTTP {status}, not a JSON answer") from None
        if body.get("status") != "success":
            raise PrometheusError(f"query {params['query']!r}: {body.get('error', response.status_code)}")
        return body["data"]["result"]

    def query(self, expr: str, at: datetime) -> list[dict[str, Any]]:
        """An instant query evaluated at `at`."""
        return self._get("/api/v1/query", {"query": expr, "time": at.timestamp()})

    def query_range(self, expr: str, start: datetime, end: datetime, step_s: int) -> list[dict[str, Any]]:
        """A range query."""
        params = {"query": expr, "start": start.timestamp(), "end": end.timestamp(), "step": step_s}
        return self._get("/api/v1/query_range", params)


def fetch_month(prometheus: Prometheus, month: Month) -> MonthData:
    """The month's totals (instant queries `@` its end over its length) and hourly rates with history."""
    window, end = f"{month.seconds}s", int(month.end.timestamp())

    def instant(expr: str) -> list[dict[str, Any]]:
        return prometheus.query(expr, month.end)

    by = "tenant", "profile", "outcome"
    decisions = {
        tuple(r["metric"].get(label, "") for label in by): float(r["value"][1])
        for r in instant(f"sum by ({', '.join(by)}) (increase(ig_gate_decisions_total[{window}] @ {end}))")
    }

    def per_tenant(expr: str, scale: float = 1.0) -> dict[str, float]:
        return {r["metric"].get("tenant", ""): float(r["value"][1]) * scale for r in instant(expr)}

    minutes = per_tenant(f"sum by (tenant) (sum_over_time(ig_gate_subscriptions_open[{window}:1m] @ {end}))")
    ingest = per_tenant('sum by (tenant) (increase(ig_gate_request_bytes_total{profile="ingest"}'
                        f"[{window}] @ {end}))", 1e-6)
    latency: dict[str, float | None] = {}
    for q in QUANTILES:
        result = instant(f"histogram_quantile({q}, sum by (le) "
                         f"(increase(ig_gate_decision_seconds_bucket[{window}] @ {end})))")
        value = float(result[0]["value"][1]) if result else float("nan")
        latency[q] = None if value != value else value  # NaN: no decisions
    hourly: dict[str, dict[datetime, float]] = {}
    start = month.start - WEEKS * WEEK
    for r in prometheus.query_range("sum by (tenant) (rate(ig_gate_decisions_total[1h]))", start, month.end,
                                    3600):
        hourly[r["metric"].get("tenant", "")] = {
            datetime.fromtimestamp(float(t), UTC): float(v) for t, v in r["values"]
        }
    return MonthData(decisions, hourly, minutes, ingest, latency)


def write_report(report: dict[str, Any], data: MonthData, month: Month, out: Path) -> list[Path]:
    """report.json, report.csv, the charts and index.html under out; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with (out / "report.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in CSV_COLUMNS} for row in report["tenants"])
    charts = _charts(report, data, month, out)
    (out / "index.html").write_text(_html(report, charts), encoding="utf-8")
    return [out / "report.json", out / "report.csv", *charts, out / "index.html"]


def _charts(report: dict[str, Any], data: MonthData, month: Month, out: Path) -> list[Path]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PrometheusError("the charts need matplotlib: pip install 'ig-gate[analytics]'") from None
    rows = [r for r in report["tenants"] if r["has_data"]]
    tenants = [r["tenant"] for r in rows]
    files = []

    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    flagged = {(a["tenant"], a["at"][:10]) for a in report["anomalies"]}
    for tenant in tenants:
        days = sorted(daily_calls(data.hourly.get(tenant, {}), month).items())
        line = ax.plot([d for d, _ in days], [v for _, v in days], marker=".", label=tenant)[0]
        marked = [(d, v) for d, v in days if (tenant, d.date().isoformat()) in flagged]
        if marked:
            ax.scatter(*zip(*marked, strict=True), s=90, facecolors="none", edgecolors=line.get_color())
    ax.set(title=f"Calls per day, {report['month']} (circled: anomalous hours)", ylabel="calls")
    ax.legend(loc="upper left", fontsize="small")
    ax.tick_params(axis="x", labelrotation=30)
    files.append(_save(fig, out / "calls_per_day.png"))

    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    bottom = [0.0] * len(rows)
    for outcome in OUTCOMES:
        values = [r[outcome] for r in rows]
        ax.bar(tenants, values, bottom=bottom, label=outcome)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(title=f"Decisions by outcome, {report['month']}", ylabel="decisions")
    ax.legend(fontsize="small")
    files.append(_save(fig, out / "outcomes.png"))

    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(tenants, [r["cost"] for r in rows], color="tab:green")
    ax.set(title=f"Cost per tenant, {report['month']}", ylabel=report["currency"])
    files.append(_save(fig, out / "cost.png"))
    return files


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    return path


def _html(report: dict[str, Any], charts: list[Path]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in CSV_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(row[c]))}</td>" for c in CSV_COLUMNS) + "</tr>"
        for row in report["tenants"]
    )
    partial = " (partial: up to the time of the report)" if report["partial"] else ""
    quantiles = report["fleet"]["decision_seconds"].items()
    latency = ", ".join(f"p{float(q) * 100:g} {_ms(v)}" for q, v in quantiles)
    anomalies = "".join(
        f"<li>{e(a['tenant'])} at {e(a['at'])}: {a['rate']:.3g} calls/s, z {a['z_hour_of_week']} "
        "(hour of week), "
        f"{a['z_rolling']} (rolling) &rarr; {e(a['team'])}</li>" for a in report["anomalies"]
    ) or "<li>none</li>"
    images = "".join(f'<p><img src="{e(p.name)}" alt="{e(p.stem)}"></p>' for p in charts)
    notes = "".join(f"<li>{e(n)}</li>" for n in report["notes"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ig-gate tenant report {e(report['month'])}"
        "</title><style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h1>Tenant report {e(report['month'])}</h1><p>{e(report['start'])} to {e(report['end'])}{partial}. "
        f"Total {report['fleet']['calls']} calls, cost {report['fleet']['cost']} {e(report['currency'])}. "
        f"Decision time (fleet): {e(latency)}.</p><table><tr>{head}</tr>{body}</table>"
        f"<h2>Anomalies</h2><ul>{anomalies}</ul>{images}<h2>Notes</h2><ul>{notes}</ul></body></html>\n"
    )


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.3g} ms"


def _report(args: argparse.Namespace) -> int:
    try:
        month = month_window(args.month)
        settings = load_settings(args.config) if args.config else None
    except (AnalyticsError, ConfigError) as exc:
        print(f"ig-gate: {exc}", file=sys.stderr)
        return USAGE
    cost = settings.cost if settings else CostSettings()
    tenants = settings.metrics.tenants if settings else ()
    try:
        data = fetch_month(Prometheus(args.prometheus, args.timeout), month)
        report = build_report(month, data, cost, tenants)
        files = write_report(report, data, month, Path(args.out))
    except (PrometheusError, OSError) as exc:
        print(f"ig-gate: {exc}", file=sys.stderr)
        return FAILED
    print(json.dumps({"month": month.name, "partial": month.partial, "tenants": len(report["tenants"]),
                      "files": [str(p) for p in files]}))
    return 0


def register_analytics(subparsers: argparse._SubParsersAction) -> None:
    """`ig-gate analytics report --prometheus URL --month YYYY-MM --out DIR [--config FILE]`."""
    analytics = subparsers.add_parser("analytics", help="tenant analytics (reports from Prometheus)")
    actions = analytics.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = actions.add_parser("report", help="monthly per-tenant report: CSV, JSON, HTML with charts")
    report.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL")
    report.add_argument("--month", required=True, help="YYYY-MM (the current month: up to now)")
    report.add_argument("--out", required=True, metavar="DIR", help="directory for the report files")
    report.add_argument("--config", help="ig-gate config: its cost model and metrics.tenants (listed "
                        "even without data); default prices without it")
    report.add_argument("--timeout", type=float, default=30.0, help="seconds per Prometheus query")
    report.set_defaults(handler=_report)

