"""The feed demo's report: one self-contained HTML page (no network: Vega, Vega-Lite and vega-embed
are the copies vendored in ``closedloop/evaluation/html/assets`` and inlined; a Content-Security-Policy
admits only those scripts, by hash — as the phishing demo's report).

A chart of each arm's expected genuine clicks per session day by day with the loop's deployments,
rollbacks and gate stops on the time axis; tables with every seed's figures and intervals, the
targets, the loop's evaluations beside the world's truth, the safety net (click farm, shifted
rewards), the loop's cycles, and Vowpal Wabbit's exact settings.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from closedloop.evaluation.html import _ASSETS, _CSS, _DRIVER, _asset, _csp_hash, _json_for_script

from .demo_run import ARMS, FeedDemoRun

__all__ = ["render_report", "write_report"]

_COLORS = {"heuristic": "#8c8c8c", "frozen": "#d95f02", "loop": "#1b9e77", "vw": "#7570b3"}
_EVENTS = {"promoted": "#1b9e77", "flight": "#66a61e", "rolled_back": "#e7298a", "gate_failed": "#e6ab02"}
_EXTRA_CSS = """
table.num td, table.num th { text-align: right; } table.num td:first-child, table.num th:first-child { text-align: left; }
.ok { color: var(--pass); font-weight: 600; } .bad { color: var(--fail); font-weight: 600; }
.scroll { max-height: 28em; overflow-y: auto; } pre { white-space: pre-wrap; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: Any, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):,.{digits}f}"


def _ok(b: bool) -> str:
    return "<span class='ok'>met</span>" if b else "<span class='bad'>not met</span>"


def _events(run: FeedDemoRun) -> list[dict[str, Any]]:
    out = []
    for c in run.cycles:
        adv = (c.get("advance") or {}).get("outcome")
        kind = adv if adv in ("promoted", "rolled_back") else "gate_failed" if c["outcome"] == "gate_failed" else \
            "flight" if c["outcome"] in ("shadow", "flight") else None
        if kind:
            out.append({"day": c["day"] + 1, "kind": kind, "text": str(c.get("reason") or "")[:200]})
    return out


def _chart(run: FeedDemoRun) -> dict[str, Any]:
    rows = [{"day": r["day"], "policy": a, "value": round(r["true_value"], 5)} for a in ARMS for r in run.arms[a]]
    ev = _events(run)
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {"text": "expected genuine clicks per session, day by day"},
        "width": 760, "height": 280, "resolve": {"scale": {"color": "independent"}},
        "layer": [
            {"data": {"values": rows}, "mark": {"type": "line"},
             "encoding": {"x": {"field": "day", "type": "quantitative", "title": "simulated day"},
                          "y": {"field": "value", "type": "quantitative", "title": "clicks / session", "scale": {"zero": False}},
                          "color": {"field": "policy", "type": "nominal", "legend": {"orient": "top"},
                                    "scale": {"domain": list(ARMS), "range": [_COLORS[a] for a in ARMS]}},
                          "tooltip": [{"field": "day"}, {"field": "policy"}, {"field": "value", "format": ".4f"}]}},
            {"data": {"values": ev or [{"day": 0, "kind": "none", "text": ""}]},
             "mark": {"type": "rule", "strokeDash": [4, 3], "opacity": 0.7 if ev else 0},
             "encoding": {"x": {"field": "day", "type": "quantitative"},
                          "color": {"field": "kind", "type": "nominal", "legend": {"orient": "bottom", "title": "loop"},
                                    "scale": {"domain": list(_EVENTS), "range": list(_EVENTS.values())}},
                          "tooltip": [{"field": "day"}, {"field": "kind"}, {"field": "text"}]}},
        ],
    }


