"""The HTML sections of a ranking system's evaluation report (``report["kind"] == "ranking"``,
:mod:`closedloop.evaluation.ranking_report`): the dataset's decisions, the logging policy's own
reward, each bundle's ranking figures with their intervals, the comparison, each bundle's
calibration table and the policy value (:mod:`.ranking_value`). Tables only; the page's header comes from :mod:`.sections`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.evaluation.html.ranking_value import policy_value_section
from closedloop.evaluation.html.sections import _reading
from closedloop.evaluation.html.text import _ci, _count, _e, _f, _role, _signed

__all__ = ["ranking_body"]

#: (field, column heading, higher is better) of the figures, in the table's order.
_FIGURES = (
    ("ndcg_at_k", "NDCG@{k}", True), ("mrr", "MRR", True), ("hit_rate_at_1", "hit rate@1", True),
    ("hit_rate_at_k", "hit rate@{k}", True), ("auc", "AUC per decision", True), ("row_auc", "AUC, rows pooled", True),
    ("log_loss", "log loss", False),
)


def _heading(text: str, report: Mapping[str, Any]) -> str:
    return text.format(k=(report.get("metadata") or {}).get("k", "k"))


def _dataset(report: Mapping[str, Any]) -> str:
    ds = report.get("dataset") or {}
    logged = report.get("logged") or {}
    per_dec, per_slot = logged.get("reward_per_decision") or {}, logged.get("reward_per_slot") or {}
    excluded = ds.get("excluded") or {}
    items = [
        ("decisions", _count(ds.get("decisions"))), ("rows (logged slots)", _count(ds.get("rows"))),
        ("units", _count(ds.get("units"))), ("candidates", ds.get("candidates")),
        ("candidates per decision", ", ".join(f"{k}: {_count(v)}" for k, v in (ds.get("candidates_per_decision") or {}).items())),
        ("decisions with a reward", _count(ds.get("decisions_with_a_reward"))),
        ("decisions whose order matters (unequal rewards)", _count(ds.get("decisions_ranked"))),
        ("decisions with rewarded and unrewarded candidates", _count(ds.get("decisions_with_rewarded_and_not"))),
        ("left out (a candidate repeated)", f"{_count(excluded.get('decisions_repeating_a_candidate'))} decisions"),
        ("the logging policy's reward per decision", f"{_f(per_dec.get('value'))} {_ci(per_dec.get('ci'))}"),
        ("the logging policy's reward per slot", f"{_f(per_slot.get('value'))} {_ci(per_slot.get('ci'))}"),
    ]
    return decisions_section(report, items)


def decisions_section(report: Mapping[str, Any], items: list[tuple[str, Any]]) -> str:
    """The "Decisions" section of a ranking or choice page: ``items`` as (term, value) and the
    report's notes."""
    out = ["<section id='dataset'><h2>Decisions</h2><dl class='meta'>"]
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items]
    out.append("</dl>")
    out += [f"<p class='note'>{_e(n)}</p>" for n in (report.get("metadata") or {}).get("notes") or []]
    out.append("</section>")
    return "\n".join(out)


def _figure_cell(f: Any) -> str:
    f = f if isinstance(f, Mapping) else {}
    n = f.get("n_decisions", f.get("n_rows"))
    return f"<td>{_f(f.get('value'))}<br><span class='muted'>{_ci(f.get('ci'))} n={_count(n)}</span></td>"


def _quality(report: Mapping[str, Any]) -> str:
    bundles = report["bundles"]
    head = "".join(f"<th>{_e(_heading(h, report))}</th>" for _, h, _ in _FIGURES)
    out = ["<section id='quality'><h2>Ranking quality</h2><table>",
           f"<tr><th class='t'>bundle</th><th class='t'>role</th><th>rows</th>{head}</tr>"]
    for i, b in enumerate(bundles):
        m = b.get("metrics") or {}
        out.append(f"<tr><td class='t'>{_e(b.get('version'))} ({_e(b.get('kind'))})</td>"
                   f"<td class='t'>{_e(_role(i, len(bundles)))}</td><td>{_count(b.get('n'))}</td>"
                   + "".join(_figure_cell(m.get(name)) for name, _, _ in _FIGURES) + "</tr>")
    out.append("</table><p class='muted'>Each bundle scored the logged candidates of every decision through the "
               "runtime's batch path; a figure is the mean over the decisions (or rows) that define it, with its 95% "
               "interval from a Poisson bootstrap by unit. The logging policy is the reference above.</p></section>")
    return "\n".join(out)


