"""The replica recommendation for KEDA, on the admin listener (KEDA's `metrics-api` scaler reads it).

`GET /autoscale/{component}` answers the latest recommendation (middleware/autoscale.py) as JSON:
`{"component": "gateway", "replicas": 7, "raw_replicas": 8, "demand": {...}, "planned": {...},
"dominant": "read", "held": "cooldown_down", "events": []}`. The ScaledObject in
deploy/keda-scaledobject.yaml points a `metrics-api` trigger at it with `valueLocation: replicas` and
`targetValue: "1"` (metricType AverageValue), so the HPA's desired replicas equal `replicas`. An unknown
component is 404; before the first tick 503. GET /autoscale lists every component.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ig_gate.sidecar.wiring import Sidecar


def routes(sidecar: Sidecar) -> list[BaseRoute]:
    """GET /autoscale and /autoscale/{component} for the admin listener."""
    workload = sidecar.gate.workload

    async def one(request: Request) -> Response:
        component = request.path_params["component"]
        if component not in workload.recommenders:
            return JSONResponse({"error": "not_found", "reason": f"no component {component!r} in "
                                 "autoscale.profiles"}, status_code=404)
        recommendation = workload.recommendation(component)
        if recommendation is None:
            return JSONResponse({"error": "not_ready", "reason": "no recommendation yet"}, status_code=503)
        return JSONResponse(recommendation.to_json())

    async def every(request: Request) -> Response:
        latest = {name: r.last for name, r in workload.recommenders.items()}
        return JSONResponse({name: r.to_json() if r is not None else None for name, r in latest.items()})

    return [
        Route("/autoscale", every, methods=["GET"]),
        Route("/autoscale/{component}", one, methods=["GET"]),
    ]
