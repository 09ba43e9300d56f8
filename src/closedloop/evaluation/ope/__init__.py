"""Off-policy evaluation: a target policy's value from logged bandit rounds (obp 0.5.7's estimators).

The point estimators take obp's argument names and shapes (one row per logged round — a
(decision, slot) row — positions 0-based) and equal obp 0.5.7's ``estimate_policy_value``:
:func:`ips`, :func:`snips`, :func:`dm`, :func:`dr`, :func:`sndr`, :func:`switch_dr`; over slates
(one row per (slate, position)) :func:`slate_standard_ips`, :func:`slate_independent_ips`,
:func:`slate_rips`. :func:`estimate` gives every estimator at once with an interval, the effective
sample size and the support check (:class:`Estimate`, :class:`SupportCheck`); :func:`estimate_difference`
one policy's value minus another's on the same rounds, with a paired bootstrap interval (:class:`Difference`). Pure numpy; bad input
raises :class:`~closedloop.errors.EvaluationError` naming the parameter, the rule and the value.
See docs/evaluation.md, "Off-policy evaluation".
"""

from __future__ import annotations

from closedloop.evaluation.ope.difference import Difference, estimate_difference
from closedloop.evaluation.ope.estimates import ESTIMATORS, Estimate, estimate, point_values
from closedloop.evaluation.ope.point import dm, dr, ips, sndr, snips, switch_dr
from closedloop.evaluation.ope.slate import slate_independent_ips, slate_rips, slate_standard_ips
from closedloop.evaluation.ope.support import SUPPORT_THRESHOLD, SUPPORT_TOLERANCE, SupportCheck

__all__ = [
    "ESTIMATORS",
    "SUPPORT_THRESHOLD",
    "SUPPORT_TOLERANCE",
    "Difference",
    "Estimate",
    "SupportCheck",
    "dm",
    "dr",
    "estimate",
    "estimate_difference",
    "ips",
    "point_values",
    "slate_independent_ips",
    "slate_rips",
    "slate_standard_ips",
    "sndr",
    "snips",
    "switch_dr",
]
