"""The demo's report: one self-contained HTML page (no network: Vega, Vega-Lite and vega-embed are
the copies vendored in ``closedloop/evaluation/html/assets`` and inlined; a Content-Security-Policy
admits only those scripts, by hash).

Charts over simulated time — phishing visits allowed per 1,000 visits and false blocks per 1,000
legitimate visits for the three policies, and each of the loop's goals as measured from its own
telemetry — with deployments, rollbacks, gate stops and alerts marked on the time axis; tables
with the figures of every seed, the targets, what the safety net did (the bad candidate, the
quarantined sources) and the loop's cycle log.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from closedloop.evaluation.html import _ASSETS, _CSS, _DRIVER, _asset, _csp_hash, _json_for_script

from .loop_demo import ARMS, DemoRun

__all__ = ["render_report", "write_report"]

_COLORS = {"heuristic": "#8c8c8c", "frozen": "#d95f02", "loop": "#1b9e77"}
_EVENT_COLORS = {"promote": "#1b9e77", "flight": "#66a61e", "shadow": "#a6d854", "deploy": "#7570b3",
                 "rollback": "#e7298a", "gate_failed": "#e6ab02", "alert": "#a6761d"}
_EXTRA_CSS = """
table.num td, table.num th { text-align: right; } table.num td:first-child, table.num th:first-child { text-align: left; }
.ok { color: var(--pass); font-weight: 600; } .bad { color: var(--fail); font-weight: 600; }
.events { max-height: 28em; overflow-y: auto; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: Any, digits: int = 2) -> str:
    return "—" if x is None else f"{float(x):,.{digits}f}"


def _rel(x: Any) -> str:
    return "the frozen model blocked nothing" if x is None else f"{100 * x:+.1f} %"


def _ok(b: bool) -> str:
    return "<span class='ok'>met</span>" if b else "<span class='bad'>not met</span>"


def _event_group(kind: str) -> str:
    return "alert" if kind.startswith("alert:") else kind if kind in _EVENT_COLORS else "deploy"


def _event_rows(run: DemoRun) -> list[dict[str, Any]]:
    out = []
    for e in run.events:
        if e["kind"] == "alert:goal_missed":
            continue  # one a day per missed goal: the goal charts show them
        out.append({"day": e["day"], "event": _event_group(e["kind"]), "what": f"{e['kind']}: {e['text']}"[:300]})
    return out


def _event_layer(events: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = [k for k in _EVENT_COLORS if any(e["event"] == k for e in events)]
    return {
        "data": {"values": events},
        "mark": {"type": "rule", "strokeDash": [4, 3], "opacity": 0.7},
        "encoding": {
            "x": {"field": "day", "type": "quantitative"},
            "color": {"field": "event", "type": "nominal", "title": "event",
                      "scale": {"domain": kinds, "range": [_EVENT_COLORS[k] for k in kinds]},
                      "legend": {"orient": "bottom"}},
            "tooltip": [{"field": "day"}, {"field": "what"}],
        },
    }


def _arm_chart(run: DemoRun, key: str, title: str, ytitle: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for arm in ARMS:
        for r in run.arms[arm]:
            if key == "phish_allowed_per_1k":
                v = 1000.0 * r["phish_allowed"] / max(r["decided"], 1)
            else:
                v = 1000.0 * r["legit_blocked"] / max(r["legit_visits"], 1)
            rows.append({"day": r["day"], "policy": arm, "value": round(v, 4)})
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {"text": title},
        "width": 760, "height": 260,
        "resolve": {"scale": {"color": "independent"}},
        "layer": [
            {"data": {"values": rows}, "mark": {"type": "line", "point": False},
             "encoding": {
                 "x": {"field": "day", "type": "quantitative", "title": "simulated day"},
                 "y": {"field": "value", "type": "quantitative", "title": ytitle},
                 "color": {"field": "policy", "type": "nominal",
                           "scale": {"domain": list(ARMS), "range": [_COLORS[a] for a in ARMS]},
                           "legend": {"orient": "top"}},
                 "tooltip": [{"field": "day"}, {"field": "policy"}, {"field": "value", "format": ".3f"}]}},
            _event_layer(events),
        ],
    }


def _goal_chart(run: DemoRun, goal: dict[str, Any], points: list[dict[str, Any]], events: list[dict[str, Any]],
                day0_ns: int) -> dict[str, Any]:
    day_ns = 86_400 * 10**9
    rows = [{"day": round((p["start_ns"] - day0_ns) / day_ns, 4), "value": p["value"], "n": p.get("n"),
             "met": bool(p.get("met")), "window": p["window"]} for p in points if p.get("value") is not None]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {"text": f"goal {goal['name']} ({goal['level']}, {goal['cadence']}): {goal['metric']}",
                  "subtitle": f"target {goal['direction'].replace('_', ' ')} {goal['target']:g} — the loop, "
                              "measured from its own telemetry"},
        "width": 760, "height": 160,
        "resolve": {"scale": {"color": "independent"}},
        "layer": [
            {"data": {"values": rows}, "mark": {"type": "line", "point": len(rows) < 80, "color": _COLORS["loop"]},
             "encoding": {"x": {"field": "day", "type": "quantitative", "title": "simulated day",
                                "scale": {"domain": [0, run.settings.days]}},
                          "y": {"field": "value", "type": "quantitative", "title": goal["metric"]},
                          "tooltip": [{"field": "window"}, {"field": "value", "format": ".4g"}, {"field": "n"},
                                      {"field": "met"}]}},
            {"data": {"values": [{"target": goal["target"]}]}, "mark": {"type": "rule", "color": "#444"},
             "encoding": {"y": {"field": "target", "type": "quantitative"}}},
            _event_layer([e for e in events if e["event"] != "alert"]),
        ],
    }


