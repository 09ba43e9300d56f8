"""The collector: the telemetry log → the day-partitioned Parquet lake, exactly once per record.

Unit tests on the in-memory log (redelivery, a record in two messages, two collectors, bad
messages, forgotten units, a pyarrow.fs lake); then real processes on a real nats-server: two
``closedloop telemetry collect`` processes, one SIGKILLed mid-stream and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from closedloop import F, Float, LabelPolicy, OutcomeRule, Str, System, Thresholds
from closedloop.datasets.dataset import build_dataset, read_feature_sets
from closedloop.errors import TransportError
from closedloop.runtime.decision import Decision
from closedloop.telemetry import DECISION_SCHEMA, MemorySink, Telemetry, TelemetryStore, to_decision_schema
from closedloop.telemetry.collector import Collector
from closedloop.telemetry.jetstream import JetStreamTransport
from closedloop.telemetry.segments import encode_frame
from closedloop.telemetry.transport import MemoryTransport, Message, Outgoing, Subscription, Transport

DAY = 86_400 * 10**9
T0 = 20_718 * DAY  # 2026-09-22 00:00 UTC
ROOT = Path(__file__).resolve().parents[2]


def tiny() -> System:
    feats = {f"f{i}": F.col("x") * float(i) for i in range(3)}
    return System("tiny", context=[Str("user"), Float("x", default=0.0)], unit="user", features=feats, actions=["allow", "block"],
                  experience=Thresholds("p", {"block": 0.5}, otherwise="allow"), labels=("ok", "bad"),
                  label_policy=LabelPolicy(timedelta(hours=1), [OutcomeRule("bad", label="bad")]))


class FrameSink(MemorySink):
    """A sink that also turns every commit into the message a replica's sink would publish."""

    def __init__(self, writer: str) -> None:
        super().__init__(writer)
        self.out: list[Outgoing] = []

    def append(self, stream: str, batch: pa.RecordBatch | pa.Table) -> None:
        super().append(stream, batch)
        seq = to_decision_schema(batch).column("seq")
        a, b = pc.min(seq).as_py(), pc.max(seq).as_py()
        headers = {"writer": self.writer, "first_seq": str(a), "last_seq": str(b), "rows": str(batch.num_rows)}
        self.out.append(Outgoing("tiny", stream, encode_frame(batch), f"{self.writer}:{stream}:{a}-{b}", headers))

    def feature_set(self, fingerprint: str, names) -> None:
        super().feature_set(fingerprint, names)
        doc = json.dumps({"fingerprint": fingerprint, "names": list(names)}).encode()
        self.out.append(Outgoing("tiny", "feature_sets", doc, f"fs:{fingerprint}", {"fingerprint": fingerprint}))


def replica(writer: str, n: int, *, start: int = 0, per_commit: int = 25, days: int = 2) -> FrameSink:
    """A writer's ``n`` decisions (over ``days`` days) and an outcome for every third, committed in small batches."""
    system, sink = tiny(), FrameSink(writer)
    tel = Telemetry(sink, system=system, flush_interval_ms=60_000)
    for i in range(start, start + n):
        ts = T0 + (i % days) * DAY + i
        d = Decision(f"{writer}-{i:08d}", "tiny", f"u{i % 7}", ts, "v1", {"p": 0.3}, "allow", 1.0, "p < 0.5")
        c = system.schema.validate({"user": f"u{i % 7}", "x": float(i)})
        tel.log_decision(d, c, system.features.one(c))
        if i % 3 == 0:
            tel.log_outcome(d.decision_id, kind="bad", event_ns=ts + 5, source="user", outcome_id=f"o-{writer}-{i}")
        if (i + 1) % per_commit == 0:
            tel.flush()
    tel.close()
    return sink


def lake(home: Path | str, stream: str) -> list[str]:
    t = TelemetryStore(home).read(stream, columns=["decision_id" if stream == "decisions" else "outcome_id"])
    return t.column(0).to_pylist()


def expect(*sinks: FrameSink) -> dict[str, list[str]]:
    return {"decisions": sorted(i for s in sinks for i in s.table("decisions").column("decision_id").to_pylist()),
            "outcomes": sorted(i for s in sinks for i in s.table("outcomes").column("outcome_id").to_pylist())}


def retried(messages: list[Outgoing]) -> list[Outgoing]:
    """The same commits re-published under other ids (a replica that re-grouped them after a doubtful outage)."""
    return [Outgoing(m.system, m.stream, m.data, f"{m.msg_id}-retry", m.headers) for m in messages if m.stream != "feature_sets"]


def drain(c: Collector, rounds: int = 50) -> None:
    for _ in range(rounds):
        if not c.step():
            return


