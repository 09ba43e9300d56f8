"""The service's one typed settings object, read once at start-up and passed down.

``closedloop serve`` builds a :class:`ServiceSettings` from its options (and the project
:class:`~closedloop.settings.Settings`: home, telemetry key). Each uvicorn worker process receives
the same object serialized in the environment variable ``CLOSEDLOOP_SERVICE_SETTINGS`` (JSON) and
reads it once, in the app factory; nothing else reads the environment.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from closedloop.errors import SpecError
from closedloop.service.cors import check_origins
from closedloop.settings import Settings

__all__ = ["ENV_SERVICE_SETTINGS", "RateLimit", "ServiceSettings"]

#: The environment variable that carries the settings (JSON) from ``closedloop serve`` to workers.
ENV_SERVICE_SETTINGS = "CLOSEDLOOP_SERVICE_SETTINGS"
#: The largest ``max_batch`` (a batch is decided in one call on the event loop; its bounded
#: decoders have one slot per item).
MAX_BATCH = 100_000
#: The largest ``max_candidates`` (the request body's limit bounds the work first, in practice).
MAX_CANDIDATES = 1_000_000


def _number(owner: str, name: str, value: Any, *, lo: float, lo_open: bool = False, hi: float = math.inf) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        rule = f"a number {low}" + ("" if hi == math.inf else f" and <= {hi:g}")
        raise SpecError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")
    return float(value)


def _integer(owner: str, name: str, value: Any, *, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rule = f"an integer >= {lo}" + ("" if hi is None else f" and <= {hi}")
        raise SpecError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")
    return value


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``rate`` events per second on average, at most ``burst`` at once.

    ``rate=0`` with ``burst=0`` refuses everything; ``rate=math.inf`` turns the limit off.
    """

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (isinstance(self.rate, int | float) and not isinstance(self.rate, bool) and self.rate >= 0):
            raise SpecError(f"The 'rate' parameter of RateLimit must be a number >= 0 (events per second). Got {self.rate!r} instead.")
        _number("RateLimit", "burst", self.burst, lo=0)
        object.__setattr__(self, "rate", float(self.rate))
        object.__setattr__(self, "burst", float(self.burst))

    @property
    def unlimited(self) -> bool:
        return self.rate == math.inf

    def describe(self) -> dict[str, Any]:
        return {"rate_per_s": None if self.unlimited else self.rate, "burst": self.burst}


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Everything ``closedloop serve`` is configured with.

    Attributes
    ----------
    project:
        The project :class:`~closedloop.settings.Settings` (home, telemetry key).
    system:
        The System, as ``module:attr`` or ``path/to/file.py:attr``.
    bundle:
        Serve this bundle (a path, or a version in the project home's ``bundles/``) as a fixed
        deployment, without a registry. ``None``: the deployment comes from the registry.
    host, port, workers:
        Where uvicorn listens and how many worker processes it runs. On a loopback address
        (``127.0.0.0/8``, ``::1``, ``localhost``: :attr:`listens_on_loopback`) ``/metrics`` is
        open; on any other it needs a token with the ``metrics`` (or ``admin``) role.
    credentials:
        The credentials file (default: ``<home>/credentials.json``). Every endpoint but
        ``/healthz``, ``/readyz``, the OpenAPI docs and (on loopback) ``/metrics`` needs a token.
    telemetry:
        Log decisions and outcomes to the project home's telemetry (outcome reports need it).
    flush_interval_ms, buffer_limit:
        The telemetry writer's group-commit interval and in-memory buffer bound.
    max_body_bytes, max_batch:
        The largest request body accepted and the most contexts (or outcomes) in one batch (at
        most 100,000: a batch is decided in one call on the event loop). A batch is never read
        past its ``max_batch + 1``-th item: a longer one is refused (413) before any per-row work.
    max_candidates:
        The most candidates one ranking request may carry (at most 1,000,000); a request with more
        is refused (413, naming ``candidates``) before the runtime sees it.
    outcome_rate_per_source, outcome_rate_per_unit:
        Outcome reports are rate-limited per reported ``source`` and per ``unit`` (the unit the
        report names; a report linked only by decision id counts against its decision id).
    rate_limit_keys:
        How many sources / units each limiter tracks at most (least recently used are forgotten).
    redis_url, redis_on_unavailable:
        ``redis://host:port/db``: frequency caps and outcome rate limits live on that Redis, shared
        by every replica (docs/service.md, "Shared state on Redis"); None (the default): in each
        worker process. While Redis is unreachable the declared policy applies: ``"open"`` admits
        and allows, ``"closed"`` refuses (counted in ``/metrics``, said in ``/readyz``).
    cors_origins:
        The origins (``scheme://host[:port]``) whose pages may call the browser clients' endpoints
        (``GET /v1/bundles/current``, ``POST /v1/decisions``, ``POST /v1/outcomes``) across origins
        (:mod:`closedloop.service.cors`); empty (the default): none.
    telemetry_url:
        ``nats://host:port`` (several comma-separated: a cluster): publish telemetry to that NATS JetStream through a
        :class:`~closedloop.telemetry.sink_transport.TransportSink` — an outcome is answered 202
        once the log acknowledged it; while the log is unreachable, records spill to the home and
        are re-published when it returns (docs/service.md, "Telemetry on NATS JetStream"); a
        collector (``closedloop telemetry collect``) writes the log into the lake. None (the
        default): the segment log in the project home.
    poll_interval_s:
        How often each worker polls the registry's revision (hot reload).
    ack_timeout_s:
        How long an outcome report waits for durability before answering 503.
    metrics_dir:
        A directory the workers of one server share their metrics through (``closedloop serve
        --workers N`` sets a fresh one under ``<home>/run/``): ``/metrics`` then answers the sums
        over every worker. None: each worker reports its own.
    guard_interval_s:
        How often, while flights run, the automatic rollback checks them against production
        (the registry's guard; 0 turns it off). ``guard_alpha``, ``guard_min_decisions``,
        ``guard_mistake_tolerance`` and ``guard_reward_tolerance`` (relative to production's reward
        per decision, for a system that declares rewards) are its declared policy.
    """

    project: Settings
    system: str
    bundle: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    credentials: Path | None = None
    telemetry: bool = True
    flush_interval_ms: float = 5.0
    buffer_limit: int = 1_000_000
    max_body_bytes: int = 8 << 20
    max_batch: int = 10_000
    max_candidates: int = 1_000
    outcome_rate_per_source: RateLimit = field(default_factory=lambda: RateLimit(500.0, 2_000.0))
    outcome_rate_per_unit: RateLimit = field(default_factory=lambda: RateLimit(0.5, 20.0))
    rate_limit_keys: int = 200_000
    redis_url: str | None = None
    redis_on_unavailable: str = "open"
    cors_origins: tuple[str, ...] = ()
    telemetry_url: str | None = None
    poll_interval_s: float = 1.0
    ack_timeout_s: float = 10.0
    guard_interval_s: float = 30.0
    guard_alpha: float = 0.01
    guard_min_decisions: int = 200
    guard_mistake_tolerance: float = 0.0
    guard_reward_tolerance: float = 0.0
    access_log: bool = False
    metrics_dir: Path | None = None

    def __post_init__(self) -> None:
        own = "ServiceSettings"
        if not isinstance(self.project, Settings):
            raise SpecError(f"The 'project' parameter of {own} must be a closedloop.settings.Settings. Got {self.project!r} instead.")
        if not isinstance(self.system, str) or ":" not in self.system:
            raise SpecError(
                f"The 'system' parameter of {own} must be 'module:attr' or 'path/to/file.py:attr'. Got {self.system!r} instead."
            )
        if self.bundle is not None and (not isinstance(self.bundle, str) or not self.bundle):
            raise SpecError(f"The 'bundle' parameter of {own} must be a bundle path or version, or None. Got {self.bundle!r} instead.")
        if not isinstance(self.host, str) or not self.host:
            raise SpecError(f"The 'host' parameter of {own} must be a host name or address. Got {self.host!r} instead.")
        _integer(own, "port", self.port, lo=0, hi=65535)
        _integer(own, "workers", self.workers, lo=1, hi=64)
        for name in ("credentials", "metrics_dir"):
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, str | os.PathLike) or not str(v):
                    raise SpecError(f"The '{name}' parameter of {own} must be a path or None. Got {v!r} instead.")
                object.__setattr__(self, name, Path(v))
        _number(own, "flush_interval_ms", self.flush_interval_ms, lo=0, lo_open=True, hi=60_000)
        _integer(own, "buffer_limit", self.buffer_limit, lo=1)
        _integer(own, "max_body_bytes", self.max_body_bytes, lo=1024)
        _integer(own, "max_batch", self.max_batch, lo=1, hi=MAX_BATCH)
        _integer(own, "max_candidates", self.max_candidates, lo=1, hi=MAX_CANDIDATES)
        for name in ("outcome_rate_per_source", "outcome_rate_per_unit"):
            if not isinstance(getattr(self, name), RateLimit):
                raise SpecError(f"The '{name}' parameter of {own} must be a RateLimit. Got {getattr(self, name)!r} instead.")
        _integer(own, "rate_limit_keys", self.rate_limit_keys, lo=1)
        if self.redis_url is not None and (not isinstance(self.redis_url, str)
                                           or not self.redis_url.startswith(("redis://", "rediss://", "unix://"))):
            raise SpecError(f"The 'redis_url' parameter of {own} must be a redis:// URL or None. Got {self.redis_url!r} instead.")
        if self.redis_on_unavailable not in ("open", "closed"):
            raise SpecError(
                f"The 'redis_on_unavailable' parameter of {own} must be 'open' or 'closed'. Got {self.redis_on_unavailable!r} instead."
            )
        object.__setattr__(self, "cors_origins", check_origins(self.cors_origins, own))
        if self.telemetry_url is not None:
            if not isinstance(self.telemetry_url, str) or not self.telemetry_url.startswith("nats://"):
                raise SpecError(f"The 'telemetry_url' parameter of {own} must be a nats://host:port URL (several comma-separated) or None. "
                                f"Got {self.telemetry_url!r} instead.")
            if not self.telemetry:
                raise SpecError(f"The 'telemetry_url' parameter of {own} needs telemetry on (telemetry=True). "
                                f"Got {self.telemetry_url!r} with telemetry=False instead.")
        _number(own, "poll_interval_s", self.poll_interval_s, lo=0.01, hi=3600)
        _number(own, "ack_timeout_s", self.ack_timeout_s, lo=0, lo_open=True, hi=600)
        _number(own, "guard_interval_s", self.guard_interval_s, lo=0, hi=86_400)
        _number(own, "guard_alpha", self.guard_alpha, lo=0, lo_open=True, hi=0.5)
        _integer(own, "guard_min_decisions", self.guard_min_decisions, lo=1)
        _number(own, "guard_mistake_tolerance", self.guard_mistake_tolerance, lo=0, hi=1)
        _number(own, "guard_reward_tolerance", self.guard_reward_tolerance, lo=0, hi=1)

    @property
    def listens_on_loopback(self) -> bool:
        """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``: then
        only this machine can reach the server. Any other name or address (``0.0.0.0``, ``::``, a
        host name) counts as reachable from elsewhere."""
        host = self.host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def credentials_path(self) -> Path:
        return self.credentials if self.credentials is not None else self.project.credentials

    def replace(self, **changes: Any) -> ServiceSettings:
        return replace(self, **changes)

    # -- the hand-over to worker processes --------------------------------------------------------
    def to_json(self) -> str:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Settings):
                v = _project_dict(v)
            elif isinstance(v, RateLimit):
                v = {"rate": None if v.unlimited else v.rate, "burst": v.burst}
            elif isinstance(v, Path):
                v = str(v)
            out[f.name] = v
        return json.dumps(out)

    @classmethod
    def from_json(cls, text: str) -> ServiceSettings:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"The service settings must be a JSON object. Got text that is not JSON ({exc}).") from None
        if not isinstance(raw, dict):
            raise SpecError(f"The service settings must be a JSON object. Got {type(raw).__name__} instead.")
        project = _project_from(raw.pop("project", None) or {})
        for name in ("outcome_rate_per_source", "outcome_rate_per_unit"):
            if isinstance(raw.get(name), dict):
                r = raw[name]
                raw[name] = RateLimit(math.inf if r.get("rate") is None else r["rate"], r.get("burst", 0))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SpecError(f"The service settings have unknown keys {unknown}; known: {sorted(known)}.")
        return cls(project=project, **raw)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> ServiceSettings:
        """The settings ``closedloop serve`` handed to this worker process."""
        text = environ.get(ENV_SERVICE_SETTINGS)
        if not text:
            raise SpecError(
                f"The environment variable {ENV_SERVICE_SETTINGS} is not set: start the service with "
                "`closedloop serve`, or call closedloop.service.create_app(settings) yourself."
            )
        return cls.from_json(text)


def _project_dict(p: Settings) -> dict[str, Any]:
    """The project settings as JSON (the caller's token stays out: a server has no use for it)."""
    out: dict[str, Any] = {}
    for f in fields(p):
        if f.name == "token":
            continue
        v = getattr(p, f.name)
        out[f.name] = v.hex() if isinstance(v, bytes) else str(v) if isinstance(v, Path) else v
    return out


def _project_from(raw: dict[str, Any]) -> Settings:
    kw: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name not in raw:
            continue
        v = raw[f.name]
        if f.name == "home":
            v = Path(v)
        elif f.name == "telemetry_key" and v is not None:
            v = bytes.fromhex(v)
        kw[f.name] = v
    kw.setdefault("home", Path(".closedloop"))
    return Settings(**kw)
