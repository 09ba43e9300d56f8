"""A ranking system through the registry: its bundles pass the checks before traffic (generated
requests with generated candidates), production, a shadow and a flight deploy, a runtime applies
them, the flight's units rank with its bundle, and the sample-ratio check counts ranking decisions
from telemetry; a bundle whose candidate scores are not finite is refused by the range check."""

from __future__ import annotations

import pytest
from examples.feed import system as feed_module
from examples.feed.data import generate

from closedloop import Bundle, LinearModel, LogisticModel, Runtime
from closedloop.errors import RegistryError
from closedloop.registry import Registry
from closedloop.runtime.signing import SigningKey
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore

FORCE = "a test bundle without an evaluation report"


KEY = SigningKey.generate()


def _registry(home):
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open()
    reg.trust_key(KEY.public_key, name="tests", actor="a")
    return reg


def _bundles():
    feed, model = feed_module.feed, feed_module.model
    other = LogisticModel({**model.weights, "ctr": 3.0}, intercept=model.intercept, output="score")
    return feed, Bundle.build(feed, model).signed(KEY), Bundle.build(feed, other).signed(KEY)


def test_a_ranking_system_deploys_flies_and_counts_its_sample_ratio(tmp_path):
    feed, A, B = _bundles()
    home = tmp_path / "home"
    with _registry(home) as reg, \
            Telemetry(SegmentLog(home), system=feed) as tel:
        for b in (A, B):
            reg.add_bundle(b, actor="a")
        reg.deploy(feed, A.version, actor="a", reason="first", force=FORCE)
        reg.deploy(feed, B.version, actor="a", reason="shadow B", shadow=True, force=FORCE)
        reg.deploy(feed, B.version, actor="a", reason="try B", flight="b", share=0.3, force=FORCE)
        rt = Runtime(feed, A, telemetry=tel)
        assert reg.refresh(rt)["applied"]
        ds = [rt.decide(c) for c in generate(3000, n_candidates=20, seed=4)]
        tel.flush()
        flights = {d.flight for d in ds}
        assert flights == {None, "b"}
        assert {d.bundle_version for d in ds if d.flight == "b"} == {B.version}
        assert all(d.shadows and d.shadows[0].bundle_version == B.version for d in ds)
        share = sum(d.flight == "b" for d in ds) / len(ds)
        assert 0.2 < share < 0.4
        st = reg.status("feed", telemetry=TelemetryStore(home))
    s = st["telemetry"]["srm"]
    assert s["verdict"] == "ok" and not s["mismatch"], s


def test_a_ranking_bundle_with_scores_that_are_not_finite_is_refused_by_the_range_check(tmp_path):
    feed = feed_module.feed
    # weights at the edge of float64: the sum of two terms overflows to inf for most candidates
    huge = LinearModel({"age_log": 1.5e308, "fresh": 1.5e308, "ctr": 1.5e308}, intercept=0.0, output="score")
    bad = Bundle.build(feed, huge).signed(KEY)
    home = tmp_path / "home"
    with _registry(home) as reg:
        reg.add_bundle(bad, actor="a")
        with pytest.raises(RegistryError, match=r"range.*candidate .* must be a finite number"):
            reg.deploy(feed, bad.version, actor="a", reason="first", force=FORCE)