def test_the_lake_holds_every_record_once_and_the_store_reads_it(tmp_path):
    log, sink = MemoryTransport(), replica("w1", 200)
    log.publish(sink.out)
    c = Collector(log, tmp_path, "tiny", fetch_timeout=0.05)
    drain(c)
    assert sorted(lake(tmp_path, "decisions")) == expect(sink)["decisions"]
    assert sorted(lake(tmp_path, "outcomes")) == expect(sink)["outcomes"]
    store = TelemetryStore(tmp_path)
    got = store.read("decisions").sort_by("decision_id")
    assert got.schema.equals(DECISION_SCHEMA) and got.equals(sink.table("decisions").sort_by("decision_id"))
    files = store.decision_files()
    assert {f.parent.name for f in files} == {"day=2026-09-22", "day=2026-09-23"} and all("-js-" in f.name for f in files)
    assert read_feature_sets(tmp_path) == {tiny().features.fingerprint: list(tiny().features.names)}
    m = build_dataset(tiny(), decision_files=store.decision_files(), outcome_files=store.outcome_files(), since_ns=T0,
                      until_ns=T0 + 2 * DAY, cutoff_ns=time.time_ns(), out=tmp_path / "ds", feature_names=read_feature_sets(tmp_path))
    assert m.content["counts"]["decisions"]["rows"] == 200 and m.content["counts"]["outcomes"]["matched"] == 67
    assert store.compact()["decisions"] == 0 and len(lake(tmp_path, "decisions")) == 200  # compaction leaves them be
    assert store.apply_retention(1.5, T0 + 2 * DAY)["decisions"] == 100  # retention and forget work on them
    assert c.counts["decisions"] == 200 and c.counts["duplicates"] == 0 and c.counts["messages"] == len(sink.out)


class Crashing(Transport):
    """The in-memory log, but members of this transport never get to acknowledge (they "crash")."""

    def __init__(self, log: MemoryTransport) -> None:
        self.log = log

    def subscribe(self, system, stream, group, *, ack_wait=30.0) -> Subscription:
        sub = self.log.subscribe(system, stream, group, ack_wait=ack_wait)

        class Dies(Subscription):
            def fetch(self, max_messages=100, timeout=1.0) -> list[Message]:
                return sub.fetch(max_messages, timeout)

            def ack(self, messages) -> None:
                raise KeyboardInterrupt("killed before the acknowledgement")

        return Dies()


def test_a_redelivered_message_writes_nothing_again(tmp_path):
    log, sink = MemoryTransport(), replica("w1", 100)
    log.publish(sink.out)
    dying = Collector(Crashing(log), tmp_path, "tiny", ack_wait=0.2, fetch_timeout=0.05)
    with pytest.raises(KeyboardInterrupt):
        dying.step()  # wrote the decisions, crashed before acknowledging them
    assert len(lake(tmp_path, "decisions")) == 100
    time.sleep(0.3)
    c = Collector(log, tmp_path, "tiny", ack_wait=0.2, fetch_timeout=0.05)
    drain(c)
    assert sorted(lake(tmp_path, "decisions")) == expect(sink)["decisions"]
    assert sorted(lake(tmp_path, "outcomes")) == expect(sink)["outcomes"]
    assert c.counts["duplicates"] == 100 and c.counts["decisions"] == 0


def test_a_record_sent_in_two_messages_is_written_once(tmp_path):
    log, sink = MemoryTransport(), replica("w1", 100)
    log.publish(sink.out)
    again = retried(sink.out)
    both = pa.concat_tables([sink.table("decisions").slice(0, 10), sink.table("decisions").slice(0, 10)])
    log.publish([*again[:5], Outgoing("tiny", "decisions", encode_frame(both), "w1:decisions:twice")])
    c = Collector(log, tmp_path, "tiny", batch=7, fetch_timeout=0.05)
    drain(c)
    assert sorted(lake(tmp_path, "decisions")) == expect(sink)["decisions"]
    assert sorted(lake(tmp_path, "outcomes")) == expect(sink)["outcomes"]
    assert c.counts["duplicates"] > 20


def test_two_collectors_at_once_write_every_record_once(tmp_path):
    log, sinks = MemoryTransport(), [replica(f"w{k}", 300, per_commit=10) for k in range(3)]
    collectors = [Collector(log, tmp_path, "tiny", batch=5, fetch_timeout=0.05) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in collectors]
    for th in threads:
        th.start()
    try:
        for sink in sinks:
            log.publish(sink.out)
            log.publish(retried(sink.out[:20]))
        deadline = time.monotonic() + 20
        while len(lake(tmp_path, "decisions")) < 900 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for th in threads:
            th.join(10)
    assert sorted(lake(tmp_path, "decisions")) == expect(*sinks)["decisions"]
    assert sorted(lake(tmp_path, "outcomes")) == expect(*sinks)["outcomes"]
    assert all(c.counts["messages"] > 0 for c in collectors)  # both took part


