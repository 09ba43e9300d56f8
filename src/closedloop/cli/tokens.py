"""``closedloop token``: credentials with roles, and the admin check the CLI's changing commands use.

::

    closedloop token add NAME --role admin [--role decide …]   prints the new token once
    closedloop token list                                      names and roles (never tokens)
    closedloop token remove NAME

Commands that change what serves call :func:`~closedloop.cli.options.admin` with the settings: the token comes from the
root ``--token`` option, else ``CLOSEDLOOP_TOKEN`` (read once, into :class:`~closedloop.Settings`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from closedloop.cli.options import admin, authenticate
from closedloop.service.auth import ROLES, Credentials
from closedloop.settings import Settings

__all__ = ["admin", "authenticate", "token_app"]

token_app = typer.Typer(help="Credentials: named tokens with roles (decide, report, client, metrics, viewer, admin).", no_args_is_help=True)


@token_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The credential's name (recorded as the actor of changes).")],
    role: Annotated[list[str], typer.Option("--role", help=f"A role ({', '.join(ROLES)}); repeatable.")],
) -> None:
    """Create a credential and print its token (shown once; only its hash is kept).

    Roles: decide (ask the service for decisions), report (report outcomes), metrics (read /metrics beyond loopback), viewer \
(the operations console, read-only), admin (change what serves; in the console admin implies viewer).
    """
    settings: Settings = ctx.obj
    token = Credentials(settings.credentials).add(name, role)
    typer.echo(token)


@token_app.command("list")
def list_(ctx: typer.Context) -> None:
    """The credentials' names and roles, one JSON line each."""
    settings: Settings = ctx.obj
    creds = Credentials.load(settings.credentials)
    for e in creds.describe():
        typer.echo(json.dumps(e))


@token_app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Delete a credential: its token stops working."""
    settings: Settings = ctx.obj
    Credentials(settings.credentials).remove(name)
    typer.echo(f"removed {name}")
