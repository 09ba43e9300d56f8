"""Guardrails: overrides composed like middleware, each recorded in the decision; caps with
per-unit state; exact propensities through overrides; both paths identical."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from closedloop import (
    AllowList,
    BlockList,
    Bundle,
    BundleError,
    CapStore,
    EpsilonGreedy,
    F,
    FrequencyCap,
    HardLimit,
    InMemoryCapStore,
    LogisticModel,
    Runtime,
    SpecError,
    System,
    Thresholds,
    checks,
)

PHISHY = {"user_id": "u1", "url": "http://10.0.0.1/login", "domain": "10.0.0.1", "page_brand": "PayPal",
          "domain_age_days": 3, "has_password_field": True}


def model(system, bias):
    return LogisticModel({n: 0.0 for n in system.features.names}, bias, output="phish")


def variant(phishing, guardrails=(), explore=None):
    exp = Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow", explore=explore)
    return System(
        "phishing", context=phishing.schema.fields, unit=phishing.unit,
        features={f.name: f.expr for f in phishing.features.features},
        actions=list(phishing.action_specs.values()), experience=exp, labels=phishing.labels,
        guardrails=list(guardrails),
    )


def test_allow_list_overrides_a_block_and_says_so(phishing):
    system = variant(phishing, [AllowList("partners", "domain", ["10.0.0.1"])])
    d = Runtime(system, Bundle.build(system, model(system, 5.0))).decide(PHISHY)
    assert d.action == "allow" and d.guardrail == "partners"
    assert d.why == "domain on AllowList 'partners' → allow"
    assert d.scores["phish"] > 0.99  # the intelligence still scored; the guardrail decided


def test_block_list_in_a_bundle_is_a_hot_fix(phishing, tmp_path):
    system = variant(phishing)
    fix = BlockList("kit_2026_11", "domain", ["EVIL.example"])
    bundle = Bundle.load(Bundle.build(system, model(system, -5.0), guardrails=[fix]).save(tmp_path / "b"), system)
    rt = Runtime(system, bundle)
    d = rt.decide({**PHISHY, "domain": "evil.example"})
    assert (d.action, d.guardrail) == ("block", "kit_2026_11")
    assert rt.decide(PHISHY).action == "allow"
    assert Bundle.build(system, model(system, -5.0)).version != bundle.version  # the fix is content


def test_bundles_carry_only_lists(phishing):
    system = variant(phishing)
    limit = HardLimit("x", F.col("popularity_rank") > 0, {"block": "warn"})
    with pytest.raises(SpecError, match="allow and block lists only"):
        Bundle.build(system, model(system, 0.0), guardrails=[limit])


def test_a_bundle_list_for_an_unknown_action_is_refused(phishing, tmp_path):
    system = variant(phishing)
    with pytest.raises(SpecError, match="declared action"):
        Bundle.build(system, model(system, 0.0), guardrails=[BlockList("b", "domain", ["x"], action="nuke")])
    other = System(
        "phishing", context=phishing.schema.fields, unit=phishing.unit,
        features={f.name: f.expr for f in phishing.features.features},
        actions=["allow", "warn", "quarantine"],
        experience=Thresholds("phish", {"quarantine": 0.9, "warn": 0.6}, otherwise="allow"),
    )
    path = Bundle.build(system, model(system, 0.0), thresholds=None, guardrails=[BlockList("b", "domain", ["x"])]).save(tmp_path / "b")
    with pytest.raises(BundleError) as err:
        Bundle.load(path, other)
    assert err.value.check == "guardrails"


def test_hard_limit_never_blocks_a_top_site(phishing):
    d = Runtime(phishing, Bundle.build(phishing, model(phishing, 5.0))).decide({**PHISHY, "popularity_rank": 10})
    assert (d.action, d.guardrail, d.why) == ("warn", "top_sites", "never block a top-1,000 site")


def test_the_outermost_guardrail_has_the_last_word(phishing):
    allow = AllowList("partners", "domain", ["10.0.0.1"])
    block = BlockList("attack", "domain", ["10.0.0.1"])
    d1 = Runtime(s1 := variant(phishing, [allow, block]), Bundle.build(s1, model(s1, 0.0))).decide(PHISHY)
    d2 = Runtime(s2 := variant(phishing, [block, allow]), Bundle.build(s2, model(s2, 0.0))).decide(PHISHY)
    assert (d1.action, d1.guardrail) == ("allow", "partners")
    assert (d2.action, d2.guardrail) == ("block", "attack")
    # the system's guardrails wrap the bundle's
    s3 = variant(phishing, [allow])
    d3 = Runtime(s3, Bundle.build(s3, model(s3, 0.0), guardrails=[block])).decide(PHISHY)
    assert (d3.action, d3.guardrail) == ("allow", "partners")


def test_frequency_cap_limits_warnings_per_unit_per_day(phishing):
    system = variant(phishing, [FrequencyCap("warn", 2, timedelta(days=1), fallback="allow")])
    rt = Runtime(system, Bundle.build(system, model(system, 0.8)))  # sigmoid(0.8) ≈ 0.69 → warn
    day = 86_400 * 10**9
    shown = [rt.decide(PHISHY, timestamp_ns=t).action for t in (1, 2, 3, 4)]
    assert shown == ["warn", "warn", "allow", "allow"]
    capped = rt.decide(PHISHY, timestamp_ns=5)
    assert capped.guardrail == "cap_warn" and "warn shown 2 times" in capped.why
    assert rt.decide({**PHISHY, "user_id": "u2"}, timestamp_ns=6).action == "warn"  # per unit
    assert rt.decide(PHISHY, timestamp_ns=day + 1).action == "warn"  # a new day


def test_caps_in_a_batch_count_in_row_order_like_single_decisions(phishing):
    system = variant(phishing, [FrequencyCap("warn", 2, timedelta(hours=1), fallback="allow")])
    bundle = Bundle.build(system, model(system, 0.8))
    users = ["a", "b", "a", "a", "b", "a", "c", "b", "b"]
    cols = {k: [v] * len(users) for k, v in PHISHY.items()}
    cols["user_id"] = users
    batch = Runtime(system, bundle).decide_batch(cols)
    assert batch.action.tolist() == ["warn", "warn", "warn", "allow", "warn", "allow", "warn", "allow", "allow"]
    checks.check_runtime(system, bundle, n=300)


def test_propensity_through_guardrails_is_exact(phishing):
    """With exploration, the shown action's propensity sums every action the guards map to it."""
    top = HardLimit("top_sites", (F.col("popularity_rank") > 0) & (F.col("popularity_rank") <= 1000), {"block": "warn"})
    system = variant(phishing, [top], explore=EpsilonGreedy(0.3))
    rt = Runtime(system, Bundle.build(system, model(system, 5.0)))
    for _ in range(100):
        d = rt.decide({**PHISHY, "popularity_rank": 10})
        assert d.action in ("warn", "allow")
        # greedy = block: P(block) = 0.7 + 0.1, P(warn) = 0.1, P(allow) = 0.1; block → warn
        assert math.isclose(d.propensity, 0.9 if d.action == "warn" else 0.1)
    checks.check_runtime(system, Bundle.build(system, model(system, 0.5)), n=300)


