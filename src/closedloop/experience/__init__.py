"""How intelligence becomes what users see: experiences (``experiences``: actions, thresholds, best
action, ranking), exploration with exact propensities (``exploration``), guardrails wrapped
around the intelligence (``guardrails``) and ranked decisions (``ranking``)."""

from __future__ import annotations
