"""Intelligence management: the registry of bundles, reports and deployments, with history;
sanity checks before traffic; shadows, flights, promotion, the kill switch; instant and automatic
rollback (see ``docs/registry.md``).

* :class:`Registry` — the Python API the CLI, the service and the orchestrator share.
* :class:`DeploymentState` / :class:`FlightState` — what the registry records as serving.
* :class:`Change` — what one lifecycle operation did.
* :func:`guard_check` / :class:`GuardPolicy` / :class:`ArmOps` — guard metrics per flight vs
  production and the automatic rollback; :func:`srm` (the sample-ratio test), :func:`srm_view`
  (units per arm counted from when each writer applied the current arms) and :func:`shadow_disagreement`.
* :class:`BundleStore` / :class:`FileBundleStore` / :class:`DatabaseBundleStore` /
  :class:`CachedBundleStore` — where bundles live (a home's files, the registry's database, a
  host's read-through cache of it: the default with PostgreSQL), verified on every load.
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
from closedloop.registry.store import BundleStore, CachedBundleStore, FileBundleStore
from closedloop.registry.store_db import DatabaseBundleStore

__all__ = [
    "ArmOps",
    "BundleStore",
    "CachedBundleStore",
    "Change",
    "DatabaseBundleStore",
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
