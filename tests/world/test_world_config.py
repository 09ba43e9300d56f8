"""The world's one committed configuration: it loads, it matches the phishing system, and every
bad value is refused naming the parameter, the rule and the value."""

from __future__ import annotations

import pytest

from closedloop import SpecError
from closedloop.world import TRAITS, WorldConfig


def test_the_committed_configuration_loads_and_matches_the_system(phishing):
    from examples.phishing.data import BRANDS
    from examples.phishing.system import BROWSERS, FREE_HOSTS

    cfg = WorldConfig.load()
    assert cfg.source == "closedloop.world:phishing.toml"
    assert cfg.world.system == phishing.name
    assert cfg.world.visits_per_day == 50_000 and len(cfg.world.hourly_profile) == 24
    # the world's vocabulary is the running example's: its brands, the free hosts its features know
    assert [(b.name, b.domain, b.rank) for b in cfg.brands] == [tuple(b) for b in BRANDS]
    assert set(cfg.hosting.free_known) == set(FREE_HOSTS)
    assert not set(cfg.hosting.free_unknown) & set(FREE_HOSTS)
    assert {name for name, _ in cfg.users.browsers} <= set(BROWSERS)
    # every template gives every trait a probability vector summing to 1
    for t in cfg.phish.templates:
        assert len(t.traits) == len(TRAITS)
        for vec, (_, cats) in zip(t.traits, TRAITS, strict=True):
            assert len(vec) == len(cats) and sum(vec) == pytest.approx(1.0)
    assert cfg.digest == WorldConfig.load().digest
    assert len(cfg.digest) == 64


def test_overrides_merge_and_change_the_digest():
    base = WorldConfig.load()
    small = WorldConfig.load(overrides={"world": {"visits_per_day": 3000}, "users": {"count": 500}})
    assert small.world.visits_per_day == 3000 and small.users.count == 500
    assert small.outcomes == base.outcomes  # untouched sections stay
    assert small.digest != base.digest and small.source.endswith("(with overrides)")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"outcomes": {"victim_rate": 1.5}}, "World config 'outcomes.victim_rate' must be a number in [0, 1]. Got 1.5 instead."),
        ({"world": {"visits_per_day": 0}}, "World config 'world.visits_per_day' must be an integer in [1, 100000000]. Got 0 instead."),
        ({"world": {"visits_per_day": 2.5}}, "'world.visits_per_day' must be an integer"),
        ({"world": {"start": "yesterday"}}, "World config 'world.start' must be an ISO-8601 time"),
        ({"world": {"hourly_profile": [1, 2]}}, "'world.hourly_profile' must be a list of 24 numbers"),
        ({"users": {"browsers": {"netscape": 1.0}}}, "World config 'users.browsers.netscape' must be one of"),
        ({"users": {"susceptibility_beta": [2, -1]}}, "'users.susceptibility_beta' must be two numbers > 0"),
        ({"adaptation": {"delay_days": 0}}, "World config 'adaptation.delay_days' must be an integer ≥ 1. Got 0 instead."),
        ({"adaptation": {"speed": 2}}, "World config 'adaptation.speed' is not a known parameter"),
        ({"analysts": {"sample_rate": {"escalate": 0.1}}}, "'analysts.sample_rate' must be a table with exactly the actions"),
        ({"abuse": {"sources": 10**6}}, "World config 'abuse.sources' must be smaller than 'users.count'"),
        ({"phish": {"templates": [{"name": "x", "share": 1.0}]}}, "World config 'phish.templates[0].hosting' is required and missing."),
        ({"legit": {"kinds": [{"name": "casino", "share_start": 1, "share_end": 1, "sites": 5, "churn_per_day": 0}]}},
         "World config 'legit.kinds[0].name' must be one of"),
        ({"brands": [{"name": "PayPal", "domain": "paypal.com", "rank": 1, "phish_weight": 1}]},
         "World config 'brands[0].name' must be lower case"),
        ({"hosting": {"free_unknown": ["weebly.com"]}}, "'hosting.free_unknown' must be hosts not also listed in free_known"),
        ({"efficacy": {"charm": {"yes": 2}}}, "World config 'efficacy.charm' must be a trait, one of ['hosting'"),
        ({"efficacy": {"https": {"yes": -1}}}, "World config 'efficacy.https.yes' must be a number ≥ 0. Got -1 instead."),
    ],
)
def test_bad_values_are_refused_naming_parameter_rule_and_value(overrides, message):
    with pytest.raises(SpecError) as e:
        WorldConfig.load(overrides=overrides)
    assert message in str(e.value)


def test_a_template_trait_category_must_be_known():
    t = {"name": "x", "share": 1.0, "hosting": {"moon": 1.0}, "https": 0.5, "credential": {"password": 1.0},
         "brand_shown": 1.0, "lure_url": 1.0, "domain_age": {"fresh": 1.0}, "at_trick": 0.0, "external_resources": 0.5}
    with pytest.raises(SpecError, match=r"'phish.templates\[0\].hosting.moon' must be one of \['lookalike'"):
        WorldConfig.load(overrides={"phish": {"templates": [t]}})


def test_a_file_is_read_and_bad_toml_is_refused(tmp_path):
    from importlib import resources

    text = resources.files("closedloop.world").joinpath("phishing.toml").read_text()
    p = tmp_path / "w.toml"
    p.write_text(text.replace("visits_per_day = 50000", "visits_per_day = 1234"))
    assert WorldConfig.load(p).world.visits_per_day == 1234
    p.write_text("[world\n")
    with pytest.raises(SpecError, match="is not valid TOML"):
        WorldConfig.load(p)
    with pytest.raises(SpecError, match="cannot be read"):
        WorldConfig.load(tmp_path / "missing.toml")
