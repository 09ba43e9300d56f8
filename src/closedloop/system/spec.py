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

The constructor validates the whole declaration and raises :class:`~closedloop.errors.SpecError`
naming the parameter, the rule and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from closedloop.context.features import Expr, Feature, FeatureSet
from closedloop.context.schema import Field, Int, Schema, Str
from closedloop.errors import SpecError
from closedloop.experience.experiences import Action, BestAction, Ranking, Thresholds

__all__ = ["Goal", "LabelPolicy", "OutcomeRule", "System"]

_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")
_LEVELS = ("model", "user", "leading", "organizational")
_CADENCES = ("hourly", "daily", "weekly", "monthly", "quarterly")
_AGGREGATES = ("earliest", "latest", "sum", "max", "any")


def _kind_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_.\-]*$", value):
        raise SpecError(f"{what} must be a name of letters, digits, '_', '.' or '-'. Got {value!r} instead.")
    return value


class OutcomeRule:
    """How outcomes of one ``kind`` vote for a label within the policy's window.

    ``label`` is the class the outcome means (e.g. ``"phish"`` for ``reported_phish``), or
    ``None`` to take the outcome's value as the label. ``aggregate`` combines several outcomes of
    the kind: earliest / latest / sum / max / any.
    """

    def __init__(self, kind: str, label: str | None = None, aggregate: str = "any") -> None:
        self.kind = _kind_name(kind, "An outcome rule's 'kind'")
        if label is not None and not isinstance(label, str):
            raise SpecError(f"An outcome rule's 'label' must be a class name or None. Got {label!r} instead.")
        if aggregate not in _AGGREGATES:
            raise SpecError(f"An outcome rule's 'aggregate' must be one of {list(_AGGREGATES)}. Got {aggregate!r} instead.")
        self.label = label
        self.aggregate = aggregate

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "aggregate": self.aggregate}


