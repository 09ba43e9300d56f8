"""The guardrail hot fix: production's allow / block lists edited, every entry checked (a bad one
refused naming the list, the entry and the rule — nothing changed), a new bundle built from
production's and signed with the home's key, the deploy's sanity checks run, deployed as
production and recorded in the history; the CLI's ``closedloop guardrails show|set`` shares it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from closedloop.console.data import apply_hotfix, guardrail_lists, history
from closedloop.errors import RegistryError, SpecError

EVIL = {"user_id": "u1", "url": "https://evil.example/login", "domain": "Evil.Example", "domain_age_days": 4000.0,
        "popularity_rank": 5000}


@pytest.fixture
def prod_home(tmp_path, console_world, phishing):
    from closedloop.registry import Registry

    w = console_world
    home = tmp_path / "home"
    reg = w.trust(Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open())
    for b in (w.H, w.A):
        reg.add_bundle(b, actor="alice")
    reg.add_report(w.report_HA, actor="alice")
    reg.deploy(phishing, w.H.version, actor="alice", reason="first")
    reg.signing_key(home)  # the home signs its bundles (keys/bundle-signing.pem, trusted by its registry)
    yield home, reg, w
    reg.close()


def test_a_hot_fix_is_built_signed_checked_deployed_and_recorded(prod_home, phishing):
    from closedloop import Runtime

    home, reg, w = prod_home
    before = guardrail_lists(reg, phishing)
    assert (before["allow"], before["block"], before["field"], before["production"]) == ([], [], None, w.H.version)
    assert "domain" in before["fields"] and "popularity_rank" not in before["fields"]
    assert Runtime(phishing, w.H).decide(EVIL).action != "block"
    out = apply_hotfix(reg, home, phishing, field="domain", block=["Evil.Example ", "phish.example"], allow=["good.example"],
                       actor="alice", reason="evil.example phishes our users")
    assert out["changed"] and out["version"] != w.H.version
    assert out["after"] == {"allow": ["good.example"], "block": ["evil.example", "phish.example"]}
    assert {c["name"]: c["passed"] for c in out["checks"]} == {"loads": True, "parity": False, "range": True,
                                                                "latency": True, "gate": False}
    assert out["replay"]["passed"] and out["replay"]["rows"] == 30 and out["unsigned"] is None
    st = reg.state("phishing")
    assert st.production == out["version"]
    rec = reg.bundle(out["version"])
    assert rec["parent"] == w.H.version and rec["manifest"]["intelligence"] == reg.bundle(w.H.version)["manifest"]["intelligence"]
    new = reg.load_bundle(out["version"], phishing)
    d = Runtime(phishing, new).decide(EVIL)
    assert (d.action, d.guardrail) == ("block", "hotfix_block")
    ev = history(reg, "phishing", per_page=1)["items"][0]
    assert (ev["operation"], ev["actor"], ev["reason"]) == ("deploy_production", "alice", "evil.example phishes our users")
    assert ev["before"]["production"] == w.H.version and ev["after"]["production"] == out["version"]
    assert ev["forced"].startswith("guardrail hot fix of " + w.H.version)
    sig = next(c for c in ev["checks"] if c["name"] == "signature")
    assert sig["passed"] and "home " in sig["detail"]
    # the lists read back; the same lists again change nothing; one list edited keeps the other
    now = guardrail_lists(reg, phishing)
    assert (now["field"], now["allow"], now["block"]) == ("domain", ["good.example"], ["evil.example", "phish.example"])
    same = apply_hotfix(reg, home, phishing, block=["phish.example", "evil.example"], actor="alice", reason="again")
    assert not same["changed"] and reg.state("phishing").revision == st.revision
    third = apply_hotfix(reg, home, phishing, allow=[], actor="bob", reason="no more allow-listing")
    assert third["changed"] and third["after"] == {"allow": [], "block": ["evil.example", "phish.example"]}
    assert [g["name"] for g in guardrail_lists(reg, phishing)["lists"]] == ["hotfix_block"]


@pytest.mark.parametrize("kw, match", [
    ({"block": ["ok.example", "has space.example"]}, r"The block list's entry #2 'has space.example' must not contain spaces"),
    ({"allow": [""]}, r"The allow list's entry #1 '' must not be empty"),
    ({"allow": [7]}, r"The allow list's entry #1 7 must be a string"),
    ({"block": ["x" * 300]}, r"The block list's entry #1 'x{40}.*' must be at most 253 characters"),
    ({"block": "evil.example"}, r"The block list must be a list of domain values"),
    ({"block": ["a.example"], "allow": ["A.example"]}, r"'a.example' is in both the allow and the block list"),
    ({"block": ["a.example"], "field": "browser"}, r"The block list's entry #1 'a.example' must be one of \['chrome'"),
    ({"block": ["a.example"], "field": "num_forms"}, r"The hot fix's 'field' must be a text context field"),
    ({"block": ["a.example"], "field": None}, r"The hot fix needs a 'field'"),
])
def test_an_invalid_entry_is_refused_and_nothing_changes(prod_home, phishing, kw, match):
    home, reg, w = prod_home
    kw = {"field": "domain", **kw}
    rev, events = reg.state("phishing").revision, history(reg, "phishing")["total"]
    with pytest.raises(SpecError, match=match):
        apply_hotfix(reg, home, phishing, actor="alice", reason="fix", **kw)
    assert reg.state("phishing").revision == rev and history(reg, "phishing")["total"] == events
    assert len(reg.bundles("phishing")) == 2


def test_nothing_in_production_and_unknown_systems_are_refused(tmp_path, phishing):
    from closedloop.registry import Registry

    with Registry(f"sqlite:///{tmp_path}/r.sqlite", tmp_path / "bundles").open() as reg:
        with pytest.raises(RegistryError, match="Unknown system 'phishing'"):
            guardrail_lists(reg, phishing)


def test_the_cli_shows_and_sets_the_lists_through_the_same_function(prod_home, phishing):
    from closedloop.cli.main import app
    home, reg, w = prod_home
    token = _admin_token(home)
    env = {"CLOSEDLOOP_TOKEN": token, "CLOSEDLOOP_REGISTRY_URL": ""}
    run = CliRunner().invoke
    sysref = "examples.phishing.system:phishing"
    r = run(app, ["--home", str(home), "guardrails", "set", "--system", sysref, "--field", "domain", "--block", "evil.example",
                  "--reason", "from the CLI"], env=env)
    assert r.exit_code == 0, r.output
    assert "production " + w.H.version + " → " in r.output and "block  evil.example" in r.output
    r = run(app, ["--home", str(home), "guardrails", "show", "--system", sysref, "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["block"] == ["evil.example"]
    r = run(app, ["--home", str(home), "guardrails", "set", "--system", sysref, "--block", "bad entry", "--reason", "x"], env=env)
    assert r.exit_code != 0 and "The block list's entry #1 'bad entry' must not contain spaces" in r.output
    r = run(app, ["--home", str(home), "guardrails", "set", "--system", sysref, "--block", "x.example", "--reason", "x"],
            env={**env, "CLOSEDLOOP_TOKEN": ""})
    assert r.exit_code != 0 and guardrail_lists(reg, phishing)["block"] == ["evil.example"]  # a non-admin changes nothing


def _admin_token(home):
    from closedloop.cli.main import app

    r = CliRunner().invoke(app, ["--home", str(home), "token", "add", "ops", "--role", "admin"],
                           env={"CLOSEDLOOP_TOKEN": "", "CLOSEDLOOP_REGISTRY_URL": ""})
    assert r.exit_code == 0, r.output
    return r.output.strip().splitlines()[-1]


def test_a_home_that_does_not_sign_deploys_the_hot_fix_unsigned_and_says_so(tmp_path, console_world, phishing):
    from closedloop.registry import Registry

    w = console_world
    home = tmp_path / "home"
    with w.trust(Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open()) as reg:
        reg.add_bundle(w.H, actor="alice"), reg.add_bundle(w.A, actor="alice")
        reg.add_report(w.report_HA, actor="alice")
        reg.deploy(phishing, w.H.version, actor="alice", reason="first")
        out = apply_hotfix(reg, home, phishing, field="domain", block=["evil.example"], actor="alice", reason="block it")
        ev = history(reg, "phishing", per_page=1)["items"][0]
    assert out["changed"] and "the home has no signing key" in out["unsigned"]
    sig = next(c for c in ev["checks"] if c["name"] == "signature")
    assert not sig["passed"] and sig["forced"] and ev["after"]["production"] == out["version"]
    assert not (home / "keys").exists()  # no key was created behind the admin's back


def test_the_hot_fix_replay_counts_the_golden_rows_its_entries_change(prod_home, phishing):
    home, reg, w = prod_home
    golden = next(b for b in w.report_HA["bundles"] if b["version"] == w.H.version)["golden"]
    row = next(r for r in golden if r["action"] != "block" and r["context"]["domain"] and r["context"]["popularity_rank"] == 0)
    out = apply_hotfix(reg, home, phishing, field="domain", block=[row["context"]["domain"]], actor="alice", reason="that one")
    changed = sum(r["context"]["domain"].lower() == row["context"]["domain"].lower() and r["action"] != "block" for r in golden)
    assert out["replay"]["passed"] and f"; {changed} action(s) changed, each by a hot-fix entry" in out["replay"]["detail"]
