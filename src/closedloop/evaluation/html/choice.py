"""The HTML sections of a choice system's evaluation report (``report["kind"] == "choice"``,
:mod:`closedloop.evaluation.choice_report`): the logged decisions (actions shown, the logging
policy's reward), each bundle's choices (greedy agreement with the logger, its action shares) and
the policy value (:mod:`.ranking_value`'s section). Tables only; the page's header comes from
:mod:`.sections`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.evaluation.html.ranking import decisions_section
from closedloop.evaluation.html.ranking_value import policy_value_section
from closedloop.evaluation.html.text import _ci, _count, _e, _f, _pct, _role

__all__ = ["choice_body"]


def _dataset(report: Mapping[str, Any]) -> str:
    ds = report.get("dataset") or {}
    logged = report.get("logged") or {}
    excluded = ds.get("excluded") or {}
    items = [
        ("decisions", _count(ds.get("decisions"))), ("units", _count(ds.get("units"))),
        ("actions shown by the logger", ", ".join(f"{k}: {_count(v)}" for k, v in (ds.get("logged_actions") or {}).items())),
        ("left out", ", ".join(f"{k.replace('_', ' ')}: {_count(v)}" for k, v in excluded.items()) or "none"),
        ("the logging policy's reward per decision", f"{_f(logged.get('value'))} {_ci(logged.get('ci'))}"),
    ]
    return decisions_section(report, items)


def _choices(report: Mapping[str, Any]) -> str:
    bundles = report["bundles"]
    out = ["<section id='choices'><h2>Choices</h2><table>",
           "<tr><th class='t'>bundle</th><th class='t'>role</th><th>rows</th><th class='t'>explores</th>"
           "<th>greedy agreement with the logger</th><th class='t'>share of each action</th></tr>"]
    for i, b in enumerate(bundles):
        shares = ", ".join(f"{k}: {_pct(v)}" for k, v in (b.get("action_shares") or {}).items())
        agree = b.get("greedy_agreement")
        out.append(f"<tr><td class='t'>{_e(b.get('version'))} ({_e(b.get('kind'))})</td><td class='t'>{_e(_role(i, len(bundles)))}"
                   f"</td><td>{_count(b.get('n'))}</td><td class='t'>{'yes' if b.get('explores') else 'no'}</td>"
                   f"<td>{_pct(agree) if isinstance(agree, int | float) else '—'}</td><td class='t'>{_e(shares)}</td></tr>")
    out.append("</table><p class='muted'>Each bundle decided the logged contexts through the runtime's batch path (the "
               "logged decision ids and times). Greedy agreement: the share of decisions where its best-scored action is "
               "the one the logger showed; the action shares are the means of its exact action probabilities.</p></section>")
    return "\n".join(out)


def choice_body(report: Mapping[str, Any]) -> list[str]:
    """The page's body after the header for a choice report."""
    return [
        "<nav><a href='#dataset'>decisions</a><a href='#choices'>choices</a><a href='#policy-value'>policy value</a></nav>",
        _dataset(report), _choices(report), policy_value_section(report),
    ]
