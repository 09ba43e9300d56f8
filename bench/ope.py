"""closedloop.evaluation.ope's six point estimators against obp 0.5.7's, on the same inputs.

    .venv/bin/python bench/ope.py               # obp measured in the same run when /tmp/obp-venv has it
    .venv/bin/python bench/ope.py --obp-venv DIR

The inputs are the parity fixture's (bench/ope_recipes.py: the Open Bandit Dataset sample's three campaigns, target
policy "model", the reward model's predictions given). One figure = ips, snips, dm, dr, sndr and switch_dr (lambda_=inf)
called one after the other, each validating its inputs as obp's estimate_policy_value does; best of 5 per campaign (and
closedloop's measured both before and after obp's run, the better kept, as the machine's load drifts). The target's
figure: the six together, one ``ope.point_values`` call (the inputs checked once, the target and the reward model read
once for all six; no interval, no bootstrap — as obp's six calls make none). ``targets_met`` is that figure's verdict;
the six separate calls are printed beside it (each re-checks and re-reads the (n, actions, positions) arrays).
obp's figure is measured in the same run by ``bench/obp_fixtures.py --timing-only`` in obp's own venv (bench/obp_env.sh)
when that venv exists; otherwise the figure stored in tests/evaluation/fixtures/obp_0_5_7.json is used and the output
says so. Target: closedloop ≥ 10× faster than obp on every campaign. Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.evaluation import ope

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ope_recipes as recipes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "evaluation" / "fixtures" / "obp_0_5_7.json"
REPEATS = 5
TARGET = 10.0
NAMES = ("ips", "snips", "dm", "dr", "sndr", "switch_dr")


def six(data: dict, action_dist: np.ndarray) -> list[float]:
    """The six point estimators on one campaign, as bench/obp_fixtures.py calls obp's."""
    logged = {"reward": data["reward"], "action": data["action"], "pscore": data["pscore"], "action_dist": action_dist,
              "position": data["position"]}
    q = data["estimated_rewards_by_reg_model"]
    return [
        ope.ips(**logged),
        ope.snips(**logged),
        ope.dm(action_dist, q, position=data["position"]),
        ope.dr(**logged, estimated_rewards_by_reg_model=q),
        ope.sndr(**logged, estimated_rewards_by_reg_model=q),
        ope.switch_dr(**logged, estimated_rewards_by_reg_model=q, lambda_=np.inf),
    ]


def at_once(data: dict, action_dist: np.ndarray) -> list[float]:
    """The six point estimators together: one ``ope.point_values`` call (the inputs checked once, the
    target and the reward model read once for all six; no interval, no bootstrap) — the target's figure."""
    got = ope.point_values(data["reward"], data["action"], data["pscore"], action_dist, position=data["position"],
                           estimated_rewards_by_reg_model=data["estimated_rewards_by_reg_model"])
    return [got[name] for name in NAMES]


def time_closedloop(inputs: dict[str, dict], repeats: int, call: Any = None) -> dict[str, float]:
    seconds = {}
    for campaign, data in inputs.items():
        action_dist = data["action_dist"]["model"]
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            (call or six)(data, action_dist)
            best = min(best, time.perf_counter() - start)
        seconds[campaign] = best
    return seconds


def time_obp(venv: Path) -> tuple[dict, str]:
    """obp's timing: measured now in its venv if there is one, else the stored one."""
    python = venv / "bin" / "python"
    why = f"no obp venv at {venv}"
    if python.is_file():
        done = subprocess.run([str(python), str(REPO / "bench" / "obp_fixtures.py"), "--timing-only"], capture_output=True,
                              text=True, cwd=REPO)
        if done.returncode == 0:
            return json.loads(done.stdout.strip().splitlines()[-1]), f"measured in this run in {venv}"
        why = f"obp failed in {venv}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    stored = json.loads(FIXTURE.read_text())["timing"]
    return stored, f"stored ({why}): obp measured on {stored['measured_on']} with {stored['command']}"


def check_parity(inputs: dict[str, dict]) -> float:
    """The timed calls give obp's values (the fixture's), worst relative difference."""
    expected = {(e["campaign"], e["estimator"]): e["value"] for e in json.loads(FIXTURE.read_text())["estimates"]
                if e["policy"] == "model" and e["lambda_"] is None}
    worst = 0.0
    for campaign, data in inputs.items():
        for call in (six, at_once):
            for name, value in zip(NAMES, call(data, data["action_dist"]["model"]), strict=True):
                worst = max(worst, abs(value - expected[(campaign, name)]) / abs(expected[(campaign, name)]))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obp-venv", type=Path, default=Path("/tmp/obp-venv"))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    coefs = json.loads(FIXTURE.read_text())["recipe"]["reward_model"]["coefficients"]
    inputs = {c: recipes.campaign_inputs(c, coefs[c]) for c in recipes.CAMPAIGNS}
    worst = check_parity(inputs)
    before = time_closedloop(inputs, args.repeats), time_closedloop(inputs, args.repeats, at_once)
    obp, source = time_obp(args.obp_venv)
    after = time_closedloop(inputs, args.repeats), time_closedloop(inputs, args.repeats, at_once)  # either side of obp's run
    ours = {c: min(before[0][c], after[0][c]) for c in inputs}
    once = {c: min(before[1][c], after[1][c]) for c in inputs}
    print(f"six point estimators (ips, snips, dm, dr, sndr, switch_dr), target 'model', best of {args.repeats}")
    print(f"obp 0.5.7: {source}")
    ratios, once_ratios = {}, {}
    for campaign, data in inputs.items():
        theirs = obp["seconds"][campaign]
        ratios[campaign], once_ratios[campaign] = theirs / ours[campaign], theirs / once[campaign]
        print(f"  {campaign:6s} n={data['n_rounds']} actions={data['n_actions']:3d}  obp {theirs * 1e3:8.2f} ms  "
              f"closedloop six calls {ours[campaign] * 1e3:7.2f} ms ({ratios[campaign]:5.1f}x)  "
              f"six together (point_values) {once[campaign] * 1e3:7.2f} ms ({once_ratios[campaign]:5.1f}x)  target ≥ {TARGET:g}x")
    print(f"parity with the fixture (both ways): worst relative difference {worst:.1e}")
    print(json.dumps({"separate_calls_seconds": ours, "together_seconds": once, "obp_seconds": obp["seconds"], "obp_source": source,
                      "separate_calls_ratio": ratios, "together_ratio": once_ratios, "target_ratio": TARGET,
                      "targets_met": all(r >= TARGET for r in once_ratios.values()),
                      "parity_worst_relative": worst, "nproc": obp.get("nproc")}))
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
