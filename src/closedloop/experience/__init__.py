"""How intelligence becomes what users see: experiences (``experiences``: actions, thresholds, best
action, ranking), exploration with exact propensities (``exploration``), guardrails wrapped
around the intelligence (``guardrails``) and ranked decisions (``ranking``: the plan; ``ranked``: the
records; ``ranking_policy``: how a ranking is chosen; ``ranking_inputs``: its inputs checked)."""

from __future__ import annotations
