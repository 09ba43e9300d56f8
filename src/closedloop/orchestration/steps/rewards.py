"""The training branch of a system that learns from rewards (a :class:`~closedloop.experience.
experiences.Ranking` with ``System(rewards=…)``): ``dataset`` → ``train`` → ``evaluate``, whose
results have the same types as the labeled loop's, so ``gate``, ``register``, ``sanity``,
``shadow`` and ``advance`` run unchanged (:func:`~closedloop.orchestration.steps.reward_pipeline`).

- ``dataset`` (:class:`RewardDataset`): the reward dataset of ``LoopPlan.train_window``
  (:func:`~closedloop.datasets.slots.build_reward_dataset`: one row per (decision, slot shown) with
  its reward and logged propensity, and each decision's whole candidate set). Fewer logged
  decisions than ``LoopPlan.min_labeled`` stops the cycle (``not_enough_rewards``). The decisions of
  the units the ``monitor`` step holds quarantined as a click farm (the record's ``unit_quarantine``:
  :class:`~closedloop.orchestration.click_farm.ClickFarmPolicy`) are left out, counted in the
  manifest's ``counts.excluded``. What each telemetry decision file decodes to is kept from cycle to
  cycle in ``<home>/cache/reward_rows/<system>`` (:mod:`closedloop.datasets.slot_cache`: the same
  dataset, each file decoded once; the quarantine is applied after the cache); the lake files' light
  columns the build read are kept by the cycle's reader for the next cycle of the process (a file is
  read again only when it changed: ``build_reward_dataset(tables=…)``).
- ``train`` (:class:`RewardTrain`): the candidate, by ``LoopPlan.objective``: ``"reward"`` — a
  reward model (:func:`closedloop.training.train` on the reward dataset: a click model over the
  request × candidate features, the direct method); the candidate ranks by it; ``"dr"`` — a policy
  fitted on doubly robust pseudo-rewards (:func:`closedloop.training.policy.train_policy`). With
  ``LoopPlan(apprentice=…)``, an imitation of the logger until one has graduated (:mod:`.apprentice`).
- ``evaluate`` (:class:`PolicyEvaluate`): the ranking report of production, the heuristic and the
  candidate on the dataset's held-out decisions, whose policy value — each decision's whole
  logged candidate set ranked by each bundle, valued off-policy from the logged propensities — the
  plan's gate judges (:meth:`~closedloop.evaluation.gate.Gate.check_policy_value`: the lower bound
  of (candidate − production) by SNIPS — by DR with a reward model: ``LoopPlan.reward_model``
  ``"candidate"`` (the candidate's own scores) or ``"fitted"`` (a click model fitted on the train side
  of the cycle's dataset: the candidate's own fit, not fitted again, when the plan trains that same
  default logistic model) — must not fall below −``policy_tolerance``, and the support check must pass).

Each step finds its file in the cycle's directory when it finished before (a resumed cycle). The
train and evaluate steps share the dataset's decoded rows (once per cycle; the candidates the cycle
before decoded are taken from it: :func:`closedloop.training.rewards.load_reward_rows`). What the
report reads of the dataset whatever the bundles — its held-out decisions, their candidate sets and
the logger's marginals (:func:`~closedloop.evaluation.ranking_report.logged_side`) — is started by
the dataset step on a thread of its own (``DatasetReader.ahead``) and taken by the evaluate step: it
is read while the candidate trains (the same numbers: its draws are seeded by the cycle).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from closedloop.datasets.dataset import DatasetManifest
from closedloop.datasets.slots import build_reward_dataset
from closedloop.errors import ClosedLoopError
from closedloop.orchestration.steps import apprentice
from closedloop.orchestration.steps.base import Step, StepContext, Stop
from closedloop.orchestration.steps.dataset import DatasetResult
from closedloop.orchestration.steps.evaluate import EvaluateResult, baselines, candidate_report
from closedloop.orchestration.steps.train import TrainResult
from closedloop.runtime.bundle import Bundle

__all__ = ["PolicyEvaluate", "RewardDataset", "RewardTrain", "reward_cache_dir"]


def reward_cache_dir(home: Path, system: Any) -> Path:
    """Where the reward dataset's per-file cache of ``system`` lives in the project ``home``
    (:mod:`closedloop.datasets.slot_cache`; safe to delete)."""
    return Path(home) / "cache" / "reward_rows" / system.name


class RewardDataset(Step[DatasetResult]):
    """Build (or find) the reward dataset."""

    name = "dataset"
    Result = DatasetResult

    def run(self, ctx: StepContext) -> DatasetResult:
        out = ctx.dir / "dataset"
        now = ctx.now_ns
        if (out / "manifest.json").is_file():
            m = DatasetManifest.read(out)
        else:
            shutil.rmtree(out, ignore_errors=True)
            dec, outc = ctx.files()
            tables = ctx.reader.carried("reward_lake_tables") or {}  # the lake files read by the cycle before
            try:
                m = build_reward_dataset(ctx.system, decision_files=dec, outcome_files=outc,
                                         since_ns=now - int(ctx.plan.train_window.total_seconds() * 1e9), until_ns=now,
                                         cutoff_ns=now, out=out, exclude_units=sorted(ctx.record.get("unit_quarantine") or {}),
                                         cache=reward_cache_dir(ctx.home, ctx.system), tables=tables)
            except ClosedLoopError as exc:
                raise Stop("not_enough_rewards", f"no reward dataset: {exc}") from None
            finally:
                ctx.reader.carry("reward_lake_tables", tables)
        decisions = int(m.counts["decisions"])
        if decisions < ctx.plan.min_labeled:
            raise Stop("not_enough_rewards", f"the reward dataset has {decisions} decisions whose reward window closed; "
                       f"the plan needs {ctx.plan.min_labeled}")
        ctx.reader.ahead(("logged_side", str(out)), lambda: _logged_side(ctx, str(out)))  # read while the candidate trains
        return DatasetResult(id=m.id, path=str(out), counts=m.counts)


class RewardTrain(Step[TrainResult]):
    """Train (or find) the candidate by the plan's objective."""

    name = "train"
    Result = TrainResult

    def run(self, ctx: StepContext) -> TrainResult:
        path = ctx.dir / "candidate"
        b = Bundle.load(path, ctx.system) if (path / "manifest.json").is_file() else _train(ctx, path)
        ctx.record["last_trained_ns"] = ctx.now_ns
        ctx.record["pending"] = []  # the alerts that asked for it are answered
        return TrainResult(version=b.version, path=str(path), tightened=False, thresholds=None,
                           heldout=(b.metrics or {}).get("heldout"))


