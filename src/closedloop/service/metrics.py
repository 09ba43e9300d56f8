"""Service metrics in the Prometheus text exposition format (version 0.0.4).

Counters and histograms are plain dictionaries keyed by label values, updated on the event-loop
thread (one per worker process): an increment is a dict update, an observation a ``bisect`` and
two additions. Gauges (telemetry buffer depth, flight shares, readiness …) are read when
``/metrics`` is rendered.

Every worker process keeps its own numbers. The workers of one server (``closedloop serve
--workers N``, which share one port: a scrape reaches any one of them) publish their counters and
histograms to a directory they share (:class:`SharedMetrics`, once a second and at every scrape),
and the worker that answers ``/metrics`` renders the sum over all of them; gauges are the
answering worker's own.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from closedloop.base.files import atomic_write, make_private_dirs

__all__ = ["CONTENT_TYPE", "Counter", "Histogram", "MetricsRegistry", "SharedMetrics"]

#: The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Label values kept per counter at most; further values are counted under ``"other"`` (outcome
#: sources are caller-supplied: their cardinality must be bounded).
MAX_SERIES = 1_000


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[Any]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape("" if v is None else str(v))}"' for n, v in zip(names, values, strict=True)) + "}"


def _num(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class Counter:
    """A monotonically increasing count per tuple of label values."""

    __slots__ = ("help", "labels", "name", "values")

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.values: dict[tuple[Any, ...], float] = {}

    def inc(self, key: tuple[Any, ...] = (), n: float = 1) -> None:
        v = self.values
        if key in v:
            v[key] += n
        elif len(v) < MAX_SERIES:
            v[key] = n
        else:
            other = ("other",) * len(self.labels)
            v[other] = v.get(other, 0) + n

    def get(self, key: tuple[Any, ...] = ()) -> float:
        return self.values.get(key, 0)

    def total(self) -> float:
        return sum(self.values.values())

    def render(self, values: Mapping[tuple[Any, ...], float] | None = None) -> Iterable[str]:
        values = self.values if values is None else values
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        if not values and not self.labels:
            yield f"{self.name} 0"
        for key, v in sorted(values.items(), key=lambda kv: tuple(map(str, kv[0]))):
            yield f"{self.name}{_labels(self.labels, key)} {_num(v)}"


class Histogram:
    """Observations counted into cumulative buckets (seconds), with their sum and count."""

    __slots__ = ("bounds", "counts", "help", "name", "total", "n")

    def __init__(self, name: str, help: str, bounds: Sequence[float]) -> None:
        self.name, self.help = name, help
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n
        self.n += n

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q`` quantile: the smallest bucket bound holding it."""
        if self.n == 0:
            return float("nan")
        want = q * self.n
        acc = 0
        for i, c in enumerate(self.counts):
            acc += c
            if acc >= want:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")

    def render(self, state: tuple[Sequence[int], float, int] | None = None) -> Iterable[str]:
        counts, total, n = (self.counts, self.total, self.n) if state is None else state
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        acc = 0
        for bound, c in zip(self.bounds, counts, strict=False):
            acc += c
            yield f'{self.name}_bucket{{le="{_num(bound)}"}} {acc}'
        yield f'{self.name}_bucket{{le="+Inf"}} {n}'
        yield f"{self.name}_sum {_num(total)}"
        yield f"{self.name}_count {n}"


class MetricsRegistry:
    """The metrics of one worker: counters, histograms, and gauges read at render time."""

    def __init__(self) -> None:
        self._items: list[Counter | Histogram] = []
        self._gauges: list[tuple[str, str, tuple[str, ...], Callable[[], Iterable[tuple[tuple[Any, ...], float]]]]] = []

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        c = Counter(name, help, labels)
        self._items.append(c)
        return c

    def histogram(self, name: str, help: str, bounds: Sequence[float]) -> Histogram:
        h = Histogram(name, help, bounds)
        self._items.append(h)
        return h

    def gauge(
        self, name: str, help: str, labels: Sequence[str], read: Callable[[], Iterable[tuple[tuple[Any, ...], float]]]
    ) -> None:
        """A gauge whose series ``read()`` yields as ``(label values, value)`` when rendered."""
        self._gauges.append((name, help, tuple(labels), read))

    def snapshot(self) -> dict[str, Any]:
        """The counters and histograms as plain data (what :class:`SharedMetrics` publishes)."""
        counters, histograms = {}, {}
        for item in self._items:
            if isinstance(item, Counter):
                counters[item.name] = [[list(k), v] for k, v in item.values.items()]
            else:
                histograms[item.name] = [list(item.counts), item.total, item.n]
        return {"counters": counters, "histograms": histograms}

    def render(self, peers: Iterable[Mapping[str, Any]] = ()) -> str:
        """The text exposition; with ``peers`` (other workers' :meth:`snapshot`), counters and
        histograms are the sums over this worker and them (a peer's histogram with other bounds
        is left out)."""
        peers = list(peers)
        lines: list[str] = []
        for item in self._items:
            if not peers:
                lines.extend(item.render())
            elif isinstance(item, Counter):
                values = dict(item.values)
                for p in peers:
                    for key, v in p.get("counters", {}).get(item.name, ()):
                        k = tuple(key)
                        values[k] = values.get(k, 0) + v
                lines.extend(item.render(values))
            else:
                counts, total, n = list(item.counts), item.total, item.n
                for p in peers:
                    got = p.get("histograms", {}).get(item.name)
                    if got is None or len(got[0]) != len(counts):
                        continue
                    counts = [a + b for a, b in zip(counts, got[0], strict=True)]
                    total, n = total + got[1], n + got[2]
                lines.extend(item.render((counts, total, n)))
        for name, help, labels, read in self._gauges:
            lines.append(f"# HELP {name} {help}")
            lines.append(f"# TYPE {name} gauge")
            for key, v in read():
                lines.append(f"{name}{_labels(labels, key)} {_num(float(v))}")
        return "\n".join(lines) + "\n"


class SharedMetrics:
    """The metrics of one server's workers, shared through a directory: each worker publishes its
    :meth:`MetricsRegistry.snapshot` as ``<pid>.json`` (written whole, then renamed into place), and
    :meth:`render` sums this worker's numbers and every other file's. A worker that has exited
    leaves its last numbers in place, so the sums never go down while the server runs."""

    def __init__(self, directory: Path | str, registry: MetricsRegistry, pid: int | None = None) -> None:
        self.directory = Path(directory)
        self.registry = registry
        self.pid = os.getpid() if pid is None else pid

    @property
    def path(self) -> Path:
        return self.directory / f"{self.pid}.json"

    def publish(self) -> None:
        """Write this worker's numbers (call it on the thread that updates them)."""
        make_private_dirs(self.directory)
        # reporter sources, bundle versions: the owner's alone (0600); rewritten on every scrape,
        # so not fsynced (a crash loses only numbers the next publish rewrites)
        atomic_write(self.path, msgspec.json.encode(self.registry.snapshot()), durable=False)

    def peers(self) -> list[dict[str, Any]]:
        """The other workers' last published numbers (unreadable files are skipped)."""
        out = []
        for f in sorted(self.directory.glob("*.json")):
            if f.name == self.path.name:
                continue
            try:
                got = msgspec.json.decode(f.read_bytes())
            except (OSError, msgspec.DecodeError):
                continue
            if isinstance(got, dict):
                out.append(got)
        return out

    def render(self) -> str:
        try:
            self.publish()
        except OSError:  # the others miss this worker's freshest numbers; the answer is still whole
            pass
        return self.registry.render(self.peers())
