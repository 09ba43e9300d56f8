"""The console's pages: each module has an ``APIRouter`` named ``router`` (docs/console.md, "Adding a page").

:data:`PAGES` lists them; ``create_console_app`` includes each router. A page not built yet is one of
:data:`closedloop.console.pages.pending.PENDING` (it says "not built yet"): whoever builds it removes
its name there and adds its module here.
"""

from __future__ import annotations

from types import ModuleType

from closedloop.console.pages import actions, overview, pending

__all__ = ["PAGES"]

#: The page modules, in the order their routers are included.
PAGES: tuple[ModuleType, ...] = (overview, actions, pending)
