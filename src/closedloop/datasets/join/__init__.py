"""The join of :func:`~closedloop.datasets.dataset.build_dataset`, stage by stage.

Each stage is one module with one job; the stages run in this order on one DuckDB connection and
hand their results on as DuckDB temp tables (``dup``, ``lo``, ``ent``) and SQL fragments:

1. :mod:`~closedloop.datasets.join.inputs` — the build's arguments checked (``JoinInputs``).
2. :mod:`~closedloop.datasets.join.select` — the telemetry files registered; the records of the
   system ingested by the cut-off; the outcome sources and ingest ranges left out (``Selection``).
3. :mod:`~closedloop.datasets.join.dedupe` — the decision copies to drop (``dup``); one outcome per
   ``outcome_id`` (the ``linked`` step of the link's statement).
4. :mod:`~closedloop.datasets.join.link` — each outcome linked to its decision (by id, else by unit
   and time) and classified: matched, or why not (``lo``).
5. :mod:`~closedloop.datasets.join.label` — the label policy as SQL: rule aggregates, defaults,
   entity labels (``ent``), audit weights, source weights (``Labeling``).
6. :mod:`~closedloop.datasets.join.write` — the rows written to Parquet in one order; the manifest;
   the directory published atomically. :mod:`~closedloop.datasets.join.counts` counts every
   decision and outcome for the manifest; :mod:`~closedloop.datasets.join.columns` names the
   columns; :mod:`~closedloop.datasets.join.sql` quotes and registers.

:mod:`~closedloop.datasets.join.spark` runs the same stages on Spark: their DuckDB SQL rendered for
Spark SQL by SQLGlot, the few differences explicit in the stages (``Selection.engine``).

The rules the stages implement are in docs/datasets.md.
"""