def _train(ctx: StepContext, path: Path) -> Bundle:
    """The candidate fitted on the cycle's reward dataset, saved signed (an apprentice's
    imitation of the logger while it has not graduated: :mod:`.apprentice`)."""
    from closedloop.training.train import train

    prod = ctx.production()
    plan = ctx.plan
    ds = ctx.result("dataset", DatasetResult).path
    if apprentice.imitating(ctx):
        return apprentice.train_apprentice_candidate(ctx, path, ds)
    try:
        run = train(ctx.system, ds, model=plan.model, params=dict(plan.params), parent=None if prod is None else prod.version,
                    weights=plan.train_weights, objective=plan.objective,
                    loaded=_reward_rows(ctx, ds) if plan.objective == "reward" else None)
    except ClosedLoopError as exc:
        raise Stop("training_failed", str(exc)) from None
    shutil.rmtree(path, ignore_errors=True)
    return Bundle.load(run.bundle.save(path, key=ctx.signer()), ctx.system)


def _candidate_fit(ctx: StepContext, cand: Bundle) -> Bundle | None:
    """The click model without fitting it again when the candidate is that fit: the plan trains a
    logistic reward model with default parameters, unweighted, on this cycle's dataset — what
    ``train(system, dataset, model="logistic")`` fits (the same rows, split and solver: the same
    model) — as a bundle of its own (no parent); None otherwise."""
    plan = ctx.plan
    lineage = dict((cand.metrics or {}).get("lineage") or {})
    if (plan.model != "logistic" or dict(plan.params) or plan.train_weights or plan.objective != "reward"
            or apprentice.imitating(ctx) or lineage.get("model") != "logistic" or lineage.get("params") != {}
            or lineage.get("fitted_with_weights") or lineage.get("dataset_kind") != "reward"
            or lineage.get("dataset_id") != ctx.result("dataset", DatasetResult).id):
        return None
    return Bundle.build(ctx.system, cand.intelligence, metrics={**(cand.metrics or {}), "lineage": {**lineage, "parent": None}})


