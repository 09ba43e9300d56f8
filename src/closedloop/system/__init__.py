"""The declaration of an intelligent system: ``spec`` (System, LabelPolicy, OutcomeRule, Goal, the
costs of mistakes) and ``splits`` (how its data is split for evaluation)."""

from __future__ import annotations
