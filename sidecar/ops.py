"""Operations endpoints.

Client listener (`client_routes`): /healthz (alive) and /readyz (a verified bundle is active), which say
no more than `ok` / `{"ready": true|false}`. Admin listener (`admin_routes`): the same two with the
reason and the active revision, /metrics and /v1/status.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ig_gate.sidecar.wiring import Sidecar

FAILURE_METRIC = "ig_gate_failure_mode"


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def client_routes(sidecar: Sidecar) -> list[BaseRoute]:
    """/healthz and /readyz for probes on the client listener: nothing about the configuration."""

    async def readyz(request: Request) -> Response:
        ready = await not_ready(sidecar) is None
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    return [
        Route("/healthz", _healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]


def admin_routes(sidecar: Sidecar) -> list[BaseRoute]:
    """/healthz, /readyz (with the reason), /metrics and /v1/status for the admin listener."""

    async def readyz(request: Request) -> Response:
        reason = await not_ready(sidecar)
        if reason is not None:
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True, "revision": sidecar.gate.policy.current().revision})

    async def metrics(request: Request) -> Response:
        body, content_type = sidecar.gate.metrics.exposition()
        return Response(body, headers={"content-type": content_type})

    async def status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(status_document, sidecar))

    return [
        Route("/healthz", _healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/status", status, methods=["GET"]),
    ]


async def not_ready(sidecar: Sidecar) -> str | None:
    """None when the sidecar can decide requests, else why not."""
    gate = sidecar.gate
    if gate.sessions is None:
        return "; ".join(gate.problems)
    if gate.policy.current() is None:
        return gate.status()["policy_problem"]
    waiting = [name for name, key_set in gate.key_sets.items() if not key_set.loaded]
    if waiting:
        return f"key sets not loaded yet: {', '.join(waiting)} (see /v1/status key_sets)"
    return await run_in_threadpool(sidecar.policy.ready)


def status_document(sidecar: Sidecar) -> dict[str, Any]:
    """Everything an operator asks first: policy source, gate, key sets, geo DB, risk store, failures."""
    gate = sidecar.gate
    gate_status = gate.status()
    snapshot = gate.policy.current()
    bundle: dict[str, Any] = {"source": sidecar.policy.kind, **sidecar.policy.status()}
    if snapshot is not None:
        verified = snapshot.verified
        bundle["active"] = {
            "revision": snapshot.revision,
            "digest": snapshot.digest,
            "version": getattr(verified, "version", None),
            "verified_at": verified.verified_at.isoformat() if verified is not None else None,
        }
    elif sidecar.policy.kind == "file":
        bundle["path"] = sidecar.settings.bundle.path
    risk_store = gate.risk_store
    return {
        "ready": gate_status["ready"],
        "bundle": bundle,
        "rollout": bundle.get("candidate"),
        "failure_mode": gate_status["failure_mode"],
        "problems": gate_status["problems"],
        "policy_problem": gate_status["policy_problem"],
        "memo_entries": gate_status["memo_entries"],
        "jwks": gate_status["key_sets"],
        "geo": {**gate.geo.metadata().to_json(), "cached": gate.geo.cached},
        "risk_store": None if risk_store is None else _risk_store_status(risk_store),
        "failures": failure_counts(gate.metrics.registry),
        "upstream": sidecar.settings.server.upstream,
    }


def _risk_store_status(store: Any) -> dict[str, Any]:
    status = {"kind": type(store).__name__}
    describe = getattr(store, "status", None)
    if callable(describe):
        status.update(describe())
    return status


def failure_counts(registry: Any) -> dict[str, float]:
    """Failure-mode events counted so far, by kind (this process's registry)."""
    counts: dict[str, float] = {}
    for family in registry.collect():
        if family.name != FAILURE_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                kind = sample.labels.get("kind", "unknown")
                counts[kind] = counts.get(kind, 0.0) + sample.value
    return counts
