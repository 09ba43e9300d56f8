"""Where the service's deployment comes from: the :class:`DeploymentSource` interface.

A source answers two questions: *which revision is current* (cheap: polled every
``poll_interval_s``) and *what is deployed at it* (a :class:`~closedloop.Deployment` with its
bundles loaded and verified). The embedded implementation without a registry is
:class:`StaticSource` (one deployment, fixed at start-up: ``closedloop serve --bundle``); the
registry's source lives in :mod:`closedloop.service.reload`.
"""

from __future__ import annotations

import threading
from typing import Any

from closedloop.runtime.deployment import Deployment

__all__ = ["DeploymentSource", "StaticSource"]


class DeploymentSource:
    """The interface: ``revision()`` and ``deployment()``; ``describe()`` for ``/v1/status``.

    ``revision()`` and ``deployment()`` may raise when the backing store is unreachable or a
    bundle is refused; the service then keeps serving the last good deployment and reports the
    error in ``/readyz``.
    """

    kind = "source"
    #: Whether the service should poll ``revision()`` (a fixed source never changes).
    polled = True

    def revision(self) -> int:
        raise NotImplementedError

    def deployment(self) -> Deployment:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Block until the source announces a change, ``stop`` is set, or ``timeout`` seconds
        pass; True when a change was announced (the service then polls at once). A source
        without announcements just waits: the service polls every ``poll_interval_s``."""
        stop.wait(timeout)
        return False

    def close(self) -> None:
        """Release connections (called once at shutdown)."""


class StaticSource(DeploymentSource):
    """One deployment, fixed for the life of the process."""

    kind = "static"
    polled = False

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment

    def revision(self) -> int:
        return self._deployment.revision

    def deployment(self) -> Deployment:
        return self._deployment
