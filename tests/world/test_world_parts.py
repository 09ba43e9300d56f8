"""The world's parts on their own: the moved names still import where they
were, each legitimate site kind and each kit hosting makes the pages it should, a day's page
loads are complete and time-ordered, referrers follow the configured e-mail share, the
configuration's reader and section rules, and checkpoints carry their version."""

from __future__ import annotations

import ipaddress
import json

import numpy as np
import pytest

from closedloop import SpecError
from closedloop.world import PhishingWorld, WorldConfig, config_sections, pages, phishing, visits
from closedloop.world import config as config_module
from closedloop.world._random import stream
from closedloop.world.campaigns import Campaigns
from closedloop.world.checkpoint import STATE_VERSION
from closedloop.world.config import LEGIT_KINDS, TRAITS
from closedloop.world.config_checks import read_sections
from closedloop.world.config_reader import TableReader
from closedloop.world.pages import COLUMNS, Catalog, legit_pages, phish_pages
from closedloop.world.sites import Sites
from closedloop.world.traffic import draw_loads
from closedloop.world.users import HONEST, Users
from closedloop.world.vocab import EMAIL_REFERRERS, LEGIT_REFERRERS, OTHER_PHISH_REFERRERS


def small(visits: int = 3000, users: int = 600, **more) -> WorldConfig:
    over = {"world": {"visits_per_day": visits}, "users": {"count": users}}
    for k, v in more.items():
        over.setdefault(k, {}).update(v)
    return WorldConfig.load(overrides=over)


def test_moved_names_still_import_where_they_were():
    for name in config_sections.__all__:
        assert getattr(config_module, name) is getattr(config_sections, name), name
    assert phishing.Visits is visits.Visits
    from closedloop.world.legit_sites import legit_pages as moved_legit
    from closedloop.world.phish_kits import phish_pages as moved_phish

    assert pages.legit_pages is moved_legit and pages.phish_pages is moved_phish
    # the vocabulary the example's static generator (examples/phishing/data.py) takes from pages
    for name in ("_BAD_TLDS", "_LEGIT_PATHS", "_LOGIN_PATHS", "_LOGIN_SUBS", "_LURES", "_PLATFORM_PATHS", "_POPULAR",
                 "_SUBS", "_TLDS", "_TRACKING", "_WORDS", "_paths", "_pick", "LEGIT_REFERRERS", "EMAIL_REFERRERS",
                 "OTHER_PHISH_REFERRERS"):
        assert getattr(pages, name) is not None, name


@pytest.mark.parametrize("kind", LEGIT_KINDS)
@pytest.mark.parametrize("new", [False, True])
def test_every_site_kind_makes_catalog_pages(kind, new):
    cfg = WorldConfig.load()
    P, m = cfg.legit.pages_per_site, 6
    cols, rank = legit_pages(cfg, kind, LEGIT_KINDS.index(kind), m, np.random.default_rng(3), 4, 0, new)
    assert list(cols) == list(COLUMNS)
    assert rank.shape == (m,)
    rows = Catalog().append(cols)
    assert rows.size == m * P
    assert np.array_equal(cols["site"], np.repeat(np.arange(m), P))
    assert (cols["born"] == 4).all() and (cols["campaign"] == -1).all() and (cols["efficacy"] == 1.0).all()
    assert (cols["has_password_field"] <= (cols["num_forms"] > 0)).all()  # a password field only in a form
    assert all(u.startswith(("http://", "https://")) for u in cols["url"])
    if new and kind not in ("intranet", "login_service", "free_personal"):
        assert (rank == 0).all()  # a replacement site is newly registered: not ranked yet
    if kind == "intranet":
        assert all(ipaddress.ip_address(d).version == 4 and d.startswith(("192.168.", "10.", "172.")) for d in cols["domain"])
        assert cols["age_fixed"].all()
    else:
        assert not cols["age_fixed"].any()
    if kind == "login_service":
        assert set(cols["domain"]) <= {b.domain for b in cfg.brands}
        assert all(cols["page_brand"])


def _kit(cfg: WorldConfig, hosting: str, **fixed: int) -> dict:
    """A kit generation of 40 pages, all with ``hosting`` and the given categories, others drawn."""
    rng = np.random.default_rng(11)
    traits = np.stack([rng.integers(0, len(c), size=40) for _, c in TRAITS], axis=1).astype(np.int8)
    names = [n for n, _ in TRAITS]
    traits[:, 0] = dict(TRAITS)["hosting"].index(hosting)
    for name, value in fixed.items():
        traits[:, names.index(name)] = value
    return phish_pages(cfg, 0, traits, np.random.default_rng(5), 2, 7, 1)


