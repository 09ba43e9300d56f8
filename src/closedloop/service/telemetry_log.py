"""The worker's telemetry sink: the segment log in the project home (the default), or — with
``ServiceSettings.telemetry_url`` — a :class:`~closedloop.telemetry.sink_transport.TransportSink`
on NATS JetStream, with its ``closedloop_telemetry_log_*`` metrics.

:mod:`closedloop.telemetry.jetstream` (and nats-py) is imported only when a URL is set: the
embedded default never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from closedloop.service.metrics import MetricsRegistry
from closedloop.service.settings import ServiceSettings
from closedloop.telemetry.sink import Sink
from closedloop.telemetry.sink_transport import TransportSink

__all__ = ["declare_log_metrics", "open_sink"]


def open_sink(settings: ServiceSettings, system: str) -> Sink:
    """The sink a worker's telemetry writes to (configured, not opened: ``Telemetry.start`` opens it)."""
    if settings.telemetry_url is None:
        from closedloop.telemetry import SegmentLog

        return SegmentLog(settings.project.home)
    from closedloop.telemetry.jetstream import JetStreamTransport

    return TransportSink(JetStreamTransport(settings.telemetry_url), settings.project.home, system=system)


#: (metric, help, counter key) of the log's counters, in records unless said
_COUNTERS = (
    ("published", "Telemetry records given to the distributed log (re-publishing included)."),
    ("acknowledged", "Telemetry records the distributed log acknowledged (durable)."),
    ("spilled", "Telemetry records spilled to the home while the distributed log was unreachable."),
    ("republished", "Spilled telemetry records re-published to the distributed log."),
    ("unavailable", "Publish calls that found the distributed log unreachable."),
)


def declare_log_metrics(m: MetricsRegistry, sink: Callable[[], TransportSink | None]) -> None:
    """The ``closedloop_telemetry_log_*`` gauges of the worker's TransportSink (none without one)."""

    def stat(key: str) -> Callable[[], list[tuple[tuple[()], float]]]:
        def read() -> list[tuple[tuple[()], float]]:
            s = sink()
            return [] if s is None else [((), float(s.counters[key]))]
        return read

    for key, text in _COUNTERS:
        m.gauge(f"closedloop_telemetry_log_{key}", text, (), stat(key))

    def dropped() -> list[tuple[tuple[str], float]]:
        s = sink()
        return [] if s is None else [((k,), float(v)) for k, v in s.counters["dropped"].items()]

    def state() -> list[tuple[tuple[()], float]]:
        s = sink()
        return [] if s is None else [((), 1.0 if s.reachable else 0.0)]

    m.gauge("closedloop_telemetry_log_dropped", "Spilled telemetry records dropped (the spill over its bound, or a "
            "write error), by stream.", ("stream",), dropped)
    m.gauge("closedloop_telemetry_log_reachable", "1 while the distributed log acknowledges publishes.", (), state)
    m.gauge("closedloop_telemetry_log_spill_backlog", "Spilled telemetry records waiting to be re-published.", (),
            lambda: _one(sink(), "spill_backlog"))
    m.gauge("closedloop_telemetry_log_spill_bytes", "Bytes of the spill on disk.", (), lambda: _one(sink(), "spill_bytes"))


def _one(s: TransportSink | None, key: str) -> list[tuple[tuple[()], float]]:
    if s is None:
        return []
    st: dict[str, Any] = s.stats()
    return [((), float(st[key]))]
