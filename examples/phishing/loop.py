"""How the phishing system learns over time: its :class:`~closedloop.orchestration.LoopPlan`.

Run it with ``closedloop loop run --plan examples.phishing.loop:plan [--once]`` (an admin
credential is needed: ``closedloop token add me --role admin``), and see where it stands with
``closedloop loop status --plan examples.phishing.loop:plan``. A simulation driver builds a
:class:`~closedloop.orchestration.Cycle` from the same plan with a simulated clock.
"""

from __future__ import annotations

from datetime import timedelta

from closedloop.orchestration import AbusePolicy, DriftMonitor, LoopPlan, MistakeSpikes, Rollout

from .heuristic import heuristic_intelligence
from .system import phishing

__all__ = ["plan"]

plan = LoopPlan(
    phishing,
    # the hand-written baseline: the first production, and the bar every model must clear
    heuristic=heuristic_intelligence(),
    model="lightgbm",
    params={"num_leaves": 15, "num_boost_round": 100, "min_data_in_leaf": 20},
    train_window=timedelta(days=14),
    retrain_every=timedelta(days=1),
    # a candidate is a shadow for a day, then serves 20% of users for a day under the guard
    rollout=Rollout(shadow_for=timedelta(days=1), flight_share=0.2, flight_for=timedelta(days=1)),
    # campaigns change their kits: feature and score drift ask for an early retrain
    drift=DriftMonitor(current=timedelta(days=1), reference=timedelta(days=7), feature_threshold=0.25,
                       score_threshold=0.25),
    # a sudden rise in reported phishing or in reported false blocks asks for one too
    spikes=MistakeSpikes(["reported_phish_per_1k", "reported_false_block_per_1k"], threshold=1.0),
    # reporters who contradict the analysts are down-weighted or quarantined
    abuse=AbusePolicy(expected_disagreement=0.1, downweight_above=0.3, quarantine_above=0.5, min_count=20),
    rate_settle=timedelta(days=2),
)
