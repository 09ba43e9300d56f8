"""Benchmark: the phishing world alone — simulated page loads per second, against baselines
measured in the same run.

Run it as ``nice .venv/bin/python bench/world.py`` (``--visits N`` to change the day's size,
``--quick`` for 50k). It reads the committed world configuration with ``visits_per_day`` changed
(default 1,000,000) and the number of users scaled with it (the same page loads per user a day),
and times, for two simulated days:

* ``visits`` — ``PhishingWorld.visits(day)``: the day's page loads, users, times, contexts (every
  field of the phishing system's schema, as Arrow/numpy columns), decision ids; day 1 includes
  the overnight evolution (site churn, popularity drift, user churn, campaign starts and
  adaptations);
* ``observe`` — handing back one decision per load (allow/warn/block from a vectorized stand-in
  rule over the contexts, so that every outcome path runs; no Runtime: world time only) and
  drawing the outcomes;
* ``due`` — delivering the queue (everything due within 30 days after the day).

Baselines (same machine, same run):

* ``generate`` — ``examples.phishing.data.generate(N)``, the static generator of the same
  context fields (no users over time, no outcomes);
* ``raw`` — the least any world must do: numpy draws of N catalog rows and N users, the time of
  day and its sort, and the same column takes (strings through Arrow ``take``).

The feed world (``closedloop.world.feed.FeedWorld``, the committed ``feed.toml`` with
``sessions_per_day`` changed — default 1,000,000, ``--feed-sessions N`` — and its users and
items scaled with it) is timed for two days beside it:

* ``day`` — ``FeedWorld.day(d)``: overnight drift, new users, surges and the day's items; the
  sessions, their times, the retrieval of ≤ 20 candidates each, their observable fields and the
  truth (every candidate's attraction);
* ``score`` — ``true_value`` of a stand-in greedy policy's slates (the top 5 by observed ctr,
  vectorized, no Runtime; computed outside the timing) and ``feedback`` (the clicks drawn, the
  items' counters updated);
* ``contexts`` — the Arrow requests and candidates ``Runtime.decide_batch`` would take;

against ``raw``, measured in the same run: numpy draws of 20 random catalogue items per session
and the least truth a vectorized world must compute for them (one gather of the item's terms, one
of the user's interest, a sigmoid). ``feed_sessions_per_s`` counts day + score.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/

from closedloop.world import PhishingWorld, WorldConfig  # noqa: E402
from closedloop.world.feed import FeedWorld  # noqa: E402
from closedloop.world.feed_config import FeedConfig  # noqa: E402


def stand_in_actions(ctx: dict[str, Any]) -> np.ndarray:
    """A cheap vectorized policy over the contexts (the world does not care who decides)."""
    young = np.asarray(ctx["domain_age_days"]) < 30
    pw = np.asarray(ctx["has_password_field"])
    brand = ctx["page_brand"]
    off_brand = np.asarray(pc.and_(pc.greater(pc.utf8_length(brand), 0),
                                   pc.invert(pc.match_substring(ctx["domain"], "paypal"))), dtype=bool)
    unranked = np.asarray(ctx["popularity_rank"]) == 0
    score = 0.45 * young + 0.3 * (pw & unranked) + 0.3 * off_brand + 0.1 * ~np.asarray(ctx["https"])
    return np.where(score >= 0.7, "block", np.where(score >= 0.45, "warn", "allow"))


def raw_baseline(world: PhishingWorld, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    cat, users = world.catalog, world.users
    t0 = time.perf_counter()
    page = rng.integers(0, cat.n, size=n)
    user = rng.integers(0, users.n, size=n)
    ts = (rng.random(n) * 86_400e9).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    page, user = page[order], user[order]
    take = pa.array(page)
    cols = {k: cat.arrow(k).take(take) for k in ("url", "domain", "page_brand")}
    cols["user_id"] = users.ids.take(pa.array(user))
    for k in ("age0", "num_forms", "has_password_field", "num_external_links", "num_links",
              "num_external_resources", "num_resources", "https", "popularity_rank"):
        cols[k] = cat.cols[k][page]
    cols["browser"] = users.browser[user]
    cols["country"] = users.country[user]
    return time.perf_counter() - t0


def feed_raw(world: FeedWorld, n: int, seed: int) -> float:
    """The least a vectorized feed world does per day: 20 items per session and their attraction."""
    rng = np.random.default_rng(seed)
    n_items, n_users, c = len(world.quality), len(world.activity), world.n_categories
    t0 = time.perf_counter()
    items = rng.integers(0, n_items, size=(n, 20), dtype=np.int32)
    users = rng.integers(0, n_users, size=n)
    z = world.quality.astype(np.float32)[items]
    z += world.interest.astype(np.float32).ravel()[(users * c)[:, None] + world.item_category[items]]
    p = 1.0 / (1.0 + np.exp(-z))
    assert p.shape == (n, 20)
    return time.perf_counter() - t0


def feed_case(n: int, seed: int, days: int) -> dict[str, Any]:
    """Time the feed world for ``days`` days of ``n`` sessions (module doc); print and return the figures."""
    base = FeedConfig.load()
    f = n / base.sessions_per_day
    cfg = FeedConfig.load(overrides={
        "world": {"sessions_per_day": n},
        "users": {"count": max(1000, round(base.users_count * f)), "new_per_day": round(base.users_new_per_day * f)},
        "items": {"per_day": max(100, round(base.items_per_day * f))},
    })
    t0 = time.perf_counter()
    world = FeedWorld(cfg, seed=seed)
    t_init = time.perf_counter() - t0
    out = []
    for d in range(days):
        t0 = time.perf_counter()
        s = world.day(d)
        t_day = time.perf_counter() - t0
        top = np.argsort(-s.item_ctr, axis=1, kind="stable")[:, :5]  # the policy (not the world's time)
        top = np.where(np.take_along_axis(s.cand, top, axis=1) >= 0, top, -1)
        t0 = time.perf_counter()
        value = world.true_value(s, top)
        clicks = world.feedback(s, top, d)
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        req, cand = s.requests(), s.candidates()
        t_ctx = time.perf_counter() - t0
        out.append({"day": d, "sessions": s.n, "candidates": cand.num_rows, "clicks": len(clicks),
                    "farm_clicks": int(clicks.farm.sum()), "true_value": round(value, 4), "day_s": round(t_day, 4),
                    "score_s": round(t_score, 4), "contexts_s": round(t_ctx, 4),
                    "sessions_per_s": round(s.n / (t_day + t_score))})
        print(f"feed day {d}: {s.n:,} sessions, {cand.num_rows:,} candidates ({cand.num_rows / s.n:.1f} each), "
              f"{len(clicks):,} clicks ({out[-1]['farm_clicks']:,} the farm's), true value {value:.3f} — day {t_day:.3f} s, "
              f"score {t_score:.3f} s, contexts {t_ctx:.3f} s → {s.n / (t_day + t_score):,.0f} sessions/s")
        del req, cand, s
    import gc

    gc.collect()
    t_raw = min(feed_raw(world, n, seed + k) for k in range(3))
    per_day = sum(x["day_s"] + x["score_s"] for x in out) / len(out)
    ctx = sum(x["contexts_s"] for x in out) / len(out)
    print(f"feed world per day (mean of {len(out)}): {per_day:.3f} s = {n / per_day:,.0f} sessions/s "
          f"({n / (per_day + ctx):,.0f} with the Arrow contexts); raw draws + attraction {t_raw:.3f} s: "
          f"{per_day / t_raw:.1f}× the raw lower bound")
    return {"feed_sessions_per_day": n, "feed_users": cfg.users_count, "feed_setup_s": round(t_init, 3), "feed_days": out,
            "feed_s_per_day": round(per_day, 4), "feed_sessions_per_s": round(n / per_day),
            "feed_sessions_per_s_with_contexts": round(n / (per_day + ctx)), "feed_raw_s": round(t_raw, 4),
            "feed_ratio_vs_raw": round(per_day / t_raw, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50,000 visits")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--feed-sessions", type=int, default=1_000_000, help="the feed world's sessions per day")
    ap.add_argument("--feed-only", action="store_true", help="time the feed world alone")
    args = ap.parse_args(argv)
    n = 50_000 if args.quick else args.visits
    feed = feed_case(50_000 if args.quick else args.feed_sessions, args.seed, args.days)
    if args.feed_only:
        print(json.dumps({"bench": "world", **feed}))
        return 0

    base = WorldConfig.load()
    # as many page loads per user as the committed configuration (more loads: more users)
    users = max(1000, round(base.users.count * n / base.world.visits_per_day))
    cfg = WorldConfig.load(overrides={"world": {"visits_per_day": n}, "users": {"count": users}})
    t0 = time.perf_counter()
    world = PhishingWorld(cfg, seed=args.seed)
    t_init = time.perf_counter() - t0
    print(f"world: {n:,} visits/day, {cfg.users.count:,} users, {world.catalog.n:,} pages, "
          f"{world.campaigns.n} campaigns; set-up {t_init:.2f} s")

    days = []
    for d in range(args.days):
        t0 = time.perf_counter()
        v = world.visits(d)
        t_vis = time.perf_counter() - t0
        acts = stand_in_actions(v.contexts)
        t0 = time.perf_counter()
        world.observe(v, acts)
        t_obs = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = world.due(world.day_start_ns(d + 31))
        t_due = time.perf_counter() - t0
        m = world.measure(d)
        total = t_vis + t_obs + t_due
        days.append({"day": d, "visits": m["visits"], "decided": len(v), "outcomes": out.num_rows,
                     "visits_s": round(t_vis, 4), "observe_s": round(t_obs, 4), "due_s": round(t_due, 4),
                     "total_s": round(total, 4), "visits_per_s": round(m["visits"] / total)})
        a = {k: int(np.count_nonzero(acts == k)) for k in ("allow", "warn", "block")}
        print(f"day {d}: {m['visits']:,} visits ({len(v):,} decided: {a}), {out.num_rows:,} outcomes — "
              f"visits {t_vis:.3f} s, observe {t_obs:.3f} s, due {t_due:.3f} s → {m['visits'] / total:,.0f} visits/s")

    import gc

    from examples.phishing.data import generate

    gc.collect()
    t0 = time.perf_counter()
    cols, _ = generate(n, seed=args.seed)
    t_gen = time.perf_counter() - t0
    del cols
    gc.collect()
    t_raw = min(raw_baseline(world, n, args.seed + k) for k in range(3))
    world_s = sum(x["total_s"] for x in days) / len(days)
    vps = n / world_s
    print(f"baseline generate(): {t_gen:.2f} s ({n / t_gen:,.0f} rows/s); raw draws + takes: {t_raw:.3f} s")
    print(f"world per day (mean of {len(days)}): {world_s:.3f} s = {vps:,.0f} visits/s; "
          f"{t_gen / world_s:.1f}× faster than generate(), {world_s / t_raw:.1f}× the raw lower bound")
    print(json.dumps({
        "bench": "world", "visits_per_day": n, "users": cfg.users.count, "pages": world.catalog.n,
        "setup_s": round(t_init, 3), "days": days, "world_s_per_day": round(world_s, 4),
        "visits_per_s": round(vps), "generate_s": round(t_gen, 3), "speedup_vs_generate": round(t_gen / world_s, 2),
        "raw_s": round(t_raw, 4), "ratio_vs_raw": round(world_s / t_raw, 2), **feed,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
