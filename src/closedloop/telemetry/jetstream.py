"""The telemetry log on NATS JetStream: :class:`JetStreamTransport` implements
:class:`~closedloop.telemetry.transport.Transport` (the contract is in that module) with ``nats-py``.

Layout on the server:

* one JetStream stream per system, ``CLOSEDLOOP_<system>``, file storage, ``replicas`` copies on
  a cluster, a duplicate window of ``duplicate_window`` seconds, limits retention (``max_age``
  seconds, or kept until deleted when None); created on first use if absent, checked if present
  (subjects, storage and replicas must match; the duplicate window and max age are updated);
* its subjects ``closedloop.<system>.decisions``, ``….outcomes``, ``….feature_sets``;
* each message carries the header ``Nats-Msg-Id: <stream>:<msg_id>`` — JetStream deduplicates by
  that id within the duplicate window, per stream, so the telemetry stream's name is part of it
  (the contract keeps one copy per system, stream and ``msg_id``);
* a consumer group is a durable pull consumer ``<group>_<stream>`` filtered on the stream's
  subject, explicit acknowledgement, ``ack_wait`` seconds, at most ``max_ack_pending`` messages
  delivered and not yet acknowledged, redelivered without limit.

nats-py is asyncio; this class offers the synchronous, thread-safe API of the interface over one
event loop per transport object, a :class:`~closedloop.base.driven_loop.DrivenLoop`: the calling
thread runs the loop itself (a thread hop to a loop parked on its own thread cost more than the
publish), a keeper thread runs it between calls. It connects on first use, reconnects on its own
after an outage (every 0.25 s, without limit) and fails fast meanwhile: while the connection is
down every call raises :class:`~closedloop.errors.TransportUnavailable`.
:meth:`JetStreamTransport.publish` pipelines the whole batch (every message is sent, then every
acknowledgement awaited) rather than one round trip per message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from closedloop.base.driven_loop import DrivenLoop
from closedloop.errors import ClosedLoopError, TransportError, TransportUnavailable
from closedloop.telemetry.transport import STREAM_NAMES, Message, Outgoing, Subscription, Transport, check_group, check_message

__all__ = ["JetStreamTransport", "stream_name", "subject"]

_log = logging.getLogger("closedloop.telemetry.jetstream")
T = TypeVar("T")

#: What nats-py raises when the server cannot be reached or does not answer in time.
_DOWN = (nats.errors.Error, TimeoutError, OSError)


def stream_name(system: str) -> str:
    """The JetStream stream that holds a system's telemetry."""
    return f"CLOSEDLOOP_{system}"


def subject(system: str, stream: str) -> str:
    """The subject a system's telemetry stream (``decisions``, …) is published on."""
    return f"closedloop.{system}.{stream}"


def _number(value: object, name: str, low: float, high: float, unit: str = "seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise TransportError(f"The '{name}' parameter of JetStreamTransport must be a number of {unit} in [{low}, {high}]. "
                             f"Got {value!r} instead.")
    return float(value)


def _servers(url: object) -> list[str]:
    if not isinstance(url, str) or not url.strip():
        raise TransportError(f"The 'url' parameter of JetStreamTransport must be nats://host:port (several comma-separated). "
                             f"Got {url!r} instead.")
    out = []
    for part in url.split(","):
        part = part.strip()
        try:
            u = urlsplit(part)
            ok = u.scheme == "nats" and bool(u.hostname) and u.path in ("", "/") and not u.query and (u.port is None or u.port > 0)
        except ValueError:
            ok = False
        if not ok:
            raise TransportError(f"The 'url' parameter of JetStreamTransport must be nats://host:port (several comma-separated). "
                                 f"Got {part!r} instead.")
        out.append(part)
    return out


async def _quiet(e: Exception) -> None:
    _log.debug("nats: %s", e)


def _unavailable(what: str, e: BaseException) -> TransportUnavailable:
    return TransportUnavailable(f"The NATS JetStream telemetry log is unavailable: {what} failed ({type(e).__name__}: {e}).")


