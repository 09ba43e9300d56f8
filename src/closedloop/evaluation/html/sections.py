"""The page-level sections of the HTML evaluation report: the header (system, dataset, split,
rows, stand-in notes), the gate verdict, the quality table and the comparison of bundles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from closedloop.evaluation.html.text import (
    _ci,
    _count,
    _e,
    _f,
    _money,
    _num,
    _pct,
    _role,
    _signed,
)


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
