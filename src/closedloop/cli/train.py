"""``closedloop train``: a candidate bundle from a dataset, with lineage (see
:mod:`closedloop.training.train` for the rules).

::

    closedloop train --system MOD:ATTR --dataset ID|PATH --model logistic|affinity|lightgbm|heuristic|sklearn:MODULE:CLASS
                     [--param k=v …] [--calibrate isotonic|platt] [--thresholds system|cost]
                     [--weights] [--objective reward|imitate|dr] [--parent VERSION] [--out DIR]

Prints one JSON object: ``{"version", "path", "metrics"}``. The bundle is saved under
``<home>/bundles/<version>`` unless ``--out`` is given. ``--param`` values are parsed as ints,
floats, true/false, else strings (a heuristic's ``rules`` as JSON: ``--param 'rules=[[...]]'``).
``--thresholds cost`` builds the bundle with the thresholds that minimize the system's mistake
costs on rows the model was not fitted on (the calibration rows with ``--calibrate``, else the
fitted rows) — the loop's own choice (:mod:`closedloop.training.thresholds`); the default,
``system``, keeps the system's thresholds. ``--weights`` fits with the dataset's inverse-propensity
row weights (``train(..., weights=True)``).

A per-slot reward dataset (``closedloop dataset build`` of a system with rewards, ``closedloop
dataset import --action …``) trains a ranking system's reward model: label = the 0/1 reward, one
row per (decision, slot shown) — :mod:`closedloop.training.rewards`. ``--objective imitate`` trains
an apprentice that ranks like the policy that logged it instead (:mod:`closedloop.training.apprentice`),
``--objective dr`` a policy fitted on doubly robust pseudo-rewards (:mod:`closedloop.training.policy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from closedloop.cli.options import DatasetOption, SystemOption, resolve_dataset, system_from
from closedloop.settings import Settings

__all__ = ["train"]


def _params(items: list[str]) -> dict[str, Any]:
    from closedloop.errors import SpecError
    from closedloop.training.train import parse_params

    try:
        out = parse_params(items)
    except SpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--param'") from None
    for k, v in out.items():  # JSON-looking values (lists, objects) are decoded
        if isinstance(v, str) and v[:1] in "[{":
            try:
                out[k] = json.loads(v)
            except ValueError:
                raise typer.BadParameter(f"{k}={v!r} is not valid JSON", param_hint="'--param'") from None
    return out


def _home_signer(settings: Settings) -> Any:
    """The home's signing key (created on first use and trusted in the home's registry):
    a bundle trained here is signed by it, so deploy accepts it (closedloop.runtime.signing)."""
    from closedloop.registry import Registry

    with Registry.from_settings(settings) as reg:
        return reg.signing_key(settings.home)


def train(
    ctx: typer.Context,
    system: SystemOption,
    dataset: DatasetOption,
    model: Annotated[
        str, typer.Option("--model", metavar="KIND", help="logistic, affinity (params: keys), lightgbm, heuristic or sklearn:MODULE:CLASS.")
    ] = "logistic",
    param: Annotated[
        list[str] | None, typer.Option("--param", metavar="K=V", help="A model parameter (repeatable).")
    ] = None,
    calibrate: Annotated[
        str | None, typer.Option("--calibrate", metavar="METHOD", help="isotonic or platt.")
    ] = None,
    thresholds: Annotated[
        str, typer.Option("--thresholds", metavar="RULE",
                          help="system (the system's thresholds) or cost (those that minimize its mistake costs).")
    ] = "system",
    weights: Annotated[
        bool, typer.Option("--weights", help="Fit with the rows' inverse-propensity weights (the dataset's 'weight').")
    ] = False,
    objective: Annotated[
        str | None, typer.Option("--objective", metavar="WHAT",
                                 help="For a reward dataset: reward (a reward model, the default), imitate (an apprentice) "
                                      "or dr (a policy on doubly robust pseudo-rewards).")
    ] = None,
    parent: Annotated[str | None, typer.Option("--parent", metavar="VERSION", help="The parent bundle.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Where to save it (default: <home>/bundles/<version>).")
    ] = None,
) -> None:
    """Train a candidate bundle on a dataset; its manifest records the lineage and metrics."""
    from rich.console import Console

    from closedloop.errors import ClosedLoopError
    from closedloop.training.train import train as train_api

    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    path = resolve_dataset(settings, dataset)
    params = _params(list(param or []))
    console = Console(stderr=True)
    try:
        with console.status(f"Training {model} on {path.name}…"):
            run = train_api(sys_obj, path, model=model, params=params, calibrate=calibrate, parent=parent,
                            thresholds=thresholds, weights=weights, objective=objective)
            target = out if out is not None else settings.bundles / run.bundle.version
            existing = _same_bundle(target, run.bundle)
            saved = existing or run.bundle.save(target, key=_home_signer(settings))
    except ClosedLoopError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(json.dumps({"version": run.bundle.version, "path": str(saved), "metrics": run.metrics,
                           **({"already_saved": True} if existing else {})}, default=str))


def _same_bundle(target: Path, bundle: Any) -> Path | None:
    """``target`` when it holds this very bundle already (the same content: the same model
    trained again on the same data), else None — and then saving refuses an existing target."""
    from closedloop.errors import BundleError
    from closedloop.runtime.bundle import Bundle

    if not (target / "manifest.json").is_file():
        return None
    try:
        return target if Bundle.load(target).content_digest == bundle.content_digest else None
    except BundleError:
        return None
