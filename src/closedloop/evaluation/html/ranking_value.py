"""The HTML section of a ranking or choice report's policy value (``report["policy_value"]``,
:mod:`closedloop.evaluation.ranking_value`, :mod:`closedloop.evaluation.choice_report`; a ranking's value
is per slot, a choice's per decision): the logging policy's value, a table per bundle
(estimator, value, 95% interval, ESS, support), each difference from the baseline with its paired
interval, the slices, and the gate's verdict on the candidate by it. A report without the section
(no propensities, ``policy_value=False``, an older report) gets a line saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.evaluation.html.sections import _reading
from closedloop.evaluation.html.text import _ci, _count, _e, _f, _signed

__all__ = ["policy_value_section"]


def _support(s: Any) -> str:
    s = s if isinstance(s, Mapping) else {}
    if s.get("passed") is True:
        return "ok"
    share = s.get("share")
    return f"<b>FAILED</b> ({_f(share * 100 if isinstance(share, int | float) else None, 2)}% unsupported)"


def _bundle_rows(part: Mapping[str, Any]) -> list[str]:
    out = []
    for name, e in (part.get("estimates") or {}).items():
        e = e if isinstance(e, Mapping) else {}
        out.append(f"<tr><td class='t'>{_e(part.get('version'))}</td><td class='t'>{_e(name)}</td><td>{_f(e.get('value'))}</td>"
                   f"<td>{_ci([e.get('low'), e.get('high')])}</td><td>{_count(e.get('ess'))}</td>"
                   f"<td class='t'>{_support(e.get('support'))}</td></tr>")
    return out


def _difference_rows(comparison: Any) -> list[str]:
    out = []
    for c in comparison if isinstance(comparison, list) else []:
        for name, d in ((c.get("differences") or {}) if isinstance(c, Mapping) else {}).items():
            d = d if isinstance(d, Mapping) else {}
            ci = [d.get("low"), d.get("high")]
            reads = _reading(ci, True).replace("cheaper", "better").replace("costlier", "worse") if None not in ci else "—"
            out.append(f"<tr><td class='t'>{_e(c.get('baseline'))}</td><td class='t'>{_e(c.get('candidate'))}</td>"
                       f"<td class='t'>{_e(name)}</td><td>{_signed(d.get('value'))}</td><td>{_ci(ci, fmt=_signed)}</td>"
                       f"<td class='t'>{reads}</td><td class='t'>{_support(d.get('candidate_support'))}</td></tr>")
    return out


def _per(report: Mapping[str, Any]) -> str:
    """What one value is per: a choice report's decision, a ranking report's slot."""
    return "decision" if report.get("kind") == "choice" else "slot"


def _tables(part: Mapping[str, Any], per: str = "slot") -> list[str]:
    logged = part.get("logged") or {}
    out = [f"<p>Rows: {_count(part.get('n_rows'))}, units: {_count(part.get('units'))}. The logging policy's own value "
           f"(mean logged reward per {per}): {_f(logged.get('value'))} {_ci(logged.get('ci'))}.</p>",
           f"<table><tr><th class='t'>bundle</th><th class='t'>estimator</th><th>value per {per}</th><th>95% CI</th>"
           "<th>ESS</th><th class='t'>support</th></tr>"]
    for b in part.get("bundles") or []:
        out += _bundle_rows(b)
    out.append("</table>")
    diffs = _difference_rows(part.get("comparison"))
    if diffs:
        out += ["<table><tr><th class='t'>baseline</th><th class='t'>candidate</th><th class='t'>estimator</th>"
                "<th>difference</th><th>95% CI (paired)</th><th class='t'>reads as</th><th class='t'>candidate's support</th></tr>",
                *diffs, "</table>"]
    return out


def _gate(report: Mapping[str, Any]) -> str:
    gate = report.get("gate")
    if not isinstance(gate, Mapping) or "estimator" not in gate:
        return "<p class='muted'>No gate verdict (one bundle, or no policy value to judge).</p>"
    reasons = gate.get("reasons") or []
    body = "".join(f"<li>{_e(r)}</li>" for r in reasons) if reasons else "<li>No rule was broken.</li>"
    cls, word = ("pass", "PASS") if gate.get("passed") is True else ("fail", "FAIL")
    tol = (gate.get("rule") or {}).get("policy_tolerance")
    return (f"<div class='verdict {cls}'><div class='big'>Gate: {word}</div><p>Candidate <b>{_e(gate.get('candidate'))}</b> "
            f"against baseline <b>{_e(gate.get('baseline'))}</b> by {_e(gate.get('estimator'))}: difference "
            f"{_signed(gate.get('difference'))} {_ci(gate.get('ci'), fmt=_signed)}; the lower bound must not be below "
            f"−{_e(tol)} and the candidate must pass the support check.</p><ul>{body}</ul></div>")


def _slices(slices: Any, per: str) -> list[str]:
    out = []
    for field, entries in (slices or {}).items() if isinstance(slices, Mapping) else []:
        for s in entries or []:
            title = f"{field} = {s.get('value')!r}"
            if s.get("small"):
                out.append(f"<p class='muted'>{_e(title)}: {_count(s.get('n_rows'))} rows — too few to estimate "
                           "(noted, not judged).</p>")
                continue
            out += [f"<h3>{_e(title)}</h3>", *_tables(s, per)]
    return out


def policy_value_section(report: Mapping[str, Any]) -> str:
    """The ``policy-value`` section of a ranking or choice report's page."""
    pv = report.get("policy_value")
    per = _per(report)
    what = ("choosing among the system's actions" if per == "decision" else "ranking the logged candidates")
    out = ["<section id='policy-value'><h2>Policy value</h2>"]
    if not isinstance(pv, Mapping):
        out.append("<p class='muted'>No policy value: the dataset carries no logged propensities, or it was not asked "
                   "for (policy_value=False).</p></section>")
        return "\n".join(out)
    out.append(f"<p class='muted'>Off-policy estimates of the reward per {per} each bundle's policy would earn {what} "
               f"({_e(', '.join(pv.get('estimators') or []))}; reward model: "
               f"{_e(pv.get('reward_model') or 'none')}), intervals: {_e(pv.get('interval'))}, "
               f"{_count(pv.get('bootstrap'))} resamples.</p>")
    out += [f"<p class='note'>{_e(n)}</p>" for n in pv.get("notes") or []]
    if pv.get("bundles"):
        out += _tables(pv, per)
    else:
        out.append("<p class='muted'>No usable row (see the notes).</p>")
    out.append(_gate(report))
    out += _slices(pv.get("slices"), per)
    out.append("</section>")
    return "\n".join(out)
