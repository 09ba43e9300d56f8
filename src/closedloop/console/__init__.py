"""The operations console: a web UI over one project home and its registry (docs/console.md).

``closedloop console`` serves it (127.0.0.1:8470 by default); ``closedloop serve --console`` mounts
the same app at ``/console`` on the decision service. :func:`create_console_app` builds it from a
:class:`ConsoleSettings`.
"""

from closedloop.console.app import create_console_app
from closedloop.console.settings import ConsoleSettings

__all__ = ["ConsoleSettings", "create_console_app"]
