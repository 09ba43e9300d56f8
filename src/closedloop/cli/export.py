"""``closedloop bundle export --target js``: a bundle's signed client form, for the JavaScript runtime.

::

    closedloop bundle export BUNDLE --system MOD:ATTR --target js --out FILE

Writes the file ``clients/js`` loads (see :mod:`closedloop.runtime.export_js`), signed with the project
home's key (a ranking system's bundle too: its client form ranks); what cannot run in a client (a custom
feature, a scikit-learn model) is refused with the part named, and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from closedloop.cli.options import BundleArgument, SystemOption, system_from
from closedloop.settings import Settings

__all__ = ["bundle_export"]

_TARGETS = ("js",)


def bundle_export(
    ctx: typer.Context,
    path: BundleArgument,
    system: SystemOption,
    out: Annotated[Path, typer.Option("--out", help="The file to write (replaced atomically).")],
    target: Annotated[str, typer.Option("--target", help="The runtime to export for: js.")] = "js",
) -> None:
    """Export a bundle for clients: its signed client form (compact JSON) for the JavaScript runtime."""
    from closedloop.base.files import atomic_write, make_private_dirs
    from closedloop.errors import SpecError
    from closedloop.runtime.bundle import Bundle, bundle_path
    from closedloop.runtime.export_js import export_client_bundle
    from closedloop.runtime.signing import home_key

    if target not in _TARGETS:
        raise SpecError(f"The '--target' option of bundle export must be one of {list(_TARGETS)}. Got {target!r} instead.")
    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    loaded = Bundle.load(bundle_path(path, settings.bundles), sys_obj)
    hk = home_key(settings.home)
    data = export_client_bundle(sys_obj, loaded, hk.key if hk is not None else None)
    if not out.parent.exists():
        make_private_dirs(out.parent)
    atomic_write(out, data, 0o644)  # a client bundle is published: readable, signed
    typer.echo(json.dumps({"bundle": loaded.version, "target": target, "out": str(out), "bytes": len(data),
                           "key_id": hk.key.key_id if hk is not None else None}))