def _summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    head = ("<tr><th>seed</th><th>policy</th><th>phishing allowed / 1k visits</th><th>caught share of phishing</th>"
            "<th>false blocks / 1k legit</th><th>false warnings / 1k legit</th><th>victims</th></tr>")
    body = []
    for s in summaries:
        for arm in ARMS:
            a = s["arms"][arm]
            body.append(f"<tr><td>{s['seed']}</td><td>{arm}</td><td>{_f(a['phish_allowed_per_1k'], 3)}</td>"
                        f"<td>{_f(100 * a['phish_caught_share'], 1)} %</td><td>{_f(a['false_blocks_per_1k_legit'], 3)}</td>"
                        f"<td>{_f(a['false_warnings_per_1k_legit'], 3)}</td><td>{_f(a['victims'], 0)}</td></tr>")
    return f"<table class='num'>{head}{''.join(body)}</table>"


def _targets_table(summaries: Sequence[dict[str, Any]]) -> str:
    head = ("<tr><th>seed</th><th>phishing allowed vs frozen</th><th>≥ 50 % fewer</th><th>false blocks vs frozen</th>"
            "<th>≤ +5 %</th><th>bad candidate stopped</th><th>abusers quarantined</th><th>promotions</th>"
            "<th>guard rollbacks</th><th>gate stops</th><th>seconds</th></tr>")
    body = []
    for s in summaries:
        t = s["targets_met"]
        body.append(
            f"<tr><td>{s['seed']}</td><td>{_f(-100 * s['phish_allowed_reduction_vs_frozen'], 1)} %</td>"
            f"<td>{_ok(t['phish_allowed_halved'])}</td><td>{_rel(s['false_blocks_relative_to_frozen'])}</td>"
            f"<td>{_ok(t['false_blocks_within_5pct'])}</td><td>{_ok(t['fault_stopped'])}</td>"
            f"<td>{_ok(t['abuse_quarantined'])}</td><td>{s['promotions']}</td><td>{s['rollbacks']}</td>"
            f"<td>{s['gate_stops']}</td><td>{_f(s['seconds'], 0)}</td></tr>")
    return f"<table class='num'>{head}{''.join(body)}</table>"


def _safety(run: DemoRun) -> str:
    parts = ["<section id='safety'><h2>The safety net</h2>"]
    f = run.fault
    if f is None:
        parts.append("<p>No label-pipeline fault was injected in this run.</p>")
    else:
        n = (f.get("event") or {}).get("labels_corrupted", 0)
        parts.append(f"<h3>The bad candidate</h3><p>On day {f['day']} the world broke the label pipeline "
                     f"(<code>{_e(f['kind'])}</code>): {n:,} analyst labels delivered that day were wrong. ")
        if not f["candidates"]:
            parts.append("No candidate was trained on that data.</p>")
        else:
            parts.append("What became of the candidates trained on it:</p><ul>")
            for c in f["candidates"]:
                cls = "ok" if c["fate"].startswith("stopped") else "bad" if c["fate"] == "promoted" else ""
                parts.append(f"<li>day {c['day']}: <code>{_e(c['candidate'])}</code> — "
                             f"<span class='{cls}'>{_e(c['fate'])}</span>. {_e(c['why'])}</li>")
            parts.append("</ul>")
    ab = run.abuse
    q = ab.get("quarantined", [])
    parts.append("<h3>Abusive reporters</h3>")
    srcs = {s["source"]: s for s in ab.get("sources", [])}
    if q:
        parts.append(f"<p>The loop quarantined {len(q)} outcome source(s): their reports are left out of "
                     "datasets and goal measurements.</p><ul>")
        for name in q:
            parts.append(f"<li><code>{_e(name)}</code>: {_e(srcs.get(name, {}).get('reason', ''))}</li>")
        parts.append("</ul>")
    else:
        parts.append("<p>No source was quarantined.</p>")
    dw = [s for s in ab.get("sources", []) if s.get("verdict") == "downweighted"]
    if dw:
        parts.append("<p>Down-weighted: " + ", ".join(f"<code>{_e(s['source'])}</code> ({_e(s['reason'])})"
                                                       for s in dw) + "</p>")
    t = ab.get("truth") or {}
    if t:
        parts.append(f"<p class='muted'>Ground truth (for measurement only — the loop never sees it): "
                     f"{len(t.get('abusive_sources', []))} abusive reporters; quarantined {len(t.get('caught', []))}, "
                     f"missed {len(t.get('missed', []))}, honest sources quarantined "
                     f"{len(t.get('wrongly_quarantined', []))}.</p>")
    parts.append("</section>")
    return "".join(parts)


