"""The goal metric grammar: :func:`parse_metric` reads a goal's metric text into a :class:`Metric`
(classification at an operating point ``@A``, mistake cost, labeled-class and outcome rates,
action shares, the exploration share, user functions). The grammar is in docs/orchestration.md, "Goals".

It belongs to the system's declaration — a goal's metric is part of what a system says about
itself — so every layer that judges goals (the goal tracker, the flight guard) reads the one grammar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from closedloop.errors import SpecError
from closedloop.system.spec import System

__all__ = ["CLASSIFY", "Metric", "parse_metric"]

CLASSIFY = ("false_positive_rate", "false_negative_rate", "recall", "precision")
_NAME = r"[A-Za-z][A-Za-z0-9_.\-:]*"


@dataclass(frozen=True)
class Metric:
    """A parsed metric: ``kind`` is classify / cost / labeled / rate / share / exploration / custom."""

    text: str
    kind: str
    name: str = ""  # classify: fpr…; labeled: the class; rate: the outcome kind; share: action
    action: str | None = None
    scale: float = 1.0

    @property
    def needs_labels(self) -> bool:
        return self.kind in ("classify", "cost", "labeled", "custom")


def parse_metric(text: str, system: System, custom: Mapping[str, Any] | None = None) -> Metric:
    """Parse ``text`` under the grammar in docs/orchestration.md, "Goals" (raises :class:`SpecError`
    naming the metric and the rule). ``custom``: the metric functions passed in ``metrics=``."""
    custom = custom if custom is not None else {}
    if not isinstance(text, str) or not text:
        raise SpecError(f"A goal metric must be a non-empty string. Got {text!r} instead.")
    if text in custom:
        return Metric(text, "custom", text)

    def action(a: str | None) -> str | None:
        if a is not None and a not in system.actions:
            raise SpecError(
                f"The metric {text!r} names action {a!r}, which is not one of the system's actions "
                f"{list(system.actions)}."
            )
        return a

    def labels_needed() -> None:
        if system.label_policy is None:
            raise SpecError(f"The metric {text!r} needs labels, but system '{system.name}' declares no label policy.")

    m = re.fullmatch(rf"({'|'.join(CLASSIFY)})@({_NAME})", text)
    if m:
        labels_needed()
        return Metric(text, "classify", m.group(1), action(m.group(2)))
    if text == "cost_per_1k":
        labels_needed()
        if not system.costs:
            raise SpecError(f"The metric 'cost_per_1k' needs mistake costs; system '{system.name}' declares none.")
        return Metric(text, "cost", scale=1000.0)
    m = re.fullmatch(rf"labeled:({_NAME})_per_1k(?:@({_NAME}))?", text)
    if m:
        labels_needed()
        if m.group(1) not in system.labels:
            raise SpecError(f"The metric {text!r} names class {m.group(1)!r}; the classes are {list(system.labels)}.")
        return Metric(text, "labeled", m.group(1), action(m.group(2)), 1000.0)
    if text == "exploration_share":
        return Metric(text, "exploration")
    m = re.fullmatch(r"share:(.+)", text)
    if m:
        return Metric(text, "share", m.group(1), action(m.group(1)))
    m = re.fullmatch(rf"rate:(.+?)(?:@({_NAME}))?", text)
    if m and re.fullmatch(_NAME, m.group(1)):
        return Metric(text, "rate", m.group(1), action(m.group(2)))
    m = re.fullmatch(rf"(.+?)_per_1k(?:@({_NAME}))?", text)
    if m and re.fullmatch(_NAME, m.group(1)):
        return Metric(text, "rate", m.group(1), action(m.group(2)), 1000.0)
    raise SpecError(
        f"The metric {text!r} is not in the grammar (false_positive_rate@A, false_negative_rate@A, "
        "recall@A, precision@A, cost_per_1k, labeled:<class>_per_1k[@A], rate:<kind>[@A], "
        f"<kind>_per_1k[@A], share:<action>, exploration_share) nor a function passed in metrics= ({sorted(custom)})."
    )
