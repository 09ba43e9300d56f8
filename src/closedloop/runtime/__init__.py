"""The runtime that executes intelligence: bundles (``bundle``; ``manifest``, ``bundle_verify``,
``signing``), decisions (``decision``), deployments (``deployment``), the runtime itself
(``runtime``; what serves, bound: ``serving``; a batch across flights: ``routing``), its clock and
decision ids (``clock``, ``ids``), and the conformance suite every component passes (``checks``)."""

from __future__ import annotations
