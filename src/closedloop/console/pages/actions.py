"""The admin actions: promote a flight, stop a flight, roll back, the kill switch on or off.

Each is two steps: ``GET /systems/{system}/actions/{operation}`` shows what will change and asks for
a reason (required, at most 500 characters); its form ``POST``s to the same URL, which calls the
registry's own method (:class:`closedloop.registry.Registry`) with the credential's name as the actor
and shows the result — the new state, or the registry's refusal. The confirmation carries the
revision it was shown at: when the deployment changed meanwhile, nothing is done and the page says
so. ``POST /api/systems/{system}/actions/{operation}`` (JSON ``{"reason", "name", "on"}``) is the twin.
Only an admin may do any of it: a viewer is refused (403), nothing changed.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.framework import ConsoleError, console_of, form, render, when
from closedloop.console.framework import admin as admin_dep
from closedloop.errors import ConflictError, RegistryError, SanityCheckError
from closedloop.service.auth import Credential

__all__ = ["MAX_REASON", "OPERATIONS", "router"]

#: The operations, and what each is called on the page.
OPERATIONS = {"promote": "Promote a flight", "stop": "Stop a flight", "rollback": "Roll back",
              "killswitch": "Kill switch"}
#: The longest reason accepted.
MAX_REASON = 500

router = APIRouter()


def _operation(operation: str) -> str:
    if operation not in OPERATIONS:
        raise ConsoleError(404, "Unknown action", f"The console has no action {operation!r}; actions: {sorted(OPERATIONS)}.")
    return operation


def _switch(on: str | None) -> bool:
    if on not in ("on", "off"):
        raise ConsoleError(422, "Bad request", f"The kill switch is turned 'on' or 'off'. Got {on!r} instead.")
    return on == "on"


def check_reason(reason: Any) -> str:
    """The reason, stripped: non-empty, at most :data:`MAX_REASON` characters (else 422)."""
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise ConsoleError(422, "Reason needed", "Every change needs a reason (it is recorded in the history). Nothing was changed.",
                           slug="reason")
    if len(text) > MAX_REASON:
        raise ConsoleError(422, "Reason too long", f"A reason has at most {MAX_REASON} characters; this one has {len(text)}. "
                           "Nothing was changed.", slug="reason")
    return text


def preview(reg: Any, system: str, operation: str, name: str | None, on: bool | None) -> dict[str, Any]:
    """What ``operation`` would change now: ``{"revision", "now", "change"}`` (text); 404/409 when it
    cannot apply (no such flight, nothing to roll back …)."""
    st = reg.state(system)
    now = st.describe()
    if operation in ("promote", "stop"):
        f = st.flight(name or "")
        if f is None and name not in st.shadows:
            raise ConsoleError(404, "No such flight", f"System {system!r} runs no flight or shadow named {name!r}. Running: "
                               f"flights {[g.name for g in st.flights]}, shadows {list(st.shadows)}.", slug="unknown-flight")
        bundle = f.bundle if f is not None else name
        what = f"flight {name!r} ({bundle}, {f.share * 100:.6g}% of units)" if f is not None else f"shadow {name}"
        if operation == "promote":
            change = (f"{bundle} becomes production (now {st.production}); {what} ends. The bundle's sanity checks, "
                      "the gate included, run first.")
        else:
            change = f"{what} ends; production stays {st.production}."
    elif operation == "killswitch":
        if st.production is None:
            raise ConsoleError(409, "Nothing deployed", f"Nothing is deployed for system {system!r}; there is no kill switch to turn.")
        change = ("ON: every decision gets the system's default action; the intelligence is skipped." if on
                  else "off: the intelligence decides again.")
        if bool(on) == st.killswitch:
            change = f"nothing: the kill switch is {'on' if on else 'off'} already."
    else:
        change = _rollback_preview(reg, system)
    return {"revision": st.revision, "now": now, "change": change}


def _rollback_preview(reg: Any, system: str) -> str:
    for e in reversed(reg.history(system, limit=200, attempts=False)):
        if e["undone_by"] is None and e["operation"] not in ("rollback", "guard_stop"):
            before = e["before"] or {}
            back = "nothing deployed" if not before.get("production") else _describe(before)
            return (f"change #{e['id']} ({e['operation']} by {e['actor']} at {when(e['at'])}: {e['reason']}) is undone; "
                    f"what served before it comes back: {back}.")
    raise ConsoleError(409, "Nothing to roll back", f"Nothing to roll back for system {system!r}: no change is left to undo.")


def _describe(state: dict[str, Any]) -> str:
    from closedloop.registry.state import DeploymentState

    return str(DeploymentState.from_dict(state).describe())


def apply(request: Request, cred: Credential, system: str, operation: str, fields: dict[str, Any]) -> Any:
    """Run ``operation`` through the registry as ``cred``: the :class:`~closedloop.registry.Change`,
    or :class:`ConsoleError` with the registry's message (nothing changed)."""
    con = console_of(request)
    reg = con.registry()
    reason = check_reason(fields.get("reason"))
    name = fields.get("name") or None
    if operation in ("promote", "stop") and not isinstance(name, str):
        raise ConsoleError(422, "Bad request", f"To {operation} a flight, name it ('name'). Nothing was changed.")
    expected = fields.get("expected_revision")
    if expected not in (None, ""):
        current = reg.revision(system)
        if str(current) != str(expected):
            raise ConsoleError(409, "Changed meanwhile", f"The deployment of {system!r} changed since this was confirmed "
                               f"(revision {expected} → {current}): nothing was done. Look at it again and confirm anew.",
                               slug="conflict")
    try:
        if operation == "promote":
            sys_obj = con.system_object(system)
            if sys_obj is None:
                raise ConsoleError(409, "System needed", f"Promoting runs the bundle's sanity checks, which need the System "
                                   f"{system!r} itself: start the console with --system MODULE:ATTR naming it. Nothing was changed.")
            seen = int(expected) if isinstance(expected, int | str) and str(expected).isdigit() else None
            return reg.promote(sys_obj, str(name), actor=cred.name, reason=reason, expected_revision=seen)
        if operation == "stop":
            return reg.stop(system, str(name), actor=cred.name, reason=reason)
        if operation == "rollback":
            return reg.rollback(system, actor=cred.name, reason=reason)
        return reg.killswitch(system, _switch(fields.get("on")), actor=cred.name, reason=reason)
    except SanityCheckError as exc:
        raise ConsoleError(422, "Refused by the sanity checks", str(exc), slug="sanity-check") from None
    except ConflictError as exc:
        raise ConsoleError(409, "Changed meanwhile", str(exc), slug="conflict") from None
    except RegistryError as exc:
        raise ConsoleError(409, "Refused by the registry", str(exc), slug="refused") from None


