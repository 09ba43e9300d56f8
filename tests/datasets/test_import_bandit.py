from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from closedloop import BestAction, F, Float, Reward, RewardPolicy, Str, System
from closedloop.datasets.dataset import DatasetManifest, load_dataset
from closedloop.datasets.importer import import_dataset
from closedloop.errors import DatasetError, SpecError

LOGGED = {"action": "item", "position": "slot", "reward": "click", "propensity": "p", "decision": "impression"}


def _feed_rows() -> pa.Table:
    """Two impressions of the feed system (k=5) with 3 slots each."""
    return pa.table({
        "impression": ["i1", "i1", "i1", "i2", "i2", "i2"],
        "user_id": ["u1", "u1", "u1", "u2", "u2", "u2"],
        "hour": [9, 9, 9, 20, 20, 20],
        "country": ["fr", "fr", "fr", "de", "de", "de"],
        "item": ["a", "b", "c", "c", "a", "d"],
        "slot": [1, 2, 3, 1, 2, 3],
        "click": [0.0, 1.0, 0.0, 1.0, 0.0, 0.0],
        "p": [0.25, 0.5, 1.0, 0.2, 0.4, 0.8],
        "ts": [10**18] * 3 + [10**18 + 60 * 10**9] * 3,
    })


def _items() -> pa.Table:
    return pa.table({"item_id": ["a", "b", "c", "d"], "category": ["news", "fun", "tech", "news"],
                     "item_ctr": [0.1, 0.2, 0.3, 0.05], "age_hours": [1.0, 5.0, 2.0, 30.0]})


