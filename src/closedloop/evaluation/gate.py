"""The promotion rule of an evaluation: the candidate (the last bundle of a report) against the
baseline (the first) — :class:`Gate`, whose :meth:`~Gate.check` gives the report's ``gate`` verdict
(:meth:`~Gate.check_policy_value` for a ranking or choice system: by the policy value).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from closedloop.errors import SpecError

__all__ = ["POLICY_ESTIMATORS", "Gate"]

#: The estimators a ranking or choice candidate can be judged by (:meth:`Gate.check_policy_value`).
POLICY_ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr", "switch_dr")


@dataclass(frozen=True)
class Gate:
    """A promotion rule: the candidate (last bundle) against the baseline (first).

    Fails when the candidate's AUC is below the baseline's by more than ``max_auc_drop``
    overall or in any slice value with at least ``min_slice_n`` rows (both AUCs defined), or,
    with ``cost_must_not_rise``, when its expected cost per 1,000 is higher than the baseline's
    (by more than ``cost_tolerance``, relative: 0.02 lets it be up to 2 % higher), or, with
    ``goals_must_hold``, when it breaks a goal the baseline meets: a goal that bounds a rate the
    thresholds control (the report's per-bundle ``goals``), the baseline's figure meeting the
    target and the candidate's whole 95% interval past it — a projected break beyond the noise
    of the evaluation rows, not a coin flip around a target the thresholds were set at.

    A ranking or choice candidate is judged instead by its policy value (:meth:`check_policy_value`,
    also :meth:`check_ranking`): the lower
    bound of the paired 95% interval of (candidate − baseline) by ``policy_estimator`` (default
    None: DR when the report has a reward model, else SNIPS) must not be below
    −``policy_tolerance`` (default 0.0), and the candidate must pass the support check.
    """

    max_auc_drop: float = 0.005
    min_slice_n: int = 500
    cost_must_not_rise: bool = True
    cost_tolerance: float = 0.0
    goals_must_hold: bool = True
    policy_estimator: str | None = None
    policy_tolerance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cost_tolerance", "policy_tolerance"):
            t = getattr(self, name)
            if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and t >= 0):
                raise SpecError(f"The '{name}' of Gate must be a number ≥ 0. Got {t!r} instead.")
        e = self.policy_estimator
        if e is not None and e not in POLICY_ESTIMATORS:
            raise SpecError(f"The 'policy_estimator' of Gate must be None or one of {list(POLICY_ESTIMATORS)}. Got {e!r} instead.")

    def policy_estimator_for(self, has_reward_model: bool) -> str:
        """The estimator a ranking candidate is judged by: ``policy_estimator``, else DR with a reward
        model and SNIPS without; one that needs a reward model is refused without one."""
        name = self.policy_estimator or ("dr" if has_reward_model else "snips")
        if name not in ("ips", "snips") and not has_reward_model:
            raise SpecError(f"The 'policy_estimator' of Gate {name!r} needs a reward model (evaluate's 'reward_model'); "
                            "without one use 'ips' or 'snips'. Got no reward model instead.")
        return name

    def check_policy_value(self, value: dict[str, Any] | None, has_reward_model: bool, baseline: str,
                           candidate: str) -> dict[str, Any]:
        """The verdict on a ranking or choice candidate (the report's last bundle) against the baseline
        (the first) from the report's ``policy_value`` section: refused when the lower bound of the 95 %
        interval of (candidate − baseline) by the estimator (:meth:`policy_estimator_for`) is below
        −``policy_tolerance`` or undefined, or when the candidate's support check fails; the AUC, cost
        and goal rules do not apply to a ranking or choice system. :meth:`check_ranking` is the same."""
        name = self.policy_estimator_for(has_reward_model)
        reasons: list[str] = []
        diff: dict[str, Any] | None = None
        if value is None or not value.get("comparison"):
            reasons.append("no policy value to judge: the dataset carries no logged propensities (or no usable row)")
        else:
            diff = next(c for c in value["comparison"] if c["candidate"] == candidate)["differences"][name]
            low = diff["low"]
            if low is None:
                reasons.append(f"the {name} difference's interval is undefined (the candidate or the baseline puts no "
                               "weight on the logged slots)")
            elif low < -self.policy_tolerance:
                reasons.append(f"the candidate's policy value by {name} is {diff['value']:+.4g} against the baseline's "
                               f"(95% interval {low:+.4g} to {diff['high']:+.4g}): its lower bound is below "
                               f"−{self.policy_tolerance:g}")
            if not diff["candidate_support"]["passed"]:
                reasons.append(f"the candidate's support check failed: {diff['candidate_support']['detail']}")
        return {
            "rule": asdict(self), "baseline": baseline, "candidate": candidate, "passed": not reasons, "reasons": reasons,
            "estimator": name, "difference": None if diff is None else diff["value"],
            "ci": None if diff is None else [diff["low"], diff["high"]],
        }

    #: the same verdict under its first name (a ranking report's)
    check_ranking = check_policy_value

    def check(self, base: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
        reasons: list[str] = []
        a0, a1 = base["quality"]["auc"], cand["quality"]["auc"]
        if a1 < a0 - self.max_auc_drop:
            reasons.append(f"AUC {a1:.4f} is below the baseline's {a0:.4f} by more than {self.max_auc_drop}")
        for field, rows in cand["slices"].items():
            base_rows = {r["value"]: r for r in base["slices"].get(field, [])}
            for r in rows:
                b = base_rows.get(r["value"])
                if r["n"] < self.min_slice_n or b is None or r["auc"] is None or b["auc"] is None:
                    continue
                if r["auc"] < b["auc"] - self.max_auc_drop:
                    reasons.append(
                        f"AUC in slice {field}={r['value']!r} (n={r['n']}) is {r['auc']:.4f}, below the "
                        f"baseline's {b['auc']:.4f} by more than {self.max_auc_drop}"
                    )
        c0, c1 = base["mistakes"]["cost_per_1000"], cand["mistakes"]["cost_per_1000"]
        if self.cost_must_not_rise and c0 is not None and c1 is not None and c1 > c0 * (1.0 + self.cost_tolerance):
            more = f" (more than {self.cost_tolerance:.0%})" if self.cost_tolerance else ""
            reasons.append(f"expected cost per 1,000 decisions rises from {c0:.4f} to {c1:.4f}{more}")
        if self.goals_must_hold:
            reasons += _broken_goals(base.get("goals") or [], cand.get("goals") or [])
        return {
            "rule": asdict(self), "baseline": base["version"], "candidate": cand["version"],
            "passed": not reasons, "reasons": reasons,
        }


def _broken_goals(base: list[dict[str, Any]], cand: list[dict[str, Any]]) -> list[str]:
    """The goals the baseline meets and the candidate breaks beyond its interval, in words."""
    met = {g["goal"]: g for g in base if g.get("met")}
    out = []
    for g in cand:
        b = met.get(g["goal"])
        ci = g.get("ci")
        if b is None or g.get("value") is None or ci is None:
            continue
        past = ci[0] > g["target"] if g["direction"] == "at_most" else ci[1] < g["target"]
        if past:
            out.append(f"goal {g['goal']} ({g['metric']} {g['direction'].replace('_', ' ')} {g['target']:g}) is "
                       f"projected at {g['value']:.4g} (95% interval {ci[0]:.4g}–{ci[1]:.4g}), which breaks the target "
                       f"the baseline meets ({b['value']:.4g})")
    return out
