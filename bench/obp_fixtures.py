"""obp 0.5.7's point estimates on the Open Bandit Dataset sample and a synthetic slate problem, as a committed fixture.

Made with (from the repository root; obp lives only in its own venv, never in the project's):

    bash bench/obp_env.sh /tmp/obp-venv && /tmp/obp-venv/bin/python bench/obp_fixtures.py

It writes tests/evaluation/fixtures/obp_0_5_7.json: for each campaign (all, men, women) × target policy (uniform, random,
model; see bench/ope_recipes.py) obp's IPW, SNIPW, DM, DR, SNDR and SwitchDR (lambda_ = obp's default inf, and 2.0)
``estimate_policy_value``; SlateStandardIPS / SlateIndependentIPS / SlateRewardInteractionIPS on the synthetic slates;
the recipe (seeds, temperature, lambdas, the reward model's coefficients per campaign); a check that the recipe's arrays
equal ``OpenBanditDataset.obtain_batch_bandit_feedback()``'s; and "timing": obp's six estimators together per campaign
(target policy "model", reward-model predictions given, no bootstrap, best of 5) with the machine's nproc.

``--timing-only`` prints only the timing as one JSON line (bench/ope.py runs it in a subprocess to measure obp in the
same run as closedloop), reading the reward model's coefficients from the existing fixture.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ope_recipes as recipes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "evaluation" / "fixtures" / "obp_0_5_7.json"
COMMAND = "bash bench/obp_env.sh /tmp/obp-venv && /tmp/obp-venv/bin/python bench/obp_fixtures.py"
REPEATS = 5


def _estimators(lambda_: float) -> dict:
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedDoublyRobust,
        SelfNormalizedInverseProbabilityWeighting,
        SwitchDoublyRobust,
    )

    return {
        "ips": InverseProbabilityWeighting(),
        "snips": SelfNormalizedInverseProbabilityWeighting(),
        "dm": DirectMethod(),
        "dr": DoublyRobust(),
        "sndr": SelfNormalizedDoublyRobust(),
        "switch_dr": SwitchDoublyRobust(lambda_=lambda_),
    }


def _estimate_all(estimators: dict, data: dict, action_dist: np.ndarray) -> dict:
    """Every estimator's estimate_policy_value on one campaign's inputs (the same call bench/ope.py times)."""
    kwargs = {
        "reward": data["reward"],
        "action": data["action"],
        "position": data["position"],
        "pscore": data["pscore"],
        "action_dist": action_dist,
        "estimated_rewards_by_reg_model": data["estimated_rewards_by_reg_model"],
    }
    return {name: float(est.estimate_policy_value(**kwargs)) for name, est in estimators.items()}


def check_rows_against_obp(campaign: str) -> dict:
    """The recipe's arrays equal OpenBanditDataset's (same order, same values): the fixture is only useful if they do."""
    from obp.dataset import OpenBanditDataset

    ours = recipes.load_campaign(campaign)
    theirs = OpenBanditDataset(behavior_policy="random", campaign=campaign, data_path=recipes.obd_dir()).obtain_batch_bandit_feedback()
    same = {key: bool(np.array_equal(np.asarray(theirs[key]), ours[key])) for key in ("action", "position", "reward", "pscore")}
    same["n_actions"] = theirs["n_actions"] == ours["n_actions"]
    if not all(same.values()):
        raise SystemExit(f"The recipe's {campaign} arrays differ from obp's: {same}")
    return same


def point_estimates(coefs: dict) -> list[dict]:
    rows = []
    for campaign in recipes.CAMPAIGNS:
        data = recipes.campaign_inputs(campaign, coefs[campaign])
        for policy in recipes.POLICIES:
            for lam in recipes.SWITCH_LAMBDAS:
                values = _estimate_all(_estimators(np.inf if lam is None else lam), data, data["action_dist"][policy])
                for name, value in values.items():
                    if lam is not None and name != "switch_dr":
                        continue
                    rows.append({"campaign": campaign, "policy": policy, "estimator": name,
                                 "lambda_": lam if name == "switch_dr" else None, "value": value})
    return rows


def slate_estimates() -> list[dict]:
    from obp.ope import SlateIndependentIPS, SlateRewardInteractionIPS, SlateStandardIPS

    s = recipes.synthetic_slates()
    common = {"slate_id": s["slate_id"], "reward": s["reward"], "position": s["position"]}
    len_list = recipes.SLATES["len_list"]
    return [
        {"estimator": "slate_standard_ips", "value": float(SlateStandardIPS(len_list=len_list).estimate_policy_value(
            **common, pscore=s["pscore"], evaluation_policy_pscore=s["evaluation_policy_pscore"]))},
        {"estimator": "slate_independent_ips", "value": float(SlateIndependentIPS(len_list=len_list).estimate_policy_value(
            **common, pscore_item_position=s["pscore_item_position"],
            evaluation_policy_pscore_item_position=s["evaluation_policy_pscore_item_position"]))},
        {"estimator": "slate_rips", "value": float(SlateRewardInteractionIPS(len_list=len_list).estimate_policy_value(
            **common, pscore_cascade=s["pscore_cascade"], evaluation_policy_pscore_cascade=s["evaluation_policy_pscore_cascade"]))},
    ]


def timing(coefs: dict, repeats: int = REPEATS) -> dict:
    """obp's six estimators together per campaign, best of ``repeats`` (seconds)."""
    estimators = _estimators(np.inf)
    seconds = {}
    for campaign in recipes.CAMPAIGNS:
        data = recipes.campaign_inputs(campaign, coefs[campaign])
        action_dist = data["action_dist"]["model"]
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            _estimate_all(estimators, data, action_dist)
            best = min(best, time.perf_counter() - start)
        seconds[campaign] = best
    return {
        "what": "obp 0.5.7: IPW, SNIPW, DM, DR, SNDR, SwitchDR (lambda_=inf) estimate_policy_value together, target policy "
                "'model', reward-model predictions given, no bootstrap; best of " + str(repeats),
        "seconds": seconds,
        "nproc": os.cpu_count(),
        "measured_on": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": COMMAND,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURE)
    parser.add_argument("--timing-only", action="store_true", help="print obp's timing as one JSON line, write nothing")
    args = parser.parse_args()
    import obp

    if args.timing_only:
        coefs = json.loads(FIXTURE.read_text())["recipe"]["reward_model"]["coefficients"]
        print(json.dumps(timing(coefs)))
        return
    coefs = {c: recipes.fit_reward_model(recipes.load_campaign(c)) for c in recipes.CAMPAIGNS}
    fixture = {
        "obp_version": obp.__version__,
        "command": COMMAND,
        "made_on": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "pandas": __import__("pandas").__version__, "scikit-learn": __import__("sklearn").__version__},
        "rows_equal_obp": {c: check_rows_against_obp(c) for c in recipes.CAMPAIGNS},
        "recipe": {
            "campaigns": list(recipes.CAMPAIGNS),
            "policies": list(recipes.POLICIES),
            "random_policy_seed": recipes.RANDOM_POLICY_SEED,
            "switch_lambdas": [None if lam is None else lam for lam in recipes.SWITCH_LAMBDAS],
            "lambda_null_means": "obp's default, np.inf",
            "reward_model": dict(recipes.MODEL, coefficients=coefs),
            "slates": recipes.SLATES,
        },
        "estimates": point_estimates(coefs),
        "slate_estimates": slate_estimates(),
        "timing": timing(coefs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out}: {len(fixture['estimates'])} estimates, {len(fixture['slate_estimates'])} slate estimates; "
          f"obp timing {fixture['timing']['seconds']}")


if __name__ == "__main__":
    main()
