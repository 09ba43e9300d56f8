"""closedloop.evaluation.ope equals obp 0.5.7 on the Open Bandit Dataset sample and on synthetic slates.

The expected values are obp's own ``estimate_policy_value`` outputs, stored in fixtures/obp_0_5_7.json by
bench/obp_fixtures.py (run in obp's venv: bench/obp_env.sh). The inputs are rebuilt here by bench/ope_recipes.py (pure
numpy, the same arrays under numpy 1 and 2); obp itself is not needed to run this test.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from closedloop.evaluation import ope

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = json.loads((Path(__file__).resolve().parent / "fixtures" / "obp_0_5_7.json").read_text())
RELATIVE = 1e-9


def _recipes() -> Any:
    spec = importlib.util.spec_from_file_location("ope_recipes", ROOT / "bench" / "ope_recipes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipes = _recipes()
HAVE_OBD = all((recipes.obd_dir() / "random" / c / f"{c}.csv").is_file() for c in recipes.CAMPAIGNS)
needs_obd = pytest.mark.skipif(not HAVE_OBD, reason=f"the Open Bandit Dataset sample is not at {recipes.obd_dir()}")


@pytest.fixture(scope="module")
def campaigns() -> dict[str, dict]:
    coefs = FIXTURE["recipe"]["reward_model"]["coefficients"]
    return {c: recipes.campaign_inputs(c, coefs[c]) for c in recipes.CAMPAIGNS}


def _ours(entry: dict, data: dict) -> float:
    logged = {"reward": data["reward"], "action": data["action"], "pscore": data["pscore"],
              "action_dist": data["action_dist"][entry["policy"]], "position": data["position"]}
    q = data["estimated_rewards_by_reg_model"]
    name = entry["estimator"]
    if name == "ips":
        return ope.ips(**logged)
    if name == "snips":
        return ope.snips(**logged)
    if name == "dm":
        return ope.dm(logged["action_dist"], q, position=data["position"])
    if name == "switch_dr":
        lam = math.inf if entry["lambda_"] is None else entry["lambda_"]
        return ope.switch_dr(**logged, estimated_rewards_by_reg_model=q, lambda_=lam)
    return {"dr": ope.dr, "sndr": ope.sndr}[name](**logged, estimated_rewards_by_reg_model=q)


def _id(entry: dict) -> str:
    lam = "" if entry.get("lambda_") is None else f"-lambda{entry['lambda_']}"
    return f"{entry['campaign']}-{entry['policy']}-{entry['estimator']}{lam}"


@needs_obd
@pytest.mark.parametrize("entry", FIXTURE["estimates"], ids=_id)
def test_point_estimator_equals_obp(entry: dict, campaigns: dict[str, dict]) -> None:
    ours = _ours(entry, campaigns[entry["campaign"]])
    assert isinstance(ours, float)
    assert ours == pytest.approx(entry["value"], rel=RELATIVE, abs=0.0)


@needs_obd
@pytest.mark.parametrize("lambda_", [None, 2.0], ids=["lambda_default", "lambda2"])
@pytest.mark.parametrize("policy", recipes.POLICIES)
@pytest.mark.parametrize("campaign", recipes.CAMPAIGNS)
def test_estimate_gives_obps_values_all_at_once(campaign: str, policy: str, lambda_: float | None, campaigns: dict[str, dict]) -> None:
    """``ope.estimate`` computes the six values from shared per-round columns: they equal obp's too."""
    data = campaigns[campaign]
    got = ope.estimate(data["reward"], data["action"], data["pscore"], data["action_dist"][policy], position=data["position"],
                       estimated_rewards_by_reg_model=data["estimated_rewards_by_reg_model"], n_bootstrap=10,
                       lambda_=math.inf if lambda_ is None else lambda_)
    expected = {e["estimator"]: e["value"] for e in FIXTURE["estimates"]
                if e["campaign"] == campaign and e["policy"] == policy and e["lambda_"] in (None, lambda_)
                and (e["estimator"] != "switch_dr" or e["lambda_"] == lambda_)}
    assert set(got) == set(expected) == {"ips", "snips", "dm", "dr", "sndr", "switch_dr"}
    for name, value in expected.items():
        assert got[name].value == pytest.approx(value, rel=RELATIVE, abs=0.0), name
        assert got[name].n == data["n_rounds"]


@pytest.mark.parametrize("entry", FIXTURE["slate_estimates"], ids=lambda e: e["estimator"])
def test_slate_estimator_equals_obp(entry: dict) -> None:
    s = recipes.synthetic_slates(FIXTURE["recipe"]["slates"]["seed"])
    common = (s["slate_id"], s["reward"], s["position"])
    if entry["estimator"] == "slate_standard_ips":
        ours = ope.slate_standard_ips(*common, s["pscore"], s["evaluation_policy_pscore"])
    elif entry["estimator"] == "slate_independent_ips":
        ours = ope.slate_independent_ips(*common, s["pscore_item_position"], s["evaluation_policy_pscore_item_position"])
    else:
        ours = ope.slate_rips(*common, s["pscore_cascade"], s["evaluation_policy_pscore_cascade"])
    assert isinstance(ours, float)
    assert ours == pytest.approx(entry["value"], rel=RELATIVE, abs=0.0)


def test_fixture_covers_every_campaign_policy_and_estimator() -> None:
    """A fixture regenerated with entries missing would let the parity tests pass on less than they claim."""
    seen = {(e["campaign"], e["policy"], e["estimator"], e["lambda_"]) for e in FIXTURE["estimates"]}
    for campaign in recipes.CAMPAIGNS:
        for policy in recipes.POLICIES:
            for name in ("ips", "snips", "dm", "dr", "sndr"):
                assert (campaign, policy, name, None) in seen
            for lam in recipes.SWITCH_LAMBDAS:
                assert (campaign, policy, "switch_dr", lam) in seen
    assert {e["estimator"] for e in FIXTURE["slate_estimates"]} == {"slate_standard_ips", "slate_independent_ips", "slate_rips"}
    assert FIXTURE["obp_version"] == "0.5.7"
    assert all(all(checks.values()) for checks in FIXTURE["rows_equal_obp"].values())


@needs_obd
def test_the_recipe_refits_the_stored_reward_model(campaigns: dict[str, dict]) -> None:
    """The stored coefficients are what the recipe's plain-numpy fit gives (under numpy 2 here, numpy 1 in obp's venv)."""
    stored = FIXTURE["recipe"]["reward_model"]["coefficients"]["men"]
    refit = recipes.fit_reward_model(campaigns["men"])
    for key, value in stored.items():
        np.testing.assert_allclose(refit[key], value, rtol=1e-9, atol=1e-12)


@needs_obd
def test_the_policies_differ_from_logging_so_the_estimators_are_exercised(campaigns: dict[str, dict]) -> None:
    """Parity on a target equal to the logging policy would hide weighting bugs: the random and model targets are not."""
    data = campaigns["men"]
    rows = np.arange(data["n_rounds"])
    for policy in ("random", "model"):
        w = data["action_dist"][policy][rows, data["action"], data["position"]] / data["pscore"]
        assert w.std() > 0.1
        assert (w > 2.0).any()  # SwitchDR's finite lambda_ switches rounds
