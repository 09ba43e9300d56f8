"""The pages with other systems and without one: a ranking system's decision page (every candidate's
score, the slate, the slot propensities, replayed bitwise), and a console started without ``--system``
(the pages that need the System say so; the others show everything)."""

from __future__ import annotations

import re
from html import unescape

from support.console_client import client, login


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_a_ranking_decision_page_shows_the_slate_and_replays_bitwise(tmp_path):
    from closedloop import Bundle, Runtime
    from closedloop.console import ConsoleSettings, create_console_app
    from closedloop.experience.exploration import Softmax
    from closedloop.registry import Registry
    from closedloop.service.auth import Credentials
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
    from closedloop.world.bandit import BanditWorld

    world = BanditWorld(seed=1, n_candidates=6)
    system = world.system(k=2, explore=Softmax(0.1))
    bundle = Bundle.build(system, world.heuristic())
    home = tmp_path / "home"
    with Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open() as reg:
        reg.deploy(system, bundle, actor="alice", reason="first", allow_unsigned="a test home", force="no report in a test")
    with Telemetry(SegmentLog(home), system=system) as tel:
        rt = Runtime(system, bundle, telemetry=tel)
        ds = [rt.decide(c) for c in world.contexts(20, seed=2)]
        tel.flush()
        TelemetryStore(home).compact()
    token = Credentials(home / "credentials.json").add("vera", ["viewer"])
    app = create_console_app(ConsoleSettings(home=home))
    app.state.console._systems = {system.name: system}  # a System made here, not importable by MODULE:ATTR
    c = client(app)
    login(c, token)
    d = ds[3]
    r = c.get(f"/systems/{system.name}/decision", params={"id": d.decision_id})
    assert r.status_code == 200, r.text
    assert 'id="ranking"' in r.text and "equal to the log, bitwise" in r.text.split('id="replay-served"')[1]
    table = r.text.split('id="ranking"')[1].split("</table>")[0]
    first = re.search(r"<tr><th scope=\"row\">([^<]+)</th><td>[^<]*</td>\s*<td>1</td>", table)
    assert first and first.group(1) == str(d.ranking[0])
    assert "slot_propensities" in _text(r.text) and "candidate_scores" in _text(r.text)


def test_without_the_system_the_pages_say_what_they_need(home):
    from closedloop.console import ConsoleSettings, create_console_app

    c = client(create_console_app(ConsoleSettings(home=home.path)))  # no --system
    login(c, home.tokens["admin"])
    flights = c.get("/systems/phishing/flights")
    assert flights.status_code == 200 and "The guard's figures need the System" in _text(flights.text)
    assert 'id="flight-strict"' in flights.text and "/actions/stop?name=strict" in flights.text
    decision = c.get("/systems/phishing/decision", params={"id": "whatever"})
    assert decision.status_code == 409 and "start the console with --system MODULE:ATTR" in _text(decision.text)
    hotfix = c.get("/systems/phishing/hotfix")
    assert hotfix.status_code == 200 and "start the console with --system MODULE:ATTR" in _text(hotfix.text)
    assert "<textarea" not in hotfix.text
    for page in ("history", "goals", "reports", "mistakes"):
        assert c.get(f"/systems/phishing/{page}").status_code == 200, page
