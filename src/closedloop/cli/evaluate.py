"""``closedloop evaluate``: every bundle re-run through the runtime on a dataset, as a JSON report
(:mod:`closedloop.evaluation.report` documents the schema).

::

    closedloop evaluate --system MOD:ATTR --bundle PATH|VERSION [--bundle …] --dataset ID|PATH
                        [--out FILE.json] [--html FILE.html] [--all-rows] [--bootstrap N] [--seed N]
                        [--reward-model PATH|VERSION]

The first ``--bundle`` is the baseline, the last the candidate the gate judges. A bundle is a
directory, or a version under ``<home>/bundles``. The report is written to ``--out`` (default
``<home>/reports/<dataset id>-<timestamp>.json``), and as one self-contained HTML page to
``--html`` (default: beside the JSON, same stem, ``.html``; :mod:`closedloop.evaluation.html`).
One JSON line is printed: ``{"path", "html", "gate": "pass"|"fail"|null, "gate_reasons",
"bundles": [{"version", "auc", "cost_per_1000"}]}``.

A ranking system (a :class:`~closedloop.experience.experiences.Ranking` experience) is evaluated on a
per-slot reward dataset (:mod:`closedloop.evaluation.ranking_report`); its line holds ``"kind":
"ranking"``, the ``decisions`` and ``rows`` evaluated, the ``excluded`` counts, the logging policy's
``logged_reward_per_decision`` and each bundle's figures (NDCG@k, MRR, hit rates, AUC per decision
and over the rows pooled, log loss), each ``{"value", "ci"}``, each comparison's differences, and
``policy_value``: the logging policy's value per slot and each bundle's off-policy estimates and each
later bundle's difference from the first, each ``{"value", "ci", "ess", "support"}`` (``support``:
"ok" or "FAILED (share)"), or null when the dataset has no propensities; the gate judges the candidate
by it. ``--reward-model`` (a bundle whose score is the expected reward) adds DM, DR, SNDR and
Switch-DR, and the gate then reads DR.

A choice system (a :class:`~closedloop.experience.experiences.BestAction` experience) is evaluated on a
logged reward dataset (``closedloop dataset import FILE --action COL --reward COL --propensity COL``;
:mod:`closedloop.evaluation.choice_report`); its line holds ``"kind": "choice"``, the ``decisions``
evaluated, the ``excluded`` counts, ``logged_reward_per_decision`` ``{"value", "ci"}``, each bundle's
``greedy_agreement`` with the logged action and ``policy_value`` as a ranking's (per decision);
``--reward-model`` (a bundle whose per-action scores are expected rewards) and the gate as a ranking's.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from closedloop.cli.options import (
    DatasetOption,
    SystemOption,
    admin,
    resolve_bundle,
    resolve_dataset,
    system_from,
)
from closedloop.settings import Settings

__all__ = ["evaluate"]


def evaluate(
    ctx: typer.Context,
    system: SystemOption,
    bundle: Annotated[
        list[str], typer.Option("--bundle", metavar="PATH|VERSION", help="A bundle (repeatable; the first is the baseline).")
    ],
    dataset: DatasetOption,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE.json", help="Where to write the report (default: <home>/reports/…)."),
    ] = None,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", metavar="FILE.html", help="Where to write the HTML page (default: beside the JSON)."),
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all-rows", help="Evaluate every labeled row, not only the split's test side.")
    ] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", metavar="N", help="Bootstrap resamples.")] = 100,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the bootstrap and golden sample.")] = 0,
    slice_bins: Annotated[int, typer.Option(
        "--slice-bins", metavar="N",
        help="Quantile bins of a numeric slice field (0: one slice per distinct value).")] = 5,
    reward_model: Annotated[
        str | None, typer.Option("--reward-model", metavar="PATH|VERSION",
                                 help="A ranking or choice system: a bundle predicting the reward (adds DM and the doubly robust "
                                      "estimators).")
    ] = None,
    register: Annotated[
        bool, typer.Option("--register", help="Attach the report to its bundles in the registry (needs an admin token).")
    ] = False,
) -> None:
    """Evaluate bundles on a dataset through the runtime; write the JSON report with a gate verdict
    and its HTML page."""
    from closedloop.errors import ClosedLoopError
    from closedloop.evaluation.html import write_html
    from closedloop.evaluation.report import evaluate as evaluate_api
    from closedloop.evaluation.report import write_report
    from closedloop.runtime.bundle import Bundle

    settings: Settings = ctx.obj
    if out is not None and html_out is not None and out.resolve() == html_out.resolve():
        raise typer.BadParameter(f"The --html file must differ from the --out file. Got {str(out)!r} for both.")
    actor = None
    if register:  # check the credential before the work, not after
        actor = admin(settings).name
    sys_obj = system_from(system)
    path = resolve_dataset(settings, dataset)
    paths = [resolve_bundle(settings, b) for b in bundle]
    try:
        bundles = [Bundle.load(p, sys_obj) for p in paths]
        rm = None if reward_model is None else Bundle.load(resolve_bundle(settings, reward_model), sys_obj)
        report = evaluate_api(sys_obj, bundles, path, split="all" if all_rows else None,
                              bootstrap=bootstrap, seed=seed, slice_bins=slice_bins or None, reward_model=rm)
    except ClosedLoopError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if out is None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = settings.reports / f"{report['metadata']['dataset_id']}-{stamp}.json"
    write_report(report, out)
    if html_out is None:
        html_out = out.with_suffix(".html") if out.suffix != ".html" else out.with_name(out.name + ".html")
    html = write_html(report, html_out)
    registered = None
    if actor is not None:
        from closedloop.registry import Registry

        with Registry.from_settings(settings).open() as reg:
            for b in bundles:
                reg.add_bundle(b, actor=actor)
            registered = reg.add_report(report, actor=actor)["id"]
    gate = report["gate"]
    typer.echo(json.dumps({
        "path": str(out), "html": str(html),
        **({"registered_report": registered} if register else {}),
        "gate": None if gate is None else ("pass" if gate["passed"] else "fail"),
        "gate_reasons": [] if gate is None else gate["reasons"],
        **_figures(report),
    }))


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """The printed line's figures by the report's kind (thresholds: each bundle's AUC and cost per 1,000)."""
    if report.get("kind") == "ranking":
        return _ranking_figures(report)
    if report.get("kind") == "choice":
        return _choice_figures(report)
    return {"bundles": [{"version": b["version"], "auc": b["quality"]["auc"], "cost_per_1000": b["mistakes"]["cost_per_1000"]}
                        for b in report["bundles"]]}


def _ranking_figures(report: dict[str, Any]) -> dict[str, Any]:
    """What the printed line holds of a ranking report: the counts, the logging policy's reward per
    decision, each bundle's figures and each comparison's differences (value and 95% interval)."""
    ds = report["dataset"]
    return {
        "kind": "ranking",
        "decisions": ds["decisions"], "rows": ds["rows"], "excluded": ds["excluded"],
        "logged_reward_per_decision": report["logged"]["reward_per_decision"],
        "bundles": [{"version": b["version"], **{k: {"value": f["value"], "ci": f["ci"]} for k, f in b["metrics"].items()}}
                    for b in report["bundles"]],
        "comparison": [{"baseline": c["baseline"], "candidate": c["candidate"],
                        **{k: {"value": f["value"], "ci": f["ci"]} for k, f in c["differences"].items()}}
                       for c in report["comparison"] or []],
        "policy_value": _policy_value_lines(report.get("policy_value")),
    }


def _choice_figures(report: dict[str, Any]) -> dict[str, Any]:
    """What the printed line holds of a choice report: the counts, the logging policy's reward per
    decision, each bundle's greedy agreement with the logger and the policy value."""
    ds = report["dataset"]
    return {
        "kind": "choice", "decisions": ds["decisions"], "excluded": ds["excluded"],
        "logged_reward_per_decision": {"value": report["logged"]["value"], "ci": report["logged"]["ci"]},
        "bundles": [{"version": b["version"], "greedy_agreement": b["greedy_agreement"]} for b in report["bundles"]],
        "policy_value": _policy_value_lines(report.get("policy_value")),
    }


def _support(s: dict[str, Any]) -> str:
    return "ok" if s["passed"] else f"FAILED ({s['share']:.2%} of the target's mass unsupported)"


def _policy_value_lines(pv: dict[str, Any] | None) -> dict[str, Any] | None:
    """The policy value's figures for the printed line: the logging policy's value, each bundle's
    estimates and each difference (value, 95% interval, ESS, support)."""
    if pv is None or not pv.get("bundles"):
        return None if pv is None else {"n_rows": 0, "excluded": pv["excluded"]}

    def est(e: dict[str, Any]) -> dict[str, Any]:
        return {"value": e["value"], "ci": [e["low"], e["high"]], "ess": e["ess"], "support": _support(e["support"])}

    return {
        "n_rows": pv["n_rows"], "excluded": pv["excluded"], "reward_model": pv["reward_model"],
        "logged": {"value": pv["logged"]["value"], "ci": pv["logged"]["ci"]},
        "bundles": [{"version": b["version"], **{k: est(e) for k, e in b["estimates"].items()}} for b in pv["bundles"]],
        "comparison": [{"baseline": c["baseline"], "candidate": c["candidate"],
                        **{k: {"value": d["value"], "ci": [d["low"], d["high"]], "ess": d["candidate_ess"],
                               "support": _support(d["candidate_support"])} for k, d in c["differences"].items()}}
                       for c in pv["comparison"] or []],
    }
