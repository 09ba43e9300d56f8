"""Benchmark: apprentice mode's cost — training an apprentice and measuring agreement — against the
closest thing the library already did, measured in the same run.

Run it as ``.venv/bin/python bench/apprentice.py`` (``--quick`` for a small run, ``--decisions N``).

A ``BanditWorld`` (10 candidates per request) whose quality heuristic, exploring with
``Softmax(0.05)``, decides ``N`` requests (choosing 1 of 10) through a Runtime with Telemetry —
the apprentice of it as a shadow — and the reward dataset is built from the records (reported, not
compared). Then, best of ``--repeat``:

* ``train_apprentice`` (every candidate of every decision: 10 rows per decision) against ``train``
  on the same dataset (the reward model: one row per shown slot) — the ratio, and the ratio per row fitted;
* ``log_agreement`` (read the candidate sets, decide them again, measure) against
  ``Runtime.decide_batch`` on the candidate sets already read — the cost of the measure around the decisions;
* ``shadow_agreement`` on the telemetry decision records against the guard's
  ``shadow_disagreement`` on the same records (both decode every shadow's JSON).

Correctness: the apprentice's held-out agreement must equal ``log_agreement``'s on the same side,
and ``shadow_agreement`` must count every decision. The last line printed is one JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import best_of  # bench/ is the script's own folder

from closedloop import Bundle, Runtime
from closedloop.datasets.candidate_sets import read_candidate_sets
from closedloop.datasets.slots import build_reward_dataset
from closedloop.evaluation.agreement import SHADOW_COLUMNS, log_agreement, shadow_agreement
from closedloop.experience.exploration import Softmax
from closedloop.registry.guard import shadow_disagreement
from closedloop.runtime.clock import ManualClock
from closedloop.runtime.ids import DecisionIds
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.training import train
from closedloop.training.apprentice import train_apprentice
from closedloop.world.bandit import BanditWorld

T0 = 1_700_000_000 * 10**9
S = 10**9


def _log(world: BanditWorld, system: Any, bundle: Bundle, shadow: Bundle | None, n: int, home: Path) -> tuple[Any, Any]:
    """``n`` requests decided by ``bundle`` (``shadow`` beside it) with telemetry → (dataset manifest, decision records)."""
    clock = ManualClock(T0)
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns)
    rt = Runtime(system, bundle, telemetry=tel, clock=clock, ids=DecisionIds(seed=1))
    if shadow is not None:
        rt.load(bundle, shadows=[shadow])
    world.log(rt, world.contexts(n, seed=1), tel, t0_ns=T0, seed=1)
    tel.close()
    store = TelemetryStore(home)
    store.compact()
    m = build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                             since_ns=T0, until_ns=T0 + 10**8 * S, cutoff_ns=T0 + 10**9 * S, out=home / "ds")
    return m, store.read("decisions", list(SHADOW_COLUMNS))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--decisions", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    n = a.decisions or (2000 if a.quick else 20000)
    world = BanditWorld(seed=3)
    system = world.system(k=1, explore=Softmax(0.05))
    heuristic = Bundle.build(system, world.heuristic())
    out: dict[str, Any] = {"decisions": n, "candidates": world.n_candidates}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        m0, _ = _log(world, system, heuristic, None, n, Path(tmp) / "first")
        out["log_and_build_s"] = time.perf_counter() - t
        out["train_s"], rewarded = best_of(lambda: train(system, m0.path), a.repeat)
        out["train_apprentice_s"], run = best_of(lambda: train_apprentice(system, m0.path), a.repeat)
        rows = run.metrics["lineage"]["imitation_rows"]["rows"]
        out["apprentice_vs_train"] = out["train_apprentice_s"] / out["train_s"]
        out["apprentice_vs_train_per_row"] = (out["train_apprentice_s"] / rows) / (out["train_s"] / rewarded.metrics["train"]["n"])
        held = log_agreement(system, run.bundle, m0.path)
        if (held["agreement"], held["n"]) != (run.metrics["apprentice"]["agreement"], run.metrics["apprentice"]["n"]):
            print("MISMATCH: the apprentice's held-out agreement is not log_agreement's", held, run.metrics["apprentice"])
            return 1
        out["log_agreement_s"], every = best_of(lambda: log_agreement(system, run.bundle, m0.path, split="all"), a.repeat)
        sets = read_candidate_sets(system, m0.path)
        rt = Runtime(system, run.bundle)
        out["decide_batch_s"], _ = best_of(lambda: rt.decide_batch(sets.requests, candidates=sets.candidates,
                                                                   decision_ids=sets.decision_ids,
                                                                   timestamps_ns=sets.timestamps_ns.tolist()), a.repeat)
        out["log_agreement_vs_decide_batch"] = out["log_agreement_s"] / out["decide_batch_s"]
        shadow = run.bundle
        _, decisions = _log(world, system, heuristic, shadow, n, Path(tmp) / "live")
        out["shadow_agreement_s"], live = best_of(lambda: shadow_agreement(system, decisions, shadow.version), a.repeat)
        out["shadow_disagreement_s"], _ = best_of(lambda: shadow_disagreement(decisions, system.name, 0, 2**62), a.repeat)
        out["shadow_vs_guard"] = out["shadow_agreement_s"] / out["shadow_disagreement_s"]
        if live["n"] != decisions.num_rows:
            print("MISMATCH: shadow_agreement did not count every decision", live["n"], decisions.num_rows)
            return 1
        out.update({"held_out_agreement": held["agreement"], "log_agreement_all": every["agreement"],
                    "shadow_agreement": live["agreement"], "imitation_rows": rows})
    for k, v in out.items():
        print(f"{k:32s} {v:.4g}" if isinstance(v, float) else f"{k:32s} {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
