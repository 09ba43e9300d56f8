"""The charts of the HTML evaluation report as Vega-Lite specs (aggregates only): the ROC and
precision–recall curves with each bundle's operating point, the reliability curve, the expected
cost and each slice field's AUC with its interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.evaluation.html.text import (
    MAX_CURVE_POINTS,
    _num,
    _slice_keep,
    _thin,
    _value,
)

_AT_EXPERIENCE = "at the experience thresholds"
_AT_BEST = "at the cost-minimizing thresholds (tuned on these rows)"

_W, _H = 480, 320


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
