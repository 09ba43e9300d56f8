"""The phishing example: generator, heuristic, trained model and the demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from examples.phishing import static_demo as demo
from examples.phishing.data import KNOWN_BAD_DOMAINS, generate, records
from examples.phishing.heuristic import heuristic_intelligence

from closedloop import Bundle
from closedloop.training import roc_auc, train_logistic


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a
    )


def _scores(system, intelligence, cols) -> np.ndarray:
    cc = system.schema.validate_batch(cols)
    return intelligence.bind(system.features).batch(system.features.batch(cc), cc)[:, 0]


def test_generator_is_deterministic_per_seed() -> None:
    c1, y1 = generate(3000, seed=5)
    c2, y2 = generate(3000, seed=5)
    c3, y3 = generate(3000, seed=6)
    assert _same(c1, c2) and np.array_equal(y1, y2)
    assert not _same(c1, c3)
    assert not np.array_equal(y1, y3)
    assert y1.dtype == np.int64 and set(np.unique(y1)) == {0, 1}


def test_generator_shape_and_rates(phishing) -> None:
    cols, y = generate(20_000, seed=1, phish_rate=0.1)
    assert set(cols) == {f.name for f in phishing.schema.fields}
    assert all(len(c) == 20_000 for c in cols.values())
    assert 0.09 < y.mean() < 0.11
    assert 0.28 < generate(5000, seed=1, phish_rate=0.3)[1].mean() < 0.32
    assert generate(0, seed=1)[1].shape == (0,)
    users = set(cols["user_id"])
    assert 1000 < len(users) <= 3000 and all(u.startswith("u") and len(u) == 6 for u in users)
    assert set(cols["browser"]) <= set(phishing.schema.by_name["browser"].choices)
    assert all(len(c) in (0, 2) for c in cols["country"])
    domains = np.asarray(cols["domain"], dtype=object)
    assert set(domains[y == 1]) & set(KNOWN_BAD_DOMAINS)  # a few phish live on known-bad domains
    assert not set(domains[y == 0]) & set(KNOWN_BAD_DOMAINS)
    cc = phishing.schema.validate_batch(cols)
    X = phishing.features.batch(cc)
    ip = X[:, phishing.features.index["ip_in_url"]]
    assert 0 < ip[y == 0].mean() and 0 < ip[y == 1].mean()  # IP hosts on both sides
    # no single feature separates the classes
    for j, name in enumerate(phishing.features.names):
        auc = roc_auc(y, X[:, j])
        assert max(auc, 1 - auc) < 0.9, name


def test_every_generated_row_validates(phishing) -> None:
    cols, _ = generate(20_000, seed=2, phish_rate=0.3)
    cc = phishing.schema.validate_batch(cols, errors="skip")
    assert cc.errors == [] and cc.n == 20_000
    rows = records(cols)
    assert len(rows) == 20_000
    json.dumps(rows[:100])  # plain Python types
    for r in rows[:3000]:
        phishing.schema.validate(r)  # raises ContextError on any invalid value


def test_heuristic_scores_known_bad_domains_and_red_flags(phishing) -> None:
    h = heuristic_intelligence()
    assert h.output == phishing.experience.score
    base = records(generate(1, seed=3)[0])[0]
    cols = {k: [base[k]] * 2 for k in base}
    cols["domain"] = [KNOWN_BAD_DOMAINS[0].upper(), "example.org"]
    cols["url"] = ["https://x/", "http://10.0.0.1/login"]
    s = _scores(phishing, h, cols)
    assert s[0] == 1.0 and 0.5 < s[1] <= 1.0


def test_logistic_model_beats_the_heuristic_on_held_out_auc(phishing) -> None:
    train, ty = generate(10_000, seed=11)
    test, y = generate(5_000, seed=12)
    result = train_logistic(phishing, train, ty)
    auc_model = roc_auc(y, _scores(phishing, result.model, test))
    auc_heuristic = roc_auc(y, _scores(phishing, heuristic_intelligence(), test))
    assert 0.9 <= auc_model <= 0.98
    assert auc_model > auc_heuristic + 0.02
    assert result.metrics["n"] == 10_000 and result.metrics["positives"] == int(ty.sum())


def test_demo_main_runs_and_reuses_its_bundles(tmp_path, capsys) -> None:
    argv = ["--home", str(tmp_path), "--train", "3000", "--test", "1000", "--single", "200", "--seed", "3"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "Held-out evaluation" in out and "cost / 1k" in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 5 and all(d["action"] in ("allow", "warn", "block") for d in lines)
    bundles = sorted((tmp_path / "bundles").iterdir())
    assert len(bundles) == 2
    loaded = [Bundle.load(p, demo.phishing) for p in bundles]
    kinds = {b.manifest["intelligence"]["kind"]: b for b in loaded}
    assert set(kinds) == {"lookup_table", "logistic"}
    assert kinds["logistic"].parent == kinds["lookup_table"].version
    assert kinds["logistic"].metrics["n"] == 3000
    for b in loaded:
        assert b.version in out
    assert "saved to" in out

    # A second run finds the same content-versioned bundles and reuses them.
    assert demo.main(argv) == 0
    out2 = capsys.readouterr().out
    assert "already at" in out2 and "saved to" not in out2
    assert sorted((tmp_path / "bundles").iterdir()) == bundles


def test_expected_cost(phishing) -> None:
    actions = np.array(["allow", "allow", "warn", "warn", "block", "block"], dtype=object)
    labels = np.array([0, 1, 0, 1, 0, 1])
    # allow/phish 100 + warn/legit 2 + warn/phish 10 + block/legit 25 = 137 over 6 decisions
    assert demo.expected_cost_per_1k(phishing, actions, labels) == pytest.approx(137 / 6 * 1000)


def test_phishing_intelligences_pass_the_conformance_suite(phishing) -> None:
    from closedloop import checks

    cols, y = generate(3000, seed=21)
    model = train_logistic(phishing, cols, y).model
    for intelligence in (heuristic_intelligence(), model):
        checks.check_intelligence(phishing, intelligence)
        checks.check_runtime(phishing, Bundle.build(phishing, intelligence))


def test_decide_equals_decide_batch_on_generated_pages(phishing) -> None:
    from closedloop import DecisionIds, Runtime

    cols, y = generate(3000, seed=22)
    bundle = Bundle.build(phishing, train_logistic(phishing, cols, y).model)
    rt = Runtime(phishing, bundle, ids=DecisionIds(seed=0))
    test, _ = generate(400, seed=23, phish_rate=0.5)
    batch = rt.decide_batch(test)
    for i, row in enumerate(records(test)):
        d = rt.decide(row)
        assert d.scores == batch[i].scores and d.action == batch[i].action and d.why == batch[i].why


def test_generator_refuses_bad_arguments() -> None:
    from closedloop import SpecError

    with pytest.raises(SpecError, match=r"'n'.*-1"):
        generate(-1, seed=0)
    with pytest.raises(SpecError, match=r"'phish_rate'.*1.5"):
        generate(10, seed=0, phish_rate=1.5)
