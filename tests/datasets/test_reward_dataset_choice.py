"""A choice system (BestAction with Softmax exploration) decides through Runtime and real telemetry;
its reward dataset has one row per decision whose action, propensity and reward are exactly what was
decided and reported — linked by decision id or by unit and time, under the policy's window,
kinds, aggregate and default — and reads like an imported BestAction dataset."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from closedloop import BestAction, Bundle, F, Float, Reward, RewardPolicy, Runtime, Str, System
from closedloop.datasets import build_reward_dataset, import_dataset
from closedloop.datasets.dataset import load_dataset
from closedloop.datasets.join.columns import feature_column
from closedloop.errors import DatasetError, SpecError
from closedloop.experience.exploration import Softmax
from closedloop.intelligence import Intelligence, Scorer
from closedloop.runtime.clock import ManualClock
from closedloop.telemetry import Sampling, SegmentLog, Telemetry, TelemetryStore

T0 = 1_700_000_000 * 10**9
S = 10**9
MIN = 60 * S
ACTIONS = ("none", "discount", "upsell")


class _Scores(Scorer):
    def __init__(self, features):
        self.features = features
        self.outputs = ACTIONS

    def batch(self, X, cols):
        return np.column_stack([np.zeros(X.shape[0]), X[:, 0], X[:, 1]])

    def one(self, x, c):
        return (0.0, x[0], x[1])


class OfferScores(Intelligence):
    """One score per offer: none 0, discount = a, upsell = b."""

    kind = "offer_scores"

    @property
    def outputs(self):
        return ACTIONS

    def inputs(self):
        return ("a", "b")

    def bind(self, features):
        return _Scores(features)

    def to_dict(self, files):
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, spec, files, kinds):
        return cls()


def _offers(default: float | None = 0.0, per: str = "decision", link: str = "decision") -> System:
    return System("offers", context=[Str("user"), Float("a", default=0.0), Float("b", default=0.0)], unit="user",
                  features={"a": F.col("a"), "b": F.col("b")}, actions=list(ACTIONS),
                  experience=BestAction(explore=Softmax(0.5)),
                  rewards=RewardPolicy([Reward("buy", "sum"), Reward("click")], window=timedelta(minutes=10), per=per,
                                       default=default, link=link))


def _runtime(home, system, clock, sampling=None):
    tel = Telemetry(SegmentLog(home), system=system, clock=clock.now_ns, sampling=sampling)
    return tel, Runtime(system, Bundle.build(system, OfferScores()), telemetry=tel, clock=clock)


def _store(home):
    store = TelemetryStore(home)
    store.compact()
    return store


def _build(system, store, out, *, since=T0, until=T0 + 10**6 * S, cutoff=T0 + 10**5 * S):
    return build_reward_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                since_ns=since, until_ns=until, cutoff_ns=cutoff, out=out)


def _decided(rt, n=200, seed=1):
    rng = np.random.default_rng(seed)
    ctx = [{"user": f"u{i % 40}", "a": float(rng.normal()), "b": float(rng.normal())} for i in range(n)]
    out = [rt.decide(c, timestamp_ns=T0 + i * S) for i, c in enumerate(ctx[: n // 2])]
    rest = ctx[n // 2:]
    batch = {k: [c[k] for c in rest] for k in ("user", "a", "b")}
    out += list(rt.decide_batch(batch, timestamps_ns=[T0 + (n // 2 + i) * S for i in range(len(rest))]))
    return out


def _table(path, system):
    table, _ = load_dataset(path, system)
    return {d: r for d, r in zip(table["decision_id"].to_pylist(), table.to_pylist(), strict=True)}


def test_one_row_per_decision_with_the_logged_action_propensity_and_reward(tmp_path):
    system = _offers()
    clock = ManualClock(T0)
    tel, rt = _runtime(tmp_path / "home", system, clock)
    decided = _decided(rt)
    expect = {}
    rng = np.random.default_rng(0)
    for d in decided:
        r = 0.0
        if rng.random() < 0.3:
            tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 5 * S, source="app")
            r = 1.0
            if rng.random() < 0.4:  # buys: summed; the one after the window is not counted
                tel.log_outcome(d.decision_id, kind="buy", value=2.5, event_ns=d.timestamp_ns + 9 * S, source="app",
                                candidate=d.action)
                tel.log_outcome(d.decision_id, kind="buy", value=1.5, event_ns=d.timestamp_ns + 60 * S, source="app")
                tel.log_outcome(d.decision_id, kind="buy", value=9.0, event_ns=d.timestamp_ns + 11 * MIN, source="app")
                r = 4.0
        expect[d.decision_id] = (d.action, d.propensity, r)
    n_click, n_buy = sum(r > 0 for _, _, r in expect.values()), sum(r == 4.0 for _, _, r in expect.values())
    d0, d1 = decided[0], decided[1]
    other = next(a for a in ACTIONS if a != d1.action)
    tel.log_outcome(d0.decision_id, kind="click", event_ns=d0.timestamp_ns + S, source="app")  # twice: one outcome id
    tel.log_outcome(d0.decision_id, kind="click", event_ns=d0.timestamp_ns + S, source="app")
    tel.log_outcome(d1.decision_id, kind="buy", value=7.0, event_ns=d1.timestamp_ns + S, source="app", candidate=other)
    tel.log_outcome(d1.decision_id, kind="view", event_ns=d1.timestamp_ns + S, source="app")
    tel.log_outcome("never-decided", kind="click", event_ns=T0, source="app")
    expect[d0.decision_id] = (d0.action, d0.propensity, max(expect[d0.decision_id][2], 1.0))
    tel.close()
    m = _build(system, _store(tmp_path / "home"), tmp_path / "ds")

    rows = _table(tmp_path / "ds", system)
    assert {d: (r["action"], r["propensity"], r["reward"]) for d, r in rows.items()} == expect
    assert len({p for _, p, _ in expect.values()}) > 50 and {a for a, _, _ in expect.values()} == set(ACTIONS)  # it explored
    assert all(r["position"] == 1 and r["sample_prob"] == 1.0 and r["weight"] == pytest.approx(1 / r["propensity"])
               for r in rows.values())
    first = rows[decided[5].decision_id]
    ctx = json.loads(first["context_json"])
    assert ctx["user"] == "u5" and first[feature_column("b")] == ctx["b"] and first["features"] == [ctx["a"], ctx["b"]]
    assert m.counts["outcomes"] == {"matched": n_click + 2 * n_buy + 1, "after_window": n_buy, "other_action": 1,
                                    "other_kind": 1, "unknown_id": 1}
    assert m.counts["slots"] == {"rows": 200, "no_reward": 0, "context_invalid": 0} and m.counts["open"] == 0
    assert m.counts["decisions"] == 200 and m.counts["positions"] == {"1": 200} and m.counts["actions"] == 3
    assert m.counts["rewards"]["sum"] == pytest.approx(sum(r for _, _, r in expect.values()))
    assert m.content["source"]["logged"] == "best_action" and m.content["rows"] == "slot"


def test_unit_time_links_to_the_latest_decision_of_the_unit_at_or_before_the_event(tmp_path):
    system = _offers(link="unit_time")
    home, late = tmp_path / "home", T0 + 10**5 * S
    tel, rt = _runtime(home, system, ManualClock(T0))
    a = rt.decide({"user": "u1", "a": 1.0}, timestamp_ns=T0)
    b = rt.decide({"user": "u1", "b": 1.0}, timestamp_ns=T0 + 100 * S)
    c = rt.decide({"user": "u2"}, timestamp_ns=T0 + 50 * S)
    t1 = rt.decide({"user": "u3"}, decision_id="t1", timestamp_ns=T0 + 200 * S)
    t2 = rt.decide({"user": "u3"}, decision_id="t2", timestamp_ns=T0 + 200 * S)  # a tie on time: the greater id
    other = next(x for x in ACTIONS if x != b.action)
    for unit, kind, at, cand in [("u1", "click", T0 + 50 * S, None), ("u1", "buy", T0 + 150 * S, None),
                                 ("u1", "click", T0 - 10 * S, None), ("u9", "click", T0, None),
                                 ("u2", "click", T0 + 61 * MIN, None), ("u3", "click", T0 + 201 * S, t2.action),
                                 ("u1", "click", T0 + 120 * S, other)]:
        tel.log_outcome(unit=unit, kind=kind, value=3.0 if kind == "buy" else 1.0, event_ns=at, source="app", candidate=cand)
    tel.log_outcome(c.decision_id, kind="click", event_ns=T0 + 60 * S, source="app")  # a decision id links by it
    tel.close()
    late_tel, late_rt = _runtime(home, system, ManualClock(late))  # ingested after the first cut-off
    lt = late_rt.decide({"user": "u1"}, timestamp_ns=T0 + 140 * S)
    late_tel.close()
    store = _store(home)

    m = _build(system, store, tmp_path / "ds", cutoff=T0 + 10**4 * S)
    got = {d: r["reward"] for d, r in _table(tmp_path / "ds", system).items()}
    assert got == {a.decision_id: 1.0, b.decision_id: 3.0, c.decision_id: 1.0, t1.decision_id: 0.0, t2.decision_id: 1.0}
    assert m.counts["outcomes"] == {"matched": 4, "unlinked": 2, "after_window": 1, "other_action": 1}
    assert m.content["rewards"]["link"] == "unit_time"

    # later, u1's decision at 140 s exists: the buy at 150 s is its, not b's
    _build(system, store, tmp_path / "ds2", cutoff=late)
    later = {d: r["reward"] for d, r in _table(tmp_path / "ds2", system).items()}
    assert later == {**got, b.decision_id: 0.0, lt.decision_id: 3.0}


def test_window_open_decisions_range_no_default_and_point_in_time(tmp_path):
    system = _offers(default=None)
    home, cutoff = tmp_path / "home", T0 + 1000 * S + 5 * MIN
    tel, rt = _runtime(home, system, ManualClock(T0))
    ds = [rt.decide({"user": f"u{i}"}, timestamp_ns=T0 + i * S) for i in range(10)]
    ds += [rt.decide({"user": "v"}, timestamp_ns=T0 + 1000 * S + i * S) for i in range(2)]  # window open at the cut-off
    for d in ds[:5] + ds[9:]:
        tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + S, source="app")
    tel.close()
    after, _ = _runtime(home, system, ManualClock(cutoff + S))
    after.log_outcome(ds[5].decision_id, kind="click", event_ns=ds[5].timestamp_ns + S, source="app")  # ingested too late
    after.close()
    m = _build(system, _store(home), tmp_path / "ds", until=T0 + 9 * S + 1000 * S, cutoff=cutoff)
    rows = _table(tmp_path / "ds", system)
    assert set(rows) == {d.decision_id for d in ds[:5] + ds[9:10]}  # no reward (no default): left out, counted
    assert all(r["reward"] == 1.0 for r in rows.values())
    assert m.counts["slots"]["no_reward"] == 4 and m.counts["open"] == 2
    assert m.counts["outcomes"] == {"matched": 6, "not_selected": 2}
    assert m.content["rewards"]["per"] == "decision"

    m = _build(system, _store(home), tmp_path / "ds2", until=T0 + 9 * S, cutoff=cutoff)  # decision 9 out of range
    assert m.counts["outcomes"] == {"matched": 5, "not_selected": 3} and m.counts["slots"]["rows"] == 5


def test_sampled_decisions_weigh_by_their_propensity_and_sample_prob(tmp_path):
    system = _offers()
    tel, rt = _runtime(tmp_path / "home", system, ManualClock(T0), sampling=Sampling(actions={"none": 0.25}))
    decided = _decided(rt, n=400)
    tel.close()
    _build(system, _store(tmp_path / "home"), tmp_path / "ds")
    rows = _table(tmp_path / "ds", system)
    by_id = {d.decision_id: d for d in decided}
    nones = [r for r in rows.values() if r["action"] == "none"]
    assert 0 < len(nones) < 0.5 * sum(d.action == "none" for d in decided)  # a quarter of them kept
    assert all(r["sample_prob"] == (0.25 if r["action"] == "none" else 1.0) for r in rows.values())
    assert all(r["propensity"] == by_id[d].propensity and r["weight"] == pytest.approx(1 / (r["propensity"] * r["sample_prob"]))
               for d, r in rows.items())


def test_the_dataset_reads_like_an_imported_best_action_dataset(tmp_path):
    system = _offers()
    tel, rt = _runtime(tmp_path / "home", system, ManualClock(T0))
    decided = _decided(rt, n=40)
    for d in decided[::3]:
        tel.log_outcome(d.decision_id, kind="buy", value=2.0, event_ns=d.timestamp_ns + S, source="app")
    tel.close()
    built = _build(system, _store(tmp_path / "home"), tmp_path / "built")
    table, _ = load_dataset(tmp_path / "built", system)
    logged = table.select(["decision_id", "action", "reward", "propensity", "timestamp_ns"]).to_pydict()
    logged.update({k: [json.loads(c)[k] for c in table["context_json"].to_pylist()] for k in ("user", "a", "b")})
    pq.write_table(pa.table(logged), tmp_path / "logged.parquet")
    imported = import_dataset(tmp_path / "logged.parquet", system, action="action", reward="reward", propensity="propensity",
                              decision="decision_id", unit="user", time="timestamp_ns", out=tmp_path / "imported")

    assert pq.read_schema(built.data_path) == pq.read_schema(imported.data_path)
    again, _ = load_dataset(tmp_path / "imported", system)
    for col in ("decision_id", "position", "unit", "action", "reward", "propensity", "weight", "features", "context_json"):
        assert again[col].to_pylist() == table[col].to_pylist(), col
    assert set(built.content) == set(imported.content) - {"rejected_examples"}
    assert set(imported.counts) - set(built.counts) == {"rejected"}
    assert built.counts["rewards"] == imported.counts["rewards"] and built.counts["propensity"] == imported.counts["propensity"]
    assert built.content["feature_names"] == imported.content["feature_names"]


def test_what_it_refuses(tmp_path):
    tel, rt = _runtime(tmp_path / "home", _offers(), ManualClock(T0))
    rt.decide({"user": "u"}, timestamp_ns=T0)
    tel.close()
    store = _store(tmp_path / "home")
    bare = System("offers", context=[Str("user"), Float("a", default=0.0), Float("b", default=0.0)], unit="user",
                  features={"a": F.col("a"), "b": F.col("b")}, actions=list(ACTIONS), experience=BestAction())
    with pytest.raises(DatasetError, match="System 'offers' declares no rewards"):
        _build(bare, store, tmp_path / "a")
    with pytest.raises(DatasetError, match="has no rows"):
        _build(_offers(), store, tmp_path / "b", since=T0 + S)
    with pytest.raises(DatasetError, match="already exists"):
        _build(_offers(), store, tmp_path)
    with pytest.raises(SpecError, match="must be a closedloop.System with a Ranking or BestAction experience"):
        _build(object(), store, tmp_path / "c")


def test_the_loop_closes_a_built_dataset_values_the_logging_policy_at_its_logged_reward(tmp_path):
    """Telemetry → reward dataset → evaluate: the bundle that logged the data, valued off-policy on it,
    has importance weights of exactly 1 — IPS is the mean logged reward and the ESS the row count."""
    from closedloop.evaluation.report import evaluate

    system = _offers()
    clock = ManualClock(T0)
    tel, rt = _runtime(tmp_path / "home", system, clock)
    decided = _decided(rt, n=400, seed=3)
    rng = np.random.default_rng(4)
    for d in decided:
        if rng.random() < (0.5 if d.action == "discount" else 0.2):
            tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 5 * S, source="app")
    tel.close()
    _build(system, _store(tmp_path / "home"), tmp_path / "ds")
    report = evaluate(system, [Bundle.build(system, OfferScores())], tmp_path / "ds", split="all", bootstrap=50)
    value = report["policy_value"]
    rows = _table(tmp_path / "ds", system)
    mean = float(np.mean([rows[d.decision_id]["reward"] for d in decided]))
    assert 0.2 < mean < 0.4  # some clicks
    ips, snips = (value["bundles"][0]["estimates"][k] for k in ("ips", "snips"))
    assert ips["value"] == snips["value"] == pytest.approx(mean, rel=1e-12) == value["logged"]["value"]
    assert ips["ess"] == 400.0 and ips["support"]["passed"]


def test_excluded_units_decisions_are_left_out_and_counted(tmp_path):
    system = _offers()
    tel, rt = _runtime(tmp_path / "home", system, ManualClock(T0))
    decided = _decided(rt)  # 200 decisions of 40 users, five each
    for d in decided:
        tel.log_outcome(d.decision_id, kind="click", event_ns=d.timestamp_ns + 5 * S, source="app")
    tel.close()
    store = _store(tmp_path / "home")
    every = _build(system, store, tmp_path / "all")
    kw = dict(decision_files=store.decision_files(), outcome_files=store.outcome_files(), since_ns=T0,
              until_ns=T0 + 10**6 * S, cutoff_ns=T0 + 10**5 * S)
    m = build_reward_dataset(system, out=tmp_path / "some", exclude_units=["u3", "u7", "u99"], **kw)
    assert m.counts["excluded"] == {"units_asked": 3, "units": 2, "decisions": 10}
    assert every.counts["decisions"] - m.counts["decisions"] == 10 and "excluded" not in every.counts
    assert {r["unit"] for r in _table(tmp_path / "some", system).values()} == {f"u{i}" for i in range(40)} - {"u3", "u7"}
    assert m.counts["outcomes"]["not_selected"] == 10