def test_guardrail_declarations_are_validated(phishing):
    with pytest.raises(SpecError, match="text context field"):
        variant(phishing, [AllowList("a", "domain_age_days", ["x"])])
    with pytest.raises(SpecError, match="declared actions"):
        variant(phishing, [HardLimit("h", F.col("popularity_rank") > 0, {"block": "nuke"})])
    with pytest.raises(SpecError, match="positive timedelta"):
        FrequencyCap("warn", 2, timedelta(0), fallback="allow")
    with pytest.raises(SpecError, match="another action"):
        FrequencyCap("warn", 2, timedelta(days=1), fallback="warn")
    s = variant(phishing, [FrequencyCap("warn", 2, timedelta(days=1), "block"), FrequencyCap("block", 1, timedelta(days=1), "warn")])
    with pytest.raises(SpecError, match="must not be capped"):
        Runtime(s, Bundle.build(s, model(s, 0.0)))


def test_a_custom_rule_without_a_condition_is_refused_by_name(phishing):
    from closedloop.experience.guardrails import Guardrail

    class Unconditional(Guardrail):  # condition() may be None only for a FrequencyCap
        name, reason = "unconditional", "always"

        def condition(self):
            return None

        def overrides(self, actions):
            return {"block": "warn"}

        def describe(self):
            return {"kind": "unconditional", "name": self.name}

    s = variant(phishing, [Unconditional()])
    with pytest.raises(SpecError, match="condition of Guardrail 'unconditional' must be a feature expression"):
        Runtime(s, Bundle.build(s, model(s, 0.0)))


def test_a_saved_guardrail_of_no_known_kind_is_refused_by_name():
    from closedloop.experience.guardrails import guardrail_from_dict

    for kind in ("hard_limit", ["allow_list"], None):  # a list is not even hashable
        with pytest.raises(SpecError, match=r"allow and block lists only\. Got a guardrail of kind"):
            guardrail_from_dict({"kind": kind, "name": "x"})