class LabelPolicy:
    """How outcomes within a window after a decision become its label.

    Parameters
    ----------
    window:
        How long after a decision outcomes count (by event time).
    rules:
        One :class:`OutcomeRule` per outcome kind that counts; earlier rules take precedence.
    default:
        The label of a decision with no counted outcome once its window has closed, or ``None``
        to leave it unlabeled.
    action_defaults:
        Per action, a default that replaces ``default`` for decisions that took that action:
        ``{"block": None}`` says a blocked page with no outcome is *unlabeled*, not ``default``
        (blocking hides the outcome — selective labels). Keys must be the system's actions.
    inverse_propensity:
        When true (the default), a dataset row's ``weight`` is ``1 / (sample_prob × propensity)``:
        a decision explored with probability p stands for 1/p decisions of its band (inverse
        propensity scoring). Non-exploring decisions have propensity 1, so their weight is
        ``1 / sample_prob`` either way.
    audit:
        The outcome kind (one of ``rules``) that is a *random audit sample* of decisions — e.g.
        analysts labeling a random share of each action's decisions — or ``None``. For an action
        whose default is ``None`` (its decisions hide the user outcome: a block, a warning most
        users answer by going back), only audited decisions are labeled, by the audit, and each
        weighs ``decisions of that action / audited decisions of that action`` (both counted in
        the dataset). Outcomes other than the audit select themselves in such a band — a victim
        who clicked through a warning reports, a user who went back does not — and an unweighted
        audit under-represents the band: either way the next model learns that what the current
        one catches is rare, and forgets it. With the audit the band keeps its true share and mix.
    entity:
        A string context field that names what outcomes judge — e.g. ``"url"``: an analyst's
        verdict on a page, or a victim's report of it, is about the page, not about one visit — or
        ``None`` (default: outcomes label their own decision only). With an entity, a decision
        without a counted outcome of its own takes the label most of its entity's labeled
        decisions in the dataset have (by their rules; a tie gives none), before any default:
        one analyst's label of a page labels the visits to it that nobody reported on — the
        warnings most users answer by going back, the allowed loads of a page others reported.
    """

    def __init__(
        self,
        window: timedelta,
        rules: Sequence[OutcomeRule],
        default: str | None = None,
        *,
        action_defaults: Mapping[str, str | None] | None = None,
        inverse_propensity: bool = True,
        audit: str | None = None,
        entity: str | None = None,
    ) -> None:
        if not isinstance(window, timedelta) or window <= timedelta(0):
            raise SpecError(f"The label policy 'window' must be a positive timedelta. Got {window!r} instead.")
        rules = list(rules)
        if not rules or not all(isinstance(r, OutcomeRule) for r in rules):
            raise SpecError(f"The label policy 'rules' must be a non-empty list of OutcomeRule. Got {rules!r} instead.")
        kinds = [r.kind for r in rules]
        if len(set(kinds)) != len(kinds):
            raise SpecError(f"The label policy may have one rule per outcome kind. Got {kinds} instead.")
        if default is not None and not isinstance(default, str):
            raise SpecError(f"The label policy 'default' must be a class name or None. Got {default!r} instead.")
        if action_defaults is None:
            action_defaults = {}
        if not isinstance(action_defaults, Mapping):
            raise SpecError(
                "The label policy 'action_defaults' must map an action to a class name or None. "
                f"Got {action_defaults!r} instead."
            )
        for a, lab in action_defaults.items():
            if not isinstance(a, str) or not a:
                raise SpecError(f"The label policy 'action_defaults' must be keyed by action names. Got {a!r} instead.")
            if lab is not None and not isinstance(lab, str):
                raise SpecError(
                    f"The label policy default of action '{a}' must be a class name or None. Got {lab!r} instead."
                )
        if not isinstance(inverse_propensity, bool):
            raise SpecError(
                f"The label policy 'inverse_propensity' must be True or False. Got {inverse_propensity!r} instead."
            )
        if audit is not None and audit not in kinds:
            raise SpecError(f"The label policy 'audit' must be the outcome kind of one of its rules {kinds} or None. "
                            f"Got {audit!r} instead.")
        if entity is not None and (not isinstance(entity, str) or not entity):
            raise SpecError(f"The label policy 'entity' must be a context field name or None. Got {entity!r} instead.")
        if entity is not None and audit is not None:
            raise SpecError(f"The label policy may have an 'audit' or an 'entity', not both. Got audit={audit!r}, "
                            f"entity={entity!r}.")
        self.entity = entity
        self.audit = audit
        self.window = window
        self.rules = tuple(rules)
        self.default = default
        self.action_defaults: dict[str, str | None] = dict(action_defaults)
        self.inverse_propensity = inverse_propensity

    def default_for(self, action: str) -> str | None:
        """The label of a decision that took ``action`` and has no counted outcome."""
        return self.action_defaults.get(action, self.default)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "window_seconds": self.window.total_seconds(),
            "rules": [r.describe() for r in self.rules],
            "default": self.default,
        }
        # Written only when used, so that the description (and the id of datasets built under
        # it) of a policy that does not use them stays what it was.
        if self.action_defaults:
            out["action_defaults"] = dict(sorted(self.action_defaults.items()))
        if not self.inverse_propensity:
            out["inverse_propensity"] = False
        if self.audit is not None:
            out["audit"] = self.audit
        if self.entity is not None:
            out["entity"] = self.entity
        return out


