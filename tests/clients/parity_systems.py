"""The bundles the client runtime's parity test runs: the phishing example's (its trained model
and its heuristic) and a conformance system whose features use every operation of the expression
language, with one bundle per exportable intelligence kind, exploration and every guardrail kind."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from closedloop import (
    Action,
    AllowList,
    BlockList,
    Bool,
    Bundle,
    Calibrated,
    EpsilonGreedy,
    F,
    Float,
    FrequencyCap,
    HardLimit,
    Int,
    LightGBMModel,
    LinearModel,
    LogisticModel,
    LookupTable,
    Partitioned,
    Rule,
    ScoringRules,
    Stacking,
    Str,
    System,
    ThresholdRule,
    Thresholds,
    WeightedVote,
)
from closedloop.runtime.checks import generate_contexts

url = F.col("url")
FEATURES = {
    "f_log": F.log1p(F.col("x")),
    "f_sqrt": F.sqrt(F.col("y") + 999_000) / 1000,
    "f_ratio": F.col("n").div(F.col("m") - 3, on_zero=7.0).clip(-10.0, 10.0),
    "f_abs": F.abs_(F.col("x") - F.col("y") * 0.001),
    "f_where": F.where(F.col("flag"), F.col("x") * 2, -F.col("y") / 1000),
    "f_ip": url.lower().matches(r"^[a-z]+://\d{1,3}(\.\d{1,3}){3}"),
    "f_lure": url.matches(r"(login|secure|verify)\b"),
    "f_dot": url.matches(r"a.b|[^a-z0-9]{2,}|[]x]|\d{2,}$"),
    "f_dots": url.count("."),
    "f_len": url.length(),
    "f_at": url.contains("@"),
    "f_http": url.startswith("http"),
    "f_com": url.endswith(".com"),
    "f_brand": F.col("brand").nonempty() & ~url.lower().contains(F.col("brand").lower()),
    "f_kind": F.col("kind").isin(["b", "c"]),
    "f_kind_eq": F.col("kind").eq("a") | (F.col("n") > 10),
    "f_ne": F.col("unit").ne(F.col("brand")),
    "f_cmp": (F.col("x") >= 0) & (F.col("m") <= 500),
    "f_neg": -F.col("x"),
    "f_min": F.minimum(F.col("x"), F.col("y") / 1e5),
}


def conformance_system() -> System:
    return System(
        "conf",
        context=[
            Str("unit", max_length=12),
            Str("url", max_length=200),
            Str("brand", default="", max_length=20),
            Str("kind", choices=("a", "b", "c"), default="a"),
            Float("x", ge=-5, le=5),
            Float("y"),
            Int("n", ge=0, le=50, default=0),
            Int("m"),
            Bool("flag", default=False),
        ],
        schema_version="3",
        unit="unit",
        features=FEATURES,
        actions=[Action("allow", "none"), Action("warn", "prompt", choices=("back", "go")), Action("block")],
        experience=Thresholds("score", {"block": 0.8, "warn": 0.5}, otherwise="allow",
                              explore=EpsilonGreedy(0.3, low=0.3, high=0.9, to=("allow", "warn"))),
        labels=("no", "yes"),
        guardrails=[
            HardLimit("kind_c", F.col("kind").eq("c"), {"block": "warn"}, reason="never block kind c"),
            FrequencyCap("warn", 2, timedelta(hours=1), fallback="allow"),
        ],
    )


def conformance_contexts(system: System, n: int, seed: int) -> dict[str, list[Any]]:
    """``n`` valid contexts (the conformance suite's generator) with units from a small pool, so
    frequency caps fill up."""
    cols = generate_contexts(system.schema, n, seed)
    rng = np.random.default_rng(seed + 1)
    cols["unit"] = [f"u{int(i)}" for i in rng.integers(0, 300, size=n)]
    return cols


def _labels(system: System, cols: dict[str, list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    X = system.features.batch(system.schema.validate_batch(cols))
    names = system.features.index
    z = 2.0 * X[:, names["f_ip"]] + 1.5 * X[:, names["f_lure"]] + np.nan_to_num(X[:, names["f_where"]]) * 0.3
    y = (z + np.random.default_rng(7).normal(0, 1, size=z.shape[0]) > 1.0).astype(np.int64)
    return X, y


def conformance_bundles(system: System) -> dict[str, Bundle]:
    """One bundle per exportable kind (combinations nested), with allow and block lists."""
    import lightgbm

    cols = conformance_contexts(system, 3000, seed=11)
    X, y = _labels(system, cols)
    names = list(system.features.names)
    rng = np.random.default_rng(5)
    # f_log is NaN for most x (and f_sqrt for half the y): only f_sqrt feeds NaN scores in
    scale = 1.0 + np.nanstd(np.where(np.isfinite(X), X, np.nan), axis=0)  # weights of the order of 1/std: no saturation
    raw = (rng.normal(0, 0.5, size=len(names)) / scale).tolist()
    weights = {k: v for k, v in zip(names, raw, strict=True) if k != "f_log"}
    logistic = LogisticModel(weights, intercept=-0.2, output="score")
    rules = ScoringRules([Rule("f_ip", ">", 0.5, 0.4), Rule("f_lure", ">", 0.5, 0.3), Rule("f_len", ">=", 30, 0.2),
                          Rule("f_kind", "==", 1.0, 0.1), Rule("f_log", "<", 0.5, 0.15)], output="score")
    booster = lightgbm.train({"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1,
                              "seed": 1, "deterministic": True}, lightgbm.Dataset(X, y, feature_name=names), 25)
    tree = LightGBMModel.from_booster(booster, output="score")
    regression = lightgbm.train({"objective": "regression", "num_leaves": 7, "verbose": -1, "seed": 2, "deterministic": True},
                                lightgbm.Dataset(X, y.astype(float), feature_name=names), 10)
    lookup = LookupTable("brand", {"PayPal": 0.95, "bank": 0.7}, fallback=ThresholdRule("f_at", ">", 0.5, 0.85, 0.05, output="score"),
                         output="score")
    guards = [AllowList("trusted_brands", "brand", ["ß", "PayPal"]), BlockList("bad_urls", "url", ["http://", "login"])]
    intelligences = {
        "logistic": logistic,
        "lightgbm_isotonic": Calibrated(tree, "isotonic", x=[0.0, 0.2, 0.5, 0.9], y=[0.0, 0.3, 0.6, 1.0]),
        "stacking_platt": Calibrated(Stacking([logistic, rules], [1.5, -0.7], intercept=0.1, link="logistic", transform="logit",
                                              output="score"), "platt", a=1.3, b=-0.2),
        "partitioned_vote": Partitioned("kind", {"b": WeightedVote([lookup, LinearModel({"f_dots": 0.1, "f_abs": 0.02}, 0.1,
                                                                                        output="score")], [2.0, 1.0]),
                                                 "c": LightGBMModel.from_booster(regression, output="score")},
                                        default=rules, output="score"),
    }
    return {name: Bundle.build(system, intel, guardrails=guards if name != "logistic" else guards[:1])
            for name, intel in intelligences.items()}


def phishing_bundles() -> tuple[System, dict[str, Bundle]]:
    from examples.phishing.data import generate
    from examples.phishing.heuristic import heuristic_intelligence
    from examples.phishing.system import phishing

    from closedloop.training import train_logistic

    cols, y = generate(5000, seed=1)
    return phishing, {
        "phishing_model": Bundle.build(phishing, train_logistic(phishing, cols, y).model),
        "phishing_heuristic": Bundle.build(phishing, heuristic_intelligence()),
    }


def invalid_contexts(system: System, valid: list[dict[str, Any]], n: int, seed: int) -> list[Any]:
    """``n`` contexts that break one rule each (a required field left out or null, a wrong type, a
    bound, a length, a choice, a lone surrogate), made from valid ones."""
    rng = np.random.default_rng(seed)
    fields = system.schema.fields
    out: list[Any] = []
    for i in range(n):
        c = dict(valid[i % len(valid)])
        f = fields[int(rng.integers(0, len(fields)))]
        kind = int(rng.integers(0, 4))
        if isinstance(f, Str):
            bad: Any = [None, 7, "x" * (f.limit + 1), "a\ud800b"][kind] if f.choices is None else [None, 7, "zz", True][kind]
        elif isinstance(f, Bool):
            bad = [None, 1, "true", 0.0][kind]
        elif isinstance(f, Int):
            bad = [None, 2.5, "3", (f.ge if f.ge is not None else 0) - 1 if f.ge is not None else True][kind]
        else:
            bad = [None, "1.0", True, (f.ge - 1.0) if f.ge is not None else [1]][kind]
        if bad is None and not f.required:
            out.append([c])  # not an object at all
            continue
        elif bad is None:
            c.pop(f.name, None) if kind % 2 else c.__setitem__(f.name, None)
        else:
            c[f.name] = bad
        out.append(c)
    return out
