"""``closedloop console``: the operations console over the project home (docs/console.md).

::

    closedloop console [--home H] [--host 127.0.0.1] [--port 8470] [--system MOD:ATTR …]

One uvicorn worker serves :func:`closedloop.console.create_console_app`. ``closedloop serve --console``
mounts the same app at ``/console`` on the decision service instead (:func:`mount_console`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from closedloop.settings import Settings

if TYPE_CHECKING:  # the console is imported when a command needs it
    from closedloop.console import ConsoleSettings

__all__ = ["CONSOLE_PATH", "app_with_console_from_environ", "console", "console_settings", "mount_console", "with_console"]

#: Where ``closedloop serve --console`` mounts the console on the service.
CONSOLE_PATH = "/console"


def console_settings(project: Settings, **kw: Any) -> ConsoleSettings:
    """The console of the project home ``project`` names (its registry URL too)."""
    from closedloop.console import ConsoleSettings

    return ConsoleSettings.from_project(project, **kw)


def mount_console(app: Any, settings: ConsoleSettings, path: str = CONSOLE_PATH) -> Any:
    """Mount the console on ``app`` (the decision service) at ``path``: one route, no middleware — the
    service's per-decision fast path is taken only while the app has none. Returns ``app``."""
    from closedloop.console import create_console_app

    app.mount(path, create_console_app(settings), name="console")
    return app


def with_console(app: Any, settings: Any) -> Any:
    """``app`` (the decision service) with the operations console mounted at ``/console``, over the
    same home, registry and credentials as ``settings`` (a :class:`~closedloop.service.ServiceSettings`),
    able to load the served System (a promotion's sanity checks need it)."""
    return mount_console(app, console_settings(settings.project, credentials=settings.credentials, systems=(settings.system,)))


def app_with_console_from_environ() -> Any:
    """The app factory of ``closedloop serve --console``'s workers: the service
    (:func:`closedloop.service.app.app_from_environ`) with the console mounted (:func:`with_console`)."""
    from closedloop.service import ServiceSettings
    from closedloop.service.app import app_from_environ

    return with_console(app_from_environ(), ServiceSettings.from_environ())


def console(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="The address to listen on (this machine only by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The port to listen on.")] = 8470,
    system: Annotated[list[str] | None, typer.Option(
        "--system", metavar="MODULE:ATTR",
        help="A System the console may load (promoting a flight runs its sanity checks); repeatable.")] = None,
    session_hours: Annotated[float, typer.Option("--session-hours", help="How long a login lasts.")] = 12.0,
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between the live pages' checks for changes.")] = 1.0,
) -> None:
    """Serve the operations console (see docs/console.md): log in with a token of the viewer (read-only) or admin role."""
    import uvicorn

    from closedloop.console import create_console_app

    project: Settings = ctx.obj
    settings = console_settings(project, host=host, port=port, systems=tuple(system or ()), session_hours=session_hours,
                                refresh_seconds=refresh)
    if not settings.credentials_path.exists():
        typer.echo(f"warning: no credentials file at {settings.credentials_path}: nobody can log in. Create a token with "
                   "`closedloop token add NAME --role viewer` (or --role admin).", err=True)
    typer.echo(f"closedloop console on http://{host}:{port}/ (home {project.home})", err=True)
    app = create_console_app(settings)
    import gc

    # the process is the console's alone: what the imports and the app built is frozen out of the collections, so a
    # page that allocates much (the Flights page decodes every shadow's entry) never pays a scan of all of it
    # (bench/console.py: the Flights page judged again ~135-250 ms unfrozen, ~135-150 ms frozen)
    gc.freeze()
    uvicorn.run(app, host=host, port=port, workers=1, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)
