"""Status, health and metrics: ``GET /v1/status``, ``/healthz``, ``/readyz`` and ``/metrics``.

Metrics name reporter sources and bundle versions: ``/metrics`` is open on loopback only; a
server that listens beyond it asks for a credential with the 'metrics' role (or 'admin').
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from closedloop.service.core import Service
from closedloop.service.metrics import CONTENT_TYPE
from closedloop.service.routes.edge import JSON, encode
from closedloop.service.settings import ServiceSettings

__all__ = ["health_routes"]

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def health_routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Service]) -> None:
    """Register the status, health and metrics routes on ``app`` (the worker's Service is
    ``holder["svc"]`` once started; ``/healthz`` and ``/readyz`` answer before that too)."""

    @app.get("/v1/status", summary="Deployment, bundle versions, flights, kill switch, telemetry health, limits",
             tags=["status"], responses={401: dict(_PROBLEM)})
    async def status(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get("authorization"), None)
        svc.m_responses.inc(("/v1/status", 200))
        return Response(encode(svc.status()), media_type=JSON)

    @app.get("/healthz", summary="Alive", tags=["health"])
    async def healthz() -> Response:
        return Response(b'{"status":"alive"}', media_type=JSON)

    @app.get("/readyz", summary="Ready, or degraded with the reasons (still serving the last good deployment)",
             tags=["health"], responses={503: {"description": "Not started yet, or shutting down."}})
    async def readyz() -> Response:
        svc = holder.get("svc")
        if svc is None or svc.runtime is None:
            return Response(b'{"status":"not_ready","reasons":["starting"]}', status_code=503, media_type=JSON)
        reasons = svc.problems()
        body = {"status": "degraded" if reasons else "ready", "reasons": reasons, "revision": svc.revision}
        return Response(encode(body), media_type=JSON)

    metrics_public = settings.listens_on_loopback
    metrics_roles = ("metrics", "admin")

    @app.get("/metrics", summary="Prometheus text format (a 'metrics' or 'admin' token unless served on loopback)",
             tags=["health"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
                        **({} if metrics_public else {c: dict(_PROBLEM) for c in (401, 403)})})
    async def metrics(request: Request) -> Response:
        svc = holder["svc"]
        if not metrics_public:
            svc.authenticate(request.headers.get("authorization"), metrics_roles)
        return Response(svc.render_metrics(), media_type=CONTENT_TYPE)
