"""The Hot fixes page: production's allow and block lists (the guardrails a hot fix replaces:
:func:`closedloop.console.data.hotfix.guardrail_lists`), and for an admin a form — one textarea per
list, one entry per line, a reason — that checks the entries, asks to confirm (what is added, what
is removed), then calls :func:`~closedloop.console.data.hotfix.apply_hotfix`: a new bundle built from
production's with the two lists replaced, the sanity checks a deploy runs and the hot fix's replay,
deployed as production through the registry and recorded in its history like any deployment. The
result shows the new version and the checks, or the error naming the bad entry (nothing changed).
Viewers see the lists only; a viewer's ``POST`` is refused (403) and every ``POST`` needs the CSRF token.

URLs: ``GET /systems/{system}/hotfix``; ``POST`` the same path with ``step=check`` (the confirmation)
then ``step=apply``; the JSON twins ``GET /api/systems/{system}/hotfix`` (the lists) and ``POST``
(``{"allow": [...], "block": [...], "field", "reason", "expected_revision"}``: the result).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from closedloop.console.data.hotfix import apply_hotfix, guardrail_lists, validate_entries
from closedloop.console.framework import ConsoleError, console_of, form, render, viewer
from closedloop.console.framework import admin as admin_dep
from closedloop.console.pages._common import call
from closedloop.console.pages.actions import check_reason
from closedloop.errors import ConflictError, RegistryError, SpecError
from closedloop.service.auth import Credential

__all__ = ["entries", "router"]

router = APIRouter()


def entries(text: Any) -> list[str]:
    """A textarea's entries: one per line, blank lines skipped (each checked by ``validate_entries``)."""
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def _lists(request: Request, system: str) -> dict[str, Any]:
    con = console_of(request)
    con.check_system(system)
    lists: dict[str, Any] = call(guardrail_lists, con.registry(), con.system_object(system) or system)
    return lists


def _page(request: Request, system: str, lists: dict[str, Any], *, message: str | None = None, status: int = 200,
          allow: str | None = None, block: str | None = None, field: str | None = None, reason: str = "") -> Response:
    return render(request, "hotfix.html", title=f"{system} — hot fixes", system=system, lists=lists, message=message,
                  status=status, allow_text="\n".join(lists["allow"]) if allow is None else allow,
                  block_text="\n".join(lists["block"]) if block is None else block, field=field or lists["field"] or "",
                  reason=reason, system_loaded=console_of(request).system_object(system) is not None)


@router.get("/systems/{system}/hotfix", name="hotfix", include_in_schema=False)
def hotfix_page(request: Request, system: str, cred: Credential = Depends(viewer)) -> Response:
    return _page(request, system, _lists(request, system))


def _check(sys_obj: Any, field: str, allow: list[str], block: list[str]) -> tuple[list[str], list[str]]:
    with_field = field or None
    if with_field is None:
        raise ConsoleError(422, "Bad hot fix", "Choose the context field the lists match. Nothing was changed.")
    try:
        return validate_entries(sys_obj, field, "allow", allow), validate_entries(sys_obj, field, "block", block)
    except SpecError as exc:
        raise ConsoleError(422, "Bad hot fix", f"{exc} Nothing was changed.", slug="bad-entry") from None


def _apply(request: Request, cred: Credential, system: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``apply_hotfix`` as ``cred`` with the given lists; :class:`ConsoleError` with its message (nothing changed)."""
    con = console_of(request)
    sys_obj = con.system_object(system)
    if sys_obj is None:
        raise ConsoleError(409, "System needed", f"A hot fix checks its entries and runs the deploy's checks, which need the System "
                           f"{system!r} itself: start the console with --system MODULE:ATTR naming it. Nothing was changed.",
                           slug="system-needed")
    reason = check_reason(fields.get("reason"))
    expected = fields.get("expected_revision")
    rev = int(expected) if isinstance(expected, int) or (isinstance(expected, str) and expected.isdigit()) else None
    try:
        result: dict[str, Any] = apply_hotfix(con.registry(), con.home, sys_obj, allow=fields.get("allow"), block=fields.get("block"),
                                              field=fields.get("field") or None, actor=cred.name, reason=reason, expected_revision=rev)
    except SpecError as exc:
        raise ConsoleError(422, "Bad hot fix", f"{exc} Nothing was changed.", slug="bad-entry") from None
    except ConflictError as exc:
        raise ConsoleError(409, "Changed meanwhile", f"{exc} Nothing was changed: look at the lists again.", slug="conflict") from None
    except RegistryError as exc:
        raise ConsoleError(422, "Refused", str(exc), slug="refused") from None
    return result


@router.post("/systems/{system}/hotfix", name="hotfix_run", include_in_schema=False)
def hotfix_post(request: Request, system: str, cred: Credential = Depends(admin_dep)) -> Response:
    lists = _lists(request, system)
    fields = form(request)
    allow_text, block_text = fields.get("allow", "")[:200_000], fields.get("block", "")[:200_000]
    field, reason = fields.get("field", "") or lists["field"] or "", fields.get("reason", "")[:1000]
    allow, block = entries(allow_text), entries(block_text)
    try:
        if fields.get("step") != "apply":
            sys_obj = console_of(request).system_object(system)
            if sys_obj is None:
                raise ConsoleError(409, "System needed", "A hot fix needs the System: start the console with --system MODULE:ATTR.")
            check_reason(reason)
            new = dict(zip(("allow", "block"), _check(sys_obj, field, allow, block), strict=True))
            return render(request, "hotfix_confirm.html", title=f"{system} — confirm the hot fix", system=system, lists=lists,
                          field=field, reason=reason.strip(), allow=new["allow"], block=new["block"],
                          added={k: sorted(set(new[k]) - set(lists[k])) for k in new},
                          removed={k: sorted(set(lists[k]) - set(new[k])) for k in new})
        result = _apply(request, cred, system, {"allow": allow, "block": block, "field": field, "reason": reason,
                                                "expected_revision": fields.get("expected_revision")})
    except ConsoleError as exc:
        if exc.status in (401, 403, 404):
            raise
        return _page(request, system, lists, message=f"{exc.title}: {exc.detail}", status=exc.status, allow=allow_text,
                     block=block_text, field=field, reason=reason)
    return render(request, "hotfix_result.html", title=f"{system} — hot fix", system=system, result=result)


@router.get("/api/systems/{system}/hotfix", name="api_hotfix")
def hotfix_api(request: Request, system: str, cred: Credential = Depends(viewer)) -> dict[str, Any]:
    return _lists(request, system)


@router.post("/api/systems/{system}/hotfix", name="api_hotfix_run")
def hotfix_api_run(request: Request, system: str, cred: Credential = Depends(admin_dep)) -> dict[str, Any]:
    console_of(request).check_system(system)
    fields: Any = form(request)
    if not fields:
        try:
            fields = json.loads(getattr(request.state, "body", b"") or b"{}")
        except ValueError:
            raise ConsoleError(400, "Bad request", "The body must be a JSON object: {\"allow\": [...], \"block\": [...], "
                               "\"reason\": …}.") from None
    else:  # a form: the textareas' lines
        fields = {**fields, **{k: entries(fields[k]) for k in ("allow", "block") if k in fields}}
    if not isinstance(fields, dict):
        raise ConsoleError(400, "Bad request", f"The body must be a JSON object. Got {type(fields).__name__} instead.")
    return _apply(request, cred, system, fields)
