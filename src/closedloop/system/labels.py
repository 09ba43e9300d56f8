"""How outcomes become labels: :class:`OutcomeRule` and :class:`LabelPolicy` (and the rule every
outcome kind's name follows, :func:`kind_name`).

A policy is validated on its own here; what it must agree with in its system (classes, actions, the
entity field) is checked by :func:`closedloop.system.validate.check_label_policy`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from closedloop.errors import SpecError

__all__ = ["LabelPolicy", "OutcomeRule", "kind_name"]

_AGGREGATES = ("earliest", "latest", "sum", "max", "any")


def kind_name(value: Any, what: str) -> str:
    """``value`` if it is a name of letters, digits, '_', '.' or '-' starting with a letter, else a
    :class:`~closedloop.errors.SpecError` naming ``what``."""
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
        self.kind = kind_name(kind, "An outcome rule's 'kind'")
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
