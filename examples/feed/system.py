"""The feed system: a user opens the app, the feed shows 5 of the candidate items.

A request carries what is known about the user and the moment (``user_id``, ``country``,
``hour``); each candidate carries what is known about one item (``item_id``, ``category``,
``item_ctr``, ``age_hours``, ``is_new``). Features read both — the request's values are the same
for every candidate of a request. The intelligence scores each candidate (a click probability),
and the :class:`~closedloop.experience.experiences.Ranking` experience shows the top 5, drawing each slot
from a softmax over the remaining candidates (Plackett–Luce) so that every logged ranking has an
exact propensity.

Import it as ``examples.feed.system:feed``; :data:`model` is a hand-set logistic model over its
features (``closedloop.Bundle.build(feed, model)``).
"""

from __future__ import annotations

from datetime import timedelta

from closedloop import (
    Bool,
    F,
    Float,
    Goal,
    Int,
    LabelPolicy,
    LogisticModel,
    OutcomeRule,
    Str,
    System,
)
from closedloop.experience.experiences import Ranking
from closedloop.experience.exploration import Softmax

CATEGORIES = ("news", "sports", "local", "tech", "culture", "fun")

request = [
    Str("user_id", max_length=64, description="the experimental unit"),
    Str("country", default="", max_length=2),
    Int("hour", ge=0, le=23, description="local hour of the request"),
]

candidates = [
    Str("item_id", max_length=64),
    Str("category", choices=CATEGORIES),
    Float("item_ctr", ge=0, le=1, description="the item's smoothed click-through rate so far"),
    Float("age_hours", ge=0, description="hours since the item was published"),
    Bool("is_new", default=False, description="published too recently to have a reliable ctr"),
]

hour = F.col("hour")
category = F.col("category")
age = F.col("age_hours")

features = {
    "ctr": F.col("item_ctr"),
    "age_log": F.log1p(age),
    "fresh": F.const(24.0).div(age + 24.0),
    "is_new": F.col("is_new"),
    "news_in_morning": category.eq("news") & (hour < 10),
    "sports_in_evening": category.eq("sports") & (hour >= 18),
    "local_with_country": category.eq("local") & F.col("country").nonempty(),
    "fun_at_night": category.isin(["fun", "culture"]) & ((hour >= 22) | (hour < 6)),
    "new_and_fresh": F.col("is_new") & (age < 6),
}

feed = System(
    "feed",
    description="Rank news items: show 5 of the candidates, exploring with a softmax.",
    context=request,
    candidates=candidates,
    candidate_id="item_id",
    unit="user_id",
    features=features,
    experience=Ranking("score", k=5, explore=Softmax(0.5)),
    labels=("skipped", "clicked"),
    latency_budget_ms=20.0,
    label_policy=LabelPolicy(
        window=timedelta(minutes=30),
        rules=[OutcomeRule("clicked", label="clicked", aggregate="any")],
        default="skipped",
    ),
    goals=[
        Goal("ctr_at_5", "model", "ctr@5", 0.08, "at_least", "hourly"),
        Goal("sessions_with_click", "user", "share_of_sessions_with_a_click", 0.3, "at_least", "daily"),
    ],
    slices=["country"],
)

#: A hand-set click model: the item's ctr dominates; freshness and time-of-day fit add to it.
model = LogisticModel(
    {
        "ctr": 6.0,
        "age_log": -0.35,
        "fresh": 0.8,
        "is_new": 0.4,
        "news_in_morning": 0.7,
        "sports_in_evening": 0.6,
        "local_with_country": 0.3,
        "fun_at_night": 0.5,
        "new_and_fresh": 0.25,
    },
    intercept=-2.5,
    output="score",
)
