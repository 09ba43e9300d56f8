"""``closedloop serve``: the decision service (FastAPI on uvicorn, uvloop and httptools).

::

    closedloop serve --system MOD:ATTR [--bundle PATH] [--host 127.0.0.1] [--port 8000] [--workers 1] [--console]
                     [--redis-url redis://…] [--telemetry-url nats://…]

Without ``--bundle`` the deployment comes from the registry in the project home and is
hot-reloaded; with it, that bundle serves, fixed. ``--console`` also serves the operations console at
``/console`` (the same app as ``closedloop console``, mounted: no middleware on the service). The options become one
:class:`~closedloop.service.ServiceSettings`, handed to every worker process (as JSON in
``CLOSEDLOOP_SERVICE_SETTINGS``) and read once there.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from closedloop.base.files import make_private_dirs
from closedloop.cli.options import OptionalBundleOption, SystemOption
from closedloop.errors import SpecError
from closedloop.settings import Settings

if TYPE_CHECKING:  # the service is imported when a command needs it
    from closedloop.service import RateLimit, ServiceSettings

__all__ = ["parse_rate", "serve"]


def parse_rate(text: str, option: str) -> RateLimit:
    """``RATE/BURST`` (events per second / bucket size), ``RATE`` (burst = 10 × rate, at least 1)
    or ``off``."""
    from closedloop.service import RateLimit

    t = text.strip().lower()
    if t in ("off", "none", "unlimited"):
        return RateLimit(math.inf, 0.0)
    rate_s, _, burst_s = t.partition("/")
    try:
        rate = float(rate_s)
        burst = float(burst_s) if burst_s else max(1.0, 10.0 * rate)
        return RateLimit(rate, burst)
    except (ValueError, SpecError):
        raise typer.BadParameter(
            f"must be RATE/BURST (events per second / burst size, numbers >= 0), RATE or 'off'. Got {text!r} instead.",
            param_hint=f"'{option}'",
        ) from None


#: ``--redis-url``: the caps and outcome rate limits on Redis, shared by every replica
RedisUrlOption = Annotated[str | None, typer.Option(
    "--redis-url", metavar="URL",
    help="Keep the frequency caps and outcome rate limits on this Redis (redis://…), shared by every replica "
         "(docs/service.md, \"Shared state on Redis\"); default: in each worker process.")]
#: ``--redis-on-unavailable``: what the service does while Redis is unreachable
RedisPolicyOption = Annotated[str, typer.Option(
    "--redis-on-unavailable", metavar="open|closed",
    help="While Redis is unreachable: 'open' admits and allows, 'closed' refuses (counted in /metrics, shown by /readyz).")]

#: ``--cors-origin``: a page origin allowed to call the browser clients' endpoints (repeatable)
CorsOriginOption = Annotated[list[str] | None, typer.Option(
    "--cors-origin", metavar="URL",
    help="An origin (scheme://host[:port]) whose pages may call /v1/bundles/current, /v1/decisions and /v1/outcomes "
         "across origins (the JavaScript SDK in a browser); repeat for several.")]
#: ``--telemetry/--no-telemetry``: decisions and outcomes logged (outcome reports need it)
TelemetryOption = Annotated[bool, typer.Option(
    "--telemetry/--no-telemetry", help="Log decisions and outcomes to the home's telemetry (outcome reports need it).")]
#: ``--telemetry-url``: telemetry published to NATS JetStream instead of the home's segment log
TelemetryUrlOption = Annotated[str | None, typer.Option(
    "--telemetry-url", metavar="URL",
    help="Publish decisions and outcomes to this NATS JetStream (nats://host:port): an outcome is answered 202 once the log "
         "acknowledged it; while it is unreachable records spill to the home (docs/service.md, \"Telemetry on NATS JetStream\"). "
         "Default: the home's segment log.")]


def serve(
    ctx: typer.Context,
    system: SystemOption,
    bundle: OptionalBundleOption = None,
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes (each polls the registry itself).")] = 1,
    telemetry: TelemetryOption = True,
    credentials: Annotated[
        str | None, typer.Option("--credentials", metavar="FILE", help="The credentials file (default: <home>/credentials.json).")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1024, help="The largest request body accepted.")] = 8 << 20,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="The most contexts or outcomes in one request.")] = 10_000,
    max_candidates: Annotated[
        int, typer.Option("--max-candidates", min=1, help="A ranking system: the most candidates in one request.")
    ] = 1_000,
    outcome_rate_per_source: Annotated[
        str,
        typer.Option(
            "--outcome-rate-per-source",
            metavar="RATE/BURST",
            help="Outcome reports per second per reported source, and the burst allowed ('off' to disable).",
        ),
    ] = "500/2000",
    outcome_rate_per_unit: Annotated[
        str,
        typer.Option(
            "--outcome-rate-per-unit",
            metavar="RATE/BURST",
            help="Outcome reports per second per unit (or per decision id when no unit is given), and the burst.",
        ),
    ] = "0.5/20",
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="Seconds between polls of the registry's revision.")
    ] = 1.0,
    guard_interval: Annotated[
        float,
        typer.Option(
            "--guard-interval",
            min=0.0,
            help="Seconds between guard checks of running flights (automatic rollback); 0 turns the guard off.",
        ),
    ] = 30.0,
    flush_interval_ms: Annotated[float, typer.Option("--flush-interval-ms", min=0.1, help="Telemetry group-commit interval.")] = 5.0,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request (slower).")] = False,
    console: Annotated[bool, typer.Option(
        "--console", help="Also serve the operations console at /console (docs/console.md); the decision path is unchanged.")] = False,
    redis_url: RedisUrlOption = None,
    redis_on_unavailable: RedisPolicyOption = "open",
    cors_origin: CorsOriginOption = None,
    telemetry_url: TelemetryUrlOption = None,
) -> None:
    """Serve decisions and outcome reports over HTTP (see docs/service.md): the registry's deployment, hot-reloaded, or with --bundle \
that bundle, fixed (no registry).

    Every endpoint but /healthz, /readyz, the OpenAPI docs and (when --host is a loopback address) /metrics needs 'Authorization: \
Bearer <token>' with the right role (decide, report, client, metrics, admin); create tokens with `closedloop token add`.
    """
    import uvicorn  # first: an installation without it fails before anything is printed

    project: Settings = ctx.obj
    settings = _service_settings(
        project, system=system, bundle=bundle, host=host, port=port, workers=workers, credentials=credentials,
        telemetry=telemetry, flush_interval_ms=flush_interval_ms, max_body_bytes=max_body_bytes, max_batch=max_batch,
        max_candidates=max_candidates, outcome_rate_per_source=outcome_rate_per_source, outcome_rate_per_unit=outcome_rate_per_unit,
        poll_interval=poll_interval, guard_interval=guard_interval, access_log=access_log,
    ).replace(redis_url=redis_url, redis_on_unavailable=redis_on_unavailable, telemetry_url=telemetry_url,
              cors_origins=tuple(cors_origin or ()))
    _warn_without_credentials(settings)
    shared = None
    if workers > 1:  # the workers share one port: /metrics answers the sums over all of them
        shared = _metrics_dir(project.home)
        settings = settings.replace(metrics_dir=shared)
    _hand_to_workers(settings)
    try:
        _run_server(uvicorn, settings, console=console)
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)


def _service_settings(
    project: Settings, *, system: str, bundle: str | None, host: str, port: int, workers: int, credentials: str | None,
    telemetry: bool, flush_interval_ms: float, max_body_bytes: int, max_batch: int, max_candidates: int, outcome_rate_per_source: str,
    outcome_rate_per_unit: str, poll_interval: float, guard_interval: float, access_log: bool,
) -> ServiceSettings:
    """The options as one :class:`~closedloop.service.ServiceSettings` (the rates parsed: ``'--outcome-rate-…'``
    named when one is not RATE/BURST, RATE or 'off')."""
    from closedloop.service import ServiceSettings

    return ServiceSettings(
        project=project, system=system, bundle=bundle, host=host, port=port, workers=workers,
        credentials=None if credentials is None else Path(credentials), telemetry=telemetry, flush_interval_ms=flush_interval_ms,
        max_body_bytes=max_body_bytes, max_batch=max_batch, max_candidates=max_candidates,
        outcome_rate_per_source=parse_rate(outcome_rate_per_source, "--outcome-rate-per-source"),
        outcome_rate_per_unit=parse_rate(outcome_rate_per_unit, "--outcome-rate-per-unit"),
        poll_interval_s=poll_interval, guard_interval_s=guard_interval, access_log=access_log,
    )


def _warn_without_credentials(settings: ServiceSettings) -> None:
    """Warn (stderr) when there is no credentials file: every authenticated request would be refused."""
    if not settings.credentials_path.exists():
        typer.echo(
            f"warning: no credentials file at {settings.credentials_path}: every authenticated request will be "
            "refused. Create a token with `closedloop token add NAME --role decide`.", err=True,
        )


def _hand_to_workers(settings: ServiceSettings) -> None:
    """Put what every worker process reads in the environment: the settings (as JSON) and the
    working directory on ``PYTHONPATH`` (modules named by --system import from it)."""
    from closedloop.service import ENV_SERVICE_SETTINGS

    os.environ[ENV_SERVICE_SETTINGS] = settings.to_json()
    cwd = os.getcwd()
    os.environ["PYTHONPATH"] = cwd + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def _run_server(uvicorn: Any, settings: ServiceSettings, *, console: bool = False) -> None:
    """Serve until stopped: uvicorn (uvloop, httptools) with ``settings.workers`` processes, each
    building the app with :func:`closedloop.service.app.app_from_environ` (with ``console``,
    :func:`closedloop.cli.console.app_with_console_from_environ`: the same, the console mounted at /console)."""
    factory = "closedloop.cli.console:app_with_console_from_environ" if console else "closedloop.service.app:app_from_environ"
    uvicorn.run(
        factory, factory=True, host=settings.host, port=settings.port,
        workers=settings.workers, loop="uvloop", http="httptools", lifespan="on", access_log=settings.access_log,
        log_level="info", timeout_graceful_shutdown=10,
    )


def _metrics_dir(home: Path) -> Path:
    """A fresh directory for this server's workers to share their metrics through:
    ``<home>/run/metrics-<pid>``. Those of servers that are gone (killed before they could
    remove theirs) are removed first."""
    run = Path(home) / "run"
    for old in run.glob("metrics-*"):
        try:
            pid = int(old.name.split("-", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass  # another user's live server
    d = run / f"metrics-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    make_private_dirs(d)
    return d