class JetStreamTransport(Transport):
    """The telemetry log on NATS JetStream (see the module for the layout on the server).

    ``url``: ``nats://host:port`` or several comma-separated (a cluster). ``replicas`` (1–5): the
    copies JetStream keeps of each system's stream (more than 1 needs a cluster). ``duplicate_window``
    (seconds): how long JetStream remembers a ``msg_id`` to drop a republished copy. ``max_age``
    (seconds, or None to keep messages until deleted): how long the stream keeps messages; it must
    cover the longest collector outage. ``connect_timeout`` (seconds): the longest wait for the
    server on a call while not connected. ``max_ack_pending``: the most messages a consumer group
    holds delivered and not yet acknowledged."""

    def __init__(self, url: str, *, replicas: int = 1, duplicate_window: float = 600.0, max_age: float | None = None,
                 connect_timeout: float = 2.0, max_ack_pending: int = 1000) -> None:
        self.servers = _servers(url)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise TransportError(f"The 'replicas' parameter of JetStreamTransport must be an integer in [1, 5]. Got {replicas!r} instead.")
        self.replicas = replicas
        self.duplicate_window = _number(duplicate_window, "duplicate_window", 1.0, 7 * 86400.0)
        self.max_age = None if max_age is None else _number(max_age, "max_age", 1.0, 10 * 365 * 86400.0)
        if self.max_age is not None and self.max_age < self.duplicate_window:
            raise TransportError(f"The 'max_age' parameter of JetStreamTransport must be at least its duplicate_window "
                                 f"({self.duplicate_window} s). Got {max_age!r} instead.")
        self.connect_timeout = _number(connect_timeout, "connect_timeout", 0.05, 60.0)
        if isinstance(max_ack_pending, bool) or not isinstance(max_ack_pending, int) or not 1 <= max_ack_pending <= 1_000_000:
            raise TransportError(f"The 'max_ack_pending' parameter of JetStreamTransport must be an integer in [1, 1000000]. "
                                 f"Got {max_ack_pending!r} instead.")
        self.max_ack_pending = max_ack_pending
        self._lock = threading.Lock()
        self._loop: DrivenLoop | None = None
        self._closed = False
        # touched on the event loop only
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Lock | None = None
        self._ensured: set[str] = set()

    # -- the event loop ----------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        """Run ``coro`` on this transport's loop and wait for it (at most ``timeout`` seconds)."""
        with self._lock:
            if self._closed:
                coro.close()
                raise TransportError("This JetStreamTransport is closed: make a new one.")
            if self._loop is None:
                self._loop = DrivenLoop("closedloop-jetstream")
            loop = self._loop
        try:
            return loop.run(coro, timeout)
        except TimeoutError as e:  # the whole call's timer; nats-py's own timeouts are _DOWN too
            raise _unavailable(what, TimeoutError(f"no answer within {timeout:.3g} s")) from e
        except (asyncio.CancelledError, concurrent.futures.CancelledError) as e:  # close() cancelled it meanwhile
            raise TransportError(f"This JetStreamTransport was closed while {what}.") from e
        except (TransportError, TransportUnavailable):
            raise
        except _DOWN as e:
            raise _unavailable(what, e) from e
        except ClosedLoopError as e:  # closed meanwhile, or called from a coroutine on the loop
            raise TransportError(f"JetStreamTransport: {e}") from e

    async def _connected(self) -> tuple[NATS, JetStreamContext]:
        nc, js = self._nc, self._js
        if nc is not None and js is not None and nc.is_connected:  # the common case: no lock
            return nc, js
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            nc = self._nc
            if nc is not None and nc.is_closed:
                self._nc = nc = None
            if nc is None:
                nc = NATS()
                try:
                    # nats-py types its timeouts as int but takes seconds as floats
                    opts: dict[str, Any] = {"connect_timeout": self.connect_timeout, "reconnect_time_wait": 0.25}
                    await asyncio.wait_for(nc.connect(
                        servers=self.servers, allow_reconnect=True, max_reconnect_attempts=-1, ping_interval=5,
                        max_outstanding_pings=2, error_cb=_quiet, name="closedloop", **opts,
                    ), timeout=self.connect_timeout)
                except BaseException as e:
                    await _close_quietly(nc)
                    if isinstance(e, _DOWN):
                        raise _unavailable(f"connecting to {','.join(self.servers)}", e) from e
                    raise
                self._nc, self._js = nc, nc.jetstream(timeout=max(self.connect_timeout, 2.0))
            if not nc.is_connected:
                raise TransportUnavailable(f"The NATS JetStream telemetry log is unavailable: the connection to "
                                           f"{','.join(self.servers)} is down (reconnecting).")
            js = self._js
            if js is None:  # pragma: no cover - set with _nc
                raise TransportError("The JetStream context is missing.")
            return nc, js

    async def _ensure_stream(self, js: JetStreamContext, system: str) -> None:
        """Create the system's stream if absent; check (and update what can change of) it if present."""
        if system in self._ensured:
            return
        name, subjects = stream_name(system), sorted(subject(system, s) for s in STREAM_NAMES)
        want = StreamConfig(name=name, subjects=subjects, storage=StorageType.FILE, num_replicas=self.replicas,
                            retention=RetentionPolicy.LIMITS, duplicate_window=self.duplicate_window, max_age=self.max_age or 0.0)
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            try:
                info = await js.add_stream(want)
            except nats.js.errors.BadRequestError:  # another client created it meanwhile
                info = await js.stream_info(name)
        have = info.config
        for field, got, expected in (("subjects", sorted(have.subjects or []), subjects), ("storage", have.storage, StorageType.FILE),
                                     ("num_replicas", have.num_replicas or 1, self.replicas)):
            if got != expected:
                raise TransportError(f"The existing JetStream stream '{name}' must have {field} {expected!r} (closedloop's layout; "
                                     f"'replicas' is a parameter of JetStreamTransport). Got {got!r} instead.")
        if abs((have.duplicate_window or 0.0) - self.duplicate_window) > 1e-3 or abs((have.max_age or 0.0) - (self.max_age or 0.0)) > 1e-3:
            await js.update_stream(want)
        self._ensured.add(system)

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 5.0) -> None:
        for m in messages:
            check_message(m)
            for k, v in m.headers.items():
                if not isinstance(k, str) or not k or k.lower().startswith("nats-") or not k.isascii() or any(c in k for c in ": \r\n"):
                    raise TransportError(f"A header name of a telemetry message must be a short ASCII token not starting with "
                                         f"'Nats-'. Got {k!r} instead.")
                if not isinstance(v, str) or "\r" in v or "\n" in v:
                    raise TransportError(f"The header {k!r} of a telemetry message must be a one-line string. Got {v!r} instead.")
        timeout = _number(timeout, "timeout", 0.01, 3600.0)
        if messages:
            self._run(self._publish(list(messages), timeout), timeout, "publishing")

    async def _publish(self, messages: list[Outgoing], timeout: float) -> None:
        nc, js = await self._connected()
        for system in dict.fromkeys(m.system for m in messages):
            await self._ensure_stream(js, system)
        limit = nc.max_payload
        for m in messages:
            size = len(m.data) + sum(len(k) + len(v) + 4 for k, v in m.headers.items()) + 200
            if size > limit:
                raise TransportError(f"The 'data' of a telemetry message must fit the server's max_payload ({limit} bytes, "
                                     f"headers included). Got {len(m.data)} bytes for {m.msg_id!r} instead.")
        futures: list[asyncio.Future[Any]] = []

        async def send_all() -> list[Any]:
            for m in messages:  # sent in order, acknowledgements awaited together
                headers = {**m.headers, "Nats-Msg-Id": f"{m.stream}:{m.msg_id}"}
                futures.append(await js.publish_async(subject(m.system, m.stream), bytes(m.data), stream=stream_name(m.system),
                                                      headers=headers))
            return await asyncio.gather(*futures)

        try:  # the caller's wait (_run) is the one timer for the whole batch: on its timeout this task is cancelled
            acks = await send_all()
        except (*_DOWN, asyncio.CancelledError) as e:
            for f in futures:
                f.cancel()
            if isinstance(e, asyncio.CancelledError):
                raise
            raise _unavailable("publishing", e) from e
        for m, ack in zip(messages, acks, strict=True):
            if ack.stream != stream_name(m.system):  # pragma: no cover - the Expected-Stream header prevents it
                raise TransportUnavailable(f"JetStream stored {m.msg_id!r} in stream {ack.stream!r}, not {stream_name(m.system)!r}.")

    # -- consuming -------------------------------------------------------------------------------

    def subscribe(self, system: str, stream: str, group: str, *, ack_wait: float = 30.0) -> Subscription:
        check_message(Outgoing(system, stream, b"", "subscribe"))
        check_group(group, ack_wait)
        psub = self._run(self._subscribe(system, stream, group, float(ack_wait)), self.connect_timeout + 10.0, "subscribing")
        return _JetStreamSubscription(self, system, stream, psub, float(ack_wait))

    async def _subscribe(self, system: str, stream: str, group: str, ack_wait: float) -> JetStreamContext.PullSubscription:
        _, js = await self._connected()
        await self._ensure_stream(js, system)
        name, durable, subj = stream_name(system), f"{group}_{stream}", subject(system, stream)
        cfg = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, filter_subject=subj,
                             deliver_policy=DeliverPolicy.ALL, max_ack_pending=self.max_ack_pending, max_deliver=-1)
        try:
            info = await js.consumer_info(name, durable)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(name, cfg)  # the same config from two members at once is accepted twice
        else:
            have = info.config
            if have.filter_subject != subj or have.ack_policy != AckPolicy.EXPLICIT or have.deliver_subject:
                raise TransportError(f"The existing JetStream consumer '{durable}' on '{name}' must be an explicit-ack pull consumer "
                                     f"filtered on {subj!r}. Got filter {have.filter_subject!r}, ack policy {have.ack_policy}, "
                                     f"deliver subject {have.deliver_subject!r} instead.")
            if abs((have.ack_wait or 0.0) - ack_wait) > 1e-3 or have.max_ack_pending != self.max_ack_pending:
                await js.add_consumer(name, cfg)  # an update: the group's latest member sets ack_wait
        return await js.pull_subscribe_bind(durable=durable, stream=name)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._nc is not None:
                await _close_quietly(self._nc)

        try:
            loop.run(shutdown(), 5.0)
        except Exception as e:  # noqa: BLE001 - closing must not raise
            _log.debug("closing the NATS connection: %s", e)
        loop.close()


