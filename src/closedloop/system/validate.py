"""The checks of a :class:`~closedloop.system.spec.System` declaration, one function per part.

``System.__init__`` calls them in order — name, context schema, unit, candidates, features,
actions, experience, default action, guardrails, labels, costs, latency budget, mistake outcomes,
label policy, rewards, goals, slices, retention, split — and each returns the part's validated value or
raises :class:`~closedloop.errors.SpecError` naming the parameter, the rule and the value. A check
reads only the parts checked before it (passed in), so the order is the one the constructor uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from closedloop.context.features import Expr, Feature, FeatureSet
from closedloop.context.schema import Field, Int, Schema, Str
from closedloop.errors import SpecError
from closedloop.experience.experiences import Action, BestAction, Ranking, Thresholds
from closedloop.system.goals import Goal
from closedloop.system.labels import LabelPolicy, kind_name
from closedloop.system.rewards import RewardPolicy

if TYPE_CHECKING:
    from closedloop.system.spec import System
    from closedloop.system.splits import Split

__all__ = [
    "check_actions", "check_candidates", "check_costs", "check_default_action", "check_experience",
    "check_features", "check_goals", "check_guardrails", "check_label_policy", "check_labels",
    "check_latency_budget", "check_mistake_outcomes", "check_name", "check_retention_days", "check_rewards", "check_schema",
    "check_slices", "check_split", "check_unit",
]

_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")


def check_name(name: Any) -> str:
    """The system's name: lower-case letters, digits, '_' or '-', starting with a letter."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(
            "The 'name' of a System must be lower-case letters, digits, '_' or '-', starting "
            f"with a letter (at most 63 characters). Got {name!r} instead."
        )
    return name


def check_schema(name: str, context: Schema | Sequence[Field], schema_version: str) -> Schema:
    """The context schema: a :class:`Schema` as given (its version declared in one place), or one
    built from a list of fields at ``schema_version``."""
    if isinstance(context, Schema):
        schema = context
        if schema_version != "1" and schema_version != schema.version:
            raise SpecError(
                f"System '{name}' got schema_version={schema_version!r} and a Schema of version "
                f"{schema.version!r}; declare the version in one place."
            )
        return schema
    return Schema(context, version=schema_version)


def check_unit(name: str, schema: Schema, unit: str) -> str:
    """The unit: the name of a text or integer context field."""
    f = schema.by_name.get(unit)
    if not isinstance(f, Str | Int):
        raise SpecError(
            f"The 'unit' of System '{name}' must name a text or integer context field. Got {unit!r} "
            f"({'undeclared' if f is None else type(f).__name__}) instead."
        )
    return unit


def check_candidates(
    name: str, schema: Schema, candidates: Sequence[Field] | None, candidate_id: str | None
) -> tuple[Schema | None, str | None]:
    """The candidate schema and id field of a ranking system, (None, None) without candidates:
    fields of their own (no context field name reused) and an id that is a text or integer one."""
    if candidates is None:
        return None, None
    cand = Schema(candidates, version=schema.version)
    clash = sorted(set(cand.by_name) & set(schema.by_name))
    if clash:
        raise SpecError(
            f"Candidate fields of System '{name}' must not reuse context field names. Got {clash} in both."
        )
    cf = cand.by_name.get(candidate_id) if isinstance(candidate_id, str) else None
    if not isinstance(cf, Str | Int):
        raise SpecError(
            f"The 'candidate_id' of System '{name}' must name a text or integer candidate field. "
            f"Got {candidate_id!r} instead."
        )
    return cand, candidate_id


def check_features(
    features: Mapping[str, Expr] | Sequence[Feature], schema: Schema, candidate_schema: Schema | None
) -> FeatureSet:
    """The feature set, declared over the context (and, with candidates, over the request and one
    candidate: both schemas' fields)."""
    if candidate_schema is None:
        return FeatureSet(features, schema)
    return FeatureSet(features, Schema([*schema.fields, *candidate_schema.fields], version=schema.version))


def check_actions(name: str, actions: Sequence[str | Action]) -> list[Action]:
    """The actions as :class:`Action` objects (a name stands for an automated action), unique."""
    specs: list[Action] = []
    for a in actions:
        if isinstance(a, Action):
            specs.append(a)
        elif isinstance(a, str) and a:
            specs.append(Action(a, "automate"))
        else:
            raise SpecError(f"The 'actions' of System '{name}' must be names or Action objects. Got {a!r} instead.")
    action_names = [a.name for a in specs]
    if len(set(action_names)) != len(action_names):
        raise SpecError(f"The 'actions' of System '{name}' must be unique. Got {action_names!r} instead.")
    return specs


