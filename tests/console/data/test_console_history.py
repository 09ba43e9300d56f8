"""The History page's data: every change and attempt newest first, paged in the query with the
total, who / why / what served before and after; "what served at T" from ISO text; bad input refused."""

from __future__ import annotations

import pytest

from closedloop.console.data import history, served_at
from closedloop.errors import RegistryError, SpecError


def test_history_pages_newest_first_with_who_why_and_what_served(real_home, phishing):
    h = real_home
    A, B, H = h.world.A.version, h.world.B.version, h.world.H.version
    first = history(h.reg, "phishing", per_page=2)
    assert first["total"] == 3 and first["pages"] == 2 and first["has_next"] and not first["has_prev"]
    shadow, flight = first["items"]
    assert (shadow["operation"], shadow["actor"], shadow["reason"]) == ("deploy_shadow", "bob", "watch B")
    assert shadow["before"]["flights"] == [{"name": "a", "bundle": A, "share": 0.3}] and shadow["before"]["shadows"] == []
    assert shadow["after"]["shadows"] == [B] and "shadows " + B in shadow["after"]["summary"]
    assert flight["operation"] == "deploy_flight" and flight["before"]["production"] == H
    assert {c["name"] for c in flight["checks"]} >= {"signature", "parity", "range", "latency", "gate"}
    last = history(h.reg, phishing, page=2, per_page=2)
    assert [e["operation"] for e in last["items"]] == ["deploy_production"] and last["items"][0]["before"]["summary"] == "nothing deployed"
    assert history(h.reg, "phishing", page=9)["items"] == []


def test_refused_attempts_are_listed_unless_asked_not_to(tmp_path, real_home, phishing):
    from closedloop.registry import Registry

    w = real_home.world
    with w.trust(Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "bundles").open()) as reg:
        reg.add_bundle(w.H, actor="a"), reg.add_bundle(w.A, actor="a")
        reg.add_report(w.report_HA, actor="a")
        reg.deploy(phishing, w.H.version, actor="a", reason="first")
        with pytest.raises(RegistryError):
            reg.promote(phishing, "nope", actor="eve", reason="guess")
        all_ = history(reg, "phishing")
        assert [e["status"] for e in all_["items"]] == ["refused", "applied"] and all_["items"][0]["message"]
        assert all_["items"][0]["after"] is None or all_["items"][0]["after"]["production"] == w.H.version
        assert history(reg, "phishing", attempts=False)["total"] == 1


def test_what_served_at_a_time_given_as_iso_text(real_home):
    h = real_home
    events = history(h.reg, "phishing")["items"]
    # the shadow's deployment time, truncated to the microsecond in ISO text: just before it
    then = served_at(h.reg, "phishing", events[0]["at"])
    assert then["production"]["bundle"] == h.world.H.version and [f["name"] for f in then["flights"]] == ["a"]
    assert then["shadows"] == []
    assert served_at(h.reg, "phishing", events[0]["at_ns"])["shadows"][0]["bundle"] == h.world.B.version
    before = served_at(h.reg, "phishing", "2001-01-01")
    assert before["production"] is None and before["summary"] == "nothing deployed"


@pytest.mark.parametrize("kw, match", [
    ({"page": 0}, r"'page' must be an integer ≥ 1"), ({"page": "2"}, r"'page' must be an integer ≥ 1"),
    ({"per_page": 0}, r"'per_page' must be an integer in \[1, 500\]"), ({"per_page": 501}, r"'per_page'"),
])
def test_bad_pages_are_refused(real_home, kw, match):
    with pytest.raises(SpecError, match=match):
        history(real_home.reg, "phishing", **kw)


def test_unknown_system_and_bad_time_are_refused(real_home):
    with pytest.raises(RegistryError, match=r"Unknown system 'spam': the registry holds phishing"):
        history(real_home.reg, "spam")
    with pytest.raises(SpecError, match=r"The 'when' must be a time: ISO-8601 .* Got 'yesterday' instead"):
        served_at(real_home.reg, "phishing", "yesterday")


def test_the_registry_pages_read_the_same_on_sqlite_and_postgresql(registry_url, tmp_path, real_home, phishing):
    from closedloop.console.data import compare, reports, worst
    from closedloop.registry import Registry

    w = real_home.world
    with w.trust(Registry(registry_url, tmp_path / "bundles").open()) as reg:
        for b in (w.H, w.A, w.B):
            reg.add_bundle(b, actor="a")
        reg.add_report(w.report_HA, actor="a"), reg.add_report(w.report_AB, actor="a")
        reg.deploy(phishing, w.H.version, actor="a", reason="first")
        reg.deploy(phishing, w.A.version, actor="b", reason="A", flight="a", share=0.5)
        h = history(reg, "phishing", per_page=1)
        assert (h["total"], h["items"][0]["operation"], h["items"][0]["actor"]) == (2, "deploy_flight", "b")
        assert [r["bundles"] for r in reports(reg, "phishing")["items"]] == [[w.A.version, w.B.version], [w.H.version, w.A.version]]
        assert compare(reg, w.H.version, w.A.version)["right"]["metrics"]["gate"]["passed"] is True
        assert worst(reg, phishing)["total"] > 0
        assert served_at(reg, "phishing", h["items"][0]["at_ns"])["flights"][0]["name"] == "a"