def _reward_rows(ctx: StepContext, ds: str) -> Any:
    """The reward dataset's rows as the reward model's fit reads them, decoded once per cycle: the
    candidate's fit and the click model of the DR estimate share them; the candidates the cycle
    before decoded (its window shares most of this one's days) are not decoded again."""
    from closedloop.training.rewards import load_reward_rows

    def load() -> Any:
        rows, memo = load_reward_rows(ctx.system, ds, previous=ctx.reader.carried("reward_candidates"))
        ctx.reader.carry("reward_candidates", memo)
        return rows

    return ctx.reader.shared(("reward_rows", ds), load)


class PolicyEvaluate(Step[EvaluateResult]):
    """The ranking report (or the one written before) with the plan's gate on the policy value."""

    name = "evaluate"
    Result = EvaluateResult

    def run(self, ctx: StepContext) -> EvaluateResult:
        path, report = candidate_report(ctx, _report)
        return EvaluateResult(path=str(path), gate=report["gate"], bundles=_brief(report), heuristic_note=None)


def _report(ctx: StepContext, cand: Bundle) -> dict[str, Any]:
    """Production first (the gate's baseline), the heuristic when it is neither, the candidate last."""
    from closedloop.evaluation.report import evaluate

    bundles = [*baselines(ctx, cand), cand]
    if len(bundles) < 2:
        raise Stop("no_baseline", "there is neither a production bundle nor a heuristic to compare the candidate with")
    reward_model = _reward_model(ctx, cand)
    ds = ctx.result("dataset", DatasetResult).path
    try:
        side = ctx.reader.shared(("logged_side", ds), lambda: _logged_side(ctx, ds))
        report: dict[str, Any] = evaluate(ctx.system, bundles, ds, gate=ctx.plan.gate, bootstrap=ctx.plan.evaluate_bootstrap,
                                          seed=ctx.id, reward_model=reward_model, logged=side)
    except ClosedLoopError as exc:
        raise Stop("evaluation_failed", str(exc)) from None
    if apprentice.imitating(ctx):  # an apprentice is judged by how well it imitates the logger
        return apprentice.judge(ctx, cand, report, ctx.result("dataset", DatasetResult).path)
    return report


def _logged_side(ctx: StepContext, ds: str) -> Any:
    """What the report reads of the cycle's dataset whatever the bundles (its held-out decisions,
    their candidate sets, the logger's marginals: ``evaluation.ranking_report.logged_side``) — the
    dataset step starts it, the evaluate step takes it."""
    from closedloop.evaluation.ranking_report import logged_side

    return logged_side(ctx.system, ds, seed=ctx.id)


def _reward_model(ctx: StepContext, cand: Bundle) -> Bundle | None:
    """The reward model of DM / DR (``LoopPlan.reward_model``): None; the candidate itself; or one
    fitted on the train side of the cycle's dataset (a logistic click model, ``train``'s default)."""
    how = ctx.plan.reward_model
    if how is None:
        return None
    if how == "candidate":
        return cand
    same = _candidate_fit(ctx, cand)
    if same is not None:
        return same
    from closedloop.training.train import train

    ds = ctx.result("dataset", DatasetResult).path
    try:
        run = train(ctx.system, ds, model="logistic", loaded=_reward_rows(ctx, ds))
    except ClosedLoopError as exc:
        raise Stop("evaluation_failed", f"the reward model could not be fitted: {exc}") from None
    return run.bundle


def _brief(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each bundle's version, kind and policy value by the gate's estimator (with its interval)."""
    value = report.get("policy_value") or {}
    name = (report.get("gate") or {}).get("estimator") or "snips"
    out = []
    for part, est in zip(report["bundles"], value.get("bundles") or [{}] * len(report["bundles"]), strict=True):
        e = (est.get("estimates") or {}).get(name) or {}
        out.append({"version": part["version"], "kind": part.get("kind"), "estimator": name,
                    "policy_value": e.get("value"), "low": e.get("low"), "high": e.get("high")})
    return out
