"""The runtime that executes intelligence: bundles (``bundle``, ``signing``), decisions
(``decision``), deployments (``deployment``), the runtime itself (``runtime``), its clock and
decision ids (``clock``, ``ids``), and the conformance suite every component passes (``checks``)."""

from __future__ import annotations