def _figures(summaries: Sequence[dict[str, Any]]) -> str:
    head = "<tr><th>seed</th><th>policy</th><th>clicks / session</th><th>95 % interval</th><th>sessions</th><th>vs frozen</th></tr>"
    body = []
    for s in summaries:
        f = s["arms"]["frozen"]["clicks_per_session"]
        for a in ARMS:
            x = s["arms"][a]
            body.append(f"<tr><td>{s['seed']}</td><td>{a}</td><td>{_f(x['clicks_per_session'])}</td>"
                        f"<td>{_f(x['ci'][0])} – {_f(x['ci'][1])}</td><td>{x['sessions']:,}</td>"
                        f"<td>{100 * (x['clicks_per_session'] / f - 1):+.1f} %</td></tr>")
    return f"<table class='num'>{head}{''.join(body)}</table>"


def _targets(summaries: Sequence[dict[str, Any]]) -> str:
    names = {"loop_15pct_over_frozen": "loop ≥ 15 % above the frozen model", "loop_not_below_vw": "loop not below VW (95 % interval)",
             "dr_coverage_90pct": "truth inside the gate's 95 % interval in ≥ 90 % of evaluations",
             "farm_quarantined": "the click farm quarantined (all units, no one else)",
             "bad_candidate_stopped": "the shifted-rewards candidate stopped", "under_5_minutes": "≤ 5 minutes a seed"}
    head = "<tr><th>target</th>" + "".join(f"<th>seed {s['seed']}</th>" for s in summaries) + "</tr>"
    rows = [f"<tr><td>{_e(v)}</td>" + "".join(f"<td>{_ok(s['targets'][k])}</td>" for s in summaries) + "</tr>" for k, v in names.items()]
    lifts = "".join(f"<li>seed {s['seed']}: loop vs frozen {100 * (s['loop_vs_frozen']['relative'] or 0):+.1f} % "
                    f"(difference {_f(s['loop_vs_frozen']['difference'])}, 95 % {_f(s['loop_vs_frozen']['ci'][0])} – "
                    f"{_f(s['loop_vs_frozen']['ci'][1])}); loop − VW {_f(s['loop_vs_vw']['difference'])} (95 % "
                    f"{_f(s['loop_vs_vw']['ci'][0])} – {_f(s['loop_vs_vw']['ci'][1])}); {s['promotions']} promotions, "
                    f"{s['gate_stops']} gate stops, {s['rollbacks']} rollbacks; {_f(s['seconds'], 0)} s "
                    f"(VW {100 * (s['vw_share_of_time'] or 0):.0f} %)</li>" for s in summaries)
    return f"<table class='num'>{head}{''.join(rows)}</table><ul>{lifts}</ul>"


def _evaluations(run: FeedDemoRun) -> str:
    head = ("<tr><th>day</th><th>candidate</th><th>against</th><th>estimator</th><th>estimate</th><th>95 % interval</th>"
            "<th>truth</th><th>covered</th><th>sessions</th></tr>")
    body = "".join(f"<tr><td>{e['day']}</td><td>{_e(e['candidate'])}</td><td>{_e(e['production'])}</td><td>{_e(e['estimator'])}</td>"
                   f"<td>{_f(e['estimate'], 5)}</td><td>{_f(e['ci'][0], 5)} – {_f(e['ci'][1], 5)}</td><td>{_f(e['true'], 5)}</td>"
                   f"<td>{'yes' if e['covered'] else 'no'}</td><td>{e['sessions']:,}</td></tr>" for e in run.evaluations)
    return (f"<section id='evaluations'><h2>The gate's estimates against the truth (seed {run.settings.seed})</h2>"
            "<p class='muted'>Clicks per logged slot, candidate − production, farm clicks included (what the log records); the "
            "truth is on the whole evaluation window's sessions, the estimate on its held-out part.</p>"
            f"<div class='scroll'><table class='num'>{head}{body}</table></div></section>")


