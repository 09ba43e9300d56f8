"""Reading outcome files: every good line kept, every bad line named with its number and reason."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from closedloop.datasets import read_outcomes


def test_each_rule_rejects_its_line_alone(tmp_path):
    lines = [
        {"decision_id": "d1", "kind": "report", "event_time": 5, "source": "u"},  # 1 good
        {"unit": "u1", "kind": "report", "event_time": "1970-01-01T00:00:01Z", "source": "u", "value": 0},  # 2 good
        {"kind": "report", "event_time": 5, "source": "u"},  # 3 no decision_id nor unit
        {"decision_id": "d", "kind": "", "event_time": 5, "source": "u"},  # 4 empty kind
        {"decision_id": "d", "kind": "9bad", "event_time": 5, "source": "u"},  # 5 not a name
        {"decision_id": "d", "kind": "k", "event_time": 5, "source": ""},  # 6 empty source
        {"decision_id": "d", "kind": "k", "event_time": "yesterday", "source": "u"},  # 7 bad time
        {"decision_id": "d", "kind": "k", "source": "u"},  # 8 good: no time, the file's (as the service's)
        {"decision_id": "d", "kind": "k", "event_time": 5, "source": "u", "value": "high"},  # 9 value
        {"decision_id": "d", "kind": "k", "event_ns": 7, "source": "u", "outcome_id": "o1", "extra": 1},  # 10 good
    ]
    text = (
        "\n".join(json.dumps(x) for x in lines)
        + "\n{not json\n"
        + '{"decision_id": "d", "kind": "k", "event_time": 1, "source": "u", "value": Infinity}\n'
    )
    text += json.dumps({"decision_id": "d", "kind": "k", "event_time": 5, "source": "u\u0007bell"}) + "\n"  # 13 control char
    p = tmp_path / "o.jsonl"
    p.write_text(text)
    os.utime(p, ns=(8, 8))
    table, errors = read_outcomes(p)
    assert table.num_rows == 4
    assert [e[0] for e in errors] == [3, 4, 5, 6, 7, 9, 11, 12, 13]
    reasons = dict(errors)
    assert reasons[13].startswith("'source' must be a non-empty string of at most 200 characters without control")
    assert "'decision_id' must be given when 'unit' is not" in reasons[3] and "kind" in reasons[5]
    assert "source" in reasons[6] and "ISO-8601" in reasons[7]
    assert reasons[9] == "'value' must be a finite number. Got 'high' instead."
    assert table["event_ns"].to_pylist() == [5, 1_000_000_000, 8, 7]
    assert table["value"].to_pylist() == [1.0, 0.0, 1.0, 1.0]
    assert table["outcome_id"].to_pylist() == [None, None, None, "o1"]
    assert table["unit"].to_pylist() == [None, "u1", None, None]


def test_iso_times_with_offsets_and_naive_ones_are_utc(tmp_path):
    p = tmp_path / "o.jsonl"
    p.write_text(
        '{"unit": 42, "kind": "k", "event_time": "2026-01-01T01:00:00+01:00", "source": "s"}\n'
        '{"unit": "a", "kind": "k", "event_time": "2026-01-01T00:00:00.000001", "source": "s"}\n'
    )
    table, errors = read_outcomes(p)
    base = 1767225600 * 10**9
    assert errors == [] and table["event_ns"].to_pylist() == [base, base + 1000]
    assert table["unit"].to_pylist() == ["42", "a"]


def test_parquet_rows_are_validated_like_lines(tmp_path):
    p = tmp_path / "o.parquet"
    pq.write_table(
        pa.table({
            "decision_id": ["d1", None, "d3"],
            "kind": ["report", "report", "report"],
            "event_ns": [1, 2, 3],
            "source": ["s", "s", ""],
            "value": [1.0, 2.0, float("nan")],
        }),
        p,
    )
    table, errors = read_outcomes(p)
    assert table["decision_id"].to_pylist() == ["d1"] and [e[0] for e in errors] == [2, 3]


def test_a_million_good_lines_with_a_few_bad_ones_keeps_every_good_one(tmp_path):
    n = 1_000_000
    good = b'{"decision_id": "d%d", "kind": "clicked", "value": 1, "event_time": %d, "source": "app"}\n'
    bad_at = {17, 500_000, 999_999}
    p = tmp_path / "big.jsonl"
    with open(p, "wb") as fh:
        buf = []
        for i in range(1, n + 1):
            buf.append(b'{"kind": "clicked"\n' if i in bad_at else good % (i, i))
            if len(buf) == 100_000:
                fh.write(b"".join(buf))
                buf = []
        fh.write(b"".join(buf))
    table, errors = read_outcomes(p)
    assert table.num_rows == n - len(bad_at)
    assert [e[0] for e in errors] == sorted(bad_at)
    ids = table["decision_id"]
    assert ids[0].as_py() == "d1" and ids[-1].as_py() == f"d{n}" and table["event_ns"][16].as_py() == 18


def test_a_prompt_choice_kind_is_accepted_as_the_service_accepts_it(tmp_path):
    from closedloop.telemetry.records import OUTCOME_KIND

    p = tmp_path / "o.jsonl"
    p.write_text(json.dumps({"decision_id": "d1", "kind": "chose:go_back", "event_time": 5, "source": "u"}) + "\n"
                 + json.dumps({"decision_id": "d2", "kind": ":nope", "event_time": 5, "source": "u"}) + "\n")
    table, errors = read_outcomes(p)
    assert table["kind"].to_pylist() == ["chose:go_back"]
    assert [e[0] for e in errors] == [2] and "':'" in errors[0][1]
    assert OUTCOME_KIND.match("chose:continue") and not OUTCOME_KIND.match("9x")


def test_a_line_may_name_the_slot_of_a_ranking_decision(tmp_path):
    lines = [
        {"decision_id": "d1", "kind": "clicked", "event_time": 5, "source": "app", "candidate_id": "item-7"},  # 1 good
        "",  # 2 blank: skipped, still counted as a line
        {"decision_id": "d1", "kind": "clicked", "event_time": 5, "source": "app", "slot": 2},  # 3 good
        {"decision_id": "d1", "kind": "clicked", "event_time": 5, "source": "app", "slot": 0},  # 4 slot < 1
        {"unit": "u1", "kind": "clicked", "event_time": 5, "source": "app", "slot": 1},  # 5 a slot needs its decision
        {"decision_id": "d2", "kind": "clicked", "event_time": 5, "source": "app"},  # 6 good: the whole decision
    ]
    p = tmp_path / "o.jsonl"
    p.write_text("".join((json.dumps(x) if x else "") + "\n" for x in lines))
    table, errors = read_outcomes(p)
    assert table["candidate_id"].to_pylist() == ["item-7", None, None]
    assert table["slot"].to_pylist() == [None, 2, None]
    assert table["line"].to_pylist() == [1, 3, 6]
    assert [(line, reason.split("'")[1]) for line, reason in errors] == [(4, "slot"), (5, "decision_id")]
    assert errors[1][1] == "'decision_id' must be given when 'slot' is (a slot belongs to one decision's slate). Got None instead."
