"""The service's state in one worker process: runtime, telemetry, deployment, auth, limits, metrics.

:class:`Service` is built from the :class:`ServiceSettings` (configuration only) and does its I/O
in :meth:`Service.start` / :meth:`Service.stop`, which the app's lifespan calls in each worker:

- the **deployment** comes from a :class:`~closedloop.service.sources.DeploymentSource`; a
  polling thread checks its revision every ``poll_interval_s`` and applies a new deployment with
  one swap (``Runtime.apply``). A source that fails (registry unreachable, bundle refused)
  leaves the last good deployment serving and makes ``/readyz`` say *degraded* with the reason;
- **telemetry** writes decisions and outcomes to the project home (or, with
  ``telemetry_url``, to NATS JetStream: :mod:`~closedloop.service.telemetry_log`) through an
  :class:`~closedloop.service.durability.AckingSink`; a telemetry failure never fails a decision
  (the writer drops and counts), and outcome reports are acknowledged only once durable;
- **credentials** are re-read when their file changes (a token added or removed takes effect
  within one poll interval, no restart).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from closedloop.errors import AuthError, SpecError
from closedloop.runtime.deployment import Deployment, expected_shares
from closedloop.runtime.runtime import Runtime
from closedloop.service.auth import Credential, Credentials
from closedloop.service.durability import AckingSink, OutcomeAcks
from closedloop.service.limits import TokenBuckets
from closedloop.service.limits_redis import shared_state
from closedloop.service.metrics import MetricsRegistry, SharedMetrics
from closedloop.service.reload import ArmCounters
from closedloop.service.settings import ServiceSettings
from closedloop.service.sources import DeploymentSource
from closedloop.service.telemetry_log import declare_log_metrics, open_sink
from closedloop.system.spec import System
from closedloop.telemetry.sink_transport import TransportSink

T = TypeVar("T")

__all__ = ["Service"]

log = logging.getLogger("closedloop.service")

#: Latency histogram bounds (seconds): 50 µs … 1 s.
LATENCY_BOUNDS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)


class Service:
    """Everything one worker serves with. Configuration in the constructor; :meth:`start` does I/O.

    Parameters
    ----------
    settings:
        The :class:`ServiceSettings`.
    system:
        The :class:`~closedloop.System` served.
    source:
        Where the deployment comes from.
    """

    def __init__(self, settings: ServiceSettings, system: System, source: DeploymentSource) -> None:
        _check_servable(system)
        from closedloop.experience.experiences import Ranking

        self.settings = settings
        self.system = system
        #: a ranking system: its requests carry candidates (:mod:`closedloop.service.routes.ranked`)
        self.ranking = isinstance(system.experience, Ranking)
        self.source = source
        self.runtime: Runtime | None = None
        self.telemetry: Any = None
        self.acks: OutcomeAcks | None = None
        #: the sink on the distributed log (settings.telemetry_url), or None
        self.log_sink: TransportSink | None = None
        self.credentials = Credentials(settings.credentials_path)
        self._cred_stamp: tuple[int, int] | None = None
        self.source_error: str | None = None
        self.source_error_since: float | None = None
        self.apply_error: str | None = None
        self.revision: int = -1
        self.last_poll: float | None = None
        self.started_at = time.time()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._lock = threading.Lock()  # one deployment change at a time (poller vs admin)
        self._refresh_lock = threading.Lock()
        self.arms = ArmCounters()
        self.guard: Any = None
        #: caps and rate limits on Redis (settings.redis_url), or None: in this process
        self.shared = shared_state(settings.redis_url, system.name, per_source=settings.outcome_rate_per_source,
                                   per_unit=settings.outcome_rate_per_unit, on_unavailable=settings.redis_on_unavailable)
        self.per_source: Any = TokenBuckets(settings.outcome_rate_per_source, max_keys=settings.rate_limit_keys)
        self.per_unit: Any = TokenBuckets(settings.outcome_rate_per_unit, max_keys=settings.rate_limit_keys)
        if self.shared is not None:
            self.per_source, self.per_unit = self.shared.per_source, self.shared.per_unit
        self.metrics = MetricsRegistry()
        # the server's other workers' numbers too, when they share a directory (closedloop serve --workers N)
        self.shared_metrics = SharedMetrics(settings.metrics_dir, self.metrics) if settings.metrics_dir else None
        self._declare_counters(self.metrics)
        self._declare_gauges(self.metrics)
        declare_log_metrics(self.metrics, lambda: self.log_sink)

    def _declare_counters(self, m: MetricsRegistry) -> None:
        """The counters and histograms the routes and the deployment update (``self.m_*``)."""
        self.m_decisions = m.counter(
            "closedloop_decisions_total", "Decisions made, by action, bundle version and flight ('' = production).",
            ("action", "bundle", "flight"),
        )
        self.m_latency = m.histogram(
            "closedloop_decision_latency_seconds",
            "Time to handle one single-context decision request: auth, body, decision, encoded answer.",
            LATENCY_BOUNDS,
        )
        self.m_batch_latency = m.histogram(
            "closedloop_decision_batch_latency_seconds", "Time to answer one batch decision request.",
            LATENCY_BOUNDS,
        )
        self.m_invalid = m.counter(
            "closedloop_invalid_contexts_total", "Contexts refused at the edge (problem details answered)."
        )
        self.m_outcomes = m.counter(
            "closedloop_outcome_reports_total", "Outcome reports acknowledged as durable, by source.", ("source",)
        )
        self.m_outcome_rejections = m.counter(
            "closedloop_outcome_rejections_total",
            "Outcome reports refused, by reason (invalid, rate_source, rate_unit, telemetry).", ("reason",),
        )
        self.m_client_decisions = m.counter(
            "closedloop_client_decisions_total", "Decisions made in clients, reported back and acknowledged as durable."
        )
        self.m_client_rejections = m.counter(
            "closedloop_client_decision_rejections_total",
            "Decisions reported by clients and refused, by reason (invalid, telemetry).", ("reason",),
        )
        self.m_auth_failures = m.counter(
            "closedloop_auth_failures_total", "Requests refused by auth, by reason (missing, invalid, forbidden).",
            ("reason",),
        )
        self.m_responses = m.counter(
            "closedloop_http_responses_total", "Responses by route and status code.", ("route", "code")
        )
        self.m_reloads = m.counter(
            "closedloop_deployment_changes_total", "Deployments applied (start-up, poll, admin), by how they came.",
            ("via",),
        )
        self.m_source_errors = m.counter(
            "closedloop_deployment_source_errors_total", "Failed polls or refused deployments, by stage.", ("stage",)
        )

    def _declare_gauges(self, m: MetricsRegistry) -> None:
        """The gauges, read from the service's state at each scrape."""
        m.gauge("closedloop_flight_share", "Declared share of units per flight ('' = production).", ("flight",),
                self._flight_shares)
        m.gauge("closedloop_killswitch", "1 when the kill switch is on.", (), self._killswitch_gauge)
        m.gauge("closedloop_deployment_revision", "The deployment revision serving.", (),
                lambda: [((), self.revision)])
        m.gauge("closedloop_ready", "1 ready, 0.5 degraded, 0 not ready.", (), self._ready_gauge)
        m.gauge("closedloop_telemetry_buffered", "Telemetry records waiting in the buffer.", (),
                lambda: [((), self._tstat("buffered"))])
        m.gauge("closedloop_telemetry_dropped", "Decisions and outcomes telemetry could not log, by reason.",
                ("reason",), self._drops)
        m.gauge("closedloop_telemetry_logged", "Decisions telemetry made durable.", (),
                lambda: [((), self._tstat("logged"))])
        m.gauge("closedloop_telemetry_healthy", "1 when the last telemetry commit succeeded.", (),
                lambda: [((), 1.0 if self.telemetry is None or self.telemetry.healthy else 0.0)])
        m.gauge("closedloop_rate_limit_keys", "Keys tracked by each in-process outcome rate limiter (none on Redis).", ("limiter",),
                lambda: [] if self.shared is not None else [(("source",), len(self.per_source)), (("unit",), len(self.per_unit))])
        m.gauge("closedloop_shared_state_unavailable", "Calls that found Redis unreachable (the declared policy "
                "applied), by store: caps, rate_source, rate_unit. Empty without ServiceSettings.redis_url.", ("store",),
                lambda: [] if self.shared is None else self.shared.unavailable())

    # -- lifecycle ------------------------------------------------------------------------------------
    def render_metrics(self) -> str:
        """``/metrics``: this worker's numbers, summed with the server's other workers' when shared."""
        return self.metrics.render() if self.shared_metrics is None else self.shared_metrics.render()

    def start(self) -> Service:
        """Read credentials, load the deployment, open telemetry, start polling."""
        s = self.settings
        self._reload_credentials(force=True)
        dep = self.source.deployment()
        if s.telemetry:
            from closedloop.telemetry import Telemetry

            inner = open_sink(s, self.system.name)
            self.log_sink = inner if isinstance(inner, TransportSink) else None
            sink = AckingSink(inner)
            self.telemetry = Telemetry(
                sink, system=self.system, key=s.project.telemetry_key, flush_interval_ms=s.flush_interval_ms,
                buffer_limit=s.buffer_limit,
            ).start()
            self.acks = OutcomeAcks(self.telemetry, sink).start()
        caps = self.shared.caps if self.shared is not None else None
        self.runtime = Runtime(self.system, dep.production, telemetry=self.telemetry, caps=caps)
        self._apply(dep, "start")
        self._poller = threading.Thread(target=self._poll_loop, name="closedloop-service-poll", daemon=True)
        self._poller.start()
        if self.source.kind == "registry" and self.telemetry is not None and s.guard_interval_s > 0:
            from closedloop.registry import GuardPolicy
            from closedloop.service.reload import Guard

            policy = GuardPolicy(alpha=s.guard_alpha, min_decisions=s.guard_min_decisions,
                                 mistake_tolerance=s.guard_mistake_tolerance, reward_tolerance=s.guard_reward_tolerance)
            self.guard = Guard(self, s.guard_interval_s, policy).start()
        return self

    def stop(self) -> None:
        """Stop polling, commit what telemetry holds, release the source."""
        self._stop.set()
        if self.guard is not None:
            self.guard.stop()
        if self._poller is not None:
            self._poller.join(timeout=10)
        if self.acks is not None:
            self.acks.stop()
        if self.telemetry is not None:
            self.telemetry.close()
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - shutting down
            log.exception("closing the deployment source failed")

    # -- deployment -----------------------------------------------------------------------------------
    def _apply(self, dep: Deployment, via: str) -> None:
        rt = self.runtime
        if rt is None:
            raise SpecError("The service has not started.")
        with self._lock:
            rt.apply(dep)
            self.revision = dep.revision
            self.arms.reset(dep.revision, [None, *(f.name for f in dep.flights)])
        self.m_reloads.inc((via,))
        log.info("deployment revision %s applied (%s): production %s", dep.revision, via, dep.production.version)

    def refresh(self, via: str = "poll") -> bool:
        """Apply the source's deployment if its revision changed; True when one was applied.
        Failures are recorded (``/readyz``) and the last good deployment keeps serving."""
        with self._refresh_lock:  # the poller, an admin call and the guard: one at a time
            return self._refresh(via)

    def change_and_refresh(self, change: Callable[[], T], applies: Callable[[T], bool], via: str) -> T:
        """``change()`` — which may change the deployment at the source — then, when ``applies`` says
        so of its result, the refresh that applies it, attributed to ``via``: with the refresh lock
        held throughout, so the poller cannot apply the change in between under its own name (the
        guard's stop counted as ``via="guard"``, never as a poll)."""
        with self._refresh_lock:
            out = change()
            if applies(out):
                self._refresh(via)
            return out

    def _refresh(self, via: str) -> bool:
        try:
            rev = self.source.revision()
        except Exception as e:  # noqa: BLE001 - the source is unreachable: keep serving
            self._source_failed("poll", e)
            return False
        self.last_poll = time.time()
        if self.source_error is not None:
            self.source_error = self.source_error_since = None
        if rev == self.revision and self.apply_error is None:
            return False
        try:
            dep = self.source.deployment()
        except Exception as e:  # noqa: BLE001 - e.g. a corrupt bundle: refused, previous one serving
            self.apply_error = f"revision {rev} refused: {type(e).__name__}: {e}"
            self.m_source_errors.inc(("load",))
            log.error("deployment %s", self.apply_error)
            return False
        if dep.revision == self.revision:
            self.apply_error = None
            return False
        self._apply(dep, via)
        self.apply_error = None
        return True

    def _source_failed(self, stage: str, e: BaseException) -> None:
        self.m_source_errors.inc((stage,))
        if self.source_error is None:
            self.source_error_since = time.time()
            log.error("deployment source unreachable: %s: %s", type(e).__name__, e)
        self.source_error = f"{type(e).__name__}: {e}"

    def _poll_loop(self) -> None:
        interval = self.settings.poll_interval_s
        while not self._stop.is_set():
            announced = self.source.wait(interval, self._stop)  # a registry on PostgreSQL announces changes
            if self._stop.is_set():
                break
            if self.source.polled:
                self.refresh("notify" if announced else "poll")
            try:
                self._reload_credentials()
            except AuthError as e:  # a broken credentials file: keep the last good ones
                log.error("credentials not reloaded: %s", e)

    def _reload_credentials(self, force: bool = False) -> None:
        path = self.credentials.path
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if force or stamp != self._cred_stamp:
            fresh = Credentials.load(path)
            self.credentials = fresh
            self._cred_stamp = stamp

    # -- auth -----------------------------------------------------------------------------------------
    def authenticate(self, header: str | None, role: str | tuple[str, ...] | None) -> Credential:
        """The caller's credential from an ``Authorization: Bearer`` header, checked for ``role``
        (``None``: any role; a tuple: any one of them). Raises :class:`AuthError` (counted)."""
        if not header:
            self.m_auth_failures.inc(("missing",))
            raise AuthError("A credential is required: send 'Authorization: Bearer <token>'.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.m_auth_failures.inc(("invalid",))
            raise AuthError("The Authorization header must be 'Bearer <token>'.")
        try:
            cred = self.credentials.authenticate(token.strip())
        except AuthError:
            self.m_auth_failures.inc(("invalid",))
            raise
        if role is None:
            return cred
        roles = (role,) if isinstance(role, str) else role
        if cred.roles.isdisjoint(roles):
            self.m_auth_failures.inc(("forbidden",))
            cred.require(*roles)
        return cred

    # -- health -------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Why the service is degraded (empty: it is ready)."""
        out = []
        if self.source_error is not None:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.source_error_since or time.time()))
            out.append(f"deployment source unreachable since {since} ({self.source_error}); serving revision {self.revision}")
        if self.apply_error is not None:
            out.append(f"deployment not applied: {self.apply_error}; serving revision {self.revision}")
        down = self.shared.problem() if self.shared is not None else None
        if down is not None:
            out.append(down)
        t = self.telemetry
        if t is not None and not t.healthy:
            out.append(f"telemetry unhealthy: {t.stats().get('last_error')}")
        log_problem = self.log_sink.problem() if self.log_sink is not None else None
        if log_problem is not None:
            out.append(log_problem)
        return out

    def _ready_gauge(self) -> list[tuple[tuple[()], float]]:
        if self.runtime is None:
            return [((), 0.0)]
        return [((), 0.5 if self.problems() else 1.0)]

    def _flight_shares(self) -> list[tuple[tuple[str], float]]:
        if self.runtime is None:
            return []
        dep = self.runtime.deployment
        return [((k or "",), v) for k, v in expected_shares(dep.flights).items()]

    def _killswitch_gauge(self) -> list[tuple[tuple[()], float]]:
        return [((), 1.0 if self.runtime is not None and self.runtime.killswitch else 0.0)]

    def _tstat(self, key: str) -> float:
        return 0.0 if self.telemetry is None else float(self.telemetry.stats().get(key) or 0)

    def _drops(self) -> list[tuple[tuple[str], float]]:
        if self.telemetry is None:
            return []
        st = self.telemetry.stats()
        return [
            (("buffer_full",), st.get("dropped_buffer_full", 0)),
            (("write_error",), st.get("unlogged_errors", 0)),
            (("outcome_write_error",), st.get("unlogged_outcomes", 0)),
        ]

    def status(self) -> dict[str, Any]:
        """The deployment, telemetry health and limits, JSON-ready (``GET /v1/status``)."""
        rt = self.runtime
        dep = rt.deployment if rt is not None else None
        out: dict[str, Any] = {
            "system": self.system.name,
            "worker": os.getpid(),
            "started_at": self.started_at,
            "ready": not self.problems(),
            "problems": self.problems(),
            "deployment": None if dep is None else _describe(dep, rt),
            "source": {**self.source.describe(), "last_poll": self.last_poll, "error": self.source_error,
                       "apply_error": self.apply_error},
            "telemetry": None if self.telemetry is None else _jsonable(self.telemetry.stats()),
            "telemetry_log": None if self.log_sink is None else _jsonable(self.log_sink.stats()),
            "limits": {
                "max_body_bytes": self.settings.max_body_bytes,
                "max_batch": self.settings.max_batch,
                "max_candidates": self.settings.max_candidates,
                "outcomes_per_source": self.settings.outcome_rate_per_source.describe(),
                "outcomes_per_unit": self.settings.outcome_rate_per_unit.describe(),
            },
            "poll_interval_s": self.settings.poll_interval_s,
            "guard": None if self.guard is None else {
                "interval_s": self.settings.guard_interval_s, "last_error": self.guard.last_error,
                "last_breaches": (self.guard.last or {}).get("breaches"),
            },
        }
        return out


def _check_servable(system: Any) -> None:
    """Refuse what the service cannot serve: anything but a System."""
    if not isinstance(system, System):
        raise SpecError(f"The service needs a closedloop.System. Got {system!r} instead.")


def _describe(dep: Deployment, rt: Any) -> dict[str, Any]:
    return {
        "revision": dep.revision,
        "production": dep.production.version,
        "shadows": [b.version for b in dep.shadows],
        "flights": [{"name": f.name, "bundle": f.bundle.version, "share": f.share} for f in dep.flights],
        "killswitch": bool(rt.killswitch),
    }


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, str | int | float | bool | type(None)) else repr(v)) for k, v in d.items()}
