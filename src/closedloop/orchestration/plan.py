"""The loop's declaration: what one cycle does, as data (a :class:`LoopPlan`).

A system declares *what* it is (``System``: context, features, actions, costs, label policy,
goals); a plan declares *how it learns over time*: which model to train on how much data, how
often, the gate a candidate must pass, how it rolls out, what to watch (drift, mistake spikes,
abusive sources) and what to do about alerts. The cycle (:mod:`.cycle`) executes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from closedloop.errors import SpecError
from closedloop.evaluation.report import Gate
from closedloop.experience.experiences import Ranking, Thresholds
from closedloop.intelligence import Intelligence
from closedloop.orchestration.abuse import AbusePolicy
from closedloop.orchestration.alerts import AlertSink
from closedloop.orchestration.click_farm import ClickFarmPolicy
from closedloop.orchestration.drift import DriftMonitor, MistakeSpikes
from closedloop.orchestration.labels import LabelCheck
from closedloop.orchestration.steps import Pipeline, default_pipeline, reward_pipeline
from closedloop.runtime.bundle import Bundle
from closedloop.system.spec import System

__all__ = ["OBJECTIVES", "Apprentice", "LoopPlan", "Rollout", "Tighten"]

#: What a system that learns from rewards trains (``LoopPlan.objective``): ``"reward"`` — a reward
#: model over the request × candidate features, ranked by (the direct method); ``"dr"`` — a policy
#: fitted on doubly robust pseudo-rewards over each decision's whole candidate set.
OBJECTIVES = ("reward", "dr")


@dataclass(frozen=True)
class Rollout:
    """How a candidate that passed the gate and the sanity checks reaches users, one stage per
    cycle: a **shadow** for at least ``shadow_for`` (scored beside production, never acted on),
    then a **flight** of ``flight_share`` of units named ``flight_name`` for at least
    ``flight_for``, watched by the registry's guard (``guard``: a
    ``closedloop.registry.GuardPolicy``; default: the registry's default policy), then
    **promotion** — or the guard stops the flight (the automatic rollback). ``shadow_for=None``
    skips the shadow stage."""

    shadow_for: timedelta | None = timedelta(days=1)
    flight_share: float = 0.2
    flight_for: timedelta = timedelta(days=1)
    flight_name: str = "candidate"
    guard: Any = None

    def __post_init__(self) -> None:
        if self.shadow_for is not None and (not isinstance(self.shadow_for, timedelta) or self.shadow_for < timedelta(0)):
            raise SpecError(f"The 'shadow_for' of Rollout must be a timedelta ≥ 0 or None. Got {self.shadow_for!r} instead.")
        if not isinstance(self.flight_for, timedelta) or self.flight_for < timedelta(0):
            raise SpecError(f"The 'flight_for' of Rollout must be a timedelta ≥ 0. Got {self.flight_for!r} instead.")
        s = self.flight_share
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0.0 < s < 1.0:
            raise SpecError(f"The 'flight_share' of Rollout must be a number in (0, 1). Got {s!r} instead.")
        from closedloop.runtime.deployment import _NAME

        if not isinstance(self.flight_name, str) or not _NAME.match(self.flight_name):
            raise SpecError(f"The 'flight_name' of Rollout must be a flight name. Got {self.flight_name!r} instead.")

    def describe(self) -> dict[str, Any]:
        return {
            "shadow_seconds": None if self.shadow_for is None else self.shadow_for.total_seconds(),
            "flight_share": self.flight_share, "flight_seconds": self.flight_for.total_seconds(),
            "flight_name": self.flight_name,
        }


@dataclass(frozen=True)
class Tighten:
    """What "tighten thresholds" does: every threshold of the candidate moves ``step`` lower
    (more decisions get the more forceful actions), never below ``floor``, keeping them strictly
    decreasing. The candidate still has to pass the gate."""

    step: float = 0.05
    floor: float = 0.05

    def __post_init__(self) -> None:
        for name in ("step", "floor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and 0.0 < v < 1.0):
                raise SpecError(f"The '{name}' of Tighten must be a number in (0, 1). Got {v!r} instead.")

    def apply(self, levels: Sequence[tuple[str, float]]) -> dict[str, float]:
        """Tightened thresholds for ``levels`` (most forceful first)."""
        out: dict[str, float] = {}
        lowest = self.floor
        for i, (action, t) in reversed(list(enumerate(levels))):
            v = max(t - self.step, lowest + (1e-6 if i < len(levels) - 1 else 0.0))
            out[action] = v
            lowest = v
        return out


@dataclass(frozen=True)
class Apprentice:
    """Apprentice mode for a system that learns from rewards
    (:mod:`closedloop.orchestration.steps.apprentice`): the first candidates imitate the policy that
    logged the data (``model``: "logistic" or "lightgbm"), each must agree with the logged first
    choice on at least ``agreement`` of the held-out decisions, then serves as a shadow until it
    agrees with production on that share of at least ``min_decisions`` decisions, and is promoted;
    later candidates learn from rewards and the off-policy gate decides."""

    agreement: float = 0.9
    min_decisions: int = 500
    model: str = "logistic"

    def __post_init__(self) -> None:
        a = self.agreement
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0.0 < a <= 1.0:
            raise SpecError(f"The 'agreement' of Apprentice must be a number in (0, 1]. Got {a!r} instead.")
        m = self.min_decisions
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise SpecError(f"The 'min_decisions' of Apprentice must be an integer ≥ 1. Got {m!r} instead.")
        if self.model not in ("logistic", "lightgbm"):
            raise SpecError(f"The 'model' of Apprentice must be 'logistic' or 'lightgbm'. Got {self.model!r} instead.")

    def describe(self) -> dict[str, Any]:
        return {"agreement": self.agreement, "min_decisions": self.min_decisions, "model": self.model}


def _td(name: str, v: Any, positive: bool = True) -> timedelta:
    if not isinstance(v, timedelta) or (v <= timedelta(0) if positive else v < timedelta(0)):
        raise SpecError(f"The '{name}' parameter of LoopPlan must be a {'positive' if positive else 'non-negative'} "
                        f"timedelta. Got {v!r} instead.")
    return v


@dataclass(frozen=True)
class LoopPlan:
    """Everything one cycle of the loop needs to know besides the system.

    Parameters
    ----------
    system:
        The system.
    heuristic:
        The baseline every candidate is also compared with (a bundle or an intelligence), and the
        first production when nothing is deployed yet (``bootstrap``).
    compare_heuristic:
        The evaluation report values the heuristic beside production and the candidate when it is
        neither (default True). False: the report holds production (the gate's baseline), the
        past bundles the ``past`` step weighs, and the candidate — what the gate and ``past`` read;
        a cycle that ranks large candidate sets saves a third of its report (the feed demo). The
        heuristic still bootstraps production.
    model, params, calibrate:
        What :func:`closedloop.training.train` trains.
    train_weights:
        Fit with the dataset's row weights (inverse propensity × sampling), so that explored
        decisions stand for their whole band in training too (default: unweighted fit; the
        weights still reach the thresholds chosen from costs).
    evaluate_weights:
        Evaluate (and gate) with the dataset's row weights (``evaluate(weights=True)``): needed when
        the weights correct a selection the labels went through — a label policy's ``audit``
        — so that candidate and production are compared on the population, not on the rows the
        production model let be labeled (default: unweighted).
    thresholds:
        ``"cost"`` (default): the candidate's thresholds minimize the system's mistake costs on
        the calibration rows of its dataset when the plan calibrates, else on the rows the model
        was fitted on (weighted; ``closedloop.training.thresholds``, the code path
        ``closedloop train --thresholds cost`` uses too); ``"system"``: the system's own.
    train_window:
        Decisions of this long before the cycle's time make the training dataset (those whose
        label window has closed).
    early_labels:
        The training dataset also takes decisions whose label window is still open but that
        already have a counted outcome (``build_dataset(early_labels=True)``): yesterday's
        reports and analysts' labels on a campaign reach the next candidate days sooner. Goals and
        monitoring keep closed windows only (default: False).
    retrain_every:
        A new candidate is trained when the last one is this old — or sooner, when an alert says
        ``retrain`` or ``tighten``.
    min_labeled:
        Labeled rows the dataset needs before training (fewer: the cycle stops, saying so).
    gate:
        The promotion rule (:class:`~closedloop.evaluation.report.Gate`).
    rollout:
        :class:`Rollout`.
    drift, spikes, abuse:
        :class:`~.drift.DriftMonitor`, :class:`~.drift.MistakeSpikes`,
        :class:`~.abuse.AbusePolicy` (None: not watched).
    click_farm:
        For a system that learns from rewards: :class:`~.click_farm.ClickFarmPolicy` — units that
        click far more than the others, on a few items, are quarantined and their decisions left
        out of the reward datasets (default: on; None: not watched). Ignored for other systems.
    label_check:
        :class:`~.labels.LabelCheck`: the gate refuses a candidate whose training labels hold a
        day unlike the others, and later datasets leave that day's labels out (None: no check).
    tighten:
        :class:`Tighten`.
    metrics:
        User metric functions for goals (``GoalTracker(metrics=...)``).
    rate_settle:
        When outcome-rate goals are measured (``GoalTracker(rate_settle=...)``).
    sinks:
        Alert sinks besides the home's log (``<home>/orchestration/alerts.jsonl``).
    evaluate_bootstrap:
        Bootstrap resamples in the evaluation report.
    goal_patience:
        A goal missed in each of its last ``goal_patience`` measured windows raises a
        ``goal_health`` alert (:mod:`~closedloop.orchestration.goal_health`), once per streak.
    past_bundles:
        How many of the last production bundles (0–3) the evaluation weighs beside each candidate;
        the ``past`` step restores one that does better than both the candidate and production.
    objective:
        For a system that learns from rewards (a Ranking with ``System(rewards=…)``): what the
        ``train`` step fits (:data:`OBJECTIVES`; default ``"reward"``, a reward model; ``"dr"``,
        a policy on doubly robust pseudo-rewards).
    reward_model:
        For a system that learns from rewards: ``None`` (default) — the gate judges the policy
        value by SNIPS; ``"candidate"`` — the candidate's own scores are the reward model of
        DM / DR (use with a candidate that is a reward model); ``"fitted"`` — a logistic click model
        fitted on the train side of the cycle's dataset is (the gate then judges by DR).
    apprentice:
        For a system that learns from rewards: :class:`Apprentice` — start by imitating the logger
        (None: learn from rewards from the first candidate).
    steps:
        The cycle's steps, in order (:class:`~closedloop.orchestration.steps.Pipeline`; default:
        :func:`~closedloop.orchestration.steps.default_pipeline`, or
        :func:`~closedloop.orchestration.steps.reward_pipeline` for a system that learns from
        rewards). Add a step with
        ``default_pipeline().after("evaluate", MyStep())``.
    """

    system: System
    heuristic: Bundle | Intelligence | None = None
    compare_heuristic: bool = True
    model: str = "lightgbm"
    params: Mapping[str, Any] = field(default_factory=dict)
    calibrate: str | None = None
    train_weights: bool = False
    evaluate_weights: bool = False
    thresholds: str = "cost"
    train_window: timedelta = timedelta(days=14)
    early_labels: bool = False
    retrain_every: timedelta = timedelta(days=1)
    min_labeled: int = 200
    gate: Gate = field(default_factory=Gate)
    rollout: Rollout = field(default_factory=Rollout)
    drift: DriftMonitor | None = field(default_factory=DriftMonitor)
    spikes: MistakeSpikes | None = None
    abuse: AbusePolicy | None = field(default_factory=AbusePolicy)
    click_farm: ClickFarmPolicy | None = field(default_factory=ClickFarmPolicy)
    label_check: LabelCheck | None = None
    tighten: Tighten = field(default_factory=Tighten)
    metrics: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    rate_settle: timedelta | None = None
    sinks: Sequence[AlertSink] = ()
    evaluate_bootstrap: int = 50
    goal_patience: int = 3
    past_bundles: int = 3
    steps: Pipeline = field(default_factory=default_pipeline)
    objective: str = "reward"
    reward_model: str | None = None
    apprentice: Apprentice | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.system, System):
            raise SpecError(f"The 'system' parameter of LoopPlan must be a closedloop.System. Got {self.system!r} instead.")
        if self.learns_from_rewards:
            self._check_rewards()
        else:
            if self.apprentice is not None:
                raise SpecError(f"The 'apprentice' parameter of LoopPlan is for a system that learns from rewards (a Ranking "
                                f"with System(rewards=...)); '{self.system.name}' has {self.system.experience!r}.")
            if self.system.label_policy is None:
                raise SpecError(f"LoopPlan needs a system with a label policy; '{self.system.name}' declares none.")
            if not isinstance(self.system.experience, Thresholds):  # the cycle trains one score and sets its thresholds
                raise SpecError(
                    f"LoopPlan needs a system with a Thresholds experience, or a Ranking with rewards "
                    f"(System(rewards=...)); '{self.system.name}' has {self.system.experience!r}."
                )
        if self.heuristic is not None and not isinstance(self.heuristic, Bundle | Intelligence):
            raise SpecError(f"The 'heuristic' of LoopPlan must be a Bundle or an Intelligence. Got {self.heuristic!r} instead.")
        for name in ("train_weights", "evaluate_weights", "early_labels", "compare_heuristic"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"The '{name}' parameter of LoopPlan must be True or False. Got {getattr(self, name)!r} instead.")
        if self.thresholds not in ("cost", "system"):
            raise SpecError(f"The 'thresholds' parameter of LoopPlan must be 'cost' or 'system'. Got {self.thresholds!r} instead.")
        if self.thresholds == "cost" and not self.system.costs and not self.learns_from_rewards:
            raise SpecError(f"LoopPlan(thresholds='cost') needs mistake costs; system '{self.system.name}' declares none.")
        _td("train_window", self.train_window)
        _td("retrain_every", self.retrain_every, positive=False)
        if isinstance(self.goal_patience, bool) or not isinstance(self.goal_patience, int) or self.goal_patience < 1:
            raise SpecError(f"The 'goal_patience' parameter of LoopPlan must be an integer ≥ 1. "
                            f"Got {self.goal_patience!r} instead.")
        if isinstance(self.past_bundles, bool) or not isinstance(self.past_bundles, int) or not 0 <= self.past_bundles <= 3:
            raise SpecError(f"The 'past_bundles' parameter of LoopPlan must be an integer in [0, 3]. "
                            f"Got {self.past_bundles!r} instead.")
        if isinstance(self.min_labeled, bool) or not isinstance(self.min_labeled, int) or self.min_labeled < 1:
            raise SpecError(f"The 'min_labeled' parameter of LoopPlan must be an integer ≥ 1. Got {self.min_labeled!r} instead.")
        for name, typ in (("gate", Gate), ("rollout", Rollout), ("tighten", Tighten)):
            if not isinstance(getattr(self, name), typ):
                raise SpecError(f"The '{name}' parameter of LoopPlan must be a {typ.__name__}. Got {getattr(self, name)!r} instead.")
        optional: tuple[tuple[str, type], ...] = (
            ("drift", DriftMonitor), ("spikes", MistakeSpikes), ("abuse", AbusePolicy), ("label_check", LabelCheck),
            ("click_farm", ClickFarmPolicy),
        )
        for name, opt in optional:
            v = getattr(self, name)
            if v is not None and not isinstance(v, opt):
                raise SpecError(f"The '{name}' parameter of LoopPlan must be a {opt.__name__} or None. Got {v!r} instead.")
        for s in self.sinks:
            if not isinstance(s, AlertSink):
                raise SpecError(f"The 'sinks' of LoopPlan must be AlertSinks. Got {s!r} instead.")
        if not isinstance(self.steps, Pipeline):
            raise SpecError(f"The 'steps' parameter of LoopPlan must be a closedloop.orchestration.steps.Pipeline. "
                            f"Got {self.steps!r} instead.")

    @property
    def learns_from_rewards(self) -> bool:
        """Whether the system learns from rewards: a Ranking with ``System(rewards=…)``."""
        return isinstance(self.system.experience, Ranking) and self.system.rewards is not None

    def default_steps(self) -> Pipeline:
        """The system's default steps: :func:`~closedloop.orchestration.steps.reward_pipeline` for a
        system that learns from rewards, else :func:`~closedloop.orchestration.steps.default_pipeline`."""
        return reward_pipeline() if self.learns_from_rewards else default_pipeline()

    def _check_rewards(self) -> None:
        """The parts of a plan for a system that learns from rewards; its steps default to the reward pipeline."""
        if self.objective not in OBJECTIVES:
            raise SpecError(f"The 'objective' parameter of LoopPlan must be one of {list(OBJECTIVES)}. "
                            f"Got {self.objective!r} instead.")
        if self.reward_model not in (None, "candidate", "fitted"):
            raise SpecError(f"The 'reward_model' parameter of LoopPlan must be None, 'candidate' or 'fitted'. "
                            f"Got {self.reward_model!r} instead.")
        if self.model not in ("logistic", "affinity", "lightgbm"):
            raise SpecError(f"The 'model' parameter of LoopPlan must be 'logistic', 'affinity' or 'lightgbm' for a system that learns "
                            f"from rewards (a reward model). Got {self.model!r} instead.")
        if self.apprentice is not None and not isinstance(self.apprentice, Apprentice):
            raise SpecError(f"The 'apprentice' parameter of LoopPlan must be an Apprentice or None. Got {self.apprentice!r} instead.")
        if isinstance(self.steps, Pipeline) and self.steps == default_pipeline():
            object.__setattr__(self, "steps", reward_pipeline())  # the field's default is the labeled loop's

    def heuristic_bundle(self) -> Bundle | None:
        h = self.heuristic
        if h is None or isinstance(h, Bundle):
            return h
        return Bundle.build(self.system, h)

    def describe(self) -> dict[str, Any]:
        return {
            "system": self.system.name, "model": self.model, "params": dict(self.params), "calibrate": self.calibrate,
            "train_weights": self.train_weights, "evaluate_weights": self.evaluate_weights,
            "thresholds": self.thresholds,
            "train_window_seconds": self.train_window.total_seconds(),
            **({"early_labels": True} if self.early_labels else {}),
            **({"compare_heuristic": False} if not self.compare_heuristic else {}),
            "retrain_every_seconds": self.retrain_every.total_seconds(), "min_labeled": self.min_labeled,
            "goal_patience": self.goal_patience, "past_bundles": self.past_bundles,
            "gate": asdict(self.gate),
            "rollout": self.rollout.describe(),
            "drift": self.drift.describe() if self.drift else None,
            "spikes": self.spikes.describe() if self.spikes else None,
            "abuse": self.abuse.describe() if self.abuse else None,
            "label_check": self.label_check.describe() if self.label_check else None,
            "tighten": {"step": self.tighten.step, "floor": self.tighten.floor},
            "sinks": [s.describe() for s in self.sinks],
            # listed only when they are not the default, so a default plan describes itself as before
            **({"steps": list(self.steps.names)} if self.steps != self.default_steps() else {}),
            **({"objective": self.objective, "reward_model": self.reward_model,
                "click_farm": self.click_farm.describe() if self.click_farm else None} if self.learns_from_rewards else {}),
            **({"apprentice": self.apprentice.describe()} if self.apprentice is not None else {}),
        }
