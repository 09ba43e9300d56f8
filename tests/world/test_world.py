"""The phishing world on its own: contexts the real system accepts, reproducibility, the rules
of observation, outcomes with their selective labels and delays, adaptation, truth, checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from closedloop import SpecError
from closedloop.world import KINDS, PhishingWorld, WorldConfig

H = 3600 * 10**9


def small(visits: int = 3000, users: int = 600, **more) -> WorldConfig:
    over = {"world": {"visits_per_day": visits}, "users": {"count": users}}
    for k, v in more.items():
        over.setdefault(k, {}).update(v)
    return WorldConfig.load(overrides=over)


def oracle(world: PhishingWorld, visits, phish_action: str, legit_action: str = "allow") -> np.ndarray:
    """Decide from the truth (a test's stand-in for a policy)."""
    t = world.truth(visits.decision_ids)
    return np.where(np.asarray(t["is_phish"]), phish_action, legit_action)


def run(world: PhishingWorld, days: int, policy) -> list:
    out = []
    for _ in range(days):
        v = world.visits()
        world.observe(v, policy(world, v))
        out.append(v)
    return out


def test_contexts_are_exactly_the_phishing_systems_and_validate(phishing):
    w = PhishingWorld(small(), seed=3)
    v = w.visits(0)
    assert set(v.contexts) == {f.name for f in phishing.schema.fields}
    cols = phishing.schema.validate_batch(v.contexts)  # raises on any invalid row
    assert cols.n == len(v) == 3000 and not cols.errors
    assert np.all(np.diff(v.timestamps_ns) >= 0)  # in time order, within the day
    assert v.timestamps_ns[0] >= w.day_start_ns(0) and v.timestamps_ns[-1] < w.day_start_ns(1)
    ids = v.decision_ids.to_pylist()
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and ids == sorted(ids)
    # both classes and every action-relevant kind of page are there
    t = w.truth(v.decision_ids)
    phish = np.asarray(t["is_phish"])
    assert 0.005 < phish.mean() < 0.05
    assert set(t["legit_kind"].to_pylist()) >= {"popular", "longtail", "login_service", "startup"}
    # the page's own domain appears in its URL's host (or after the '@' trick)
    host = pc.extract_regex(v.contexts["url"], r"^https?://(?:[^@/]*@)?(?P<h>[^/:?#]+)").field("h").to_pylist()
    assert all(h.endswith(d) for h, d in zip(host, v.contexts["domain"].to_pylist(), strict=True))


def test_same_seed_same_world_other_seed_other_world():
    def trace(seed):
        w = PhishingWorld(small(), seed=seed)
        vs = run(w, 3, lambda w, v: oracle(w, v, "block"))
        outcomes = w.due(w.day_start_ns(20))
        return [v.table() for v in vs], outcomes, [w.measure(d) for d in range(3)], w.events

    a, b, c = trace(11), trace(11), trace(12)
    assert all(x.equals(y) for x, y in zip(a[0], b[0], strict=True))
    assert a[1].equals(b[1]) and a[1].num_rows > 100
    assert a[2] == b[2] and a[3] == b[3]
    assert not a[0][0].equals(c[0][0])


def test_days_go_in_order_and_each_decision_is_handed_back_once():
    w = PhishingWorld(small(), seed=1)
    with pytest.raises(SpecError, match="must be the next day, 0. Got 1 instead"):
        w.visits(1)
    v = w.visits(0)
    first, rest = v.slice(0, 100), v.slice(100, len(v))
    w.observe(first, ["allow"] * 100)
    with pytest.raises(SpecError, match="already observed"):
        w.observe(first, ["allow"] * 100)
    with pytest.raises(SpecError, match="Day 0 must be fully observed before day 1"):
        w.visits()
    with pytest.raises(SpecError, match="one of \\['allow', 'warn', 'block'\\]. Got 'maybe' instead"):
        w.observe(rest, ["maybe"] * len(rest))
    with pytest.raises(SpecError, match="one action per visit"):
        w.observe(rest, ["allow"])
    assert len(w.remaining()) == len(rest)
    w.observe(w.remaining(), ["allow"] * len(rest))
    assert len(w.visits()) > 0


def test_split_cuts_the_day_into_time_windows():
    w = PhishingWorld(small(), seed=1)
    v = w.visits(0)
    parts = v.split(24)
    assert len(parts) == 24 and sum(len(p) for _, p in parts) == len(v)
    for k, (end, p) in enumerate(parts):
        assert end == w.day_start_ns(0) + (k + 1) * H
        if len(p):
            assert p.timestamps_ns[0] >= end - H and p.timestamps_ns[-1] < end
    # night is quieter than the evening (the hourly profile)
    assert len(parts[3][1]) < len(parts[19][1])


def test_blocked_phishing_yields_no_user_outcome_only_analyst_labels():
    w = PhishingWorld(small(visits=8000, users=1500), seed=5)
    run(w, 3, lambda w, v: oracle(w, v, "block"))
    out = w.due(w.day_start_ns(30))
    t = w.truth(out["decision_id"])
    honest_phish = np.asarray(t["is_phish"]) & ~np.asarray(t["abusive_source"])
    kinds = np.asarray(out["kind"].to_numpy(zero_copy_only=False))
    assert honest_phish.sum() > 0
    assert set(kinds[honest_phish]) == {"analyst_label"}
    # nobody was warned: no choices
    assert not np.isin(kinds, ["chose:continue", "chose:go_back"]).any()
    # abusive 'unblockers' report their blocked pages as false blocks — the only such reports here
    fb = kinds == "reported_false_block"
    assert fb.sum() > 0 and np.asarray(t["abusive_source"])[fb].all() and np.asarray(t["is_phish"])[fb].all()


def test_allowed_phishing_is_reported_by_a_few_victims_hours_to_days_later():
    cfg = small(visits=20000, users=4000)
    w = PhishingWorld(cfg, seed=9)
    vs = run(w, 3, lambda w, v: np.full(len(v), "allow"))
    out = w.due(w.day_start_ns(60))
    assert w.pending_outcomes == 0
    t = w.truth(out["decision_id"])
    honest_phish = np.asarray(t["is_phish"]) & ~np.asarray(t["abusive_source"])
    rep = honest_phish & (np.asarray(out["kind"].to_numpy(zero_copy_only=False)) == "reported_phish")
    visits = sum(w.measure(d)["phish_visits"] for d in range(3))
    # expected: victims (victim_rate × the page's efficacy; susceptibility averages 1) report at
    # victim_report_rate, the others at aware_report_rate
    o = cfg.outcomes
    eff = np.concatenate([w.catalog.cols["efficacy"][w._days[d].page[w._days[d].phish & (w._days[d].role == 0)]]
                          for d in range(3)])
    pv = o.victim_rate * eff
    expected = float(np.mean(pv * o.victim_report_rate + (1 - pv) * o.aware_report_rate))
    assert visits == eff.size > 800
    assert rep.sum() / visits == pytest.approx(expected, rel=0.25)
    # delays: hours to days after the decision
    ts = {}
    for v in vs:
        ts.update(zip(v.decision_ids.to_pylist(), v.timestamps_ns.tolist(), strict=True))
    dec_ts = np.array([ts[d] for d in np.asarray(out["decision_id"].to_pylist(), dtype=object)[rep]])
    delay_h = (np.asarray(out["event_ns"])[rep] - dec_ts) / H
    assert delay_h.min() > 0 and 6 < np.median(delay_h) < 40 and delay_h.max() > 48
    assert np.all(np.asarray(out["deliver_ns"]) >= np.asarray(out["event_ns"]))
    # victims are counted by the world
    assert sum(w.measure(d)["victims"] for d in range(3)) > 0


def test_warned_users_click_through_at_the_configured_rates():
    cfg = small(visits=20000, users=4000)
    w = PhishingWorld(cfg, seed=2)
    run(w, 2, lambda w, v: np.full(len(v), "warn"))
    m = [w.measure(d) for d in range(2)]
    assert np.mean([x["warn_click_through_legit"] for x in m]) == pytest.approx(cfg.outcomes.click_through_legit, abs=0.03)
    assert np.mean([x["warn_click_through_phish"] for x in m]) == pytest.approx(cfg.outcomes.click_through_phish, abs=0.06)
    out = w.due(w.day_start_ns(30))
    kinds = out["kind"].to_pylist()
    assert kinds.count("chose:continue") + kinds.count("chose:go_back") == sum(x["decided"] for x in m)


def test_analysts_label_a_sample_by_action_a_day_or_two_later():
    cfg = small(visits=20000, users=4000)
    w = PhishingWorld(cfg, seed=4)
    run(w, 1, lambda w, v: np.full(len(v), "allow"))
    out = w.due(w.day_start_ns(30))
    lab = out.filter(pc.equal(out["kind"], "analyst_label"))
    t = w.truth(lab["decision_id"])
    ratio = lab.num_rows / w.measure(0)["decided"]
    assert ratio == pytest.approx(cfg.analysts.sample_rate[0], rel=0.3)  # plus a few triaged reports
    wrong = np.asarray(lab["value"]) != np.asarray(t["is_phish"]).astype(float)
    assert wrong.mean() < 0.1
    assert all(re.fullmatch(r"analyst:[0-4]", s) for s in lab["source"].to_pylist())


def test_abusive_reports_look_like_honest_ones():
    w = PhishingWorld(small(visits=8000, users=1500), seed=6)
    run(w, 2, lambda w, v: oracle(w, v, "block"))
    out = w.due(w.day_start_ns(30))
    t = w.truth(out["decision_id"])
    src = np.asarray(out["source"].to_pylist(), dtype=object)
    kinds = np.asarray(out["kind"].to_pylist(), dtype=object)
    ab = np.asarray(t["abusive_source"]) & np.isin(kinds, ["reported_phish", "reported_false_block"])
    assert ab.sum() > 20
    fmt = re.compile(r"user:u\d{7}")
    assert all(fmt.fullmatch(s) for s in src[ab]) and all(fmt.fullmatch(s) for s in src[~ab & (kinds == "reported_phish")])
    # smearers report legitimate pages as phishing; unblockers phishing pages as false blocks
    phish = np.asarray(t["is_phish"])
    assert set(kinds[ab & ~phish]) == {"reported_phish"} and set(kinds[ab & phish]) == {"reported_false_block"}
    assert sum(w.measure(d)["abusive_reports"] for d in range(2)) == ab.sum()


def test_a_heavily_blocked_campaign_adapts_after_its_delay_and_changes_its_signature():
    cfg = small(visits=20000, users=4000)
    delay = cfg.adaptation.delay_days
    w = PhishingWorld(cfg, seed=8)
    before = {c: w.signature(c) for c in range(w.campaigns.n)}
    pages_before = {c: set(w.catalog.cols["domain"][w.campaigns.first_page[c]: w.campaigns.first_page[c] + w.campaigns.n_pages[c]])
                    for c in range(w.campaigns.n)}
    days = run(w, delay + 2, lambda w, v: oracle(w, v, "block"))
    last = w.truth(days[-1].decision_ids)
    ev = w.events
    decided = [e for e in ev if e["event"] == "retool_decided" and e["day"] == 0]
    assert decided, ev
    for e in decided:
        c = e["campaign"]
        adapted = [x for x in ev if x["event"] == "adapted" and x["campaign"] == c]
        if w.campaign_table()["end_day"][c].as_py() <= delay:
            continue  # ended before its new kit was ready
        assert adapted[0]["day"] == delay and adapted[0]["generation"] == 1
        assert w.signature(c) != before[c]
        # it moves away from what got caught: every page was blocked, so nothing differs by
        # trait — but the floor opens options it never used (e.g. other hosting)
        sig = w.signature(c)
        assert min(sig["hosting"].values()) >= cfg.adaptation.min_prob - 1e-9
        start, n = w.campaigns.first_page[c], w.campaigns.n_pages[c]
        new_domains = set(w.catalog.cols["domain"][start: start + n])
        assert len(new_domains - pages_before[c]) >= len(new_domains) // 2  # new domains
        # its page loads now land on the new generation's pages
        gens = set(np.asarray(last["generation"])[np.asarray(last["campaign_id"]) == c].tolist())
        assert gens <= {1}
    # a campaign nobody blocks never retools
    w2 = PhishingWorld(cfg, seed=8)
    run(w2, delay + 2, lambda w, v: np.full(len(v), "allow"))
    assert not [e for e in w2.events if e["event"] in ("retool_decided", "adapted")]


def test_adaptation_moves_the_signature_away_from_the_trait_that_gets_caught():
    cfg = small(visits=20000, users=4000)
    w = PhishingWorld(cfg, seed=21)

    def block_https_phish(w, v):  # a policy that only catches phishing pages served over https
        t = w.truth(v.decision_ids)
        https = np.asarray(v.contexts["https"])
        return np.where(np.asarray(t["is_phish"]) & https, "block", "allow")

    before = {c: w.signature(c)["https"]["yes"] for c in range(w.campaigns.n)}
    run(w, cfg.adaptation.delay_days + 1, block_https_phish)
    adapted = [e["campaign"] for e in w.events if e["event"] == "adapted"]
    assert adapted
    for c in adapted:
        assert w.signature(c)["https"]["yes"] < before[c]


def test_truth_and_measure_for_measurement_only():
    w = PhishingWorld(small(), seed=1)
    v = w.visits(0)
    acts = oracle(w, v, "block")
    w.observe(v, acts)
    t = w.truth(pa.array([*v.decision_ids.to_pylist()[:5], "0" * 32, "not-an-id"]))
    assert t["known"].to_pylist() == [True] * 5 + [False, False]
    assert t["action"].to_pylist()[:5] == acts[:5].tolist()
    m = w.measure(0)
    assert m["decided"] == len(v) and m["waiting"] == 0
    assert m["phish_visits"] + m["legit_visits"] + m["abusive_visits"] == m["decided"] + m["unprotected_visits"]
    assert m["phish_allowed"] == 0 and m["phish_blocked"] == m["phish_visits"] and m["false_blocks_per_1k_legit"] == 0
    with pytest.raises(SpecError, match="a day already drawn"):
        w.measure(5)


def test_unprotected_users_are_not_decided_but_counted():
    cfg = small(visits=8000, users=800)
    w = PhishingWorld(cfg, seed=13)
    run(w, 2, lambda w, v: oracle(w, v, "allow", legit_action="block"))  # every legitimate page blocked
    m1 = w.measure(1)
    assert m1["unprotected_visits"] > 0 and m1["decided"] + m1["unprotected_visits"] == m1["visits"]
    assert w.measure(0)["protection_disabled"] > 0 and m1["protected_share"] < 1.0


def test_legitimate_sites_drift():
    cfg = small()
    w = PhishingWorld(cfg, seed=1)
    s0, s60 = w.sites.shares(cfg, 0), w.sites.shares(cfg, cfg.legit.drift_days)
    names = [k.name for k in cfg.legit.kinds]
    assert s60[names.index("sso_portal")] > 5 * s0[names.index("sso_portal")]
    n0 = w.catalog.n
    run(w, 3, lambda w, v: np.full(len(v), "allow"))
    born = w.catalog.cols["born"][n0:]
    legit_new = w.catalog.cols["campaign"][n0:] < 0
    assert legit_new.sum() > 0 and born[legit_new].min() >= 1  # sites replaced by new ones
    young = w.catalog.cols["age0"][n0:][legit_new]
    assert np.median(young) < 60  # new sites have new domains


def test_same_visit_stream_under_different_policies_until_decisions_matter():
    w = PhishingWorld(small(), seed=17)
    a, b = w, w.fork()
    va, vb = a.visits(0), b.visits(0)
    assert va.table().equals(vb.table())
    a.observe(va, np.full(len(va), "allow"))
    b.observe(vb, np.full(len(vb), "warn"))  # warnings turn nobody's protection off
    assert a.visits(1).table().equals(b.visits(1).table())
    # common random numbers: the analysts' sample of day 0 is drawn from the same numbers
    oa, ob = a.due(a.day_start_ns(30)), b.due(b.day_start_ns(30))
    la = set(oa.filter(pc.equal(oa["kind"], "analyst_label"))["decision_id"].to_pylist())
    lb = set(ob.filter(pc.equal(ob["kind"], "analyst_label"))["decision_id"].to_pylist())
    assert len(la & lb) > 0


def test_save_and_load_continue_exactly(tmp_path):
    cfg = small()
    w = PhishingWorld(cfg, seed=23)
    w.inject_fault(3, "labels_legit")
    run(w, 2, lambda w, v: oracle(w, v, "block"))
    w.due(w.day_start_ns(1) + 5 * H)
    w.save(tmp_path / "state")
    with pytest.raises(SpecError, match="must not exist yet"):
        w.save(tmp_path / "state")
    w2 = PhishingWorld.load(tmp_path / "state", cfg)
    with pytest.raises(SpecError, match="the configuration it was saved with"):
        PhishingWorld.load(tmp_path / "state", small(visits=3001))
    for x in (w, w2):
        run(x, 2, lambda w, v: oracle(w, v, "block"))
    assert w.visits(4).table().equals(w2.visits(4).table())
    assert w.due(w.day_start_ns(40)).equals(w2.due(w2.day_start_ns(40)))
    assert [w.measure(d) for d in range(4)] == [w2.measure(d) for d in range(4)]
    assert w.events == w2.events


def test_an_injected_label_fault_corrupts_one_days_analyst_labels():
    def labels(fault):
        w = PhishingWorld(small(visits=8000, users=1500), seed=31)
        if fault:
            w.inject_fault(2, fault)
        run(w, 4, lambda w, v: np.full(len(v), "allow"))
        out = w.due(w.day_start_ns(4))
        lab = out.filter(pc.equal(out["kind"], "analyst_label"))
        day = (np.asarray(lab["deliver_ns"]) - w.config.world.start_ns) // w.config.day_ns
        return w, lab, day

    clean, lab0, day0 = labels(None)
    for kind in PhishingWorld.FAULTS:
        w, lab, day = labels(kind)
        assert lab["outcome_id"].equals(lab0["outcome_id"])  # the same labels arrive …
        v0, v = np.asarray(lab0["value"]), np.asarray(lab["value"])
        hit = day == 2
        assert hit.sum() > 20 and np.array_equal(v[~hit], v0[~hit])  # … other days untouched
        assert np.array_equal(v[hit], 1.0 - v0[hit]) if kind == "labels_flipped" else (v[hit] == 0).all()
        assert w.measure(2)["faulted_labels"] == hit.sum() and clean.measure(2)["faulted_labels"] == 0
        assert {"day": 2, "event": "fault", "fault": kind} in w.events
    with pytest.raises(SpecError, match="'kind' must be one of \\['labels_flipped', 'labels_legit'\\]"):
        clean.inject_fault(9, "labels_late")


def test_bad_arguments_are_refused():
    with pytest.raises(SpecError, match="'seed' must be an integer"):
        PhishingWorld(small(), seed=-1)
    with pytest.raises(SpecError, match="'config' must be a WorldConfig"):
        PhishingWorld({"world": {}})
    with pytest.raises(SpecError, match="must be below 'world.visits_per_day'"):
        PhishingWorld(small(visits=50))
    w = PhishingWorld(small(), seed=1)
    with pytest.raises(SpecError, match="'parts' must be an integer ≥ 1"):
        w.visits(0).split(0)
    with pytest.raises(SpecError, match="'until_ns' must be an integer"):
        w.due("tomorrow")
    assert set(KINDS) >= {"reported_phish", "reported_false_block", "analyst_label"}
    from closedloop.world.pages import COLUMNS, Catalog

    cols = {k: ["x"] * 3 if t is object else [0] * 3 for k, t in COLUMNS.items()}
    cols["domain"] = ["a", "b"]  # one page short
    cat = Catalog()
    with pytest.raises(SpecError, match=r"The catalog column 'domain' must have one value per page \(3"):
        cat.append(cols)
    assert cat.n == 0 and all(len(v) == 0 for v in cat.cols.values())  # nothing half-added
