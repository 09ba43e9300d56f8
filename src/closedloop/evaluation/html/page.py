"""The page: the evaluation report as one self-contained HTML page.

:func:`render_html` turns the dict :func:`closedloop.evaluation.report.evaluate` returns (schema
version 1) into one HTML page a person can read and act on: the header (system, dataset, split,
rows, stand-in notes), the gate verdict with its reasons, the heuristic note, then quality,
curves, calibration, mistakes and their costs, slices, worst mistakes and the comparison.

The page works offline and asks nothing of the network: Vega, Vega-Lite and vega-embed (the
minified builds vendored in ``assets/``, see its README) are inlined, the chart data sits in a
``<script type="application/json">`` block, and a Content-Security-Policy allows only the page's
own inline scripts (by hash), no connection, no remote image, font or frame. Vega runs with its
expression interpreter (``ast``), so the policy needs no ``unsafe-eval``.

Everything that comes from the report is escaped: table text with :func:`html.escape`, JSON with
``<``, ``>`` and ``&`` written as ``\\u003c``, ``\\u003e``, ``\\u0026`` (a context value
``</script>`` cannot close the block). The page holds aggregates only, so its size does not grow
with the number of rows evaluated: curves are thinned to :data:`MAX_CURVE_POINTS` points, at most
:data:`MAX_SLICE_VALUES` values of a slice field are shown (the flagged ones first, then the
largest), at most :data:`MAX_MISTAKES` worst mistakes of each kind, and long context values are
cut to :data:`MAX_TEXT` characters. The JSON report keeps everything.

The parts live beside this module: :mod:`~closedloop.evaluation.html.text` (limits, escaping,
formats), :mod:`~closedloop.evaluation.html.charts` (the Vega-Lite specs),
:mod:`~closedloop.evaluation.html.sections` (header, gate, quality, comparison) and
:mod:`~closedloop.evaluation.html.bundle` (each bundle's section),
:mod:`~closedloop.evaluation.html.ranking` (a ranking system's report: decisions, ranking quality,
comparison, calibration — tables), :mod:`~closedloop.evaluation.html.choice` (a choice system's:
decisions, choices, policy value); this module holds the page's shell (style, scripts, policy) and
assembles it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from closedloop.evaluation.html.bundle import _bundle_section
from closedloop.evaluation.html.charts import _cost_spec, _pr_spec, _reliability_spec, _roc_spec, _slice_spec
from closedloop.evaluation.html.choice import choice_body
from closedloop.evaluation.html.ranking import ranking_body
from closedloop.evaluation.html.sections import _comparison, _gate, _header, _quality_table
from closedloop.evaluation.html.text import MAX_CURVE_POINTS, MAX_MISTAKES, MAX_SLICE_VALUES, MAX_TEXT, _check, _e, _labels, _slice_fields
from closedloop.evaluation.html.text import _json_for_script as _json_for_script
from closedloop.evaluation.html.text import _thin as _thin

__all__ = ["MAX_CURVE_POINTS", "MAX_MISTAKES", "MAX_SLICE_VALUES", "MAX_TEXT", "render_html", "write_html"]

_ASSETS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")


_CSS = """
:root { --pass: #17663a; --pass-bg: #e3f4e8; --fail: #a4161a; --fail-bg: #fde8e8; --note-bg: #fff6d6;
        --line: #d7dbe0; --muted: #5b6470; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2329; margin: 0; background: #f6f7f9; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
h4 { font-size: 14px; margin: 16px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.verdict { border-radius: 8px; padding: 14px 18px; margin: 18px 0; border: 2px solid; }
.verdict.pass { background: var(--pass-bg); border-color: var(--pass); }
.verdict.fail { background: var(--fail-bg); border-color: var(--fail); }
.verdict.none { background: #eef0f3; border-color: var(--line); }
.verdict .big { font-size: 26px; font-weight: 700; letter-spacing: .5px; }
.verdict.pass .big { color: var(--pass); }
.verdict.fail .big { color: var(--fail); }
.verdict ul { margin: 6px 0 0; }
.note { background: var(--note-bg); border-left: 5px solid #c99a06; padding: 10px 14px; margin: 14px 0;
        font-size: 15px; }
.stand-in { background: #eef4fb; border-left: 5px solid #3b78c2; padding: 8px 14px; margin: 10px 0; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.t, th.t { text-align: left; }
tr.flag td { background: var(--fail-bg); }
.badge { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px; font-weight: 600; }
.badge.bad { background: var(--fail); color: #fff; }
.badge.good { background: var(--pass); color: #fff; }
.badge.meh { background: #8a93a0; color: #fff; }
.scroll { overflow-x: auto; max-width: 100%; }
.scroll td { white-space: nowrap; }
.muted { color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.chart { min-width: 200px; min-height: 120px; }
nav a { margin-right: 14px; }
code { font-size: 13px; }
"""

_DRIVER = """(function () {
  "use strict";
  var root = document.documentElement;
  var charts = JSON.parse(document.getElementById("cl-charts").textContent);
  var jobs = charts.map(function (c) {
    var el = document.getElementById(c.id);
    return vegaEmbed(el, c.spec, {mode: "vega-lite", renderer: "svg", actions: false, ast: true})
      .catch(function (err) {
        el.textContent = "This chart could not be drawn: " + err;
        console.error("closedloop report: chart " + c.id + " could not be drawn: " + err);
        throw err;
      });
  });
  Promise.allSettled(jobs).then(function (results) {
    var failed = results.filter(function (r) { return r.status !== "fulfilled"; }).length;
    root.setAttribute("data-charts", failed ? "failed" : "drawn");
  });
})();
"""


def _asset(name: str) -> str:
    return resources.files("closedloop.evaluation.html").joinpath("assets", name).read_text("utf-8")


def _csp_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page for an evaluation ``report`` (the dict
    :func:`~closedloop.evaluation.report.evaluate` returns, or that dict read back from its JSON
    file). The page needs no network: the chart libraries are inlined."""
    _check(report)
    if report.get("kind") == "ranking":
        return _page(report, [_header(report), *ranking_body(report)], [])
    if report.get("kind") == "choice":
        return _page(report, [_header(report), *choice_body(report)], [])
    labels = _labels(report)
    nb = len(labels)
    charts: list[dict[str, Any]] = []

    def chart(spec: dict[str, Any] | None) -> str:
        if spec is None:
            return ""
        cid = f"chart-{len(charts)}"
        charts.append({"id": cid, "spec": spec})
        return f"<div class='chart' id='{cid}' data-chart='{_e(spec['title']['text'])}'></div>"

    curves = "".join([chart(_roc_spec(report, labels)), chart(_pr_spec(report, labels)),
                      chart(_reliability_spec(report, labels)), chart(_cost_spec(report, labels))])
    slice_charts = "".join(chart(_slice_spec(report, labels, f)) for f in _slice_fields(report))
    note = report.get("heuristic_note")
    body = [
        _header(report),
        "<nav><a href='#gate'>gate</a><a href='#quality'>quality</a><a href='#comparison'>comparison</a>"
        "<a href='#slices'>slices</a>"
        + "".join(f"<a href='#bundle-{i}'>{_e(label)}</a>" for i, label in enumerate(labels)) + "</nav>",
        _gate(report, labels),
        f"<p class='note'><b>Heuristic baseline:</b> {_e(note)}</p>" if note else "",
        "<section id='quality'><h2>Quality</h2>", _quality_table(report, labels),
        f"<div class='charts'>{curves}</div></section>",
        "<section id='comparison'><h2>Comparison</h2>", _comparison(report), "</section>",
        "<section id='slices'><h2>Slices</h2>",
        f"<div class='charts'>{slice_charts}</div>" if slice_charts else
        "<p class='muted'>No slice has an AUC to chart.</p>",
        "<p class='muted'>Each bundle's section below has its slice table with the p-values.</p></section>",
        *(_bundle_section(report, i, label, b, nb) for i, (label, b) in enumerate(zip(labels, report["bundles"],
                                                                                      strict=True))),
    ]
    return _page(report, body, charts)


def _page(report: Mapping[str, Any], body: list[str], charts: list[dict[str, Any]]) -> str:
    """The page's shell around ``body``: style, the chart data and scripts, the security policy."""
    scripts = [_asset(name) for name in _ASSETS] + [_DRIVER]
    csp = ("default-src 'none'; script-src " + " ".join(_csp_hash(s) for s in scripts)
           + "; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'")
    title = f"Evaluation: {report.get('system')} — {(report.get('metadata') or {}).get('created', '')}"
    return "\n".join([
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',  # our own text: hashes, keywords
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<meta name='generator' content='closedloop.evaluation.html'>",
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body><main>",
        "<noscript><p class='note'>The charts need JavaScript; the tables hold every number.</p></noscript>",
        *body,
        "</main>",
        f'<script type="application/json" id="cl-charts">{_json_for_script(charts)}</script>',
        *(f"<script>{s}</script>" for s in scripts),
        "</body></html>",
        "",
    ])


def write_html(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_html` of ``report`` to ``path`` (atomically: a temporary file renamed
    into place; privately: ``0600``, folders created ``0700`` — a report quotes contexts);
    returns the path."""
    from closedloop.base.files import atomic_write, make_private_dirs

    text = render_html(report)
    path = Path(path)
    make_private_dirs(path.parent)
    return atomic_write(path, text.encode("utf-8"), durable=False)