def _comparison(report: Mapping[str, Any]) -> str:
    comp = report.get("comparison")
    if not isinstance(comp, list) or not comp:
        return "<section id='comparison'><h2>Comparison</h2><p class='muted'>One bundle was evaluated: nothing to compare.</p></section>"
    out = ["<section id='comparison'><h2>Comparison</h2><table>",
           "<tr><th class='t'>baseline</th><th class='t'>candidate</th><th class='t'>figure</th><th>difference</th>"
           "<th>95% CI</th><th class='t'>reads as</th></tr>"]
    for c in comp:
        d = (c.get("differences") or {}) if isinstance(c, Mapping) else {}
        for name, heading, up in _FIGURES:
            f = d.get(name) or {}
            if f.get("value") is None:
                continue
            reads = _reading(f.get("ci"), up).replace("cheaper", "better").replace("costlier", "worse")
            out.append(f"<tr><td class='t'>{_e(c.get('baseline'))}</td><td class='t'>{_e(c.get('candidate'))}</td>"
                       f"<td class='t'>{_e(_heading(heading, report))}</td><td>{_signed(f.get('value'))}</td>"
                       f"<td>{_ci(f.get('ci'), fmt=_signed)}</td><td class='t'>{reads}</td></tr>")
    out.append("</table><p class='muted'>Candidate − baseline on the same decisions, with a paired Poisson bootstrap "
               "by unit. An interval that contains 0 is within the noise.</p></section>")
    return "\n".join(out)


def _calibration(report: Mapping[str, Any]) -> str:
    out = ["<section id='calibration'><h2>Calibration</h2>"]
    for b in report["bundles"]:
        cal = b.get("calibration")
        if not isinstance(cal, Mapping):
            out.append(f"<p class='muted'>{_e(b.get('version'))}: its score is not a probability of a 0/1 reward.</p>")
            continue
        out.append(f"<h3>{_e(b.get('version'))} — ECE {_f(cal.get('ece'))}</h3><table>"
                   "<tr><th>score from</th><th>to</th><th>rows</th><th>mean score</th><th>observed reward rate</th></tr>")
        for r in cal.get("bins") or []:
            out.append(f"<tr><td>{_f(r.get('low'), 2)}</td><td>{_f(r.get('high'), 2)}</td><td>{_count(r.get('n'))}</td>"
                       f"<td>{_f(r.get('mean_score'))}</td><td>{_f(r.get('observed'))}</td></tr>")
        out.append("</table>")
    out.append("</section>")
    return "\n".join(out)


def _apprentice(report: Mapping[str, Any]) -> str:
    """An apprentice's agreement with the logger over time (a cycle's report, apprentice mode), or nothing."""
    a = report.get("apprentice")
    if not a:
        return ""
    share = f"{float(a.get('agreement') or 0):.0%}"
    out = ["<section id='apprentice'><h2>Apprentice: agreement with the logger</h2>",
           f"<p>The candidate imitates the policy that logged the data; it is promoted when it agrees with the logged "
           f"first choice on at least {_e(share)} of the decisions, held out and then in shadow.</p>",
           "<table><thead><tr><th>cycle</th><th>candidate</th><th>where</th><th>agreement</th><th>n</th></tr></thead><tbody>"]
    for p in a.get("history") or []:
        out.append(f"<tr><td>{_e(p.get('cycle'))}</td><td>{_e(p.get('candidate'))}</td><td>{_e(p.get('where'))}</td>"
                   f"<td>{_f(p.get('agreement'))} {_ci([p.get('low'), p.get('high')])}</td><td>{_count(p.get('n'))}</td></tr>")
    out.append("</tbody></table></section>")
    return "\n".join(out)


def ranking_body(report: Mapping[str, Any]) -> list[str]:
    """The page's body after the header for a ranking report (and an apprentice's agreement, in a cycle's)."""
    return [
        "<nav><a href='#dataset'>decisions</a><a href='#quality'>ranking quality</a><a href='#comparison'>comparison</a>"
        "<a href='#calibration'>calibration</a><a href='#policy-value'>policy value</a>"
        + ("<a href='#apprentice'>apprentice</a>" if report.get("apprentice") else "") + "</nav>",
        _dataset(report), _quality(report), _comparison(report), _calibration(report), policy_value_section(report),
        _apprentice(report),
    ]
