"""``closedloop ope``: off-policy estimates of a target policy's value on a per-slot reward dataset.

::

    closedloop ope --system MOD:ATTR --dataset ID|PATH (--bundle PATH|VERSION | --action-dist FILE.npy)
                   [--candidates FILE] [--reward-model PATH|VERSION|FILE.npy] [--bootstrap N] [--seed N]
                   [--alpha A] [--json]

The target is a candidate bundle — its exact action distribution on every logged row
(:func:`~closedloop.evaluation.ope_policy.target_action_dist`: the runtime's scores, the system's
ranking policy) — or an ``action_dist`` array saved with ``numpy.save`` (shape (rows, actions,
len_list) in the columns :func:`~closedloop.evaluation.ope_policy.action_index` lists; loaded without
pickle, checked: shape, finite, in [0, 1], summing to 1 over actions). ``--candidates`` gives every
decision the same candidate catalogue (CSV/Parquet, one row per candidate id); without it a decision's
candidates are those it logged. ``--reward-model`` (a bundle whose score is the expected reward, or
a ``.npy`` of predictions of the same shape) lets the direct method and the doubly robust estimators
run; without it only IPS and SNIPS run, and the output says so.

Each estimator's value, interval (and how it was made), effective sample size and support check come
from :func:`closedloop.evaluation.ope.estimate` (imported when the command runs). ``--json`` prints one
JSON object: ``system``, ``dataset``, ``target``, ``rows``, ``actions``, ``len_list``,
``logged_reward_per_row``, ``reward_model``, ``note`` and ``estimates`` (each estimate's ``to_dict()``).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from closedloop.cli.options import DatasetOption, JsonOption, SystemOption, resolve_bundle, resolve_dataset, system_from
from closedloop.settings import Settings

__all__ = ["ope"]

#: The estimators that run without a reward model.
NO_MODEL = ["ips", "snips"]
NO_MODEL_NOTE = ("no reward model (--reward-model): the direct method and the doubly robust estimators (dm, dr, sndr, "
                 "switch_dr) need one; only ips and snips ran")


def _load_npy(path: Path, option: str) -> Any:
    """A ``.npy`` array, never unpickled."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{str(path)!r} must be a .npy array of numbers saved by numpy.save (not pickled). "
                                 f"Got {type(exc).__name__}: {exc} instead.", param_hint=f"'{option}'") from None


def _target(settings: Settings, sys_obj: Any, path: Path, bundle: str | None, action_dist: Path | None,
            candidates: Path | None) -> tuple[Any, list[str], str]:
    """(action_dist, its columns, what the target is)."""
    from closedloop.evaluation.ope_policy import action_index, check_action_dist, logged_feedback, target_action_dist
    from closedloop.runtime.bundle import Bundle

    if bundle is not None:
        b = Bundle.load(resolve_bundle(settings, bundle), sys_obj)
        res = target_action_dist(sys_obj, b, path, candidates=candidates)
        return res.action_dist, res.actions, f"bundle {b.version}"
    if action_dist is None:
        raise typer.BadParameter("Give exactly one target: --bundle or --action-dist.", param_hint="'--bundle'")
    actions = action_index(sys_obj, path, candidates=candidates)
    n = logged_feedback(sys_obj, path, actions).reward.size
    arr = check_action_dist(_load_npy(action_dist, "--action-dist"), (n, len(actions), int(sys_obj.experience.k)))
    return arr, actions, f"file {action_dist.name}"


def _reward_model(settings: Settings, sys_obj: Any, path: Path, ref: str | None, shape: tuple[int, ...], actions: list[str],
                  candidates: Path | None) -> Any:
    from closedloop.evaluation.ope_policy import check_action_dist, reward_predictions
    from closedloop.runtime.bundle import Bundle

    if ref is None:
        return None
    if ref.endswith(".npy"):
        arr = _load_npy(Path(ref), "--reward-model")
    else:
        b = Bundle.load(resolve_bundle(settings, ref), sys_obj)
        arr = reward_predictions(sys_obj, b, path, actions=actions, candidates=candidates)
    return check_action_dist(arr, shape, name="estimated_rewards_by_reg_model", sums=False)  # type: ignore[arg-type]


