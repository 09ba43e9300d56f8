"""``Registry.at`` (and ``status``/``flight_started``, which read through it) walk only the events
they need; here they give exactly what the former whole-history scan gave, on SQLite and on
PostgreSQL: a long random history of production changes, flights (new, re-bundled, re-shared,
stopped), shadows and the kill switch, with refused and lost attempts between them, equal
timestamps, a clock that goes back, another system's events interleaved, and times before the
first change, on every change, between changes and after the last."""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Callable
from typing import Any

import pytest

from closedloop.base.times import iso
from closedloop.registry import DeploymentState, FlightState, Registry
from closedloop.registry import history as history_module
from closedloop.registry.models import deployments, events

T0 = 1_767_225_600 * 10**9


def _brief(e: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    out = {k: e[k] for k in ("id", "at", "at_ns", "actor", "operation", "reason", "revision_after")}
    if detail:
        d = dict(e["detail"])
        d.pop("checks", None)
        out["detail"] = d
    return out


def scan_at(evs: list[dict[str, Any]], name: str, t: int) -> dict[str, Any]:
    """The former ``Registry.at``: every applied event of the system scanned (``evs``: the
    history without attempts, oldest first)."""
    before = [e for e in evs if e["at_ns"] <= t]
    after = [e for e in evs if e["at_ns"] > t]
    state = DeploymentState.from_dict(before[-1]["after"]) if before else DeploymentState(name)

    def started(pred: Callable[[DeploymentState], bool]) -> dict[str, Any] | None:
        start = None
        for e in before:
            was = pred(DeploymentState.from_dict(e["before"])) if e["before"] else False
            now = pred(DeploymentState.from_dict(e["after"]))
            if now and not was:
                start = e
            elif not now:
                start = None
        return None if start is None else _brief(start)

    def stopped(pred: Callable[[DeploymentState], bool]) -> dict[str, Any] | None:
        for e in after:
            if not pred(DeploymentState.from_dict(e["after"])):
                return _brief(e, detail=True)
        return None

    flights = []
    for f in state.flights:
        def pred(s: DeploymentState, f: FlightState = f) -> bool:
            g = s.flight(f.name)
            return g is not None and g.bundle == f.bundle
        flights.append({**f.to_dict(), "started": started(pred), "stopped": stopped(pred)})
    shadows = []
    for v in state.shadows:
        def spred(s: DeploymentState, v: str = v) -> bool:
            return v in s.shadows
        shadows.append({"bundle": v, "started": started(spred), "stopped": stopped(spred)})
    production = None
    if state.production is not None:
        def ppred(s: DeploymentState, v: str = state.production) -> bool:
            return s.production == v
        production = {"bundle": state.production, "since": started(ppred), "until": stopped(ppred)}
    return {
        "system": name, "at": iso(t), "at_ns": t, "revision": state.revision, "summary": state.describe(),
        "production": production, "flights": flights, "shadows": shadows, "killswitch": state.killswitch,
        "last_change": _brief(before[-1]) if before else None,
    }


def _next_state(rng: random.Random, st: DeploymentState, i: int) -> DeploymentState:
    k = rng.random()
    if st.production is None or k < 0.08:
        return st.with_(production=rng.choice(["p1", "p2", "p3", f"p{i}"]))
    if k < 0.45:
        name = rng.choice(["a", "b", "c"])
        f = st.flight(name)
        if f is not None and rng.random() < 0.4:
            return st.with_(flights=tuple(g for g in st.flights if g.name != name))
        new = FlightState(name, rng.choice(["x", "y", st.production or "x"]), rng.choice([0.05, 0.1]))
        return st.with_(flights=tuple(new if g.name == name else g for g in st.flights) if f else (*st.flights, new))
    if k < 0.7:
        v = rng.choice(["s1", "s2", "p1"])
        return st.with_(shadows=tuple(s for s in st.shadows if s != v) if v in st.shadows else (*st.shadows, v))
    return st.with_(killswitch=not st.killswitch)


def build_history(reg: Registry, name: str, n: int, seed: int) -> list[int]:
    """``n`` random events of ``name`` (and a few of another system) inserted as the registry
    writes them; returns their times."""
    rng = random.Random(seed)
    st, rev, t, rows, times = DeploymentState(name), 0, T0, [], []
    for i in range(n):
        t += rng.choice([0, 0, 1, 10**9, 5 * 10**9, -3 * 10**9])  # equal times; a clock that goes back
        times.append(t)
        common = {"at_ns": t, "actor": rng.choice(["alice", "guard"]), "reason": f"r{i}", "undone_by": None}
        if rng.random() < 0.15:
            rows.append({**common, "system": rng.choice([name, "other"]), "operation": "deploy_flight",
                         "status": rng.choice(["refused", "conflict"]), "revision_before": rev, "revision_after": None,
                         "before": st.to_json(), "after": None, "detail": '{"error":"no","checks":[1]}',
                         "undoable": False})
            continue
        new = _next_state(rng, st, i).with_(revision=rev + 1)
        rows.append({**common, "system": name, "operation": "x", "status": "applied", "revision_before": rev,
                     "revision_after": rev + 1, "before": st.to_json() if rev else None, "after": new.to_json(),
                     "detail": f'{{"message":"m{i}","checks":[{i}]}}', "undoable": True})
        st, rev = new, rev + 1
    with reg.engine.begin() as conn:
        for row in rows:  # one by one: ids in this order
            conn.execute(events.insert().values(**row))
        conn.execute(deployments.insert().values(system=name, revision=rev, state=st.to_json(), updated_ns=t))
    return times


@pytest.fixture
def reg(registry_url, tmp_path):
    r = Registry(registry_url, tmp_path / "bundles").open()
    yield r
    r.close()


@pytest.mark.parametrize("pages", [None, (1, 2, 3)])
def test_at_reads_what_the_whole_history_scan_read(reg, monkeypatch, pages):
    if pages is not None:  # pages of 1, 2 and 3 events: every page boundary is crossed
        monkeypatch.setattr(history_module, "_PAGES", pages)
    times = build_history(reg, "phishing", 300, seed=18)
    evs = reg.history("phishing", attempts=False)
    assert len(evs) > 200 and any(a["at_ns"] > b["at_ns"] for a, b in zip(evs, evs[1:], strict=False))
    rng = random.Random(1)
    probes = {T0 - 1, min(times) - 1, min(times), max(times), max(times) + 1, 0, 2**62}
    probes |= {t + d for t in rng.sample(times, 60) for d in (-1, 0, 1)}
    for t in sorted(probes):
        assert reg.at("phishing", t) == scan_at(evs, "phishing", t), t
    assert reg.at("nothing", 2**62) == scan_at([], "nothing", 2**62)
    when = _dt.datetime.fromtimestamp(times[150] / 1e9, tz=_dt.UTC)
    assert reg.at("phishing", when) == scan_at(evs, "phishing", int(when.timestamp() * 1e6) * 1000)


def test_status_and_flight_started_read_the_same(reg):
    build_history(reg, "phishing", 200, seed=7)
    evs = reg.history("phishing", attempts=False)
    now = scan_at(evs, "phishing", 2**62)
    st = reg.status("phishing", now_ns=T0)
    assert (st["production"], st["shadows"]) == (now["production"], now["shadows"])
    assert [{k: v for k, v in f.items() if k != "expected_share_of_units"} for f in st["flights"]] == now["flights"]
    for f in ("a", "b", "c", "nope"):
        want = next((x["started"]["at_ns"] for x in now["flights"] if x["name"] == f and x["started"]), None)
        assert reg.flight_started("phishing", f) == want
