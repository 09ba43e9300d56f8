"""The Open Bandit Dataset's men's campaign as a declared system: a widget shows 3 of 34 items.

The sample (``../shared/data/obd/random/men`` from the repository root; README there) logs one row
per shown (impression, position) under a uniform-random policy: ``item_id`` (0..33), ``position``
(1..3), ``click`` (the reward) and ``propensity_score`` (exactly 1/34), with the user's hashed
features ``user_feature_0..3`` and affinities ``user-item_affinity_0..33`` (imported as
``user_item_affinity_0..33``: a column name's '-' becomes '_'). ``item_context.csv`` holds each
item's features. The file imports as it is::

    closedloop dataset import men.csv --system examples.obd.system:men --action item_id \\
        --position position --reward click --propensity propensity_score --time timestamp \\
        --candidates item_context.csv

or ``import_dataset(path, men, action="item_id", position="position", reward="click",
propensity="propensity_score", time="timestamp", candidates=item_context)``: 10,000 rows, one per
(decision, slot), each weighing 34 (1 / propensity). The sample has no impression id and no user
id: each row is its own decision and unit (the row index stands in, as the manifest records).
"""

from __future__ import annotations

from datetime import timedelta

from closedloop import F, Float, Int, Ranking, Reward, RewardPolicy, Str, System

#: Items of the men's campaign.
N_ITEMS = 34
#: Slots the widget shows.
SLOTS = 3

request = [
    Str("user_id", default="", description="the unit (the sample has none: the row index stands in)"),
    *[Str(f"user_feature_{i}", default="", description="hashed user feature") for i in range(4)],
    *[Float(f"user_item_affinity_{j}", default=0.0, description=f"the user's affinity to item {j}") for j in range(N_ITEMS)],
]

candidates = [
    Int("item_id", ge=0, le=N_ITEMS - 1),
    Float("item_feature_0", default=0.0, description="numeric item feature"),
    *[Str(f"item_feature_{i}", default="", description="hashed item feature") for i in (1, 2, 3)],
]

affinity_total = F.col("user_item_affinity_0")
for _j in range(1, N_ITEMS):
    affinity_total = affinity_total + F.col(f"user_item_affinity_{_j}")

features = {
    "item_feature_0": F.col("item_feature_0"),
    "affinity_total": affinity_total,
    "item_id": F.col("item_id"),
}

men = System(
    "obd-men",
    description="Open Bandit Dataset, men's campaign: show 3 of 34 items; a click per slot is the reward.",
    context=request,
    candidates=candidates,
    candidate_id="item_id",
    unit="user_id",
    features=features,
    experience=Ranking("click", k=SLOTS),
    rewards=RewardPolicy([Reward("click", "any")], window=timedelta(hours=1), per="slot", default=0.0),
)