def _finite(v: Any) -> Any:
    """``v`` with every non-finite float as None (JSON has no NaN)."""
    import math

    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.6g}"


def _text(out: dict[str, Any]) -> str:
    lines = [f"{out['target']} on {out['dataset']}: {out['rows']} rows, {out['actions']} actions, len_list {out['len_list']}; "
             f"logged reward per row {out['logged_reward_per_row']:.6g}"]
    for e in out["estimates"]:
        sup = e.get("support") or {}
        share = _num(sup.get("share"))
        flag = (f"  support ok (unsupported share {share})" if sup.get("passed", True)
                else f"  SUPPORT FAILED (unsupported share {share}): {e.get('warning') or ''}")
        lines.append(f"  {e['name']:<10} {_num(e['value'])}  [{_num(e['low'])}, {_num(e['high'])}] ({e['interval']})  "
                     f"ESS {_num(e['ess'])} of {e['n']}{flag}")
    if out["note"]:
        lines.append(f"note: {out['note']}")
    return "\n".join(lines)


def ope(
    ctx: typer.Context,
    system: SystemOption,
    dataset: DatasetOption,
    bundle: Annotated[str | None, typer.Option("--bundle", metavar="PATH|VERSION", help="The target: a candidate bundle.")] = None,
    action_dist: Annotated[Path | None, typer.Option(
        "--action-dist", metavar="FILE.npy", help="The target: its action distribution (rows × actions × len_list).")] = None,
    candidates: Annotated[Path | None, typer.Option(
        "--candidates", metavar="FILE", help="Every decision's candidates (CSV/Parquet, one row per candidate id).")] = None,
    reward_model: Annotated[str | None, typer.Option(
        "--reward-model", metavar="PATH|VERSION|FILE.npy", help="A reward model for dm/dr/sndr/switch_dr.")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", metavar="N", help="Bootstrap resamples.", min=0)] = 1000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the bootstrap.", min=0)] = 0,
    alpha: Annotated[float, typer.Option("--alpha", metavar="A", help="1 − the intervals' coverage.", min=0.0, max=1.0)] = 0.05,
    json_out: JsonOption = False,
) -> None:
    """Estimate a target policy's value on logged decisions (IPS, SNIPS; DM and DR with a reward model)."""
    from closedloop.errors import ClosedLoopError

    if (bundle is None) == (action_dist is None):
        raise typer.BadParameter("Give exactly one target: --bundle or --action-dist.", param_hint="'--bundle'")
    try:  # imported when the command runs (the estimators' package)
        ope_api = importlib.import_module("closedloop.evaluation.ope")
    except ImportError as exc:
        raise typer.BadParameter(f"closedloop.evaluation.ope is not available: {exc}.", param_hint="'ope'") from None
    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    path = resolve_dataset(settings, dataset)
    try:
        from closedloop.evaluation.ope_policy import logged_feedback

        dist, actions, target = _target(settings, sys_obj, path, bundle, action_dist, candidates)
        fb = logged_feedback(sys_obj, path, actions)
        pred = _reward_model(settings, sys_obj, path, reward_model, dist.shape, actions, candidates)
        estimates = ope_api.estimate(fb.reward, fb.action, fb.pscore, dist, position=fb.position,
                                     estimated_rewards_by_reg_model=pred, units=fb.units,
                                     estimators=NO_MODEL if pred is None else None, alpha=alpha, n_bootstrap=bootstrap, seed=seed)
    except ClosedLoopError as exc:
        raise typer.BadParameter(str(exc)) from exc
    out = {
        "system": sys_obj.name, "dataset": path.name, "target": target, "rows": int(fb.reward.size), "actions": len(actions),
        "len_list": int(dist.shape[2]), "logged_reward_per_row": float(fb.reward.mean()),
        "reward_model": reward_model, "note": NO_MODEL_NOTE if pred is None else None,
        "estimates": [_finite(e.to_dict()) for e in estimates.values()],
    }
    typer.echo(json.dumps(out, allow_nan=False) if json_out else _text(out))
