"""The evaluation report as one self-contained HTML page.

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
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from closedloop.errors import EvaluationError

__all__ = ["MAX_CURVE_POINTS", "MAX_MISTAKES", "MAX_SLICE_VALUES", "MAX_TEXT", "render_html", "write_html"]

#: Points kept of each ROC / PR curve (both ends kept, the rest evenly thinned).
MAX_CURVE_POINTS = 400
#: Values of one slice field shown in its table and chart (flagged first, then the largest).
MAX_SLICE_VALUES = 50
#: Worst mistakes of each kind (false positives, false negatives) shown per bundle.
MAX_MISTAKES = 50
#: Characters of one context value shown in the worst-mistakes tables.
MAX_TEXT = 200

_ASSETS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
_ROLE = {"baseline": "baseline", "candidate": "candidate", "other": "compared"}

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


# ---------------------------------------------------------------------------------------------
# small helpers


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any) -> float | None:
    """A finite float, or None (null, NaN, ±inf, non-numbers)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _f(x: Any, digits: int = 4) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:.{digits}f}"


def _count(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "—"
    return f"{int(v):,}" if v == int(v) else f"{v:,.2f}"


def _money(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:,.1f}"


def _pct(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{100 * v:.1f}%"


def _p(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "—"
    return f"{v:.4f}" if v >= 0.001 else f"{v:.1e}"


def _ci(ci: Any, digits: int = 4, fmt: Any = None) -> str:
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return "—"
    fmt = fmt or (lambda v: _f(v, digits))
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _signed(x: Any, digits: int = 4) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:+,.{digits}f}"


def _value(x: Any) -> str:
    """A slice value as shown: the empty string is "(empty)"."""
    text = "" if x is None else str(x)
    return text if text else "(empty)"


def _cut(x: Any) -> str:
    text = "" if x is None else str(x)
    if len(text) > MAX_TEXT:
        return f"{text[:MAX_TEXT]}… ({len(text):,} characters)"
    return text


def _json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` can only
    occur inside JSON strings, where their ``\\u`` escapes mean the same characters."""
    text = json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _thin(n: int, max_points: int) -> list[int]:
    """At most ``max_points`` indices of ``range(n)``, evenly spread, both ends kept."""
    if n <= max_points:
        return list(range(n))
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


def _asset(name: str) -> str:
    return resources.files("closedloop.evaluation").joinpath("assets", name).read_text("utf-8")


def _csp_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def _check(report: Any) -> None:
    ok = (
        isinstance(report, Mapping) and report.get("schema_version") == 1
        and isinstance(report.get("bundles"), list) and report["bundles"]
        and all(isinstance(b, Mapping) for b in report["bundles"])
    )
    if not ok:
        raise EvaluationError(
            "report", "an evaluation report of schema_version 1 (the dict closedloop.evaluation.report."
            "evaluate returns) with at least one bundle", report, "render_html",
        )


def _labels(report: Mapping[str, Any]) -> list[str]:
    """One unique legend label per bundle: position, version and kind (a bundle may be evaluated
    twice under the same version)."""
    return [f"{i + 1}. {b.get('version', '?')} ({b.get('kind', '?')})" for i, b in enumerate(report["bundles"])]


def _role(i: int, n: int) -> str:
    if n == 1:
        return ""
    return _ROLE["baseline"] if i == 0 else _ROLE["candidate"] if i == n - 1 else _ROLE["other"]


# ---------------------------------------------------------------------------------------------
# charts (Vega-Lite specs; data are aggregates only)

_W, _H = 480, 320
_AT_EXPERIENCE = "at the experience thresholds"
_AT_BEST = "at the cost-minimizing thresholds (tuned on these rows)"


def _color(labels: list[str]) -> dict[str, Any]:
    return {"field": "bundle", "type": "nominal", "title": "bundle", "scale": {"domain": labels},
            "legend": {"orient": "bottom", "direction": "vertical", "labelLimit": 360}}


def _diagonal(xf: str, yf: str, xt: str, yt: str) -> dict[str, Any]:
    return {
        "data": {"values": [{xf: 0, yf: 0, "x2": 1, "y2": 1}]},
        "mark": {"type": "rule", "strokeDash": [4, 4], "color": "#9aa1aa"},
        "encoding": {"x": {"field": xf, "type": "quantitative", "title": xt},
                     "y": {"field": yf, "type": "quantitative", "title": yt},
                     "x2": {"field": "x2"}, "y2": {"field": "y2"}},
    }


def _curve_rows(report: Mapping[str, Any], labels: list[str], which: str, xf: str, yf: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, b in zip(labels, report["bundles"], strict=True):
        c = ((b.get("curves") or {}).get(which)) or {}
        xs, ys, ts = c.get("x") or [], c.get("y") or [], c.get("thresholds") or []
        n = min(len(xs), len(ys))
        for i in _thin(n, MAX_CURVE_POINTS):
            x, y = _num(xs[i]), _num(ys[i])
            if x is None or y is None:
                continue
            rows.append({"bundle": label, "i": i, xf: x, yf: y, "threshold": _num(ts[i]) if i < len(ts) else None})
    return rows


def _operating_points(report: Mapping[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """Each bundle's operating point on the ROC and PR planes, exact from its precision and
    recall there: TP = recall·P, FP = TP·(1 − precision)/precision."""
    rows = report.get("rows") or {}
    n, pos = _num(rows.get("n")), _num(rows.get("positives"))
    out = []
    for label, b in zip(labels, report["bundles"], strict=True):
        q = b.get("quality") or {}
        p, r = _num(q.get("precision")), _num(q.get("recall"))
        if p is None or r is None or n is None or pos is None:
            continue
        fpr = None
        if p > 0 and n - pos > 0:
            tp = r * pos
            fpr = tp * (1 - p) / p / (n - pos)
        out.append({"bundle": label, "precision": p, "recall": r, "fpr": fpr, "tpr": r,
                    "threshold": _num(b.get("operating_point"))})
    return out


def _roc_spec(report: Mapping[str, Any], labels: list[str]) -> dict[str, Any] | None:
    rows = _curve_rows(report, labels, "roc", "fpr", "tpr")
    if not rows:
        return None
    xt, yt = "false positive rate", "true positive rate (recall)"
    ops = [o for o in _operating_points(report, labels) if o["fpr"] is not None]
    tip = [{"field": "bundle"}, {"field": "fpr", "format": ".3f"}, {"field": "tpr", "format": ".3f"},
           {"field": "threshold", "format": ".4f"}]
    layers: list[dict[str, Any]] = [
        _diagonal("fpr", "tpr", xt, yt),
        {"data": {"values": rows}, "mark": {"type": "line", "strokeWidth": 2, "tooltip": True},
         "encoding": {"x": {"field": "fpr", "type": "quantitative", "title": xt, "scale": {"domain": [0, 1]}},
                      "y": {"field": "tpr", "type": "quantitative", "title": yt, "scale": {"domain": [0, 1]}},
                      "order": {"field": "i"}, "color": _color(labels), "tooltip": tip}},
    ]
    if ops:
        layers.append({"data": {"values": ops}, "mark": {"type": "point", "filled": True, "size": 150, "shape": "diamond",
                                 "stroke": "#1d2329", "strokeWidth": 1, "opacity": 1},
                       "encoding": {"x": {"field": "fpr", "type": "quantitative", "title": xt},
                                    "y": {"field": "tpr", "type": "quantitative", "title": yt},
                                    "color": _color(labels), "tooltip": tip}})
    return {"title": {"text": "ROC curve", "subtitle": "◆ operating point (lowest experience threshold)"},
            "width": _W, "height": _H, "layer": layers}


def _pr_spec(report: Mapping[str, Any], labels: list[str]) -> dict[str, Any] | None:
    rows = _curve_rows(report, labels, "pr", "recall", "precision")
    if not rows:
        return None
    xt, yt = "recall", "precision"
    tip = [{"field": "bundle"}, {"field": "recall", "format": ".3f"}, {"field": "precision", "format": ".3f"},
           {"field": "threshold", "format": ".4f"}]
    layers: list[dict[str, Any]] = [
        {"data": {"values": rows}, "mark": {"type": "line", "strokeWidth": 2, "tooltip": True},
         "encoding": {"x": {"field": "recall", "type": "quantitative", "title": xt, "scale": {"domain": [0, 1]}},
                      "y": {"field": "precision", "type": "quantitative", "title": yt, "scale": {"domain": [0, 1]}},
                      "order": {"field": "i"}, "color": _color(labels), "tooltip": tip}},
        {"data": {"values": _operating_points(report, labels)},
         "mark": {"type": "point", "filled": True, "size": 150, "shape": "diamond", "stroke": "#1d2329",
                                 "strokeWidth": 1, "opacity": 1},
         "encoding": {"x": {"field": "recall", "type": "quantitative", "title": xt},
                      "y": {"field": "precision", "type": "quantitative", "title": yt},
                      "color": _color(labels), "tooltip": tip}},
    ]
    rows_info = report.get("rows") or {}
    n, pos = _num(rows_info.get("n")), _num(rows_info.get("positives"))
    sub = "◆ operating point"
    if n and pos is not None:
        layers.insert(0, {"data": {"values": [{"precision": pos / n}]},
                          "mark": {"type": "rule", "strokeDash": [4, 4], "color": "#9aa1aa"},
                          "encoding": {"y": {"field": "precision", "type": "quantitative", "title": yt}}})
        sub += f"; dashed: base rate {pos / n:.3f}"
    return {"title": {"text": "Precision–recall curve", "subtitle": sub}, "width": _W, "height": _H, "layer": layers}


def _reliability_spec(report: Mapping[str, Any], labels: list[str]) -> dict[str, Any] | None:
    rows = []
    for label, b in zip(labels, report["bundles"], strict=True):
        rel = ((b.get("calibration") or {}).get("reliability")) or {}
        mp, ob, ct = rel.get("mean_predicted") or [], rel.get("observed") or [], rel.get("counts") or []
        for i in range(min(len(mp), len(ob))):
            x, y = _num(mp[i]), _num(ob[i])
            if x is None or y is None:
                continue
            rows.append({"bundle": label, "predicted": x, "observed": y, "count": _num(ct[i]) if i < len(ct) else None})
    if not rows:
        return None
    xt, yt = "mean predicted probability", "observed frequency"
    tip = [{"field": "bundle"}, {"field": "predicted", "format": ".3f"}, {"field": "observed", "format": ".3f"},
           {"field": "count", "format": ","}]
    enc = {"x": {"field": "predicted", "type": "quantitative", "title": xt, "scale": {"domain": [0, 1]}},
           "y": {"field": "observed", "type": "quantitative", "title": yt, "scale": {"domain": [0, 1]}},
           "color": _color(labels), "tooltip": tip}
    return {"title": {"text": "Reliability (calibration)", "subtitle": "dashed: perfect calibration; dot size: rows in the bin"},
            "width": _W, "height": _H,
            "layer": [_diagonal("predicted", "observed", xt, yt),
                      {"data": {"values": rows}, "mark": {"type": "line", "strokeWidth": 1.5}, "encoding": enc},
                      {"data": {"values": rows}, "mark": {"type": "point", "filled": True, "tooltip": True},
                       "encoding": {**enc, "size": {"field": "count", "type": "quantitative", "title": "rows in bin",
                                                    "legend": None}}}]}


def _cost_spec(report: Mapping[str, Any], labels: list[str]) -> dict[str, Any] | None:
    rows = []
    for label, b in zip(labels, report["bundles"], strict=True):
        m = b.get("mistakes") or {}
        for which, key in ((_AT_EXPERIENCE, "cost_per_1000"), (_AT_BEST, "best_cost_per_1000")):
            v = _num(m.get(key))
            if v is not None:
                rows.append({"bundle": label, "thresholds": which, "cost": v})
    if not rows:
        return None
    return {"title": {"text": "Expected cost per 1,000 decisions", "subtitle": "lower is better"},
            "width": _W, "height": {"step": 16}, "data": {"values": rows},
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {"y": {"field": "bundle", "type": "nominal", "title": None, "scale": {"domain": labels},
                               "axis": {"labelLimit": 220}},
                         "yOffset": {"field": "thresholds", "type": "nominal",
                                     "scale": {"domain": [_AT_EXPERIENCE, _AT_BEST]}},
                         "x": {"field": "cost", "type": "quantitative", "title": "expected cost per 1,000 decisions"},
                         "color": {"field": "thresholds", "type": "nominal", "title": None,
                                   "scale": {"domain": [_AT_EXPERIENCE, _AT_BEST], "range": ["#8a93a0", "#2b8a3e"]},
                                   "legend": {"orient": "bottom", "direction": "vertical", "labelLimit": 400}},
                         "tooltip": [{"field": "bundle"}, {"field": "thresholds"},
                                     {"field": "cost", "format": ",.1f"}]}}


def _slice_keep(report: Mapping[str, Any], field: str) -> tuple[list[str], int]:
    """The values of slice ``field`` shown: all when few, else flagged ones (in any bundle) first,
    then the largest; in the report's order. Returns (values, how many were left out)."""
    order: list[str] = []
    size: dict[str, float] = {}
    flagged: set[str] = set()
    for b in report["bundles"]:
        for r in ((b.get("slices") or {}).get(field)) or []:
            v = str(r.get("value"))
            if v not in size:
                order.append(v)
                size[v] = _num(r.get("n")) or 0.0
            if r.get("significantly_worse") is True:
                flagged.add(v)
    if len(order) <= MAX_SLICE_VALUES:
        return order, 0
    ranked = sorted(order, key=lambda v: (v not in flagged, -size[v]))
    keep = set(ranked[:MAX_SLICE_VALUES])
    return [v for v in order if v in keep], len(order) - len(keep)


def _slice_fields(report: Mapping[str, Any]) -> list[str]:
    fields: list[str] = []
    for b in report["bundles"]:
        for f in (b.get("slices") or {}):
            if f not in fields:
                fields.append(str(f))
    return fields


def _slice_spec(report: Mapping[str, Any], labels: list[str], field: str) -> dict[str, Any] | None:
    keep, _ = _slice_keep(report, field)
    kept = set(keep)
    rows = []
    for label, b in zip(labels, report["bundles"], strict=True):
        for r in ((b.get("slices") or {}).get(field)) or []:
            v = str(r.get("value"))
            auc = _num(r.get("auc"))
            shown_v = _value(v)
            if v not in kept or auc is None:
                continue
            ci = r.get("auc_ci") if isinstance(r.get("auc_ci"), list) and len(r["auc_ci"]) == 2 else [None, None]
            rows.append({"bundle": label, "value": shown_v, "auc": auc, "lo": _num(ci[0]), "hi": _num(ci[1]),
                         "n": _num(r.get("n")), "flagged": r.get("significantly_worse") is True})
    if not rows:
        return None
    present = {r["value"] for r in rows}
    shown = [_value(v) for v in keep if _value(v) in present]
    nb = len(labels)
    y = {"field": "value", "type": "nominal", "title": field, "sort": shown,
         "scale": {"type": "band", "domain": shown, "paddingInner": 0.25}, "axis": {"labelLimit": 180}}
    yoff = {"field": "bundle", "type": "nominal", "scale": {"domain": labels}}
    xt = "AUC (dot) with its 95% bootstrap interval (bar)"
    tip = [{"field": "bundle"}, {"field": "value", "title": field}, {"field": "n", "format": ","},
           {"field": "auc", "format": ".4f"}, {"field": "lo", "format": ".4f", "title": "CI low"},
           {"field": "hi", "format": ".4f", "title": "CI high"}, {"field": "flagged", "title": "significantly worse"}]
    layers: list[dict[str, Any]] = [
        {"mark": {"type": "rule", "strokeWidth": 2},
         "encoding": {"x": {"field": "lo", "type": "quantitative", "title": xt, "scale": {"zero": False}},
                      "x2": {"field": "hi"}, "color": _color(labels)}},
        {"mark": {"type": "point", "filled": True, "size": 50, "tooltip": True},
         "encoding": {"x": {"field": "auc", "type": "quantitative", "title": xt}, "color": _color(labels),
                      "tooltip": tip}},
    ]
    if any(r["flagged"] for r in rows):
        layers.append({"transform": [{"filter": {"field": "flagged", "equal": True}}],
                       "mark": {"type": "point", "filled": False, "size": 200, "strokeWidth": 2, "color": "#d62728"},
                       "encoding": {"x": {"field": "auc", "type": "quantitative", "title": xt}}})
    return {
        "title": {"text": f"AUC by {field}", "subtitle": "red ring: significantly worse than the rest (BH, FDR 5%)"},
        "width": _W, "height": len(shown) * (10 + 8 * nb), "data": {"values": rows},
        "encoding": {"y": y, "yOffset": yoff}, "layer": layers,
    }


# ---------------------------------------------------------------------------------------------
# HTML sections


def _split_text(split: Any) -> str:
    if isinstance(split, Mapping):
        parts = [f"by {split.get('by')}"]
        if split.get("test_fraction") is not None:
            parts.append(f"test fraction {split.get('test_fraction')}")
        if split.get("time_cutoff_ns") is not None:
            parts.append(f"time cut-off {split.get('time_cutoff_ns')} ns")
        if split.get("seed") is not None:
            parts.append(f"seed {split.get('seed')}")
        return ", ".join(str(p) for p in parts)
    return str(split)


def _header(report: Mapping[str, Any]) -> str:
    md = report.get("metadata") or {}
    rows = report.get("rows") or {}
    n, pos = _num(rows.get("n")), _num(rows.get("positives"))
    side = md.get("side")
    side_text = ("the test side of the split" if side == "test" else "every labeled row" if side == "all"
                 else str(side))
    items = [
        ("system", report.get("system")),
        ("dataset", md.get("dataset_id")),
        ("dataset path", md.get("dataset_path")),
        ("split", f"{_split_text(md.get('split'))} — evaluated on {side_text}"),
        ("rows evaluated", f"{_count(n)} ({_count(pos)} positive, base rate {_pct(pos / n) if n and pos is not None else '—'})"),
        ("bundles", len(report["bundles"])),
        ("bootstrap", f"{md.get('bootstrap')} resamples by unit, seed {md.get('seed')}"),
        ("created", md.get("created")),
        ("schema version", report.get("schema_version")),
    ]
    out = [f"<h1>Evaluation report: {_e(report.get('system'))}</h1>",
           '<p class="sub">Every bundle was run through the runtime\'s batch path (<code>Runtime.decide_batch</code>) '
           "on the same held-out rows.</p>", '<dl class="meta">']
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items]
    out.append("</dl>")
    if md.get("unit_stand_in") is True:
        out.append('<p class="stand-in"><b>Unit stand-in:</b> the dataset has no unit column, so the row index '
                   "stands in for the unit: the split and the bootstrap treat every row as its own unit.</p>")
    if md.get("time_stand_in") is True:
        out.append('<p class="stand-in"><b>Time stand-in:</b> the dataset has no time column, so the row order '
                   "stands in for time: a split by time splits by row order.</p>")
    return "\n".join(out)


def _gate(report: Mapping[str, Any], labels: list[str]) -> str:
    gate = report.get("gate")
    if not isinstance(gate, Mapping):
        return ('<section id="gate" class="verdict none"><div class="big">No gate verdict</div>'
                "<p>One bundle was evaluated; the gate judges a candidate against a baseline.</p></section>")
    passed = gate.get("passed") is True
    rule = gate.get("rule") or {}
    parts = []
    if rule.get("max_auc_drop") is not None:
        parts.append(f"AUC not worse than the baseline's by more than {_e(rule['max_auc_drop'])} overall nor in "
                     f"any slice with ≥ {_e(rule.get('min_slice_n'))} examples")
    if rule.get("cost_must_not_rise"):
        parts.append("expected cost per 1,000 decisions not higher")
    reasons = gate.get("reasons") or []
    body = "".join(f"<li>{_e(r)}</li>" for r in reasons) if reasons else "<li>No rule was broken.</li>"
    cls, word = ("pass", "PASS") if passed else ("fail", "FAIL")
    return (
        f'<section id="gate" class="verdict {cls}"><div class="big">Gate: {word}</div>'
        f"<p>Candidate <b>{_e(gate.get('candidate'))}</b> against baseline <b>{_e(gate.get('baseline'))}</b>. "
        f"Rule: {'; and '.join(parts) if parts else _e(json.dumps(rule))}.</p>"
        f"<b>{'Reasons' if reasons else 'Result'}:</b><ul>{body}</ul></section>"
    )


def _quality_table(report: Mapping[str, Any], labels: list[str]) -> str:
    head = ("<tr><th class='t'>bundle</th><th class='t'>role</th><th>rows</th><th>AUC</th><th>log loss</th>"
            "<th>Brier</th><th>operating point</th><th>precision</th><th>recall</th><th>F1</th><th>ECE</th>"
            "<th>cost / 1,000</th><th>best cost / 1,000</th></tr>")
    out = ["<table>", head]
    nb = len(labels)
    for i, (label, b) in enumerate(zip(labels, report["bundles"], strict=True)):
        q, m = b.get("quality") or {}, b.get("mistakes") or {}
        out.append(
            f"<tr><td class='t'><a href='#bundle-{i}'>{_e(label)}</a></td><td class='t'>{_e(_role(i, nb))}</td>"
            f"<td>{_count(b.get('n'))}</td><td>{_f(q.get('auc'))}</td><td>{_f(q.get('log_loss'))}</td>"
            f"<td>{_f(q.get('brier'))}</td><td>score ≥ {_f(b.get('operating_point'), 3)}</td>"
            f"<td>{_f(q.get('precision'))}</td><td>{_f(q.get('recall'))}</td><td>{_f(q.get('f1'))}</td>"
            f"<td>{_f((b.get('calibration') or {}).get('ece'))}</td>"
            f"<td>{_money(m.get('cost_per_1000'))}</td><td>{_money(m.get('best_cost_per_1000'))}</td></tr>"
        )
    out.append("</table>")
    out.append("<p class='muted'>Precision, recall and F1 at the operating point: a row is predicted positive when "
               "its score reaches the lowest experience threshold. ECE: expected calibration error (10 bins). "
               "Cost: the declared cost of each mistake type, per 1,000 decisions.</p>")
    return "\n".join(out)


def _reading(ci: Any, higher_is_better: bool) -> str:
    if not isinstance(ci, list) or len(ci) != 2 or _num(ci[0]) is None or _num(ci[1]) is None:
        return "<span class='muted'>no interval</span>"
    lo, hi = float(ci[0]), float(ci[1])
    if lo > 0 or hi < 0:
        better = (lo > 0) == higher_is_better
        word = ("better" if higher_is_better else "cheaper") if better else ("worse" if higher_is_better else "costlier")
        return f"<span class='badge {'good' if better else 'bad'}'>candidate {word}</span>"
    return "<span class='badge meh'>within the noise</span>"


def _comparison(report: Mapping[str, Any]) -> str:
    comp = report.get("comparison")
    if not isinstance(comp, list) or not comp:
        return "<p class='muted'>One bundle was evaluated: nothing to compare.</p>"
    out = ["<table>", "<tr><th class='t'>baseline</th><th class='t'>candidate</th><th>AUC difference</th>"
           "<th>95% CI</th><th class='t'>reads as</th><th>cost / 1,000 difference</th><th>95% CI</th>"
           "<th class='t'>reads as</th></tr>"]
    for c in comp:
        if not isinstance(c, Mapping):
            continue
        cost_ci = c.get("cost_diff_ci")
        out.append(
            f"<tr><td class='t'>{_e(c.get('baseline'))}</td><td class='t'>{_e(c.get('candidate'))}</td>"
            f"<td>{_signed(c.get('auc_diff'))}</td><td>{_ci(c.get('auc_diff_ci'), fmt=_signed)}</td>"
            f"<td class='t'>{_reading(c.get('auc_diff_ci'), True)}</td>"
            f"<td>{_signed(c.get('cost_diff'), 1)}</td>"
            f"<td>{_ci(cost_ci, fmt=lambda v: _signed(v, 1))}</td>"
            f"<td class='t'>{_reading(cost_ci, False) if c.get('cost_diff') is not None else '—'}</td></tr>"
        )
    out.append("</table><p class='muted'>Differences are candidate − baseline on the same rows, with a paired "
               "Poisson bootstrap by unit. An interval that contains 0 is within the noise.</p>")
    return "\n".join(out)


def _score_range(action: str, thresholds: Mapping[str, Any]) -> str:
    levels = sorted(((str(a), _num(t)) for a, t in thresholds.items() if _num(t) is not None),
                    key=lambda at: -float(at[1] or 0.0))
    for j, (a, t) in enumerate(levels):
        if a == action:
            return f"score ≥ {t:.3f}" if j == 0 else f"{t:.3f} ≤ score < {levels[j - 1][1]:.3f}"
    if levels:
        return f"score < {levels[-1][1]:.3f}"
    return ""


def _when(action: str, thresholds: Mapping[str, Any], meaning: Any) -> str:
    """When an action is taken: the threshold's words when they say more than a number does
    (never: above every score; always: below every score), else the score band."""
    said = meaning.get(action) if isinstance(meaning, Mapping) else None
    if isinstance(said, str) and said.startswith(("never", "always")):
        return said
    return _score_range(action, thresholds)


def _confusion_table(confusion: Mapping[str, Any], thresholds: Mapping[str, Any], costs: Mapping[str, Any],
                     meaning: Any = None) -> str:
    labels: list[str] = []
    for row in confusion.values():
        for k in (row or {}):
            if k not in labels:
                labels.append(str(k))
    out = ["<table>", "<tr><th class='t'>action</th><th class='t'>when</th>"
           + "".join(f"<th>label {_e(k)}</th>" for k in labels) + "<th>cost of its mistakes</th></tr>"]
    for action, row in confusion.items():
        row = row or {}
        cost_row = costs.get(action) or {}
        cells, total = [], 0.0
        for k in labels:
            cnt = _num(row.get(k)) or 0.0
            c = _num(cost_row.get(k)) or 0.0
            total += cnt * c
            extra = f" <span class='muted'>× {_e(_money(c))}</span>" if c else ""
            cells.append(f"<td>{_count(cnt)}{extra}</td>")
        out.append(f"<tr><td class='t'>{_e(action)}</td><td class='t'>{_e(_when(str(action), thresholds, meaning))}</td>"
                   + "".join(cells) + f"<td>{_money(total) if costs else '—'}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _mistakes(b: Mapping[str, Any]) -> str:
    m = b.get("mistakes") or {}
    th = b.get("thresholds") or {}
    costs = m.get("costs") or {}
    out = ["<h4>At the experience thresholds</h4>"]
    rng = b.get("score_range")
    if isinstance(rng, Mapping) and _num(rng.get("min")) is not None and _num(rng.get("max")) is not None:
        scale = ("probabilities" if rng.get("probability") is True else
                 "not probabilities: a raw score, so thresholds are on its scale, not in [0, 1]")
        out.append(f"<p class='muted'>The {_e(b.get('score') or 'score')} scores of these rows range from "
                   f"{_e(format(float(rng['min']), '.4g'))} to {_e(format(float(rng['max']), '.4g'))} "
                   f"({_e(scale)}).</p>")
    conf = m.get("confusion")
    if isinstance(conf, Mapping) and conf:
        out.append(_confusion_table(conf, th, costs, m.get("thresholds_meaning")))
    if m.get("cost_per_1000") is None:
        out.append("<p class='muted'>The system declares no mistake costs: no expected cost and no cost-minimizing "
                   "thresholds.</p>")
        return "\n".join(out)
    out.append(f"<p>Expected cost: <b>{_money(m.get('cost_per_1000'))}</b> per 1,000 decisions.</p>")
    best = m.get("best_thresholds")
    out.append("<h4>At the thresholds that minimize the cost on this data</h4>")
    if not isinstance(best, Mapping) or not best:
        out.append("<p class='muted'>No cost-minimizing thresholds could be computed.</p>")
        return "\n".join(out)
    said = m.get("best_thresholds_meaning")
    said = said if isinstance(said, Mapping) else {}
    out.append("<table><tr><th class='t'>action</th><th>experience threshold</th><th>cost-minimizing threshold</th>"
               "<th class='t'>what it means</th></tr>")
    for a in best:
        out.append(f"<tr><td class='t'>{_e(a)}</td><td>{_f(th.get(a))}</td><td>{_f(best.get(a))}</td>"
                   f"<td class='t'>{_e(said.get(a, ''))}</td></tr>")
    out.append("</table>")
    if any(isinstance(v, str) and v.startswith("never") for v in said.values()):
        out.append("<p class='muted'>A threshold above every score is not a probability above 1: it means the "
                   "action is never taken, because no threshold for it lowers the cost on these rows.</p>")
    bc = m.get("best_confusion")  # present when the JSON report carries it
    if isinstance(bc, Mapping) and bc:
        out.append(_confusion_table(bc, best, costs, said))
    cost, best_cost = _num(m.get("cost_per_1000")), _num(m.get("best_cost_per_1000"))
    saving = "" if cost is None or best_cost is None else f" (saves {_money(cost - best_cost)})"
    out.append(f"<p>Expected cost at these thresholds: <b>{_money(best_cost)}</b> per 1,000 decisions{saving}. "
               "Thresholds tuned on the evaluation rows are optimistic on them: confirm on fresh data.</p>")
    return "\n".join(out)


def _slices_table(report: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    slices = b.get("slices") or {}
    if not slices:
        return "<p class='muted'>The system declares no slice fields.</p>"
    out = []
    for field, rows in slices.items():
        keep, left = _slice_keep(report, str(field))
        kept = set(keep)
        out.append(f"<h4>by {_e(field)}</h4><table><tr><th class='t'>{_e(field)}</th><th>rows</th><th>positives</th>"
                   "<th>AUC</th><th>95% CI</th><th>error rate</th><th>p (AUC worse)</th><th>p (errors more)</th>"
                   "<th class='t'></th></tr>")
        for r in rows or []:
            if str(r.get("value")) not in kept:
                continue
            bad = r.get("significantly_worse") is True
            flag = "<span class='badge bad'>significantly worse</span>" if bad else ""
            tr = "<tr class='flag'>" if bad else "<tr>"
            out.append(
                f"{tr}<td class='t'>{_e(_value(r.get('value')))}</td>"
                f"<td>{_count(r.get('n'))}</td><td>{_count(r.get('positives'))}</td><td>{_f(r.get('auc'))}</td>"
                f"<td>{_ci(r.get('auc_ci'))}</td><td>{_pct(r.get('error_rate'))}</td><td>{_p(r.get('p_auc'))}</td>"
                f"<td>{_p(r.get('p_error'))}</td><td class='t'>{flag}</td></tr>"
            )
        out.append("</table>")
        if left:
            hidden_bad = sum(1 for r in rows or [] if r.get("significantly_worse") is True
                             and str(r.get("value")) not in kept)
            also = f", {hidden_bad:,} of them flagged significantly worse" if hidden_bad else ""
            out.append(f"<p class='muted'>{left:,} smaller values of {_e(field)} are not shown here{also} "
                       "(the JSON report has them all).</p>")
    out.append("<p class='muted'>AUC interval: Poisson bootstrap by unit. p-values: slice against the rest; "
               "<i>significantly worse</i> is the Benjamini–Hochberg rejection (FDR 5%) of the AUC test over every "
               "slice value. A slice with one class only has no AUC.</p>")
    return "\n".join(out)


def _worst_table(title: str, rows: Any) -> str:
    rows = [r for r in (rows or []) if isinstance(r, Mapping)]
    if not rows:
        return f"<h4>{_e(title)}</h4><p class='muted'>None.</p>"
    shown = rows[:MAX_MISTAKES]
    keys: list[str] = []
    for r in shown:
        for k in (r.get("context") or {}):
            if k not in keys:
                keys.append(str(k))
    out = [f"<h4>{_e(title)}</h4><div class='scroll'><table><tr><th>#</th><th>score</th><th class='t'>action</th>"
           "<th class='t'>label</th><th class='t'>decision</th><th class='t'>unit</th>"
           + "".join(f"<th class='t'>{_e(k)}</th>" for k in keys) + "</tr>"]
    for j, r in enumerate(shown):
        ctx = r.get("context") or {}
        out.append(
            f"<tr><td>{j + 1}</td><td>{_f(r.get('score'))}</td><td class='t'>{_e(r.get('action'))}</td>"
            f"<td class='t'>{_e(r.get('label'))}</td><td class='t'>{_e(_cut(r.get('decision_id')))}</td>"
            f"<td class='t'>{_e(_cut(r.get('unit')))}</td>"
            + "".join(f"<td class='t'>{_e(_cut(ctx.get(k)))}</td>" for k in keys) + "</tr>"
        )
    out.append("</table></div>")
    if len(rows) > len(shown):
        out.append(f"<p class='muted'>{len(rows) - len(shown):,} more in the JSON report.</p>")
    return "\n".join(out)


def _bundle_section(report: Mapping[str, Any], i: int, label: str, b: Mapping[str, Any], nb: int) -> str:
    role = _role(i, nb)
    th = b.get("thresholds") or {}
    th_text = ", ".join(f"{_e(a)} at score ≥ {_f(t, 3)}" for a, t in th.items()) or "—"
    worst = b.get("worst") or {}
    golden = b.get("golden") or []
    return "\n".join([
        f"<section id='bundle-{i}'><h2>{_e(label)}{' — ' + _e(role) if role else ''}</h2>",
        f"<p>Kind <code>{_e(b.get('kind'))}</code>, score <code>{_e(b.get('score'))}</code>; experience: {th_text}. "
        f"{len(golden):,} golden rows (contexts with their outputs) are recorded in the JSON report for replay "
        "before deployment.</p>",
        "<h3>Mistakes and their cost</h3>", _mistakes(b),
        "<h3>Slices</h3>", _slices_table(report, b),
        "<h3>Worst mistakes</h3>",
        "<p class='muted'>The most confident mistakes at the operating point, for a person to read.</p>",
        _worst_table("False positives (highest scores first)", worst.get("false_positives")),
        _worst_table("False negatives (lowest scores first)", worst.get("false_negatives")),
        "</section>",
    ])


# ---------------------------------------------------------------------------------------------
# the page


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page for an evaluation ``report`` (the dict
    :func:`~closedloop.evaluation.report.evaluate` returns, or that dict read back from its JSON
    file). The page needs no network: the chart libraries are inlined."""
    _check(report)
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
