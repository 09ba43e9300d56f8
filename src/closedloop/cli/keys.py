"""``closedloop key``: the home's bundle-signing key and the keys the registry trusts.

::

    closedloop key show                      this home's key: id and public key (created if missing)
    closedloop key list                      the keys the registry trusts or trusted
    closedloop key trust PUBLIC_KEY --name N trust another signer (a build machine, a colleague)
    closedloop key trust --home              trust this home's own key (e.g. after a new registry)
    closedloop key revoke KEY_ID             deploy refuses its bundles from now on

Trusting and revoking need a credential with the ``admin`` role. See :mod:`closedloop.runtime.signing`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from closedloop.cli.options import admin
from closedloop.settings import Settings

__all__ = ["key_app"]

key_app = typer.Typer(help="Bundle signing: this home's key and the keys the registry trusts.", no_args_is_help=True)


def _registry(settings: Settings) -> Any:
    from closedloop.registry import Registry

    return Registry.from_settings(settings).open()


@key_app.command("show")
def show(ctx: typer.Context) -> None:
    """Print this home's signing key (its id and base64 public key), creating it if missing."""
    from closedloop.runtime.signing import home_key

    settings: Settings = ctx.obj
    hk = home_key(settings.home)
    if hk is None:  # pragma: no cover - home_key creates
        raise typer.Exit(1)
    typer.echo(json.dumps({"key_id": hk.key.key_id, "public_key": hk.key.public_key, "path": str(hk.path),
                           "created": hk.created}))


@key_app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """The keys the registry trusts (revoked ones too, with who revoked them and when), as JSON lines."""
    settings: Settings = ctx.obj
    with _registry(settings) as reg:
        for k in reg.keys():
            typer.echo(json.dumps(k))


@key_app.command("trust")
def trust(
    ctx: typer.Context,
    public_key: Annotated[str | None, typer.Argument(metavar="PUBLIC_KEY", help="A base64 Ed25519 public key.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Whose key it is (recorded).")] = None,
    home: Annotated[bool, typer.Option("--home", help="Trust this home's own key.")] = False,
) -> None:
    """Trust bundles signed by a key (admin)."""
    from closedloop.runtime.signing import home_key

    settings: Settings = ctx.obj
    actor = admin(settings).name
    if home == (public_key is not None):
        raise typer.BadParameter("give either PUBLIC_KEY or --home.", param_hint="'PUBLIC_KEY'")
    if home:
        hk = home_key(settings.home)
        if hk is None:  # pragma: no cover - home_key creates
            raise typer.Exit(1)
        public_key, name = hk.key.public_key, name or f"home {settings.home.resolve()}"[:200]
    if not name:
        raise typer.BadParameter("name the key's owner (recorded).", param_hint="'--name'")
    with _registry(settings) as reg:
        typer.echo(json.dumps(reg.trust_key(str(public_key), name=name, actor=actor)))


@key_app.command("revoke")
def revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(metavar="KEY_ID", help="A trusted key's id (ed25519:…) or public key.")],
) -> None:
    """Stop trusting a key (admin): deploy refuses the bundles it signed from now on."""
    settings: Settings = ctx.obj
    actor = admin(settings).name
    with _registry(settings) as reg:
        typer.echo(json.dumps(reg.revoke_key(key, actor=actor)))
