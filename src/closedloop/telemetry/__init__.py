"""Telemetry: the durable, append-only log of decisions and outcomes (see DESIGN.md).

Record schemas are in :mod:`closedloop.telemetry.records`; sampling in
:mod:`~closedloop.telemetry.sampling`; what of a context may be written in
:mod:`~closedloop.telemetry.privacy`.
"""

from __future__ import annotations

from .privacy import Sanitizer
from .records import DECISION_SCHEMA, OUTCOME_SCHEMA
from .sampling import Sampling

__all__ = ["DECISION_SCHEMA", "OUTCOME_SCHEMA", "Sampling", "Sanitizer"]