def check_experience(
    name: str, experience: Any, candidates: Sequence[Field] | None, specs: list[Action], actions: tuple[str, ...]
) -> Thresholds | BestAction | Ranking:
    """The experience: a Ranking for a system with candidates (and no actions of its own), else a
    Thresholds or BestAction over the declared actions."""
    if isinstance(experience, Ranking):
        if candidates is None:
            raise SpecError(f"A Ranking experience needs candidates: System '{name}' declares none.")
        if specs:
            raise SpecError(
                f"A ranking system's actions are its candidates; System '{name}' must not declare 'actions'. "
                f"Got {list(actions)!r} instead."
            )
    elif isinstance(experience, Thresholds | BestAction):
        if candidates is not None:
            raise SpecError(f"A system with candidates needs a Ranking experience. Got {experience!r} instead.")
        if not specs:
            raise SpecError(f"The 'actions' of System '{name}' must be a non-empty list of names. Got [] instead.")
        experience.validate(actions)
    else:
        raise SpecError(
            f"The 'experience' of System '{name}' must be a Thresholds, BestAction or Ranking. Got {experience!r} instead."
        )
    return experience


def check_default_action(
    name: str, experience: Thresholds | BestAction | Ranking, actions: tuple[str, ...], default_action: str | None
) -> str | None:
    """The default action: as given for a ranking system; else one of the actions, by default the
    experience's ``otherwise`` (or the first action)."""
    if isinstance(experience, Ranking):
        return None if default_action is None else default_action
    fallback = experience.otherwise if experience.otherwise is not None else actions[0]
    default_action = fallback if default_action is None else default_action
    if default_action not in actions:
        raise SpecError(
            f"The 'default_action' of System '{name}' must be one of {list(actions)}. Got {default_action!r} instead."
        )
    return default_action


def check_guardrails(name: str, guardrails: Sequence[Any], system: System) -> tuple[Any, ...]:
    """The guardrails, each validated against ``system`` (built so far: its fields, actions,
    experience and default action are set)."""
    from closedloop.experience.guardrails import (
        Guardrail,  # guardrails read the system's fields and actions
    )

    guardrails = list(guardrails)
    for g in guardrails:
        if not isinstance(g, Guardrail):
            raise SpecError(f"The 'guardrails' of System '{name}' must be guardrails. Got {g!r} instead.")
        g.validate(system)
    return tuple(guardrails)


def check_labels(name: str, labels: Any) -> tuple[str, str]:
    """The two classes (negative, positive): distinct non-empty names."""
    if (
        not isinstance(labels, tuple | list) or len(labels) != 2
        or not all(isinstance(x, str) and x for x in labels) or labels[0] == labels[1]
    ):
        raise SpecError(
            f"The 'labels' of System '{name}' must be two distinct class names (negative, positive). "
            f"Got {labels!r} instead."
        )
    return (labels[0], labels[1])


def check_costs(
    costs: Mapping[str, Mapping[str, float]] | None, declared: Sequence[str | Action], actions: tuple[str, ...],
    labels: tuple[str, str],
) -> dict[str, dict[str, float]]:
    """The costs of mistakes: per declared action, per true class, a number ≥ 0 (as floats).
    ``declared`` is the ``actions`` parameter as given (named in the message of a wrong key)."""
    out: dict[str, dict[str, float]] = {}
    for action, row in (costs or {}).items():
        if action not in actions:
            raise SpecError(f"Mistake costs must be keyed by declared actions {declared}. Got {action!r} instead.")
        if not isinstance(row, Mapping):
            raise SpecError(f"The mistake costs of action '{action}' must map a true class to a cost. Got {row!r} instead.")
        clean = {}
        for label, cost in row.items():
            if label not in labels:
                raise SpecError(
                    f"The mistake costs of action '{action}' must be keyed by the classes {list(labels)}. "
                    f"Got {label!r} instead."
                )
            if isinstance(cost, bool) or not isinstance(cost, int | float) or not (math.isfinite(cost) and cost >= 0):
                raise SpecError(
                    f"The cost of '{action}' when the truth is '{label}' must be a number ≥ 0. Got {cost!r} instead."
                )
            clean[label] = float(cost)
        out[action] = clean
    return out


def check_latency_budget(name: str, latency_budget_ms: Any) -> float:
    """The latency budget: a number > 0 (milliseconds, as a float)."""
    if (
        isinstance(latency_budget_ms, bool) or not isinstance(latency_budget_ms, int | float)
        or not (math.isfinite(latency_budget_ms) and latency_budget_ms > 0)
    ):
        raise SpecError(
            f"The 'latency_budget_ms' of System '{name}' must be a number > 0. Got {latency_budget_ms!r} instead."
        )
    return float(latency_budget_ms)