async def _close_quietly(nc: NATS) -> None:
    try:
        await asyncio.wait_for(nc.close(), timeout=2.0)
    except Exception as e:  # noqa: BLE001 - the connection is being dropped anyway
        _log.debug("closing the NATS connection: %s", e)


class _JetStreamSubscription(Subscription):
    """One member of a consumer group: a pull subscription bound to the group's durable consumer."""

    def __init__(self, transport: JetStreamTransport, system: str, stream: str, psub: JetStreamContext.PullSubscription,
                 ack_wait: float) -> None:
        self._t, self._system, self._stream, self._psub = transport, system, stream, psub
        self._keep = 2 * ack_wait + 60.0  # a fetched message not acknowledged within this is forgotten
        self._fetched: dict[int, tuple[Msg, float]] = {}  # stream sequence → (the delivery, when)
        self._prefix = f"{stream}:"

    def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Message]:
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or not 1 <= max_messages <= 100_000:
            raise TransportError(f"The 'max_messages' of a fetch must be an integer in [1, 100000]. Got {max_messages!r} instead.")
        timeout = _number(timeout, "timeout", 0.01, 3600.0)
        return self._t._run(self._fetch(max_messages, timeout), timeout + self._t.connect_timeout + 2.0, "fetching")

    async def _fetch(self, max_messages: int, timeout: float) -> list[Message]:
        nc, _ = await self._t._connected()
        try:
            raw = await self._psub.fetch(batch=max_messages, timeout=timeout)
        except TimeoutError:
            if not nc.is_connected:
                raise TransportUnavailable("The NATS JetStream telemetry log is unavailable: "
                                           "the connection dropped during a fetch.") from None
            return []
        now = time.monotonic()
        for seq, (_, when) in list(self._fetched.items()):
            if now - when > self._keep:
                del self._fetched[seq]
        out = []
        for msg in raw:
            md = msg.metadata
            headers = dict(msg.headers or {})
            msg_id = headers.get("Nats-Msg-Id", "")
            msg_id = msg_id[len(self._prefix):] if msg_id.startswith(self._prefix) else msg_id
            self._fetched[md.sequence.stream] = (msg, now)
            mine = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
            out.append(Message(self._system, self._stream, msg.data, msg_id, mine, md.sequence.stream, md.num_delivered))
        return out

    def ack(self, messages: Sequence[Message]) -> None:
        if messages:
            self._t._run(self._ack([m.sequence for m in messages]), self._t.connect_timeout + 5.0, "acknowledging")

    async def _ack(self, sequences: list[int]) -> None:
        missing = [seq for seq in sequences if seq not in self._fetched]
        if missing:
            raise TransportError(f"The 'messages' to acknowledge must have been fetched by this subscription and not acknowledged yet. "
                                 f"Got sequence numbers {missing[:10]} instead.")
        nc, _ = await self._t._connected()
        for seq in sequences:
            await self._fetched[seq][0].ack()
        await nc.flush(timeout=max(int(self._t.connect_timeout + 3), 1))  # the server has every ack once its PONG is back
        for seq in sequences:
            self._fetched.pop(seq, None)

    def close(self) -> None:
        try:
            self._t._run(self._psub.unsubscribe(), self._t.connect_timeout + 2.0, "leaving the group")
        except TransportError as e:  # a closed transport or a lost connection: the server forgets the member anyway
            _log.debug("leaving the group: %s", e)