def test_each_kit_hosting_shapes_its_pages():
    cfg = WorldConfig.load()
    brand = cfg.brands[0]
    for hosting in dict(TRAITS)["hosting"]:
        cols = _kit(cfg, hosting)
        assert list(cols) == list(COLUMNS), hosting
        assert (cols["campaign"] == 7).all() and (cols["generation"] == 1).all() and (cols["born"] == 2).all()
        assert all(d for d in cols["domain"]), hosting
    ip = _kit(cfg, "ip")
    assert all(ipaddress.ip_address(d).version == 4 for d in ip["domain"])
    assert ip["age_fixed"].all() and (ip["popularity_rank"] == 0).all()
    plat = _kit(cfg, "platform", https=0)
    assert set(plat["domain"]) <= {d for _, d, _ in cfg.hosting.platforms}
    assert plat["https"].all()  # a platform is on HTTPS whatever the kit chose
    assert all("/wp-content/plugins/" in u for u in _kit(cfg, "compromised")["url"])
    assert set(_kit(cfg, "free_known")["domain"]) <= set(cfg.hosting.free_known)
    assert all(f"://{brand.domain}@" in u for u in _kit(cfg, "lookalike", at_trick=1)["url"])
    assert not any("@" in u for u in _kit(cfg, "lookalike", at_trick=0)["url"])
    pw = _kit(cfg, "throwaway", credential=2)
    assert pw["has_password_field"].all() and (pw["num_forms"] >= 1).all()
    assert (_kit(cfg, "throwaway", credential=0)["num_forms"] == 0).all()
    fresh = _kit(cfg, "lookalike", domain_age=0)
    assert ((fresh["age0"] >= 0.5) & (fresh["age0"] <= 29.0)).all()


def test_a_days_page_loads_are_complete_and_in_time_order():
    cfg = small()
    seed, d = 3, 0
    catalog = Catalog()
    sites = Sites(cfg, seed, catalog)
    users = Users(cfg, stream(seed, 2, 0))
    camps = Campaigns()
    camps.start_many(cfg, seed, 0, cfg.phish.initial_campaigns, stream(seed, 4, 0), catalog, initial=True)
    start = cfg.day_start_ns(d)
    ts, user, page, u_ref = draw_loads(cfg, stream(seed, 1, d), d, start, users, sites, camps)
    N = cfg.world.visits_per_day
    assert ts.shape == user.shape == page.shape == u_ref.shape == (N,)
    assert (np.diff(ts) >= 0).all() and ts[0] >= start and ts[-1] < start + cfg.day_ns
    abusive = users.role[user] != HONEST
    assert int(abusive.sum()) == cfg.abuse.sources * cfg.abuse.visits_per_day
    assert 0 < int((catalog.cols["campaign"][page] >= 0).sum()) < N
    again = draw_loads(cfg, stream(seed, 1, d), d, start, users, sites, camps)
    assert all(np.array_equal(a, b) for a, b in zip((ts, user, page, u_ref), again, strict=True))


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_referrers_follow_the_email_share(share):
    w = PhishingWorld(small(phish={"referrer_email_share": share}), seed=2)
    v = w.visits(0)
    ref = np.asarray(v.contexts["referrer_domain"].to_pylist(), dtype=object)
    phish = np.asarray(w.truth(v.decision_ids)["is_phish"])
    assert phish.any() and (~phish).any()
    assert set(ref[~phish]) <= set(LEGIT_REFERRERS)
    expected = EMAIL_REFERRERS if share == 1.0 else OTHER_PHISH_REFERRERS
    assert set(ref[phish]) <= set(expected)


def test_the_reader_names_parameter_rule_and_value():
    r = TableReader({"a": 0, "b": "x", "c": [1, 2], "d": 1.5}, "sec")
    with pytest.raises(SpecError, match=r"^World config 'sec.a' must be a number > 0\. Got 0 instead\.$"):
        r.number("a", 0.0, lo_open=True)
    with pytest.raises(SpecError, match=r"'sec.b' must be an integer in \[1, 9\]\. Got 'x' instead"):
        r.integer("b", 1, 9)
    with pytest.raises(SpecError, match=r"'sec.missing' is required and missing"):
        r.get("missing")
    with pytest.raises(SpecError, match=r"'sec.c' is not a known parameter \(known here: \['a', 'b', 'missing'\]\)"):
        r.done()
    with pytest.raises(SpecError, match=r"World config '<root>' must be a table\. Got \[\] instead\."):
        read_sections([])


def test_sections_are_read_in_the_files_order_and_unknown_ones_refused():
    import tomllib
    from importlib import resources

    raw = tomllib.loads(resources.files("closedloop.world").joinpath("phishing.toml").read_text())
    sections = read_sections(raw)
    assert list(sections) == [f.name for f in config_module.WorldConfig.__dataclass_fields__.values()][:-1]
    with pytest.raises(SpecError, match="'extra' is not a known parameter"):
        read_sections({**raw, "extra": {}})
    del raw["world"]
    with pytest.raises(SpecError, match="'world' is required and missing"):
        read_sections(raw)


def test_a_checkpoint_carries_its_version(tmp_path):
    cfg = small()
    w = PhishingWorld(cfg, seed=4)
    v = w.visits(0)
    w.observe(v, ["allow"] * len(v))
    w.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "state.json").read_text())
    assert meta["version"] == STATE_VERSION
    meta["version"] = STATE_VERSION + 1
    (tmp_path / "s" / "state.json").write_text(json.dumps(meta))
    with pytest.raises(SpecError, match=f"World state version must be {STATE_VERSION}. Got {STATE_VERSION + 1} instead"):
        PhishingWorld.load(tmp_path / "s", cfg)