def test_phishing_guardrails_conform(phishing):
    rng = np.random.default_rng(0)
    weights = {n: float(w) for n, w in zip(phishing.features.names, rng.normal(size=len(phishing.features)), strict=True)}
    checks.check_runtime(phishing, Bundle.build(phishing, LogisticModel(weights, 0.0, output="phish")), n=500)


SHIPPED = {
    "allow_list": lambda: AllowList("partners", "domain", ["paypal.com", "bank.example", ""]),
    "block_list": lambda: BlockList("kits", "url", ["http://10.0.0.12/", "login"], lowercase=False),
    "hard_limit": lambda: HardLimit("top", F.col("popularity_rank").eq(0), {"block": "warn", "warn": "allow"}),
    "frequency_cap": lambda: FrequencyCap("block", 1, timedelta(seconds=30), fallback="warn"),
}


def test_every_shipped_guardrail_is_covered():
    import closedloop.experience.guardrails as g

    shipped = {c.__name__ for c in (g.AllowList, g.BlockList, g.HardLimit, g.FrequencyCap)}
    exported = {n for n in g.__all__ if isinstance(getattr(g, n), type) and issubclass(getattr(g, n), g.Guardrail)}
    assert exported - {"Guardrail"} == shipped
    assert len(SHIPPED) == len(shipped)


@pytest.mark.parametrize("kind", sorted(SHIPPED))
def test_conformance_of_every_shipped_guardrail(phishing, kind):
    system = variant(phishing, [SHIPPED[kind]()], explore=EpsilonGreedy(0.4, 0.1, 0.9))
    rng = np.random.default_rng(1)
    weights = {n: float(w) for n, w in zip(system.features.names, rng.normal(size=len(system.features)), strict=True)}
    checks.check_runtime(system, Bundle.build(system, LogisticModel(weights, 0.0, output="phish")), n=400)


class _RowByRowStore(CapStore):
    """A store with only count and add: CapStore's default admit_batch goes row by row."""

    def __init__(self) -> None:
        self.inner = InMemoryCapStore()

    def count(self, cap, bucket, unit):
        return self.inner.count(cap, bucket, unit)

    def add(self, cap, bucket, unit, n=1):
        self.inner.add(cap, bucket, unit, n)


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_caps_agree_with_single_decisions_on_random_batches(phishing, seed):
    """The batch path's caps (InMemoryCapStore.admit_batch, vectorized) give what decide()'s
    per-row path gives — actions, the rule that fired, propensities and the counts kept — on
    random batches with repeated units, exploration, window boundaries inside a batch, late
    batches for a closed window, and a limit of 0; and so does a store with only count/add."""
    import pyarrow as pa

    from closedloop.experience.guardrails import GuardLayer

    rng = np.random.default_rng(seed)
    limit = int(rng.integers(0, 4))
    hour = 3_600 * 10**9
    system = variant(phishing, [FrequencyCap("warn", limit, timedelta(hours=1), fallback="allow"),
                                FrequencyCap("block", 1, timedelta(hours=1), fallback="allow")])
    rules = system.guardrails
    fast, rows, single = (GuardLayer(system, rules, s) for s in (InMemoryCapStore(), _RowByRowStore(), InMemoryCapStore()))
    k = len(system.actions)
    t = 0
    for i in range(40):
        n = int(rng.integers(0, 80))
        units = [f"u{u}" for u in rng.integers(0, 6, n)]
        chosen = rng.integers(0, k, n)
        P = rng.dirichlet(np.ones(k), n) if i % 2 else None
        span = hour // 3 if i % 5 else 2 * hour  # every fifth batch spans a window boundary
        if i % 7 == 6:
            t -= 3 * hour  # a late batch: its window is closed
        ts = t + np.sort(rng.integers(0, span, n)).astype(np.int64)
        t += int(rng.integers(0, hour // 2))
        want = [single.one(None, int(chosen[r]), None if P is None else P[r].tolist(), units[r], int(ts[r]))
                for r in range(n)]
        for layer, u in ((fast, pa.array(units, pa.string()) if i % 3 else units), (rows, units)):
            b, fired, prop = layer.batch(None, chosen, P, u, ts)
            assert b.tolist() == [w[0] for w in want]
            assert fired.tolist() == [w[1] for w in want]
            np.testing.assert_allclose(prop, [w[2] for w in want] if n else np.zeros(0), rtol=0, atol=1e-12)
        assert fast.store._counts == single.store._counts == rows.store.inner._counts
