"""``closedloop guardrails show|set``: production's hot-fix allow and block lists, and a
guardrail hot fix deployed through the registry — the same function the console's Hot-fix page
calls (:func:`closedloop.console.data.hotfix.apply_hotfix`): every entry checked, a new bundle
built from production's with the edited lists, signed with the home's key, the deploy's sanity
checks, deployed as production and recorded in the history.

``set`` needs a credential with the ``admin`` role (its name is recorded as the actor).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from closedloop.cli.options import JsonOption, ReasonOption, SystemOption, admin, system_from
from closedloop.settings import Settings

__all__ = ["guardrails_app"]

guardrails_app = typer.Typer(help="Production's allow / block lists (hot fixes): show them, or set them and deploy.",
                             no_args_is_help=True)

_LIST_HELP = ("The whole {} list after the fix: repeat the option per entry (e.g. --{} evil.example), or give "
              "--{} '' to empty it; without the option the list stays as it is.")


def _registry(settings: Settings) -> Any:
    from closedloop.registry import Registry

    return Registry.from_settings(settings).open()


def _entries(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for v in values if v != ""]


@guardrails_app.command("show")
def show(ctx: typer.Context, system: SystemOption, as_json: JsonOption = False) -> None:
    """Production's hot-fix allow and block lists (and every list its bundle carries)."""
    from closedloop.console.data.hotfix import guardrail_lists

    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    with _registry(settings) as reg:
        out = guardrail_lists(reg, sys_obj)
    if as_json:
        typer.echo(json.dumps(out, indent=1))
        return
    typer.echo(f"{out['system']}  production {out['production']}  revision {out['revision']}")
    typer.echo(f"  field  {out['field'] or '(no hot-fix list yet)'}")
    typer.echo(f"  allow  {', '.join(out['allow']) or '(empty)'}")
    typer.echo(f"  block  {', '.join(out['block']) or '(empty)'}")


@guardrails_app.command("set")
def set_lists(
    ctx: typer.Context,
    system: SystemOption,
    reason: ReasonOption,
    allow: Annotated[list[str] | None, typer.Option("--allow", metavar="VALUE", help=_LIST_HELP.format("allow", "allow", "allow"))] = None,
    block: Annotated[list[str] | None, typer.Option("--block", metavar="VALUE", help=_LIST_HELP.format("block", "block", "block"))] = None,
    field: Annotated[str | None, typer.Option("--field", metavar="NAME",
                                              help="The text context field the lists match (default: production's).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Replace the hot-fix allow and/or block list and deploy the result as production (checked, recorded)."""
    from closedloop.console.data.hotfix import apply_hotfix

    settings: Settings = ctx.obj
    actor = admin(settings).name
    if allow is None and block is None:
        raise typer.BadParameter("give --allow and/or --block (the whole list after the fix).", param_hint="'--allow'")
    sys_obj = system_from(system)
    with _registry(settings) as reg:
        out = apply_hotfix(reg, settings.home, sys_obj, allow=_entries(allow), block=_entries(block), field=field,
                           actor=actor, reason=reason)
    if as_json:
        typer.echo(json.dumps(out, indent=1, default=str))
        return
    typer.echo(out["message"])
    if out["changed"]:
        typer.echo(f"production {out['production_before']} → {out['version']} (change #{out['change']['event_id']})")
        typer.echo(f"  allow  {', '.join(out['after']['allow']) or '(empty)'}")
        typer.echo(f"  block  {', '.join(out['after']['block']) or '(empty)'}")
        for c in out["checks"]:
            mark = "ok    " if c["passed"] else "HOTFIX"
            typer.echo(f"  {mark} {c['name']:<9} {c['detail'] if c['passed'] else 'judged by the replay below'}")
        typer.echo(f"  replay    {out['replay']['detail']}")
