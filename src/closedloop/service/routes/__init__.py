"""The service's routes, one module per route group.

Each module registers its group on the app from explicit dependencies — the settings and the
holder the app's lifespan puts the worker's :class:`~closedloop.service.core.Service` in — and
keeps no state of its own:

- :mod:`~closedloop.service.routes.decide`: ``POST /v1/decide`` (one context or a batch);
- :mod:`~closedloop.service.routes.outcomes`: ``POST /v1/outcomes`` (202 once durable);
- :mod:`~closedloop.service.routes.health`: ``/v1/status``, ``/healthz``, ``/readyz``, ``/metrics``;
- :mod:`~closedloop.service.routes.admin`: the registry's operations (``/v1/admin/...``);
- :mod:`~closedloop.service.routes.errors`: every error answered as problem details;
- :mod:`~closedloop.service.routes.openapi`: the OpenAPI document, the System's schemas merged in;
- :mod:`~closedloop.service.routes.edge`: what they share — reading a body within its limit,
  and the problem details of a body that cannot be read.

:func:`closedloop.service.app.create_app` composes them.
"""
