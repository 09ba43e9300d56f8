"""The data behind the console's pages, as pure functions: plain dicts and lists, ready for a
template and for JSON — no web framework, no HTML (docs/console-data.md says what each page shows
and where each figure comes from).

* :mod:`~closedloop.console.data.overview` — what serves now, the last cycles, alerts, telemetry health, the goals;
* :mod:`~closedloop.console.data.history` — every registry change and attempt, paged; what served at a time;
* :mod:`~closedloop.console.data.goals` — each goal's series over a range, the events on its time axis, a Vega-Lite spec;
* :mod:`~closedloop.console.data.flights` — each flight against production on the guard's metrics, SRM, exposure;
* :mod:`~closedloop.console.data.reports` — the evaluation reports, paged; one opened; two bundles compared;
* :mod:`~closedloop.console.data.mistakes` — the worst and the reported mistakes; a decision looked up and
  replayed (:mod:`~closedloop.console.data.replay`);
* :mod:`~closedloop.console.data.hotfix` — production's allow / block lists; the guardrail hot fix deployed.

Each function takes its inputs explicitly (a :class:`~closedloop.registry.Registry`, the home, the
system, ``now_ns``, ``page`` / ``per_page``) and refuses bad input with a closedloop error that
names the argument, the rule and the value.
"""

from __future__ import annotations

from closedloop.console.data.flights import flights
from closedloop.console.data.goals import chart_spec, events, goals
from closedloop.console.data.history import history, served_at
from closedloop.console.data.hotfix import apply_hotfix, guardrail_lists, validate_entries
from closedloop.console.data.mistakes import reported, worst
from closedloop.console.data.replay import lookup, replay
from closedloop.console.data.reports import compare, manifest_diff, report, report_file, report_files, reports

__all__ = [
    "apply_hotfix", "chart_spec", "compare", "events", "flights", "goals", "guardrail_lists", "history", "lookup",
    "manifest_diff", "replay", "report", "report_file", "report_files", "reports", "reported", "served_at",
    "validate_entries", "worst",
]
