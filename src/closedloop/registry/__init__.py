"""Intelligence management: the registry of bundles, reports and deployments, with history;
sanity checks before traffic; shadows, flights, promotion, the kill switch; instant and automatic
rollback (see ``docs/registry.md``).

* :class:`Registry` — the Python API the CLI, the service and the orchestrator share.
* :class:`DeploymentState` / :class:`FlightState` — what the registry records as serving.
* :class:`Change` — what one lifecycle operation did.
* :func:`guard_check` / :class:`GuardPolicy` / :class:`ArmOps` — guard metrics per flight vs
  production and the automatic rollback; :func:`srm` (the sample-ratio test), :func:`srm_view`
  (units per arm counted from when each writer applied the current arms) and :func:`shadow_disagreement`.
* :class:`BundleStore` / :class:`FileBundleStore` — where bundles live, verified on every load.
"""

from __future__ import annotations

from closedloop.registry.guard import (
    ArmOps,
    GuardPolicy,
    guard_check,
    shadow_disagreement,
    srm,
    srm_view,
)
from closedloop.registry.registry import Change, Registry
from closedloop.registry.state import DeploymentState, FlightState
from closedloop.registry.store import BundleStore, FileBundleStore

__all__ = [
    "ArmOps",
    "BundleStore",
    "Change",
    "DeploymentState",
    "FileBundleStore",
    "FlightState",
    "GuardPolicy",
    "Registry",
    "guard_check",
    "shadow_disagreement",
    "srm",
    "srm_view",
]
