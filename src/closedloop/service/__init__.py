"""The decision service: HTTP decisions and outcome reports for one System (``closedloop serve``).

:func:`create_app` builds the FastAPI app from one :class:`ServiceSettings`; :class:`Service` is
the per-worker state it runs (runtime, telemetry, deployment source, auth, limits, metrics).
See ``docs/service.md``.
"""

from __future__ import annotations

from closedloop.service.app import app_from_environ, create_app
from closedloop.service.core import Service
from closedloop.service.settings import ENV_SERVICE_SETTINGS, RateLimit, ServiceSettings
from closedloop.service.sources import DeploymentSource, StaticSource

__all__ = [
    "ENV_SERVICE_SETTINGS",
    "DeploymentSource",
    "RateLimit",
    "Service",
    "ServiceSettings",
    "StaticSource",
    "app_from_environ",
    "create_app",
]