def _safety(run: FeedDemoRun) -> str:
    f, fault = run.farm, run.fault
    out = [f"<section id='safety'><h2>The safety net (seed {run.settings.seed})</h2>",
           f"<p>Click farm: {f['caught']} of its {f['farm_units']} units quarantined; wrongly quarantined: "
           f"{_e(', '.join(f['wrongly_quarantined']) or 'none')}; missed: {_e(', '.join(f['missed']) or 'none')}.</p>"]
    if fault:
        c = (fault["candidates"] or [{"fate": "no candidate trained", "why": "", "candidate": "—", "day": "—"}])[0]
        out.append(f"<p>Day {fault['day']}: {_e(fault['kind'])}. The candidate trained on it ({_e(c['candidate'])}, cycle of day "
                   f"{_e(c['day'])}): <b>{_e(c['fate'])}</b> — {_e(c['why'])}"
                   + (f" Its true difference against production: {c['true_difference']:+.5f} clicks per logged slot."
                      if c.get("true_difference") is not None else "") + "</p>")
    out.append("</section>")
    return "".join(out)


def _cycles(run: FeedDemoRun) -> str:
    body = "".join(f"<tr><td>{c['day']}</td><td>{_e(c['outcome'])}</td><td>{_e(c.get('candidate', ''))}</td>"
                   f"<td>{_e(c['reason'])}</td></tr>" for c in run.cycles)
    return (f"<section id='cycles'><h2>The loop's cycles (seed {run.settings.seed})</h2><div class='scroll'><table>"
            f"<tr><th>end of day</th><th>outcome</th><th>candidate</th><th>why</th></tr>{body}</table></div></section>")


def render_report(runs: Sequence[FeedDemoRun]) -> str:
    """The page for one or more runs (seeds): the chart and details are the first run's, the tables every run's."""
    if not runs:
        raise ValueError("render_report needs at least one FeedDemoRun.")
    run, summaries = runs[0], [r.summary() for r in runs]
    s = run.settings
    charts = [{"id": "chart-0", "spec": _chart(run)}]
    body = [
        "<h1>closedloop feed demo: a ranking loop that learns from clicks</h1>",
        f"<p>The feed world for {s.days} simulated days × {s.sessions:,} sessions (the first {s.shared_days} shared), then four "
        "policies on the same session stream: a popularity heuristic; a model trained on the shared days and frozen; the closed "
        "loop (a cycle each simulated day: reward dataset → train → off-policy gate → flight under the guard → promote or roll "
        "back; click-farm quarantine); Vowpal Wabbit's contextual bandit learning from the same feedback. Figures: the world's "
        f"expected genuine clicks per session of what each policy showed, pooled over days {s.measure_from}–{s.days - 1}.</p>",
        "<section id='figures'><h2>Figures</h2>", _figures(summaries), "<h3>Targets</h3>", _targets(summaries), "</section>",
        f"<section id='charts'><h2>Over time (seed {s.seed})</h2><div class='chart' id='chart-0'></div></section>",
        _evaluations(run), _safety(run), _cycles(run),
        "<section id='vw'><h2>Vowpal Wabbit's settings</h2><p>It decides a day's sessions with what it knew at the day's start "
        "and learns each session's first-slot click at the day's end (the loop's daily cadence).</p>"
        f"<pre>{_e(json.dumps(run.vw_settings, indent=1, default=str))}</pre></section>",
    ]
    scripts = [_asset(name) for name in _ASSETS] + [_DRIVER]
    csp = ("default-src 'none'; script-src " + " ".join(_csp_hash(x) for x in scripts)
           + "; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'")
    return "\n".join([
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<meta name='generator' content='examples.feed.demo_report'>",
        "<title>closedloop feed demo</title>", f"<style>{_CSS}{_EXTRA_CSS}</style>", "</head><body><main>",
        "<noscript><p class='note'>The chart needs JavaScript; the tables hold the figures.</p></noscript>",
        *body, "</main>",
        f'<script type="application/json" id="cl-charts">{_json_for_script(charts)}</script>',
        *(f"<script>{x}</script>" for x in scripts), "</body></html>", "",
    ])


def write_report(runs: Sequence[FeedDemoRun], path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_report` to ``path`` atomically; returns the path."""
    text = render_report(runs)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p