def check_mistake_outcomes(name: str, mistake_outcomes: Sequence[str]) -> tuple[str, ...]:
    """The outcome kinds that report a mistake: a list of kind names (not one string)."""
    if isinstance(mistake_outcomes, str):  # not its letters, each a one-letter kind
        raise SpecError(f"The 'mistake_outcomes' of System '{name}' must be a list of outcome kinds. "
                        f"Got the string {mistake_outcomes!r} instead.")
    return tuple(kind_name(k, "A mistake outcome kind") for k in mistake_outcomes)


def check_label_policy(
    name: str, label_policy: Any, schema: Schema, actions: tuple[str, ...], labels: tuple[str, str]
) -> LabelPolicy | None:
    """The label policy (or None), agreeing with the system: its rules and defaults name the
    system's classes, its action defaults its actions, its entity a string context field."""
    if label_policy is None:
        return None
    if not isinstance(label_policy, LabelPolicy):
        raise SpecError(f"The 'label_policy' of System '{name}' must be a LabelPolicy. Got {label_policy!r} instead.")
    for r in label_policy.rules:
        if r.label is not None and r.label not in labels:
            raise SpecError(
                f"Label policy rule '{r.kind}' must name a class in {list(labels)}. Got {r.label!r} instead."
            )
    if label_policy.default is not None and label_policy.default not in labels:
        raise SpecError(
            f"The label policy default must be a class in {list(labels)} or None. "
            f"Got {label_policy.default!r} instead."
        )
    if label_policy.entity is not None:
        ent = next((f for f in schema.fields if f.name == label_policy.entity), None)
        if ent is None or not isinstance(ent, Str):
            raise SpecError(
                f"The label policy 'entity' must be a string context field of System '{name}'. "
                f"Got {label_policy.entity!r} instead."
            )
    for a, lab in label_policy.action_defaults.items():
        if a not in actions:
            raise SpecError(
                f"The label policy 'action_defaults' must be keyed by the actions {list(actions)}. "
                f"Got {a!r} instead."
            )
        if lab is not None and lab not in labels:
            raise SpecError(
                f"The label policy default of action '{a}' must be a class in {list(labels)} or None. "
                f"Got {lab!r} instead."
            )
    return label_policy


def check_rewards(name: str, rewards: Any, experience: Thresholds | BestAction | Ranking) -> RewardPolicy | None:
    """The reward policy (or None): a :class:`RewardPolicy` of a system that chooses (BestAction)
    or ranks (Ranking); rewards per slot need a Ranking (a BestAction shows one action)."""
    if rewards is None:
        return None
    if not isinstance(rewards, RewardPolicy):
        raise SpecError(f"The 'rewards' of System '{name}' must be a RewardPolicy or None. Got {rewards!r} instead.")
    if not isinstance(experience, BestAction | Ranking):
        raise SpecError(
            f"The 'rewards' of System '{name}' need a BestAction or Ranking experience (a Thresholds system "
            f"learns from labels: label_policy). Got {type(experience).__name__} instead."
        )
    if rewards.per == "slot" and not isinstance(experience, Ranking):
        raise SpecError(
            f"The reward policy 'per' of System '{name}' must be 'decision' for a BestAction experience "
            f"(one action a decision; 'slot' needs a Ranking). Got 'slot' instead."
        )
    return rewards


def check_goals(name: str, goals: Sequence[Goal]) -> tuple[Goal, ...]:
    """The goals: :class:`Goal` objects of unique names."""
    goals = list(goals)
    if not all(isinstance(g, Goal) for g in goals):
        raise SpecError(f"The 'goals' of System '{name}' must be Goal objects. Got {goals!r} instead.")
    gnames = [g.name for g in goals]
    if len(set(gnames)) != len(gnames):
        raise SpecError(f"Goal names must be unique. Got {gnames} instead.")
    return tuple(goals)


def check_slices(schema: Schema, slices: Sequence[str]) -> tuple[str, ...]:
    """The slice fields: declared context fields."""
    for s in slices:
        if s not in schema.by_name:
            raise SpecError(f"Slice fields must be declared context fields. Got {s!r} instead.")
    return tuple(slices)


def check_retention_days(name: str, retention_days: Any) -> float | None:
    """The telemetry retention: a number of days > 0 (as a float), or None."""
    if retention_days is not None and (
        isinstance(retention_days, bool) or not isinstance(retention_days, int | float)
        or not (math.isfinite(retention_days) and retention_days > 0)
    ):
        raise SpecError(
            f"The 'retention_days' of System '{name}' must be a number > 0 or None. Got {retention_days!r} instead."
        )
    return None if retention_days is None else float(retention_days)


def check_split(name: str, split: Any) -> Split:
    """The split: a :class:`~closedloop.system.splits.Split`, by default by unit."""
    from closedloop.system.splits import Split

    if split is not None and not isinstance(split, Split):
        raise SpecError(f"The 'split' of System '{name}' must be a closedloop.evaluation.Split. Got {split!r} instead.")
    return split if split is not None else Split("unit")
