"""The console's pages: each module has an ``APIRouter`` named ``router`` (docs/console.md, "Adding a page").

:data:`PAGES` lists them; ``create_console_app`` includes each router, in this order (a page's fixed
paths, such as ``…/reports/compare``, come before its parameterized ones within its own router).
"""

from __future__ import annotations

from types import ModuleType

from closedloop.console.pages import actions, flights, goals, history, hotfix, mistakes, overview, reports

__all__ = ["PAGES"]

#: The page modules, in the order their routers are included.
PAGES: tuple[ModuleType, ...] = (overview, actions, goals, history, flights, reports, mistakes, hotfix)
