"""One bundle's section of the HTML evaluation report: its mistakes and their cost (at the
experience thresholds and at the cost-minimizing ones), its slice tables and its worst mistakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.evaluation.html.text import (
    MAX_MISTAKES,
    _ci,
    _count,
    _cut,
    _e,
    _f,
    _money,
    _num,
    _p,
    _pct,
    _role,
    _slice_keep,
    _value,
)


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