class Goal:
    """A named measurement at one of the four levels, with a target and a cadence.

    ``level``: model (hourly model properties), user (outcomes users see), leading (indicators
    such as engagement), organizational (what the business wants). ``direction`` says whether the
    metric must stay ``at_least`` or ``at_most`` the target.
    """

    def __init__(
        self, name: str, level: str, metric: str, target: float, direction: str = "at_least",
        cadence: str = "daily", description: str = "",
    ) -> None:
        self.name = _kind_name(name, "A goal's 'name'")
        if level not in _LEVELS:
            raise SpecError(f"The 'level' of goal '{name}' must be one of {list(_LEVELS)}. Got {level!r} instead.")
        if not isinstance(metric, str) or not metric:
            raise SpecError(f"The 'metric' of goal '{name}' must be a non-empty string. Got {metric!r} instead.")
        if isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target):
            raise SpecError(f"The 'target' of goal '{name}' must be a finite number. Got {target!r} instead.")
        if direction not in ("at_least", "at_most"):
            raise SpecError(f"The 'direction' of goal '{name}' must be 'at_least' or 'at_most'. Got {direction!r} instead.")
        if cadence not in _CADENCES:
            raise SpecError(f"The 'cadence' of goal '{name}' must be one of {list(_CADENCES)}. Got {cadence!r} instead.")
        self.level, self.metric, self.target = level, metric, float(target)
        self.direction, self.cadence, self.description = direction, cadence, description

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "level": self.level, "metric": self.metric, "target": self.target,
            "direction": self.direction, "cadence": self.cadence,
        }


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
        goals: Sequence[Goal] = (),
        slices: Sequence[str] = (),
        retention_days: float | None = None,
        split: Any = None,
        description: str = "",
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise SpecError(
                "The 'name' of a System must be lower-case letters, digits, '_' or '-', starting "
                f"with a letter (at most 63 characters). Got {name!r} instead."
            )
        self.name = name
        self.description = description
        if isinstance(context, Schema):
            schema = context
            if schema_version != "1" and schema_version != schema.version:
                raise SpecError(
                    f"System '{name}' got schema_version={schema_version!r} and a Schema of version "
                    f"{schema.version!r}; declare the version in one place."
                )
        else:
            schema = Schema(context, version=schema_version)
        self.schema = schema

        f = schema.by_name.get(unit)
        if not isinstance(f, Str | Int):
            raise SpecError(
                f"The 'unit' of System '{name}' must name a text or integer context field. Got {unit!r} "
                f"({'undeclared' if f is None else type(f).__name__}) instead."
            )
        self.unit = unit

        self.candidate_schema: Schema | None = None
        self.candidate_id: str | None = None
        if candidates is not None:
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
            self.candidate_schema = cand
            self.candidate_id = candidate_id
            # Features read the request and one candidate: they are declared over both.
            self.features = FeatureSet(features, Schema([*schema.fields, *cand.fields], version=schema.version))
        else:
            self.features = FeatureSet(features, schema)

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
        self.actions: tuple[str, ...] = tuple(action_names)
        self.action_specs: dict[str, Action] = {a.name: a for a in specs}

        if isinstance(experience, Ranking):
            if candidates is None:
                raise SpecError(f"A Ranking experience needs candidates: System '{name}' declares none.")
            if specs:
                raise SpecError(
                    f"A ranking system's actions are its candidates; System '{name}' must not declare 'actions'. "
                    f"Got {action_names!r} instead."
                )
        elif isinstance(experience, Thresholds | BestAction):
            if candidates is not None:
                raise SpecError(f"A system with candidates needs a Ranking experience. Got {experience!r} instead.")
            if not specs:
                raise SpecError(f"The 'actions' of System '{name}' must be a non-empty list of names. Got [] instead.")
            experience.validate(self.actions)
        else:
            raise SpecError(
                f"The 'experience' of System '{name}' must be a Thresholds, BestAction or Ranking. Got {experience!r} instead."
            )
        self.experience = experience

        if isinstance(experience, Ranking):
            self.default_action = None if default_action is None else default_action
        else:
            fallback = experience.otherwise if experience.otherwise is not None else self.actions[0]
            default_action = fallback if default_action is None else default_action
            if default_action not in self.actions:
                raise SpecError(
                    f"The 'default_action' of System '{name}' must be one of {action_names}. Got {default_action!r} instead."
                )
            self.default_action = default_action

        from closedloop.experience.guardrails import (
            Guardrail,  # guardrails read the system's fields and actions
        )

        guardrails = list(guardrails)
        for g in guardrails:
            if not isinstance(g, Guardrail):
                raise SpecError(f"The 'guardrails' of System '{name}' must be guardrails. Got {g!r} instead.")
            g.validate(self)
        self.guardrails = tuple(guardrails)

        if (
            not isinstance(labels, tuple | list) or len(labels) != 2
            or not all(isinstance(x, str) and x for x in labels) or labels[0] == labels[1]
        ):
            raise SpecError(
                f"The 'labels' of System '{name}' must be two distinct class names (negative, positive). "
                f"Got {labels!r} instead."
            )
        self.labels: tuple[str, str] = (labels[0], labels[1])

        self.costs: dict[str, dict[str, float]] = {}
        for action, row in (costs or {}).items():
            if action not in self.actions:
                raise SpecError(f"Mistake costs must be keyed by declared actions {actions}. Got {action!r} instead.")
            if not isinstance(row, Mapping):
                raise SpecError(f"The mistake costs of action '{action}' must map a true class to a cost. Got {row!r} instead.")
            clean = {}
            for label, cost in row.items():
                if label not in self.labels:
                    raise SpecError(
                        f"The mistake costs of action '{action}' must be keyed by the classes {list(self.labels)}. "
                        f"Got {label!r} instead."
                    )
                if isinstance(cost, bool) or not isinstance(cost, int | float) or not (math.isfinite(cost) and cost >= 0):
                    raise SpecError(
                        f"The cost of '{action}' when the truth is '{label}' must be a number ≥ 0. Got {cost!r} instead."
                    )
                clean[label] = float(cost)
            self.costs[action] = clean

        if (
            isinstance(latency_budget_ms, bool) or not isinstance(latency_budget_ms, int | float)
            or not (math.isfinite(latency_budget_ms) and latency_budget_ms > 0)
        ):
            raise SpecError(
                f"The 'latency_budget_ms' of System '{name}' must be a number > 0. Got {latency_budget_ms!r} instead."
            )
        self.latency_budget_ms = float(latency_budget_ms)

        if isinstance(mistake_outcomes, str):  # not its letters, each a one-letter kind
            raise SpecError(f"The 'mistake_outcomes' of System '{name}' must be a list of outcome kinds. "
                            f"Got the string {mistake_outcomes!r} instead.")
        self.mistake_outcomes = tuple(_kind_name(k, "A mistake outcome kind") for k in mistake_outcomes)
        # What a decision presents names the mistakes the system declares it can be reported for
        # (an action's default outcomes; outcomes an Action was given are kept as given).
        self.action_specs = {n: a.with_mistakes(self.mistake_outcomes) for n, a in self.action_specs.items()}

        if label_policy is not None:
            if not isinstance(label_policy, LabelPolicy):
                raise SpecError(f"The 'label_policy' of System '{name}' must be a LabelPolicy. Got {label_policy!r} instead.")
            for r in label_policy.rules:
                if r.label is not None and r.label not in self.labels:
                    raise SpecError(
                        f"Label policy rule '{r.kind}' must name a class in {list(self.labels)}. Got {r.label!r} instead."
                    )
            if label_policy.default is not None and label_policy.default not in self.labels:
                raise SpecError(
                    f"The label policy default must be a class in {list(self.labels)} or None. "
                    f"Got {label_policy.default!r} instead."
                )
            if label_policy.entity is not None:
                ent = next((f for f in self.schema.fields if f.name == label_policy.entity), None)
                if ent is None or not isinstance(ent, Str):
                    raise SpecError(
                        f"The label policy 'entity' must be a string context field of System '{name}'. "
                        f"Got {label_policy.entity!r} instead."
                    )
            for a, lab in label_policy.action_defaults.items():
                if a not in self.actions:
                    raise SpecError(
                        f"The label policy 'action_defaults' must be keyed by the actions {list(self.actions)}. "
                        f"Got {a!r} instead."
                    )
                if lab is not None and lab not in self.labels:
                    raise SpecError(
                        f"The label policy default of action '{a}' must be a class in {list(self.labels)} or None. "
                        f"Got {lab!r} instead."
                    )
        self.label_policy = label_policy

        goals = list(goals)
        if not all(isinstance(g, Goal) for g in goals):
            raise SpecError(f"The 'goals' of System '{name}' must be Goal objects. Got {goals!r} instead.")
        gnames = [g.name for g in goals]
        if len(set(gnames)) != len(gnames):
            raise SpecError(f"Goal names must be unique. Got {gnames} instead.")
        self.goals = tuple(goals)

        for s in slices:
            if s not in schema.by_name:
                raise SpecError(f"Slice fields must be declared context fields. Got {s!r} instead.")
        self.slices = tuple(slices)

        if retention_days is not None and (
            isinstance(retention_days, bool) or not isinstance(retention_days, int | float)
            or not (math.isfinite(retention_days) and retention_days > 0)
        ):
            raise SpecError(
                f"The 'retention_days' of System '{name}' must be a number > 0 or None. Got {retention_days!r} instead."
            )
        from closedloop.system.splits import Split

        if split is not None and not isinstance(split, Split):
            raise SpecError(f"The 'split' of System '{name}' must be a closedloop.evaluation.Split. Got {split!r} instead.")
        #: How training and evaluation set data aside (overridable per call); default: by unit.
        self.split = split if split is not None else Split("unit")
        #: Telemetry older than this many days is dropped (``closedloop telemetry retain``); None: kept.
        self.retention_days = None if retention_days is None else float(retention_days)

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
            "goals": [g.describe() for g in self.goals],
            "slices": list(self.slices),
            "retention_days": self.retention_days,
            "split": self.split.describe(),
        }

    def __repr__(self) -> str:
        return f"System({self.name!r}, schema_version={self.schema_version!r}, features={len(self.features)})"
