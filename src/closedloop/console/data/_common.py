"""What every page's data shares: the argument checks (a known system, a page number, a time),
each refused with a closedloop error naming the argument, the rule and the value; a page of a
list as one dict shape."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from closedloop.base.times import iso, parse_time
from closedloop.errors import RegistryError, SpecError, clip_value

__all__ = ["MAX_PER_PAGE", "as_dict", "check_page", "known_system", "page_of", "to_time", "when"]

#: The most rows one page of a list holds.
MAX_PER_PAGE = 500


def known_system(registry: Any, system: Any) -> str:
    """The name of ``system`` (a :class:`~closedloop.System` or its name), refused unless the
    registry holds it (a deployment or a registered bundle)."""
    name = getattr(system, "name", system)
    if not isinstance(name, str) or not name:
        raise RegistryError(f"The 'system' must be a closedloop.System or a system name. Got {clip_value(system)!r} instead.")
    known = registry.systems()
    if name not in known:
        raise RegistryError(f"Unknown system {name!r}: the registry holds {', '.join(sorted(known)) or 'no system'}.")
    return name


def check_page(page: Any, per_page: Any) -> tuple[int, int]:
    """``page`` (1, 2, …) and ``per_page`` (1-:data:`MAX_PER_PAGE`) checked; returns them."""
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise SpecError(f"The 'page' must be an integer ≥ 1 (the first page is 1). Got {clip_value(page)!r} instead.")
    if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
        raise SpecError(f"The 'per_page' must be an integer in [1, {MAX_PER_PAGE}]. Got {clip_value(per_page)!r} instead.")
    return page, per_page


def page_of(items: list[Any], page: int, per_page: int, total: int) -> dict[str, Any]:
    """One page of a list: its items, where it is (``page``, ``per_page``, ``pages``) and the
    ``total`` the whole list holds; ``has_next`` / ``has_prev`` for the page's links."""
    pages = max(1, -(-total // per_page))
    return {"items": items, "page": page, "per_page": per_page, "total": total, "pages": pages,
            "has_prev": page > 1, "has_next": page < pages}


def to_time(value: Any, what: str) -> int:
    """A time given as ns since the epoch, an ISO-8601 string (naive = UTC) or an aware datetime,
    in ns; anything else refused naming ``what``."""
    if isinstance(value, _dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    try:
        ns = parse_time(value)
    except (ValueError, OverflowError):
        raise SpecError(f"The '{what}' must be a time: ISO-8601 (e.g. 2026-01-05T10:00:00Z; naive is UTC), ns since "
                        f"the epoch or an aware datetime. Got {clip_value(value)!r} instead.") from None
    if not 0 <= ns < 2**63:
        raise SpecError(f"The '{what}' must be a time from 1970 on. Got {clip_value(value)!r} instead.")
    return ns


def when(ns: int | None) -> dict[str, Any] | None:
    """A time as both forms a page needs: ``{"at": ISO, "at_ns": ns}`` (None stays None)."""
    return None if ns is None else {"at": iso(int(ns)), "at_ns": int(ns)}


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict (a JSON object read from a file), else an empty dict."""
    return value if isinstance(value, dict) else {}