def _cycles_table(run: DemoRun) -> str:
    rows = []
    for c in run.cycles:
        alerts = "; ".join(f"{a['kind']} {a['subject']}" for a in c.get("alerts", []) if a["kind"] != "goal_missed")
        rows.append(f"<tr><td>{c['day']}</td><td>{_e(c['outcome'])}</td><td>{_e((c.get('reason') or '')[:240])}</td>"
                    f"<td>{_e(alerts[:200])}</td></tr>")
    return ("<section id='cycles'><h2>The loop's cycles</h2><div class='events'><table>"
            "<tr><th>day</th><th>outcome</th><th>why</th><th>alerts (goal misses aside)</th></tr>"
            + "".join(rows) + "</table></div></section>")


def render_report(runs: Sequence[DemoRun]) -> str:
    """The page for one or more runs (seeds): the charts are the first run's, the tables every run's."""
    if not runs:
        raise ValueError("render_report needs at least one DemoRun.")
    run = runs[0]
    summaries = [r.summary() for r in runs]
    events = _event_rows(run)
    charts: list[dict[str, Any]] = []

    def chart(spec: dict[str, Any]) -> str:
        cid = f"chart-{len(charts)}"
        charts.append({"id": cid, "spec": spec})
        return f"<div class='chart' id='{cid}' data-chart='{_e(spec['title']['text'])}'></div>"

    from .system import phishing

    day0 = run.settings.world_config().day_start_ns(0)
    goal_charts = []
    for g in phishing.goals:
        pts = sorted((p for p in run.goals if p["name"] == g.name), key=lambda p: p["start_ns"])
        goal_charts.append(chart(_goal_chart(run, {"name": g.name, "level": g.level, "metric": g.metric,
                                                   "cadence": g.cadence, "target": g.target,
                                                   "direction": g.direction}, pts, events, day0)))
    s = run.settings
    intro = (f"<h1>closedloop demo: a phishing blocker that gets better because it is used</h1>"
             f"<p>The phishing world for {s.days} simulated days ({run.arms['loop'][0]['visits']:,} page loads on "
             f"day 0; the first {s.shared_days} days shared), three policies on the same visit stream: the "
             "heuristic only; a model trained once on day "
             f"{s.shared_days} and frozen; the closed loop (a cycle every {s.cycle_every} simulated day(s): "
             "telemetry → dataset → train → evaluate → gate → shadow → flight → promote or roll back). "
             f"Figures pooled over days {s.measure_from}–{s.days - 1}; seed(s) "
             f"{', '.join(str(x['seed']) for x in summaries)}.</p>")
    body = [
        intro,
        "<section id='figures'><h2>Figures</h2>", _summary_table(summaries),
        "<h3>Targets</h3>", _targets_table(summaries), "</section>",
        f"<section id='charts'><h2>Over time (seed {run.settings.seed})</h2>",
        "<p class='muted'>Dashed rules: deployments (shadow, flight, promotion), rollbacks, gate stops and "
        "alerts (goal misses are on the goal charts). Hover for what happened.</p>",
        chart(_arm_chart(run, "phish_allowed_per_1k", "phishing visits allowed per 1,000 visits",
                         "allowed / 1k", events)),
        chart(_arm_chart(run, "false_blocks", "false blocks per 1,000 legitimate visits", "blocked / 1k legit",
                         events)),
        "<h3>The loop's goals</h3>", *goal_charts, "</section>",
        _safety(run),
        _cycles_table(run),
        "<section id='events'><h2>Events</h2><div class='events'><table><tr><th>day</th><th>event</th></tr>"
        + "".join(f"<tr><td>{e['day']}</td><td>{_e(e['what'])}</td></tr>" for e in events)
        + "</table></div></section>",
    ]
    scripts = [_asset(name) for name in _ASSETS] + [_DRIVER]
    csp = ("default-src 'none'; script-src " + " ".join(_csp_hash(x) for x in scripts)
           + "; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'")
    return "\n".join([
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<meta name='generator' content='examples.phishing.loop_report'>",
        "<title>closedloop demo: the phishing loop over time</title>",
        f"<style>{_CSS}{_EXTRA_CSS}</style>",
        "</head><body><main>",
        "<noscript><p class='note'>The charts need JavaScript; the tables hold the figures.</p></noscript>",
        *body,
        "</main>",
        f'<script type="application/json" id="cl-charts">{_json_for_script(charts)}</script>',
        *(f"<script>{x}</script>" for x in scripts),
        "</body></html>",
        "",
    ])


def write_report(runs: Sequence[DemoRun], path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_report` to ``path`` atomically; returns the path."""
    text = render_report(runs)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p
