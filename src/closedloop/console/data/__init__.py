"""What the console's pages show, as pure functions of the registry, the home and the time (no web
framework here): one module per page (:mod:`.overview`, …)."""
