"""The FastAPI app: routes for decisions, outcomes, status, health, metrics (and admin).

``create_app(settings)`` builds the app; its lifespan starts a :class:`~closedloop.service.core.Service`
in the worker process and stops it at shutdown. The per-decision route reads the raw body, decodes
and validates it in one msgspec step, runs ``Runtime.decide`` and encodes the
:class:`~closedloop.Decision` with msgspec — no pydantic on the hot path (and no routing or
middleware stack: :class:`_ServiceApp` hands it to its endpoint directly). A batch is decoded into
validated contexts and decided by one ``Runtime.decide_batch`` on ``Schema.columns`` of them. The OpenAPI document
still describes every body exactly: the System's context schema and the decision's schema are
generated from the same msgspec types and merged into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from closedloop.errors import AuthError, ClosedLoopError, ContextError
from closedloop.runtime.decision import Decision
from closedloop.runtime.deployment import Deployment
from closedloop.service.bodies import (
    BoundedArray,
    ContextDecoder,
    OutcomeReport,
    TooLarge,
    check_outcome,
    first_byte,
)
from closedloop.service.core import Service
from closedloop.service.limits import take_both
from closedloop.service.metrics import CONTENT_TYPE
from closedloop.service.problems import Problem, invalid, problem_response
from closedloop.service.settings import ServiceSettings
from closedloop.service.sources import DeploymentSource, StaticSource
from closedloop.system.spec import System

__all__ = ["app_from_environ", "create_app"]

log = logging.getLogger("closedloop.service")
JSON = "application/json"
_encode = msgspec.json.Encoder().encode
_perf = time.perf_counter
#: What decoding a body may raise: malformed JSON, or JSON nested deeper than the decoder recurses.
_BAD_JSON = (msgspec.DecodeError, RecursionError)
#: Problem details listing more refused rows than this are rendered in a worker thread.
_ERRORS_ON_LOOP = 200


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise Problem(400, "bad-request", "Bad request", f"Content-Length must be an integer. Got {declared!r} instead.") from None
        if n > limit:
            raise _too_large(n, limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(n: int, limit: int) -> Problem:
    return Problem(413, "body-too-large", "Request body too large",
                   f"The request body must be at most {limit} bytes. Got {n} bytes instead.", limit=limit, size=n)


def _malformed(e: Exception) -> Problem:
    if isinstance(e, RecursionError):
        return Problem(400, "malformed-json", "Malformed JSON", "The request body is JSON nested too deeply.")
    return Problem(400, "malformed-json", "Malformed JSON", f"The request body must be JSON. {e}.")


def _default_source(settings: ServiceSettings, system: System) -> DeploymentSource:
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


def create_app(
    settings: ServiceSettings, *, system: System | None = None, source: DeploymentSource | None = None
) -> FastAPI:
    """The decision service as an ASGI app.

    ``system`` defaults to loading ``settings.system``; ``source`` to a fixed deployment of
    ``settings.bundle``, else the registry in the project home. Nothing is loaded or opened
    until the app starts (its lifespan), in the process that serves it.
    """
    holder: dict[str, Service] = {}

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

    app = _ServiceApp(
        title="closedloop decision service",
        version="1",
        description=(
            "Decisions (one context or a batch) and outcome reports for one closed-loop System. "
            "Authenticate with 'Authorization: Bearer <token>' (roles: decide, report, metrics, admin)."
        ),
        lifespan=lifespan,
    )
    app.state.holder = holder
    if system is not None:  # the OpenAPI document is complete before start-up
        app.state.extra_schemas = _extra_schemas(system)
    _routes(app, settings, holder)
    _errors(app, holder)
    return app


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

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
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
    app.state.extra_schemas = _extra_schemas(svc.system)


def _extra_schemas(system: System) -> dict[str, Any]:
    from closedloop.service.admin import schemas as admin_schemas

    return {**_schemas(system), **admin_schemas()}


def _batch_too_large(limit: int, what: str) -> Problem:
    return Problem(413, "batch-too-large", "Batch too large",
                   f"A batch must have at most {limit} {what}. Got {limit + 1} or more instead.",
                   limit=limit, field="<batch>", rule=f"at most {limit} {what}", value=f"{limit + 1} or more")


def _not_an_array(what: str) -> Problem:
    return Problem(400, "bad-request", "Bad request", f"A batch of {what} must be a JSON array.")


def _count(svc: Service | None, route: str, code: int) -> None:
    if svc is not None:
        svc.m_responses.inc((route, code))


def _routes(app: FastAPI, settings: ServiceSettings, holder: dict[str, Service]) -> None:
    limit = settings.max_body_bytes
    max_batch = settings.max_batch
    auth_header = "authorization"

    # -- decisions ------------------------------------------------------------------------------------
    @app.post(
        "/v1/decide",
        summary="Decide for one context (a JSON object) or a batch (a JSON array of objects)",
        response_class=Response,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Context"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Context"}},
                ]}}},
            },
        },
        responses={
            200: {"description": "The decision (one context) or the decisions and the refused rows (a batch).",
                  "content": {JSON: {"schema": {"oneOf": [
                      {"$ref": "#/components/schemas/Decision"},
                      {"$ref": "#/components/schemas/DecisionBatchResult"},
                  ]}}}},
            **{c: {"$ref": "#/components/responses/Problem"} for c in (400, 401, 403, 413, 422, 503)},
        },
        tags=["decisions"],
    )
    async def decide(request: Request) -> Response:
        t0 = _perf()
        svc = holder["svc"]
        svc.authenticate(request.headers.get(auth_header), "decide")
        body = await read_body(request, limit)
        rt = svc.runtime
        fb = first_byte(body)
        if fb == 123:  # '{': one context
            try:
                ctx = request.app.state.decoder.one(body)
            except ContextError as e:
                svc.m_invalid.inc()
                raise Problem(422, "invalid-context", "Invalid context", str(e), field=e.field, rule=e.rule,
                              value=e.to_dict()["value"]) from None
            except _BAD_JSON as e:
                raise _malformed(e) from None
            try:
                d: Decision = rt.decide(ctx)  # type: ignore[union-attr]
            except Exception:
                svc.arms.error(_arm(rt, ctx))
                raise
            out = _encode(d)
            svc.m_decisions.inc((d.action, d.bundle_version, d.flight or ""))
            dt = _perf() - t0
            svc.m_latency.observe(dt)
            svc.arms.record(d.flight, dt)
            svc.m_responses.inc(("/v1/decide", 200))
            return Response(out, media_type=JSON)
        if fb == 91:  # '[': a batch
            return await _decide_batch(request, svc, body, t0)
        raise Problem(400, "bad-request", "Bad request",
                      "The request body must be a JSON object (one context) or a JSON array of objects (a batch).")

    async def _decide_batch(request: Request, svc: Service, body: bytes, t0: float) -> Response:
        # Never read past the (max_batch + 1)-th row: a longer batch is refused before any per-row
        # work. A batch with an invalid row is validated row by row in a worker thread, so one
        # client's bad batch does not hold the event loop (and every other request) meanwhile.
        decoder: ContextDecoder = request.app.state.decoder
        problems: list[dict[str, Any]] = []
        try:
            try:
                good = decoder.batch(body)
                index = list(range(len(good)))
            except msgspec.ValidationError:  # an invalid row, or too many rows
                items = decoder.rows.items(body)
                good, index, problems = await asyncio.to_thread(decoder.rows_one_by_one, items)
        except TooLarge:
            raise _batch_too_large(max_batch, "contexts") from None
        except msgspec.ValidationError:
            raise _not_an_array("contexts") from None
        except _BAD_JSON as e:
            raise _malformed(e) from None
        if problems:
            svc.m_invalid.inc(n=len(problems))
        # The decoded contexts are validated already: Runtime.decide_batch takes them as Columns
        # (built column by column when read, never validated again) and telemetry logs the batch
        # as one record batch, the contexts encoded as the single path encodes them.
        decisions: list[Decision] = []
        if good:
            rt = svc.runtime
            db = rt.decide_batch(rt.system.schema.columns(good))  # type: ignore[union-attr]
            decisions = db.decisions()
            for (action, bundle, flight), n in db.counts().items():
                svc.m_decisions.inc((action, bundle, flight or ""), n)
                svc.arms.count(flight, n)
        if not decisions and problems:
            raise Problem(422, "invalid-context", "Invalid contexts",
                          f"Every context of the batch was refused ({len(problems)}).", errors=problems)
        out = _encode({"decisions": decisions, "index": index, "errors": problems})
        svc.m_batch_latency.observe(_perf() - t0)
        svc.m_responses.inc(("/v1/decide", 200))
        return Response(out, media_type=JSON)

    if isinstance(app, _ServiceApp):
        app._fast_route = next(r for r in app.routes if getattr(r, "endpoint", None) is decide)

    # -- outcomes -------------------------------------------------------------------------------------
    one_outcome = msgspec.json.Decoder(OutcomeReport)

    @app.post(
        "/v1/outcomes",
        summary="Report one outcome (a JSON object) or a batch (a JSON array); 202 once durable",
        status_code=202,
        response_class=Response,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/OutcomeReport"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/OutcomeReport"}},
                ]}}},
            },
        },
        responses={
            202: {"description": "Accepted and durable in telemetry (refused items of a batch listed).",
                  "content": {JSON: {"schema": {"$ref": "#/components/schemas/OutcomesAccepted"}}}},
            **{c: {"$ref": "#/components/responses/Problem"} for c in (400, 401, 403, 413, 422, 429, 503)},
        },
        tags=["outcomes"],
    )
    async def outcomes(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get(auth_header), "report")
        body = await read_body(request, limit)
        fb = first_byte(body)
        single = fb == 123
        if not single and fb != 91:
            raise Problem(400, "bad-request", "Bad request",
                          "The request body must be a JSON object (one outcome) or a JSON array of objects (a batch).")
        reports, problems = await _decode_outcomes(request.app.state.outcome_rows, body, single)
        if svc.telemetry is None:
            raise Problem(503, "telemetry-off", "Telemetry is off",
                          "This service runs without telemetry, so outcome reports cannot be made durable.")
        now = time.time_ns()
        tel = svc.telemetry
        system = svc.system.name
        seqs: list[int] = []
        sources: list[str] = []
        retry_after = 0.0
        for i, o in reports:
            got = check_outcome(o, system, now, None if single else i)
            if isinstance(got, dict):
                problems.append(got)
                svc.m_outcome_rejections.inc(("invalid",))
                continue
            decision_id, unit, kind, value, event_ns, source, outcome_id = got
            which, wait = take_both(svc.per_source, source, svc.per_unit, unit if unit is not None else f"decision:{decision_id}")
            if which:
                reason = "rate_source" if which == 1 else "rate_unit"
                svc.m_outcome_rejections.inc((reason,))
                retry_after = max(retry_after, _secs(wait))
                lim = "source" if which == 1 else "unit"
                key = source if which == 1 else (unit if unit is not None else decision_id)
                p = {"type": "urn:closedloop:problem:rate-limited", "title": "Too many outcome reports", "status": 429,
                     "detail": f"Outcome reports for {lim} {key!r} exceed the declared limit; retry in {_secs(wait)} s.",
                     "limit": lim, "retry_after_s": _secs(wait)}
                if not single:
                    p["index"] = i
                problems.append(p)
                continue
            try:
                seq = tel.log_outcome(decision_id, unit, kind=kind, value=value, event_ns=event_ns, source=source,
                                      outcome_id=outcome_id)
            except ContextError as e:
                problems.append({"type": "urn:closedloop:problem:invalid-outcome", "title": "Invalid outcome",
                                 "status": 422, "detail": str(e), "field": e.field, "rule": e.rule,
                                 "value": e.to_dict()["value"], **({} if single else {"index": i})})
                svc.m_outcome_rejections.inc(("invalid",))
                continue
            if seq is None:
                svc.m_outcome_rejections.inc(("telemetry",))
                p = {"type": "urn:closedloop:problem:telemetry-full", "title": "Telemetry buffer full", "status": 503,
                     "detail": "Telemetry could not take the outcome (buffer full or closing); retry later."}
                if not single:
                    p["index"] = i
                problems.append(p)
                continue
            seqs.append(seq)
            sources.append(source)
        if seqs:
            acks = svc.acks
            try:
                ok = await asyncio.wait_for(acks.wait(seqs), settings.ack_timeout_s)  # type: ignore[union-attr]
            except TimeoutError:
                ok = None
            if not ok:
                svc.m_outcome_rejections.inc(("telemetry",), len(seqs))
                why = (f"not durable within {settings.ack_timeout_s:g} s" if ok is None
                       else f"the telemetry write failed ({tel.stats().get('last_error')})")
                raise Problem(503, "not-durable", "Outcomes not durable",
                              f"{len(seqs)} outcome report(s) were not acknowledged: {why}. Nothing of them is "
                              "acknowledged; retrying the same reports is safe (they are deduplicated).",
                              headers={"Retry-After": "1"}, errors=problems or None)
            for s in sources:
                svc.m_outcomes.inc((s,))
        if not seqs and problems:
            statuses = {p["status"] for p in problems}
            status = statuses.pop() if len(statuses) == 1 else 422
            headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after and status == 429 else None
            if single:
                svc.m_responses.inc(("/v1/outcomes", status))
                return problem_response(status, problems[0], headers)
            raise Problem(status, "outcomes-refused", "Outcome reports refused",
                          f"Every outcome report of the batch was refused ({len(problems)}).", headers=headers,
                          errors=problems)
        svc.m_responses.inc(("/v1/outcomes", 202))
        return Response(_encode({"accepted": len(seqs), "rejected": problems}), status_code=202, media_type=JSON)

    async def _decode_outcomes(rows: BoundedArray, body: bytes, single: bool,
                               ) -> tuple[list[tuple[int, OutcomeReport]], list[dict[str, Any]]]:
        """The reports of a body, and the problems of a batch's invalid ones. A batch is never read
        past its (max_batch + 1)-th item; one with an invalid item is decoded item by item in a
        worker thread (the event loop serves other requests meanwhile)."""
        try:
            if single:
                return [(0, one_outcome.decode(body))], []
            return list(enumerate(rows.decode(body))), []
        except msgspec.ValidationError as e:  # an invalid report, or (a batch) too many
            if single:
                raise Problem(422, "invalid-outcome", "Invalid outcome", str(e), **_path_field(e)) from None
        except _BAD_JSON as e:
            raise _malformed(e) from None
        try:
            items = rows.items(body)
        except TooLarge:
            raise _batch_too_large(max_batch, "outcomes") from None
        except msgspec.ValidationError:
            raise _not_an_array("outcomes") from None
        except _BAD_JSON as e:
            raise _malformed(e) from None
        return await asyncio.to_thread(_outcomes_one_by_one, items)

    def _outcomes_one_by_one(items: list[msgspec.Raw]) -> tuple[list[tuple[int, OutcomeReport]], list[dict[str, Any]]]:
        good: list[tuple[int, OutcomeReport]] = []
        bad: list[dict[str, Any]] = []
        for i, r in enumerate(items):
            try:
                good.append((i, one_outcome.decode(r)))
            except msgspec.ValidationError as e:
                where = _path_field(e)
                if where:
                    bad.append({"type": "urn:closedloop:problem:invalid-outcome", "title": "Invalid outcome",
                                "status": 422, "detail": str(e), "index": i, **where})
                else:  # not an object at all
                    bad.append(invalid("outcome", "<outcome>", "a JSON object", _shown(r), index=i))
            except _BAD_JSON:
                bad.append(invalid("outcome", "<outcome>", "a JSON object nested less deeply", "<too deep>", index=i))
        return good, bad

    # -- status, health, metrics ----------------------------------------------------------------------
    @app.get("/v1/status", summary="Deployment, bundle versions, flights, kill switch, telemetry health, limits",
             tags=["status"], responses={401: {"$ref": "#/components/responses/Problem"}})
    async def status(request: Request) -> Response:
        svc = holder["svc"]
        svc.authenticate(request.headers.get(auth_header), None)
        svc.m_responses.inc(("/v1/status", 200))
        return Response(_encode(svc.status()), media_type=JSON)

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
        return Response(_encode(body), media_type=JSON)

    # Metrics name reporter sources and bundle versions: open on loopback only; a server that
    # listens beyond it asks for a credential with the 'metrics' role (or 'admin').
    metrics_public = settings.listens_on_loopback
    metrics_roles = ("metrics", "admin")

    @app.get("/metrics", summary="Prometheus text format (a 'metrics' or 'admin' token unless served on loopback)",
             tags=["health"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
                        **({} if metrics_public else {c: {"$ref": "#/components/responses/Problem"} for c in (401, 403)})})
    async def metrics(request: Request) -> Response:
        svc = holder["svc"]
        if not metrics_public:
            svc.authenticate(request.headers.get(auth_header), metrics_roles)
        return Response(svc.render_metrics(), media_type=CONTENT_TYPE)

    # -- admin: the registry's operations ----------------------------------------------------------------
    from closedloop.service.admin import admin_routes

    admin_routes(app, settings, holder)

    # -- the OpenAPI document: the System's schemas merged in -------------------------------------------
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = doc.setdefault("components", {})
        extra = getattr(app.state, "extra_schemas", None)
        if extra is None:
            return doc  # not started: the System is not known yet; not cached
        comps.setdefault("schemas", {}).update(extra)
        comps["responses"] = {"Problem": {"description": "Problem details (RFC 9457).", "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}
        comps["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        public = {"/healthz", "/readyz", *(("/metrics",) if metrics_public else ())}
        for path, ops in doc.get("paths", {}).items():
            if path in public:
                continue
            for op in ops.values():
                op["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _arm(rt: Any, ctx: Any) -> str | None:
    """The arm (flight name, None: production) a validated context's unit is assigned to."""
    from closedloop.runtime.deployment import assign_flight

    flights = rt.deployment.flights
    if not flights:
        return None
    unit = getattr(ctx, rt.system.unit)
    i = assign_flight(flights, str(unit))
    return None if i < 0 else flights[i].name


