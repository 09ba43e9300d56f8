"""``python -m closedloop.cli``: the same as the ``closedloop`` command."""

from closedloop.cli.main import main

main()