def test_one_row_per_decision_and_slot_with_candidates(tmp_path):
    from examples.feed.system import feed

    pq.write_table(_feed_rows(), tmp_path / "log.parquet")
    pcsv.write_csv(_items(), tmp_path / "items.csv")
    m = import_dataset(tmp_path / "log.parquet", feed, **LOGGED, unit="user_id", time="ts",
                       candidates=tmp_path / "items.csv", out=tmp_path / "ds")
    assert DatasetManifest.read(tmp_path / "ds").id == m.id and m.content["rows"] == "slot"
    assert m.counts["slots"] == {"read": 6, "rows": 6, "rejected": 0} and m.counts["decisions"] == 2
    assert m.counts["rewards"] == {"sum": 2.0, "nonzero": 2} and m.counts["positions"] == {"1": 2, "2": 2, "3": 2}
    assert m.content["source"]["candidates"]["rows"] == 4 and m.content["source"]["decision_stand_in"] is False
    table, cols = load_dataset(tmp_path / "ds", feed)
    assert table["decision_id"].to_pylist() == ["i1"] * 3 + ["i2"] * 3
    assert table["position"].to_pylist() == [1, 2, 3, 1, 2, 3]
    assert table["action"].to_pylist() == ["a", "b", "c", "c", "a", "d"]
    assert table["reward"].to_pylist() == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert table["propensity"].to_pylist() == [0.25, 0.5, 1.0, 0.2, 0.4, 0.8]
    np.testing.assert_allclose(table["weight"].to_numpy(), [4.0, 2.0, 1.0, 5.0, 2.5, 1.25])
    assert cols.pylist("user_id") == ["u1"] * 3 + ["u2"] * 3
    # Each slot's candidate fields come from the candidates table, and its features read them.
    cand = [json.loads(c) for c in table["candidate_json"].to_pylist()]
    assert [c["item_id"] for c in cand] == ["a", "b", "c", "c", "a", "d"]
    assert [c["category"] for c in cand] == ["news", "fun", "tech", "tech", "news", "news"]
    assert table["ctr"].to_pylist() == [0.1, 0.2, 0.3, 0.3, 0.1, 0.05]
    assert table["news_in_morning"].to_pylist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_bad_rows_are_refused_named_and_counted_the_good_kept(tmp_path):
    from examples.feed.system import feed

    t = _feed_rows().to_pydict()
    t["impression"] += ["i3", "i3", "i3", "i3", "i3", "i4", "i1", "i5", "i6"]
    t["user_id"] += ["u3"] * 9
    t["hour"] += [1, 1, 1, 1, 1, 1, 1, 1, 99]
    t["country"] += ["it"] * 9
    t["item"] += ["a", "b", "c", "a", "zz", None, "d", "a", "b"]
    t["slot"] += [6, 0, 1, 2, 3, 1, 2, 1, 1]
    t["click"] += ["1", "0", "yes", "0", "0", "0", "1", None, "0"]
    t["p"] += [0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    t["ts"] += [10**18] * 9
    t["click"][:6] = [str(v) for v in t["click"][:6]]
    pcsv.write_csv(pa.table(t), tmp_path / "log.csv")
    pcsv.write_csv(_items(), tmp_path / "items.csv")
    m = import_dataset(tmp_path / "log.csv", feed, **LOGGED, unit="user_id", candidates=tmp_path / "items.csv",
                       out=tmp_path / "ds")
    assert m.counts["slots"] == {"read": 15, "rows": 6, "rejected": 9}
    assert m.counts["rejected"] == {
        "slot: an integer slot in 1..5": 2,           # slot 6 (k=5), slot 0
        "click: a finite number (the reward)": 2,     # 'yes'; a null, and the system declares no default
        "p: a probability in (0, 1]": 1,
        "item: a candidate of 'items.csv'": 1,
        "item: an action (not null or empty)": 1,
        "position: one row per (decision, slot)": 1,  # ('i1', 2) again
        "hour: an integer in [0, 23]": 1,
    }
    ex = {e["row"]: e for e in m.content["rejected_examples"]}
    assert ex[6]["value"] == 6 and ex[6]["message"] == "The 'slot' column must hold an integer slot in 1..5. Got 6 instead (row 6)."
    assert ex[8]["field"] == "click" and ex[8]["value"] == "yes"
    assert ex[9]["field"] == "p" and ex[9]["value"] == 0.0
    assert ex[10]["value"] == "zz" and ex[12]["field"] == "position" and ex[14]["field"] == "hour"
    table, _ = load_dataset(tmp_path / "ds", feed)
    assert table["decision_id"].to_pylist() == ["i1"] * 3 + ["i2"] * 3  # the good rows, in file order


def test_null_reward_takes_the_declared_default_and_a_choosing_system_imports(tmp_path):
    system = System("pick", context=[Str("u"), Float("x", default=0.0)], unit="u", features={"x": F.col("x")},
                    actions=["red", "blue"], experience=BestAction(),
                    rewards=RewardPolicy([Reward("buy", "sum")], window=timedelta(days=1), per="decision", default=0.0))
    pq.write_table(pa.table({"u": ["a", "b", "c", "d"], "x": [1.0, 2.0, 3.0, 4.0], "shown": ["red", "blue", "green", "red"],
                             "value": [12.5, None, 1.0, 0.0], "prob": [0.5, 0.5, 0.5, float("nan")]}), tmp_path / "f.parquet")
    m = import_dataset(tmp_path / "f.parquet", system, action="shown", reward="value", propensity="prob", unit="u",
                       out=tmp_path / "ds")
    assert m.counts["rejected"] == {"prob: a probability in (0, 1]": 1, "shown: one of the actions ['red', 'blue']": 1}
    table, _ = load_dataset(tmp_path / "ds", system)
    assert table["reward"].to_pylist() == [12.5, 0.0] and table["position"].to_pylist() == [1, 1]
    assert table["decision_id"].to_pylist() == ["0", "1"] and m.content["source"]["decision_stand_in"]
    assert "candidate_json" not in table.column_names and m.content["rewards"]["per"] == "decision"


def test_arguments_are_checked(tmp_path, phishing):
    from examples.feed.system import feed

    pq.write_table(_feed_rows(), tmp_path / "log.parquet")
    with pytest.raises(SpecError, match="BestAction or Ranking experience. System 'phishing' has Thresholds"):
        import_dataset(tmp_path / "log.parquet", phishing, **LOGGED, out=tmp_path / "a")
    with pytest.raises(SpecError, match="a 'label' column or an 'action' column"):
        import_dataset(tmp_path / "log.parquet", feed, **LOGGED, label="click", out=tmp_path / "a")
    with pytest.raises(SpecError, match=r"\['position', 'propensity'\] of import_dataset .* need 'action'"):
        import_dataset(tmp_path / "log.parquet", feed, label="click", position="slot", propensity="p", out=tmp_path / "a")
    with pytest.raises(DatasetError, match=r"The propensity column 'pscore' must be in the file"):
        import_dataset(tmp_path / "log.parquet", feed, **{**LOGGED, "propensity": "pscore"}, out=tmp_path / "a")
    with pytest.raises(SpecError, match=r"'reward' parameter of import_dataset must be a column name. Got None"):
        import_dataset(tmp_path / "log.parquet", feed, **{**LOGGED, "reward": None}, out=tmp_path / "a")
    dup = _items().to_pydict()
    dup["item_id"][1] = "a"
    pcsv.write_csv(pa.table(dup), tmp_path / "items.csv")
    with pytest.raises(DatasetError, match=r"one row per 'item_id'. Got \['a'\] repeated"):
        import_dataset(tmp_path / "log.parquet", feed, **LOGGED, candidates=tmp_path / "items.csv", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_a_labeled_file_for_a_ranking_system_imports(tmp_path):
    """The candidate fields the features read are validated with the request's (once a raw KeyError)."""
    from examples.feed.system import feed

    t = _feed_rows().append_column("item_id", _feed_rows()["item"])
    ctr = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.05}
    t = t.append_column("category", pa.array(["news"] * 6)).append_column("age_hours", pa.array([1.0] * 6))
    t = t.append_column("item_ctr", pa.array([ctr[i] for i in t["item"].to_pylist()]))
    pcsv.write_csv(t, tmp_path / "f.csv")
    m = import_dataset(tmp_path / "f.csv", feed, label="click", unit="user_id", out=tmp_path / "ds")
    table, _ = load_dataset(tmp_path / "ds", feed)
    assert m.counts["decisions"]["rows"] == 6 and table["ctr"].to_pylist() == [0.1, 0.2, 0.3, 0.3, 0.1, 0.05]
    assert table["label"].to_pylist() == ["skipped", "clicked", "skipped", "clicked", "skipped", "skipped"]
    assert json.loads(table["candidate_json"][0].as_py())["item_ctr"] == 0.1


def test_column_names_that_are_not_field_names_fill_the_fields(tmp_path):
    system = System("pick", context=[Str("u"), Float("x_y", default=-1.0)], unit="u", features={"xy": F.col("x_y")},
                    actions=["red", "blue"], experience=BestAction())
    pcsv.write_csv(pa.table({"u": ["a", "b"], "x-y": [1.5, 2.5], "shown": ["red", "blue"], "r": [1, 0],
                             "p": [0.5, 0.5]}), tmp_path / "f.csv")
    m = import_dataset(tmp_path / "f.csv", system, action="shown", reward="r", propensity="p", out=tmp_path / "ds")
    assert m.content["source"]["renamed"] == {"x-y": "x_y"} and m.content["source"]["absent_fields"] == []
    table, cols = load_dataset(tmp_path / "ds", system)
    assert cols.pylist("x_y") == [1.5, 2.5] and table["xy"].to_pylist() == [1.5, 2.5]


def test_the_cli_counts_the_refused_rows_and_needs_a_label_or_an_action(tmp_path):
    from typer.testing import CliRunner

    from closedloop.cli.main import app

    rows = _feed_rows().to_pydict()
    rows["p"][4] = 0.0
    pq.write_table(pa.table(rows), tmp_path / "log.parquet")
    pcsv.write_csv(_items(), tmp_path / "items.csv")
    args = ["--home", str(tmp_path / "home"), "dataset", "import", str(tmp_path / "log.parquet"),
            "--system", "examples.feed.system:feed"]
    r = CliRunner().invoke(app, [*args, "--action", "item", "--position", "slot", "--reward", "click",
                                 "--propensity", "p", "--decision", "impression", "--unit", "user_id",
                                 "--candidates", str(tmp_path / "items.csv")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["counts"]["slots"] == {"read": 6, "rows": 5, "rejected": 1}
    assert out["counts"]["rejected"] == {"p: a probability in (0, 1]": 1}
    r = CliRunner().invoke(app, [*args, "--action", "item", "--reward", "click"])
    assert r.exit_code == 1 and "'propensity' parameter of import_dataset must be a column name" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--label COLUMN" in r.output