def _secs(w: float) -> float:
    return round(w, 3) if w != float("inf") else 3600.0


def _shown(raw: msgspec.Raw) -> Any:
    """A refused item's value for a problem entry: a scalar as is, a container by its kind."""
    head = bytes(memoryview(raw)[:1])
    if head in (b"[", b"{"):
        return "<an array>" if head == b"[" else "<an object>"
    v = msgspec.json.decode(raw)
    if isinstance(v, str) and len(v) > 200:
        return v[:197] + "..."
    return v


def _path_field(e: msgspec.ValidationError) -> dict[str, Any]:
    """The field a msgspec validation error names (``… - at `$[0].value``` or ``Object missing
    required field `kind```); empty when it names none (the value is not an object at all)."""
    msg = str(e)
    missing = "Object missing required field `"
    if msg.startswith(missing):
        name = msg[len(missing):].split("`", 1)[0]
        return {"field": name, "rule": "present"}
    at = msg.rfind("at `$")
    if at < 0:
        return {}
    path = msg[at + 4:].rstrip("`")
    name = path.rsplit(".", 1)[-1] if "." in path else path
    name = name.split("[", 1)[0] or path
    return {"field": name, "rule": msg[:at].rstrip(" -")}


def _errors(app: FastAPI, holder: dict[str, Service]) -> None:
    def route_of(request: Request) -> str:
        r = request.scope.get("route")
        return getattr(r, "path", "other")

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        _count(holder.get("svc"), route_of(request), exc.status)
        errors = exc.extra.get("errors")
        if errors is not None and len(errors) > _ERRORS_ON_LOOP:
            # A whole refused batch: making its problem entries JSON-safe is Python work per row.
            return await asyncio.to_thread(exc.response)
        return exc.response()

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> Response:
        forbidden = "lacks the role" in str(exc)
        status = 403 if forbidden else 401
        _count(holder.get("svc"), route_of(request), status)
        headers = None if forbidden else {"WWW-Authenticate": 'Bearer realm="closedloop"'}
        return problem_response(status, {
            "type": "urn:closedloop:problem:" + ("forbidden" if forbidden else "unauthorized"),
            "title": "Forbidden" if forbidden else "Unauthorized", "status": status, "detail": str(exc),
        }, headers)

    @app.exception_handler(ClosedLoopError)
    async def _closedloop(request: Request, exc: ClosedLoopError) -> Response:
        _count(holder.get("svc"), route_of(request), 422)
        body: dict[str, Any] = {"type": "urn:closedloop:problem:" + type(exc).__name__, "title": type(exc).__name__,
                                "status": 422, "detail": str(exc)}
        if isinstance(exc, ContextError):
            body.update(field=exc.field, rule=exc.rule, value=exc.to_dict()["value"])
        return problem_response(422, body)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        _count(holder.get("svc"), route_of(request), 422)
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ())]
        return problem_response(422, {
            "type": "urn:closedloop:problem:invalid-request", "title": "Invalid request", "status": 422,
            "detail": f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}.",
            "field": loc[-1] if loc else None, "rule": first.get("msg"), "value": first.get("input"),
            "errors": [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg")} for e in errs],
        })

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        _count(holder.get("svc"), route_of(request), exc.status_code)
        return problem_response(exc.status_code, {
            "type": "about:blank", "title": str(exc.detail), "status": exc.status_code,
            "detail": f"{request.method} {request.url.path}: {exc.detail}.",
        }, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        _count(holder.get("svc"), route_of(request), 500)
        return problem_response(500, {
            "type": "urn:closedloop:problem:internal", "title": "Internal error", "status": 500,
            "detail": f"{type(exc).__name__} while handling {request.method} {request.url.path}; see the service log.",
        })


def _schemas(system: System) -> dict[str, Any]:
    """JSON schemas of the bodies, from the msgspec types that decode and encode them."""
    _, comps = msgspec.json.schema_components(
        [system.schema.struct, Decision, OutcomeReport], ref_template="#/components/schemas/{name}"
    )
    if system.schema.struct.__name__ != "Context":
        comps["Context"] = comps.pop(system.schema.struct.__name__)
    comps["Context"]["description"] = f"A context of System '{system.name}' (schema version {system.schema.version})."
    dec_ref = {"$ref": "#/components/schemas/Decision"}
    comps["DecisionBatchResult"] = {
        "type": "object",
        "properties": {
            "decisions": {"type": "array", "items": dec_ref},
            "index": {"type": "array", "items": {"type": "integer"},
                      "description": "the row of the batch each decision is for"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"},
                       "description": "the refused rows, with their index, field, rule and value"},
        },
        "required": ["decisions", "index", "errors"],
    }
    comps["OutcomesAccepted"] = {
        "type": "object",
        "properties": {"accepted": {"type": "integer"},
                       "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}},
        "required": ["accepted", "rejected"],
    }
    comps["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details; validation errors name the field, the rule and the value.",
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "field": {}, "rule": {}, "value": {}, "index": {"type": "integer"},
                       "errors": {}},
        "required": ["type", "title", "status", "detail"],
    }
    return comps
