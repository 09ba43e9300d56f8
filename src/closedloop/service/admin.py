"""The admin bodies: what each of the registry's lifecycle operations takes over HTTP
(``POST /v1/admin/deploy``, ``promote``, ``stop``, ``rollback``, ``killswitch``), decoded with
msgspec, and their JSON schemas for the OpenAPI document. The routes that take them are
:mod:`closedloop.service.routes.admin`.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["BODIES", "DeployBody", "KillswitchBody", "PromoteBody", "RollbackBody", "StopBody", "schemas"]


class DeployBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Deploy a bundle (a version in the registry's store, or a path on the server) to production,
    as a shadow (``shadow``) or in a flight (``flight`` with ``share`` in (0, 1])."""

    bundle: str
    reason: str
    shadow: bool = False
    flight: str | None = None
    share: float | None = None
    force: str | None = None
    #: The reason for deploying a bundle not signed by a key the registry trusts (recorded).
    allow_unsigned: str | None = None


class PromoteBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Promote a flight (or a shadow, by bundle version) to production."""

    flight: str
    reason: str
    force: str | None = None


class StopBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Stop a flight (or a shadow)."""

    flight: str
    reason: str


class RollbackBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Restore the state before the last change not rolled back yet."""

    reason: str


class KillswitchBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Turn the kill switch on (the system's default action for everyone) or off."""

    on: bool
    reason: str


BODIES: dict[str, type[msgspec.Struct]] = {
    "deploy": DeployBody, "promote": PromoteBody, "stop": StopBody, "rollback": RollbackBody,
    "killswitch": KillswitchBody,
}


def schemas() -> dict[str, Any]:
    """JSON schemas of the admin bodies (merged into the OpenAPI document)."""
    _, comps = msgspec.json.schema_components(list(BODIES.values()), ref_template="#/components/schemas/{name}")
    for body in BODIES.values():  # reasons are recorded in the history: never empty
        comps[body.__name__]["properties"]["reason"]["minLength"] = 1
    return comps
