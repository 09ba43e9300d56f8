"""A seeded synthetic bandit world whose truth is known: users of a few segments ask for a ranking
of N candidate items and click each shown item with a probability the world knows.

It exists to prove what the loop learns for systems that choose or rank — doubly robust policy
learning, exploration, an apprentice of a heuristic, the off-policy gate — against the **true
value** of a policy, which no estimate can fake (docs/world.md, "The bandit world")::

    world = BanditWorld(seed=3)
    system = world.system(k=1, explore=Softmax(0.1))
    ctxs = world.contexts(5000, seed=1)
    world.log(Runtime(system, world.heuristic_bundle(system), telemetry=tel, clock=clock), ctxs, tel, t0_ns=…)
    world.true_value(system, candidate_bundle, ctxs)   # expected clicks per decision

**Clicks.** A request carries ``user_id``, ``segment`` (one of :data:`SEGMENTS`) and ``hour``; a
candidate ``item_id``, ``category`` (one of :data:`CATEGORIES`), ``quality`` in [0, 1] and
``age_hours``. Shown in slot j (1-based), a candidate is clicked with probability
``examination[j − 1] · sigmoid(−2.2 + 1.6·quality + 2.2·[quality > 0.75] + affinity[segment, category] − 0.04·age_hours)``.
``affinity`` is drawn from the seed: each segment likes some categories and dislikes others.

**Systems.** :meth:`BanditWorld.system` declares the matching ranking system, with rewards
(``click``, per slot, 0 when not clicked). ``features="full"`` reads everything the truth uses
but the step at quality 0.75 (a linear reward model is misspecified there);
``features="misspecified"`` also leaves out the segment × category affinity, so a reward model
fitted where the logger showed items is biased elsewhere — where doubly robust learning corrects it.

**Truth stays here.** :meth:`click_probability` and :meth:`true_value` are the only ways to read it; the
outcomes :meth:`log` reports carry only the click.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from closedloop.context import features as F
from closedloop.context.fields import Float, Int, Str
from closedloop.errors import SpecError
from closedloop.experience.experiences import Ranking
from closedloop.system.rewards import Reward, RewardPolicy
from closedloop.system.spec import System

__all__ = ["CATEGORIES", "SEGMENTS", "BanditWorld"]

SEGMENTS = ("north", "south", "east", "west")
CATEGORIES = ("news", "sports", "music", "games", "food", "travel")

_EXAMINATION = (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.13, 0.1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class BanditWorld:
    """A seeded ranking world (module doc). ``n_candidates`` per request, ``n_users`` units;
    ``seed`` draws the segments' affinities."""

    def __init__(self, *, n_candidates: int = 10, n_users: int = 500, seed: int = 0) -> None:
        for name, v, lo in (("n_candidates", n_candidates, 2), ("n_users", n_users, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SpecError(f"The '{name}' parameter of BanditWorld must be an int ≥ {lo}. Got {v!r} instead.")
        self.n_candidates, self.n_users, self.seed = n_candidates, n_users, seed
        rng = np.random.default_rng([seed, 0xB4D])
        self.affinity = rng.normal(0.0, 1.1, size=(len(SEGMENTS), len(CATEGORIES)))
        self.user_segment = rng.integers(0, len(SEGMENTS), size=n_users)

    # -- the system ----------------------------------------------------------------------------------
    def system(self, *, k: int = 1, explore: Any = None, features: str = "full", name: str = "bandit") -> System:
        """The ranking system of this world (module doc, "Systems")."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(_EXAMINATION):
            raise SpecError(f"The 'k' parameter of BanditWorld.system must be an int in [1, {len(_EXAMINATION)}]. Got {k!r} instead.")
        if features not in ("full", "misspecified"):
            raise SpecError(f"The 'features' parameter of BanditWorld.system must be 'full' or 'misspecified'. "
                            f"Got {features!r} instead.")
        feats: dict[str, Any] = {"quality": F.col("quality"), "age": F.col("age_hours")}
        feats.update({f"cat_{c}": F.col("category").eq(c) for c in CATEGORIES})
        if features == "full":
            for s in SEGMENTS:
                for c in CATEGORIES:
                    feats[f"{s}_{c}"] = F.col("segment").eq(s) & F.col("category").eq(c)
        return System(
            name,
            context=[Str("user_id", max_length=64), Str("segment", choices=SEGMENTS), Int("hour", ge=0, le=23)],
            candidates=[Str("item_id", max_length=64), Str("category", choices=CATEGORIES),
                        Float("quality", ge=0, le=1), Float("age_hours", ge=0)],
            candidate_id="item_id", unit="user_id", features=feats,
            experience=Ranking("score", k=k, explore=explore),
            rewards=RewardPolicy([Reward("click")], window=timedelta(minutes=30), per="slot", default=0.0),
        )

    def heuristic(self) -> Any:
        """A popularity heuristic: the item's quality alone (what a team starts with)."""
        from closedloop.intelligence.linear import LogisticModel

        return LogisticModel({"quality": 3.0}, intercept=-2.0, output="score")

    # -- requests ------------------------------------------------------------------------------------
    def contexts(self, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` requests with their candidates, drawn from ``seed``."""
        rng = np.random.default_rng([self.seed, seed, 1])
        users = rng.integers(0, self.n_users, size=n)
        c = self.n_candidates
        quality = rng.beta(2.0, 2.5, size=(n, c))
        age = rng.exponential(12.0, size=(n, c))
        cats = rng.integers(0, len(CATEGORIES), size=(n, c))
        hours = rng.integers(0, 24, size=n)
        out = []
        for i in range(n):
            out.append({
                "user_id": f"u{int(users[i])}", "segment": SEGMENTS[int(self.user_segment[users[i]])], "hour": int(hours[i]),
                "candidates": [{"item_id": f"r{seed}-{i}-{j}", "category": CATEGORIES[int(cats[i, j])],
                                "quality": float(quality[i, j]), "age_hours": float(age[i, j])} for j in range(c)],
            })
        return out

    # -- the truth -----------------------------------------------------------------------------------
    def click_probability(self, context: dict[str, Any]) -> np.ndarray:
        """Each candidate's click probability when shown in the first slot."""
        seg = SEGMENTS.index(context["segment"])
        cands = context["candidates"]
        q = np.array([x["quality"] for x in cands])
        age = np.array([x["age_hours"] for x in cands])
        aff = np.array([self.affinity[seg, CATEGORIES.index(x["category"])] for x in cands])
        return _sigmoid(-2.2 + 1.6 * q + 2.2 * (q > 0.75) + aff - 0.04 * age)

    def expected_clicks(self, contexts: Sequence[dict[str, Any]], rankings: Sequence[Sequence[str]]) -> np.ndarray:
        """The expected clicks of each request's ranking (candidate ids in slot order)."""
        out = np.zeros(len(contexts))
        for i, (ctx, ranking) in enumerate(zip(contexts, rankings, strict=True)):
            p = self.click_probability(ctx)
            where = {x["item_id"]: j for j, x in enumerate(ctx["candidates"])}
            out[i] = sum(_EXAMINATION[s] * p[where[cid]] for s, cid in enumerate(ranking))
        return out

    def true_value(self, system: System, bundle: Any, contexts: Sequence[dict[str, Any]], *, seed: int = 0) -> float:
        """The bundle's expected clicks per decision on ``contexts``: exact for a greedy ranking;
        with exploration, the exact expectation over clicks of the rankings it draws (decision ids
        from ``seed``)."""
        from closedloop.runtime.runtime import Runtime

        rt = Runtime(system, bundle)
        rankings = [rt.decide(c, decision_id=f"{seed:08x}{i:024x}", timestamp_ns=1).ranking for i, c in enumerate(contexts)]
        return float(self.expected_clicks(contexts, rankings).mean())

    # -- feedback ------------------------------------------------------------------------------------
    def log(self, runtime: Any, contexts: Sequence[dict[str, Any]], telemetry: Any, *, t0_ns: int, seed: int,
            spacing_ns: int = 10**9) -> list[Any]:
        """Decide each request through ``runtime`` (which logs to ``telemetry``) at ``t0_ns`` +
        i·``spacing_ns``, with decision ids drawn from ``seed`` (the same draws every run), and
        report a ``click`` outcome, a few seconds later, for each shown item the world's draw
        clicks. Returns the decisions."""
        from closedloop.runtime.ids import DecisionIds

        rng = np.random.default_rng([self.seed, seed, 2])
        ids = DecisionIds(seed).next_ids(len(contexts), int(t0_ns)).to_pylist()  # seeded: the same log every run
        decided = []
        for i, ctx in enumerate(contexts):
            d = runtime.decide(ctx, decision_id=ids[i], timestamp_ns=t0_ns + i * spacing_ns)
            p = self.click_probability(ctx)
            where = {x["item_id"]: j for j, x in enumerate(ctx["candidates"])}
            for s, cid in enumerate(d.ranking):
                if rng.random() < _EXAMINATION[s] * p[where[cid]]:
                    telemetry.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 5 * 10**9, source="app",
                                          candidate=cid)
            decided.append(d)
        return decided
