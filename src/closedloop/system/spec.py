"""Declaring a system: :class:`System` and what it is made of.

A system is declared once, in Python, and everything else (runtime, bundles, training,
evaluation, the loop) reads the declaration::

    phishing = System(
        name="phishing",
        context=[Str("url"), Str("domain"), Float("domain_age_days", ge=0), ...],
        schema_version="1",
        unit="user_id",
        features={"domain_age_log": F.log1p(F.col("domain_age_days")), ...},
        actions=["allow", "warn", "block"],
        experience=Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow"),
        labels=("legit", "phish"),
        costs={"allow": {"phish": 100.0}, "warn": {"legit": 1.0, "phish": 5.0}, "block": {"legit": 20.0}},
        latency_budget_ms=5.0,
        mistake_outcomes=["reported_false_block"],
        label_policy=LabelPolicy(...), goals=[Goal(...)], slices=["browser", "country"],
    )

The constructor validates the whole declaration, one part after another, each by its own function
of :mod:`closedloop.system.validate`, and raises :class:`~closedloop.errors.SpecError` naming the
parameter, the rule and the value. The label policy (:mod:`closedloop.system.labels`) and the goals
(:mod:`closedloop.system.goals`) and the rewards of a choosing or ranking system
(:mod:`closedloop.system.rewards`) are declared with their own classes, importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from closedloop.context.features import Expr, Feature
from closedloop.context.schema import Field, Schema
from closedloop.experience.experiences import Action, BestAction, Ranking, Thresholds
from closedloop.system.goals import Goal
from closedloop.system.labels import LabelPolicy, OutcomeRule
from closedloop.system.rewards import Reward, RewardPolicy
from closedloop.system.validate import (
    check_actions,
    check_candidates,
    check_costs,
    check_default_action,
    check_experience,
    check_features,
    check_goals,
    check_guardrails,
    check_label_policy,
    check_labels,
    check_latency_budget,
    check_mistake_outcomes,
    check_name,
    check_retention_days,
    check_rewards,
    check_schema,
    check_slices,
    check_split,
    check_unit,
)

__all__ = ["Goal", "LabelPolicy", "OutcomeRule", "Reward", "RewardPolicy", "System"]


class System:
    """One intelligent system: its context, unit, features, actions, experience, costs and goals.

    See the module docstring for an example. All parameters are validated here; nothing does
    I/O. ``schema_version`` is recorded in every bundle and checked when one is loaded, together
    with :attr:`feature_fingerprint`.
    """

    def __init__(
        self,
        name: str,
        *,
        context: Schema | Sequence[Field],
        unit: str,
        features: Mapping[str, Expr] | Sequence[Feature],
        experience: Thresholds | BestAction | Ranking,
        actions: Sequence[str | Action] = (),
        candidates: Sequence[Field] | None = None,
        candidate_id: str | None = None,
        guardrails: Sequence[Any] = (),
        schema_version: str = "1",
        default_action: str | None = None,
        labels: tuple[str, str] = ("negative", "positive"),
        costs: Mapping[str, Mapping[str, float]] | None = None,
        latency_budget_ms: float = 10.0,
        mistake_outcomes: Sequence[str] = (),
        label_policy: LabelPolicy | None = None,
        rewards: RewardPolicy | None = None,
        goals: Sequence[Goal] = (),
        slices: Sequence[str] = (),
        retention_days: float | None = None,
        split: Any = None,
        description: str = "",
    ) -> None:
        self.name = check_name(name)
        self.description = description
        self.schema = schema = check_schema(name, context, schema_version)
        self.unit = check_unit(name, schema, unit)
        self.candidate_schema, self.candidate_id = check_candidates(name, schema, candidates, candidate_id)
        self.features = check_features(features, schema, self.candidate_schema)
        specs = check_actions(name, actions)
        self.actions: tuple[str, ...] = tuple(a.name for a in specs)
        self.action_specs: dict[str, Action] = {a.name: a for a in specs}
        self.experience = check_experience(name, experience, candidates, specs, self.actions)
        self.default_action = check_default_action(name, self.experience, self.actions, default_action)
        self.guardrails = check_guardrails(name, guardrails, self)  # they read the system built so far
        self.labels: tuple[str, str] = check_labels(name, labels)
        self.costs: dict[str, dict[str, float]] = check_costs(costs, actions, self.actions, self.labels)
        self.latency_budget_ms = check_latency_budget(name, latency_budget_ms)
        self.mistake_outcomes = check_mistake_outcomes(name, mistake_outcomes)
        # What a decision presents names the mistakes the system declares it can be reported for
        # (an action's default outcomes; outcomes an Action was given are kept as given).
        self.action_specs = {n: a.with_mistakes(self.mistake_outcomes) for n, a in self.action_specs.items()}
        self.label_policy = check_label_policy(name, label_policy, schema, self.actions, self.labels)
        #: How outcomes become a reward per slot or decision (BestAction / Ranking systems); None: none declared.
        self.rewards = check_rewards(name, rewards, self.experience)
        self.goals = check_goals(name, goals)
        self.slices = check_slices(schema, slices)
        retention = check_retention_days(name, retention_days)
        #: How training and evaluation set data aside (overridable per call); default: by unit.
        self.split = check_split(name, split)
        #: Telemetry older than this many days is dropped (``closedloop telemetry retain``); None: kept.
        self.retention_days = retention

    @property
    def schema_version(self) -> str:
        return self.schema.version

    @property
    def feature_fingerprint(self) -> str:
        return self.features.fingerprint

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the whole declaration."""
        return {
            "name": self.name,
            "schema": self.schema.describe(),
            "unit": self.unit,
            "features": self.features.describe(),
            "feature_fingerprint": self.feature_fingerprint,
            "actions": [a.describe() for a in self.action_specs.values()],
            "candidates": self.candidate_schema.describe() if self.candidate_schema else None,
            "candidate_id": self.candidate_id,
            "guardrails": [g.describe() for g in self.guardrails],
            "default_action": self.default_action,
            "experience": self.experience.describe(),
            "labels": list(self.labels),
            "costs": self.costs,
            "latency_budget_ms": self.latency_budget_ms,
            "mistake_outcomes": list(self.mistake_outcomes),
            "label_policy": self.label_policy.describe() if self.label_policy else None,
            "rewards": self.rewards.describe() if self.rewards else None,
            "goals": [g.describe() for g in self.goals],
            "slices": list(self.slices),
            "retention_days": self.retention_days,
            "split": self.split.describe(),
        }

    def __repr__(self) -> str:
        return f"System({self.name!r}, schema_version={self.schema_version!r}, features={len(self.features)})"