@router.get("/systems/{system}/actions/{operation}", name="action_confirm", include_in_schema=False)
def confirm(request: Request, system: str, operation: str, name: str | None = None, on: str | None = None,
            cred: Credential = Depends(admin_dep)) -> Response:
    con = console_of(request)
    con.check_system(system)
    _operation(operation)
    switch = _switch(on) if operation == "killswitch" else None
    pre = preview(con.registry(), system, operation, name, switch)
    return render(request, "action_confirm.html", title=OPERATIONS[operation], system=system, operation=operation,
                  label=OPERATIONS[operation], preview=pre, name=name, on=on, message=None, reason="", max_reason=MAX_REASON)


@router.post("/systems/{system}/actions/{operation}", name="action_run", include_in_schema=False)
def run(request: Request, system: str, operation: str, cred: Credential = Depends(admin_dep)) -> Response:
    con = console_of(request)
    con.check_system(system)
    _operation(operation)
    fields = form(request)
    try:
        change = apply(request, cred, system, operation, fields)
    except ConsoleError as exc:
        if exc.slug == "reason":  # the same confirmation again, with what was wrong
            switch = _switch(fields.get("on")) if operation == "killswitch" else None
            pre = preview(con.registry(), system, operation, fields.get("name"), switch)
            return render(request, "action_confirm.html", title=OPERATIONS[operation], system=system, operation=operation,
                          label=OPERATIONS[operation], preview=pre, name=fields.get("name"), on=fields.get("on"),
                          message=exc.detail, reason=fields.get("reason", "")[:MAX_REASON * 2], max_reason=MAX_REASON,
                          status=exc.status)
        if exc.status in (401, 403, 404):
            raise
        return render(request, "action_result.html", title=OPERATIONS[operation], system=system, label=OPERATIONS[operation],
                      change=None, summary=None, error=exc.detail, error_title=exc.title, status=exc.status)
    done = change.to_dict()
    return render(request, "action_result.html", title=OPERATIONS[operation], system=system, label=OPERATIONS[operation],
                  change=done, summary=_describe(done["after"]), error=None, error_title=None)


@router.post("/api/systems/{system}/actions/{operation}", name="api_action")
def run_api(request: Request, system: str, operation: str, cred: Credential = Depends(admin_dep)) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    _operation(operation)
    body = getattr(request.state, "body", b"") or b"{}"
    fields = form(request)
    if not fields:
        try:
            fields = json.loads(body)
        except ValueError:
            raise ConsoleError(400, "Bad request", "The body must be a JSON object: {\"reason\": …, \"name\": …, \"on\": …}.") from None
        if not isinstance(fields, dict):
            raise ConsoleError(400, "Bad request", f"The body must be a JSON object. Got {type(fields).__name__} instead.")
        if isinstance(fields.get("on"), bool):
            fields["on"] = "on" if fields["on"] else "off"
    done: dict[str, Any] = apply(request, cred, system, operation, fields).to_dict()
    return done
