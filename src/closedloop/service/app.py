"""The FastAPI app: the route groups of :mod:`closedloop.service.routes` composed, and the worker's
life around them.

``create_app(settings)`` builds the app; its lifespan starts a :class:`~closedloop.service.core.Service`
in the worker process and stops it at shutdown. The per-decision route
(:mod:`~closedloop.service.routes.decide`) reads the raw body, decodes and validates it in one
msgspec step, runs ``Runtime.decide`` and encodes the :class:`~closedloop.Decision` with msgspec —
no pydantic on the hot path (and no routing or middleware stack: :class:`_ServiceApp` hands it to
its endpoint directly). A batch is decoded into validated contexts and decided by one
``Runtime.decide_batch`` on ``Schema.columns`` of them. The OpenAPI document still describes every
body exactly: the System's context schema and the decision's schema are generated from the same
msgspec types and merged into it (:mod:`~closedloop.service.routes.openapi`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from closedloop.runtime.deployment import Deployment
from closedloop.service.bodies import BoundedArray, ContextDecoder, OutcomeReport
from closedloop.service.core import Service
from closedloop.service.cors import Cors
from closedloop.service.routes.admin import admin_routes
from closedloop.service.routes.bundles import bundles_routes
from closedloop.service.routes.decide import decide_routes
from closedloop.service.routes.decisions import decisions_routes
from closedloop.service.routes.edge import read_body as read_body  # re-exported: importable from here
from closedloop.service.routes.errors import error_handlers
from closedloop.service.routes.health import health_routes
from closedloop.service.routes.openapi import extra_schemas, install_openapi
from closedloop.service.routes.outcomes import outcomes_routes
from closedloop.service.settings import ServiceSettings
from closedloop.service.sources import DeploymentSource, StaticSource
from closedloop.system.spec import System

__all__ = ["app_from_environ", "create_app"]


def create_app(
    settings: ServiceSettings, *, system: System | None = None, source: DeploymentSource | None = None
) -> FastAPI:
    """The decision service as an ASGI app.

    ``system`` defaults to loading ``settings.system``; ``source`` to a fixed deployment of
    ``settings.bundle``, else the registry in the project home. Nothing is loaded or opened
    until the app starts (its lifespan), in the process that serves it.
    """
    holder: dict[str, Service] = {}
    app = _ServiceApp(
        title="closedloop decision service",
        version="1",
        description=(
            "Decisions (one context or a batch) and outcome reports for one closed-loop System. "
            "Authenticate with 'Authorization: Bearer <token>' (roles: decide, report, client, metrics, viewer, admin)."
        ),
        lifespan=_lifespan(settings, system, source, holder),
    )
    app.state.holder = holder
    if system is not None:  # the OpenAPI document is complete before start-up
        app.state.extra_schemas = extra_schemas(system)
    app._fast_route = decide_routes(app, settings, holder)
    app._cors = Cors(settings.cors_origins) if settings.cors_origins else None
    outcomes_routes(app, settings, holder)
    bundles_routes(app, settings, holder)
    decisions_routes(app, settings, holder)
    health_routes(app, settings, holder)
    admin_routes(app, settings, holder)
    install_openapi(app, settings)
    error_handlers(app, holder)
    return app


def _lifespan(settings: ServiceSettings, system: System | None, source: DeploymentSource | None,
              holder: dict[str, Service]) -> Any:
    """The app's lifespan: build and start the worker's Service (put in ``holder``), publish its
    metrics for the other workers while serving, stop it at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sys_obj = system
        if sys_obj is None:
            from closedloop.system.loading import load_system

            sys_obj = load_system(settings.system)
        src = source if source is not None else _default_source(settings, sys_obj)
        svc = Service(settings, sys_obj, src)
        await asyncio.to_thread(svc.start)
        await asyncio.to_thread(_bind, app, svc)  # (building the batch decoders grows with max_batch)
        holder["svc"] = svc
        if getattr(app.state, "freeze_gc", False):
            import gc

            gc.freeze()  # what start-up built (bundles, runtime, app) is never scanned by a collection again
        shared = svc.shared_metrics
        publisher = asyncio.create_task(_publish_every(shared, 1.0)) if shared is not None else None
        try:
            yield
        finally:
            if shared is not None and publisher is not None:
                publisher.cancel()
                with contextlib.suppress(OSError):
                    shared.publish()  # this worker's last numbers
            await asyncio.to_thread(svc.stop)

    return lifespan


