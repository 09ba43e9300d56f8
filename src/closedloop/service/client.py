"""``closedloop.Client``: a small Python client of the decision service (httpx).

::

    from closedloop import Client

    with Client("http://127.0.0.1:8000", token=TOKEN) as cl:
        d = cl.decide({"user_id": "u1", "url": "https://example.com/", "domain": "example.com"})
        cl.report(d, kind="reported_false_block", source="user")      # 1 once durable

A ranking system's request carries its ``"candidates"``; the answer is a
:class:`~closedloop.service.ranked.Ranked` (the slate, slot by slot, its propensities and every
candidate's score), and an outcome names the slot it is for::

        r = cl.decide({"user_id": "u1", "hour": 9, "candidates": [{"item_id": "a", ...}, ...]})
        cl.report(r, kind="clicked", source="app", slot=2)            # or candidate_id=r.slate[1]

Retries are safe by construction:

- **outcome reports** are idempotent: the client fixes each report's ``event_time`` (and so its
  content-derived ``outcome_id``) before the first attempt, so a retry after a lost answer
  repeats the same report, which datasets deduplicate. They are retried on connection errors,
  timeouts and 502/503/504 answers, honouring ``Retry-After``;
- **decisions** are retried only when the request cannot have been decided: the connection was
  refused, or the service answered 503 (not ready). A decision whose answer was lost is not
  retried (that would log a second decision for the same context);
- reads (status, health, metrics) are retried like reports; admin operations only like decisions.

Errors raise from :mod:`closedloop.errors`: an invalid context :class:`~closedloop.ContextError`
(field, rule, value), a refused credential :class:`~closedloop.errors.AuthError`, anything else
:class:`~closedloop.errors.ServiceError` with the HTTP status and the problem details.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from closedloop.errors import AuthError, ContextError, ServiceError, SpecError
from closedloop.runtime.decision import Decision
from closedloop.service.ranked import Ranked

__all__ = ["BatchDecisions", "Client"]

_RETRY_STATUS = frozenset({502, 503, 504})


class _BatchAnswer(msgspec.Struct):
    decisions: list[Decision]
    index: list[int]
    errors: list[dict[str, Any]]


class _RankedBatchAnswer(msgspec.Struct):
    decisions: list[Ranked]
    index: list[int]
    errors: list[dict[str, Any]]


@dataclass
class BatchDecisions:
    """The answer to a batch: ``decisions[i]`` is the decision for ``contexts[i]``, or ``None``
    when that context was refused; ``errors`` lists the refused rows (problem details with their
    ``index``, ``field``, ``rule`` and ``value``)."""

    decisions: list[Decision | Ranked | None]
    errors: list[dict[str, Any]] = field(default_factory=list)


class Client:
    """A client of one decision service.

    Parameters
    ----------
    base_url:
        The service's address, e.g. ``"http://127.0.0.1:8000"``.
    token:
        The credential token sent as ``Authorization: Bearer``.
    timeout:
        Seconds for each attempt (connect, read, write).
    retries:
        Further attempts after a failed one, where retrying is safe (see the module doc).
    backoff:
        Seconds before the first retry; doubled after each (with jitter), at most 5 s unless the
        service's ``Retry-After`` says otherwise (capped at 30 s).
    transport:
        An ``httpx`` transport (tests; default: a pooled HTTP/1.1 connection).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.05,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise SpecError(f"The 'base_url' parameter of Client must be an http(s) URL. Got {base_url!r} instead.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise SpecError(f"The 'retries' parameter of Client must be an integer >= 0. Got {retries!r} instead.")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise SpecError(f"The 'timeout' parameter of Client must be a number > 0. Got {timeout!r} instead.")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
            raise SpecError(f"The 'backoff' parameter of Client must be a number >= 0. Got {backoff!r} instead.")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = float(backoff)
        headers = {"Accept": "application/json", "User-Agent": "closedloop-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self._enc = msgspec.json.Encoder()
        self._dec_one = msgspec.json.Decoder(Decision)
        self._dec_batch = msgspec.json.Decoder(_BatchAnswer)
        self._dec_ranked = msgspec.json.Decoder(Ranked)
        self._dec_ranked_batch = msgspec.json.Decoder(_RankedBatchAnswer)

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- decisions ----------------------------------------------------------------------------------
    def decide(self, context: Mapping[str, Any]) -> Decision | Ranked:
        """One decision for one context: a :class:`~closedloop.Decision`, or — for a ranking
        system's request, which carries ``"candidates"`` — a :class:`~closedloop.service.ranked.Ranked`."""
        r = self._send("POST", "/v1/decide", self._enc.encode(context), safe="unsent")
        first, other = (self._dec_ranked, self._dec_one) if "candidates" in context else (self._dec_one, self._dec_ranked)
        try:
            return first.decode(r.content)
        except msgspec.ValidationError:  # a system whose context has a field named "candidates" (or none)
            return other.decode(r.content)

    def decide_batch(self, contexts: Sequence[Mapping[str, Any]]) -> BatchDecisions:
        """Decisions for many contexts in one request; a refused context does not sink the others.
        A ranking system's answers are :class:`~closedloop.service.ranked.Ranked`."""
        r = self._send("POST", "/v1/decide", self._enc.encode(list(contexts)), safe="unsent")
        ans: _BatchAnswer | _RankedBatchAnswer
        try:
            ans = self._dec_batch.decode(r.content)
        except msgspec.ValidationError:
            ans = self._dec_ranked_batch.decode(r.content)
        out: list[Decision | Ranked | None] = [None] * len(contexts)
        decided: Sequence[Decision | Ranked] = ans.decisions
        for i, d in zip(ans.index, decided, strict=True):
            out[i] = d
        return BatchDecisions(out, ans.errors)

    # -- outcomes -----------------------------------------------------------------------------------
    def report(
        self,
        decision: Decision | Ranked | str | None = None,
        *,
        kind: str,
        source: str,
        value: float = 1.0,
        unit: str | int | None = None,
        event_time: int | str | None = None,
        outcome_id: str | None = None,
        candidate_id: str | None = None,
        slot: int | None = None,
    ) -> int:
        """Report one outcome of ``decision`` (a :class:`~closedloop.Decision`, a ranking's
        :class:`~closedloop.service.ranked.Ranked`, or its id; ``None`` with ``unit`` links by unit
        and time). For a ranking, ``candidate_id`` (a candidate of its slate) or ``slot`` (1-based)
        names the slot the outcome is for. Returns once the service made it durable (1); a refused
        report raises :class:`~closedloop.errors.ServiceError` with the problem (field, rule, value)."""
        return self.report_batch([
            self._outcome(decision, kind=kind, source=source, value=value, unit=unit, event_time=event_time,
                          outcome_id=outcome_id, candidate_id=candidate_id, slot=slot)
        ])["accepted"]

    def report_batch(self, outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Report many outcomes (dicts with the fields of ``report``; ``decision`` may be given as
        a Decision). Returns ``{"accepted": n, "rejected": [problem details with index]}``."""
        now = time.time_ns()
        body = []
        for o in outcomes:
            o = dict(o)
            d = o.pop("decision", None)
            if d is not None:
                o = self._outcome(d, **o)
            o.setdefault("event_time", now)  # fixed before the first attempt: retries repeat it
            body.append(o)
        r = self._send("POST", "/v1/outcomes", self._enc.encode(body), safe="idempotent")
        return msgspec.json.decode(r.content)

    @staticmethod
    def _outcome(decision: Decision | Ranked | str | None, **fields: Any) -> dict[str, Any]:
        out = {k: v for k, v in fields.items() if v is not None}
        if isinstance(decision, Decision | Ranked):
            out["decision_id"] = decision.decision_id
            out.setdefault("unit", decision.unit)
        elif decision is not None:
            out["decision_id"] = decision
        if "event_time" not in out:
            out["event_time"] = time.time_ns()
        return out

    # -- reads --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The deployment, bundle versions, flights, kill switch, telemetry health and limits."""
        return msgspec.json.decode(self._send("GET", "/v1/status", None, safe="idempotent").content)

    def ready(self) -> dict[str, Any]:
        """``/readyz``: ``{"status": "ready" | "degraded", "reasons": [...], "revision": n}``."""
        return msgspec.json.decode(self._send("GET", "/readyz", None, safe="idempotent").content)

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        return self._send("GET", "/metrics", None, safe="idempotent").text

    # -- admin (needs the admin role) ------------------------------------------------------------------
    def admin(self, operation: str, **body: Any) -> dict[str, Any]:
        """Call ``POST /v1/admin/<operation>`` (deploy, promote, rollback, killswitch, reload)."""
        payload = self._enc.encode({k: v for k, v in body.items() if v is not None})
        return msgspec.json.decode(self._send("POST", f"/v1/admin/{operation}", payload, safe="unsent").content)

    def killswitch(self, on: bool, *, reason: str) -> dict[str, Any]:
        return self.admin("killswitch", on=bool(on), reason=reason)

    def rollback(self, *, reason: str) -> dict[str, Any]:
        return self.admin("rollback", reason=reason)

    def promote(self, flight: str, *, reason: str) -> dict[str, Any]:
        return self.admin("promote", flight=flight, reason=reason)

    def deploy(self, bundle: str, *, reason: str, shadow: bool = False, flight: str | None = None,
               share: float | None = None, force: str | None = None,
               allow_unsigned: str | None = None) -> dict[str, Any]:
        """Deploy a bundle over HTTP; ``force`` and ``allow_unsigned`` are reasons (recorded), as
        for :meth:`closedloop.registry.Registry.deploy`."""
        return self.admin("deploy", bundle=bundle, reason=reason, shadow=shadow or None, flight=flight,
                          share=share, force=force, allow_unsigned=allow_unsigned)

    # -- the transport ----------------------------------------------------------------------------------
    def _send(self, method: str, path: str, content: bytes | None, *, safe: str) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        attempt = 0
        while True:
            wait = None
            try:
                r = self._http.request(method, path, content=content, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if attempt >= self.retries:
                    raise ServiceError(f"{method} {self.base_url}{path}: cannot connect ({e}).") from None
            except httpx.TransportError as e:
                if safe != "idempotent" or attempt >= self.retries:
                    raise ServiceError(
                        f"{method} {self.base_url}{path}: {type(e).__name__} ({e}); "
                        + ("not retried: the request may have been processed." if safe != "idempotent" else
                           f"gave up after {attempt + 1} attempts.")
                    ) from None
            else:
                if r.status_code < 400:
                    return r
                retryable = r.status_code == 503 or (safe == "idempotent" and r.status_code in _RETRY_STATUS)
                if not retryable or attempt >= self.retries:
                    raise _error(method, path, r)
                wait = _retry_after(r)
            attempt += 1
            if wait is None:
                wait = min(5.0, self.backoff * (2 ** (attempt - 1))) * (0.5 + random.random())
            time.sleep(wait)


def _retry_after(r: httpx.Response) -> float | None:
    v = r.headers.get("retry-after")
    if v is None:
        return None
    try:
        return min(30.0, max(0.0, float(v)))
    except ValueError:
        return None


def _error(method: str, path: str, r: httpx.Response) -> Exception:
    try:
        problem = msgspec.json.decode(r.content)
        if not isinstance(problem, dict):
            problem = {"detail": r.text}
    except msgspec.DecodeError:
        problem = {"detail": r.text[:500]}
    detail = problem.get("detail") or r.reason_phrase
    if r.status_code in (401, 403):
        return AuthError(str(detail))
    if r.status_code == 422 and problem.get("field") is not None and "context" in str(problem.get("type", "")):
        return ContextError(str(problem["field"]), str(problem.get("rule")), problem.get("value"))
    return ServiceError(f"{method} {path} → {r.status_code}: {detail}", r.status_code, problem)
