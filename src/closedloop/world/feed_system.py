"""The feed world's ranking system and its starting heuristic (docs/world.md, "The feed world").

The system observes what a feed service would: the request's ``user_id``, ``hour``,
``user_age_days`` (0 on a new user's first day) and the two topics the user declared at sign-up
(``topic_1``, ``topic_2``; never updated, so they go stale as interests drift); each candidate's
``item_id``, ``category``, ``age_hours``, ``item_ctr`` (clicks over impressions counted by the
platform so far — the farm's clicks included) and ``is_new``. Nothing of the world's truth
(interests, quality, surges, which units are the farm's) is a field.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from closedloop.context import features as F
from closedloop.context.fields import Bool, Float, Int, Str
from closedloop.experience.experiences import Ranking
from closedloop.system.rewards import Reward, RewardPolicy
from closedloop.system.spec import System

__all__ = ["feed_system", "heuristic"]


def feed_system(categories: tuple[str, ...], *, k: int, explore: Any, name: str, window: timedelta, split: Any = None) -> System:
    """The ranking system over a feed world's sessions: rewards ``click`` per slot (0 when not clicked)."""
    cat, age = F.col("category"), F.col("age_hours")
    feats: dict[str, Any] = {
        "ctr": F.col("item_ctr"), "age_log": F.log1p(age), "fresh": F.const(24.0).div(age + 24.0), "is_new": F.col("is_new"),
        "topic_1": cat.eq(F.col("topic_1")), "topic_2": cat.eq(F.col("topic_2")),
        "new_user_topic": cat.eq(F.col("topic_1")) & (F.col("user_age_days") < 1),
    }
    feats.update({f"cat_{c}": cat.eq(c) for c in categories})
    return System(
        name,
        description="Rank a news feed: show k of the session's retrieved candidates.",
        context=[Str("user_id", max_length=64), Int("hour", ge=0, le=23), Int("user_age_days", ge=0),
                 Str("topic_1", choices=categories), Str("topic_2", choices=categories)],
        candidates=[Str("item_id", max_length=64), Str("category", choices=categories), Float("age_hours", ge=0),
                    Float("item_ctr", ge=0, le=1), Bool("is_new", default=False)],
        candidate_id="item_id", unit="user_id", features=feats,
        experience=Ranking("score", k=k, explore=explore),
        rewards=RewardPolicy([Reward("click")], window=window, per="slot", default=0.0), split=split,
    )


def heuristic() -> Any:
    """What a team starts with: the observed ctr, freshness and the declared topics."""
    from closedloop.intelligence.linear import LogisticModel

    return LogisticModel({"ctr": 8.0, "fresh": 1.0, "topic_1": 0.6, "topic_2": 0.4}, intercept=-3.0, output="score")
