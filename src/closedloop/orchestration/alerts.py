"""Alerts: what monitoring raises, where it is delivered, and what the cycle does about it.

An :class:`Alert` names what fired (``kind``: ``feature_drift``, ``score_drift``,
``mistake_spike``, ``goal_missed``, ``abuse``, ``rollback``…), the subject (a feature, a metric, a
source), the measured value and the declared threshold it crossed, the window, and the action
the cycle takes (``retrain``, ``tighten``, ``quarantine``, ``none``). Every alert has a stable
``id`` (a hash of kind, subject and window), so delivering the same alert twice (a rerun cycle) is
recognisable downstream.

Sinks (:class:`AlertSink`): :class:`JsonLinesAlertSink` appends to a file (the embedded
default, ``<home>/orchestration/alerts.jsonl``); :class:`WebhookAlertSink` POSTs JSON to a URL
with a timeout and retries (httpx). A sink that fails never stops the cycle: the failure is
returned and recorded, and the alert is still in the cycle's record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from closedloop.base.files import make_private_dirs, open_private, open_private_file
from closedloop.errors import SpecError

__all__ = ["ACTIONS", "Alert", "AlertSink", "JsonLinesAlertSink", "WebhookAlertSink", "deliver"]

#: What the cycle may do about an alert.
ACTIONS = ("retrain", "tighten", "quarantine", "none")


@dataclass(frozen=True)
class Alert:
    """One alert. ``value`` crossed ``threshold`` (the declared one) in ``window``."""

    kind: str
    subject: str
    value: float | None
    threshold: float | None
    message: str
    action: str = "none"
    window: str = ""
    at_ns: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise SpecError(f"The 'action' of an Alert must be one of {list(ACTIONS)}. Got {self.action!r} instead.")

    @property
    def id(self) -> str:
        h = hashlib.sha256(json.dumps([self.kind, self.subject, self.window]).encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        return cls(**{k: d[k] for k in (
            "kind", "subject", "value", "threshold", "message", "action", "window", "at_ns", "details",
        ) if k in d})


class AlertSink(ABC):
    """Where alerts are delivered."""

    @abstractmethod
    def send(self, alerts: Sequence[Alert]) -> None:
        """Deliver ``alerts`` (raise on failure; :func:`deliver` catches and reports it)."""

    def describe(self) -> str:
        return type(self).__name__


class JsonLinesAlertSink(AlertSink):
    """Appends one JSON line per alert to ``path`` (flock'ed, fsynced; ``0600``, its lock file
    too, folders created ``0700``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = open_private(self.path.with_name("." + self.path.name + ".lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def send(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        make_private_dirs(self.path.parent)
        data = b"".join(json.dumps(a.to_dict(), sort_keys=True, allow_nan=False).encode() + b"\n" for a in alerts)
        with self._lock(), open_private_file(self.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every alert in the file (a torn or bad line is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_bytes().splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict):
                out.append(d)
        return out

    def describe(self) -> str:
        return f"jsonl:{self.path}"


class WebhookAlertSink(AlertSink):
    """POSTs ``{"alerts": [...]}`` as JSON to ``url``; retries ``retries`` times on a network
    error or a 5xx/429 answer, waiting ``backoff × 2^attempt`` seconds between tries; any other
    non-2xx answer fails at once."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, retries: int = 2, backoff: float = 0.2,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SpecError(f"The 'url' of WebhookAlertSink must be an http(s) URL. Got {url!r} instead.")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise SpecError(f"The 'timeout' of WebhookAlertSink must be a number > 0. Got {timeout!r} instead.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise SpecError(f"The 'retries' of WebhookAlertSink must be an integer ≥ 0. Got {retries!r} instead.")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
            raise SpecError(f"The 'backoff' of WebhookAlertSink must be a number ≥ 0. Got {backoff!r} instead.")
        self.url, self.timeout, self.retries, self.backoff = url, float(timeout), retries, float(backoff)
        self.headers = dict(headers or {})

    def send(self, alerts: Sequence[Alert]) -> None:
        import httpx

        if not alerts:
            return
        body = {"alerts": [a.to_dict() for a in alerts]}
        last: str = ""
        with httpx.Client(timeout=self.timeout) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                try:
                    r = client.post(self.url, json=body, headers=self.headers)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    continue
                if 200 <= r.status_code < 300:
                    return
                last = f"HTTP {r.status_code}"
                if r.status_code < 500 and r.status_code != 429:
                    break
        raise OSError(f"The alert webhook {self.url} did not accept {len(alerts)} alert(s): {last}.")

    def describe(self) -> str:
        return f"webhook:{self.url}"


def deliver(alerts: Sequence[Alert], sinks: Sequence[AlertSink]) -> list[dict[str, str]]:
    """Send ``alerts`` to every sink; a failing sink does not stop the others. Returns one
    ``{"sink", "error"}`` per failure."""
    failures: list[dict[str, str]] = []
    if not alerts:
        return failures
    for s in sinks:
        try:
            s.send(alerts)
        except Exception as exc:  # a sink must never sink the cycle
            failures.append({"sink": s.describe(), "error": f"{type(exc).__name__}: {exc}"})
    return failures