def test_bad_messages_are_quarantined_and_counted_not_dropped(tmp_path):
    log, sink = MemoryTransport(), replica("w1", 50)
    outcomes = sink.table("outcomes")
    log.publish([*sink.out,
                 Outgoing("tiny", "decisions", b"not a frame", "bad:1"),
                 Outgoing("tiny", "decisions", encode_frame(outcomes), "bad:2"),  # outcomes on the decisions stream
                 Outgoing("tiny", "outcomes", encode_frame(outcomes), "bad:3", {"rows": "999"}),
                 Outgoing("tiny", "feature_sets", b"{}", "bad:4")])
    c = Collector(log, tmp_path, "tiny", fetch_timeout=0.05)
    drain(c)
    assert c.counts["quarantined"] == 4 and len(lake(tmp_path, "decisions")) == 50
    kept = sorted((tmp_path / "telemetry" / "quarantine").rglob("*.json"))
    assert len(kept) == 4 and {json.loads(p.read_text())["msg_id"] for p in kept} == {"bad:1", "bad:2", "bad:3", "bad:4"}
    assert log.subscribe("tiny", "decisions", "collectors").fetch(10, timeout=0.05) == []  # acknowledged


def test_records_of_a_forgotten_unit_that_arrive_later_are_not_written(tmp_path):
    log, sink = MemoryTransport(), replica("w1", 70)
    TelemetryStore(tmp_path).forget("u3")
    log.publish(sink.out)
    c = Collector(log, tmp_path, "tiny", fetch_timeout=0.05)
    drain(c)
    units = TelemetryStore(tmp_path).read("decisions", columns=["unit"]).column(0).to_pylist()
    assert len(units) == 60 and "u3" not in units and c.counts["forgotten"] >= 10


def test_a_pyarrow_fs_lake(tmp_path):
    log, sink = MemoryTransport(), replica("w1", 60)
    log.publish(sink.out + sink.out[:3])
    c = Collector(log, f"file://{tmp_path}", "tiny", fetch_timeout=0.05)
    drain(c)
    assert sorted(lake(tmp_path, "decisions")) == expect(sink)["decisions"]
    assert read_feature_sets(tmp_path)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"system": "a.b"}, "system"), ({"batch": 0}, "batch"), ({"group": "a b"}, "group"), ({"ack_wait": 0}, "ack_wait"),
    ({"fetch_timeout": 0}, "fetch_timeout"), ({"lake": ""}, "lake"), ({"transport": object()}, "transport"),
])
def test_settings_are_refused_by_name(tmp_path, kwargs, field):
    args = {"transport": MemoryTransport(), "lake": tmp_path, "system": "tiny", **kwargs}
    with pytest.raises(TransportError, match=f"'{field}'"):
        Collector(args.pop("transport"), args.pop("lake"), args.pop("system"), **args)


# -- real processes on a real nats-server ------------------------------------------------------------
def _collector(url: str, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "closedloop.cli", "telemetry", "collect", "--url", url, "--system", "tiny",
                             "--home", str(home), "--ack-wait", "1", "--batch", "5"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def test_two_collector_processes_one_killed_and_restarted_write_every_record_once(nats_server, tmp_path):
    sinks = [replica(f"r{k}", 600, per_commit=10) for k in range(3)]
    want = expect(*sinks)
    pub = JetStreamTransport(nats_server.url)
    procs = [_collector(nats_server.url, tmp_path), _collector(nats_server.url, tmp_path)]
    try:
        for sink in sinks[:2]:
            pub.publish(sink.out)
        deadline = time.monotonic() + 30
        while len(lake(tmp_path, "decisions")) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        procs[0].send_signal(signal.SIGKILL)  # mid-stream: it holds fetched, unacknowledged messages
        procs[0].wait(10)
        pub.publish(sinks[2].out)
        pub.publish(retried(sinks[0].out[:30]))
        procs[0] = _collector(nats_server.url, tmp_path)
        while len(lake(tmp_path, "decisions")) < len(want["decisions"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # past ack_wait: any redelivery has happened
        assert sorted(lake(tmp_path, "decisions")) == want["decisions"]
        assert sorted(lake(tmp_path, "outcomes")) == want["outcomes"]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outs = [json.loads(p.communicate(timeout=20)[0].decode().strip().splitlines()[-1]) for p in procs]
        assert all(p.returncode == 0 for p in procs) and sum(o["decisions"] for o in outs) <= len(want["decisions"])
    finally:
        pub.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_the_collect_command_refuses_bad_settings_by_name(tmp_path):
    from typer.testing import CliRunner

    from closedloop.cli.main import app

    for args, said in ((["--url", "http://127.0.0.1:4222", "--system", "tiny"], "'url'"),
                       (["--url", "nats://127.0.0.1:4222", "--system", "a.b"], "'system'"),
                       (["--url", "nats://127.0.0.1:4222", "--system", "tiny", "--batch", "0"], "'batch'")):
        result = CliRunner().invoke(app, ["telemetry", "collect", *args, "--home", str(tmp_path)])
        assert result.exit_code == 2 and said in result.output, result.output