def _default_source(settings: ServiceSettings, system: System) -> DeploymentSource:
    """A fixed deployment of ``settings.bundle``, else the registry's (hot-reloaded)."""
    if settings.bundle is not None:
        from closedloop.runtime.bundle import Bundle, bundle_path

        return StaticSource(Deployment(Bundle.load(bundle_path(settings.bundle, settings.project.bundles), system)))
    try:
        from closedloop.service.reload import registry_source

        return registry_source(settings, system)
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("closedloop.registry"):
            raise
        from closedloop.errors import SpecError

        raise SpecError(
            "Serving without --bundle reads the deployment from the registry (closedloop.registry), which this "
            "installation does not have. Pass --bundle PATH to serve one bundle."
        ) from None


async def _publish_every(shared: Any, seconds: float) -> None:
    """Publish this worker's metrics for the server's other workers, on the event loop (the thread
    that updates them), every ``seconds``."""
    while True:
        await asyncio.sleep(seconds)
        with contextlib.suppress(OSError):  # a full or vanished directory costs the others fresh numbers, not a request
            shared.publish()


class _ServiceApp(FastAPI):
    """The FastAPI app, with ``POST /v1/decide`` — the per-decision route — answered by its
    endpoint directly: no routing over every route, no dependency solving, no middleware stack
    (what that saves: docs/performance.md, "The service"). The endpoint and its
    errors are the route's own: exceptions go to the app's exception handlers, responses are
    counted by route as on the general path, and the route stays in the OpenAPI document. Once a
    middleware is added (``app.add_middleware``: CORS, an auth proxy's check, tracing), every
    request takes the general path, so the middleware sees ``/v1/decide`` too."""

    _fast_route: Any = None
    _cors: Cors | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        cors = self._cors
        if cors is not None and cors.applies(scope):  # the browser clients' paths only (service/cors.py)
            await cors(scope, receive, send, super().__call__)
            return
        route = self._fast_route
        if (route is not None and scope["type"] == "http" and scope["path"] == "/v1/decide"
                and scope["method"] == "POST" and not self.user_middleware):
            scope["app"] = self
            scope["route"] = route
            request = Request(scope, receive)
            try:
                response = await route.endpoint(request)
            except Exception as exc:  # noqa: BLE001 - answered by the app's own handlers
                response = await self._handler(exc)(request, exc)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _handler(self, exc: Exception) -> Any:
        handlers = self.exception_handlers
        for cls in type(exc).__mro__:
            h = handlers.get(cls)
            if h is not None:
                return h
        raise exc  # pragma: no cover - the app registers a handler for Exception


def app_from_environ() -> FastAPI:
    """The app factory uvicorn calls in each worker (``closedloop serve``): the settings come from
    ``CLOSEDLOOP_SERVICE_SETTINGS``, read once here.

    A worker process is ours alone, so its garbage collector is tuned for serving: what the imports
    and the start-up (bundles, runtime, app) allocated is frozen out of the collections (a full
    collection then scans only what serving holds), and young collections run less often (the
    telemetry buffer holds many small objects for a few milliseconds; docs/performance.md, "The
    service"). The C allocator keeps what a request freed for the next one (:func:`_keep_freed_memory`)."""
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    _keep_freed_memory()
    app = create_app(ServiceSettings.from_environ())
    app.state.freeze_gc = True  # again once started (the lifespan)
    return app


#: glibc's mallopt parameters (malloc.h) and the values a serving worker sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 256 << 20, 32 << 20


def _keep_freed_memory() -> bool:
    """On glibc, make the C allocator keep freed memory for reuse: blocks below 32 MiB come from
    the heap (not a fresh mmap each), and up to 256 MiB free at the heap's top is kept rather than
    given back. A batch request allocates and frees megabytes (its body, its columns, telemetry's
    record batch); given back each time, every request page-faults them in again and the kernel
    zeroes each page (docs/performance.md, "The service"). The worker keeps
    its peak heap instead. True when set (False elsewhere: another C library, or none found)."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


def _bind(app: FastAPI, svc: Service) -> None:
    """Prepare per-System hot-path objects once the service has started (before it serves)."""
    max_batch = svc.settings.max_batch
    app.state.decoder = ContextDecoder(svc.system.schema, max_batch)
    app.state.outcome_rows = BoundedArray(OutcomeReport, max_batch)
    if svc.ranking:
        app.state.ranked_rows = BoundedArray(dict[str, Any], max_batch)
    app.state.extra_schemas = extra_schemas(svc.system)
