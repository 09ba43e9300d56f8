"""The Open Bandit Dataset's sample (random/men) imports as it is, one row per (decision, slot)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from closedloop.datasets.dataset import load_dataset
from closedloop.datasets.importer import import_dataset

OBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "obd"
MEN = OBD / "random" / "men"

pytestmark = pytest.mark.skipif(not (MEN / "men.csv").is_file(), reason=f"the Open Bandit Dataset sample is not at {OBD}")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_random_men_imports_end_to_end(tmp_path):
    from examples.obd.system import men

    m = import_dataset(MEN / "men.csv", men, action="item_id", position="position", reward="click",
                       propensity="propensity_score", time="timestamp", candidates=MEN / "item_context.csv",
                       out=tmp_path / "ds")
    raw = _csv(MEN / "men.csv")
    items = {r["item_id"]: r for r in _csv(MEN / "item_context.csv")}
    assert len(raw) == 10_000 and len(items) == 34
    assert m.counts["slots"] == {"read": 10_000, "rows": 10_000, "rejected": 0} and m.counts["rejected"] == {}
    assert m.counts["actions"] == 34 and m.counts["decisions"] == 10_000  # no impression id: each row its own
    assert m.counts["positions"] == {p: sum(r["position"] == p for r in raw) for p in ("1", "2", "3")}
    assert m.content["source"]["renamed"]["user-item_affinity_33"] == "user_item_affinity_33"
    assert m.content["source"]["absent_fields"] == ["user_id"] and m.content["source"]["unit_stand_in"]
    table, cols = load_dataset(tmp_path / "ds", men)
    assert table.num_rows == cols.n == 10_000
    # Uniform random: every propensity is the file's (1/34), every weight 34.
    np.testing.assert_array_equal(table["propensity"].to_numpy(), [float(r["propensity_score"]) for r in raw])
    assert set(table["propensity"].to_pylist()) == {1 / 34} and np.allclose(table["weight"].to_numpy(), 34.0)
    # Rewards are the clicks, slot by slot.
    assert table["reward"].to_pylist() == [float(r["click"]) for r in raw]
    assert m.counts["rewards"]["nonzero"] == sum(r["click"] == "1" for r in raw) > 0
    assert table["action"].to_pylist() == [r["item_id"] for r in raw]
    assert table["position"].to_pylist() == [int(r["position"]) for r in raw]
    for i in (0, 4321, 9999):  # a few rows exactly
        r, row = raw[i], table.slice(i, 1).to_pylist()[0]
        assert row["decision_id"] == str(i) and row["unit"] == str(i)
        ctx, cand = json.loads(row["context_json"]), json.loads(row["candidate_json"])
        assert [ctx[f"user_feature_{k}"] for k in range(4)] == [r[f"user_feature_{k}"] for k in range(4)]
        assert [ctx[f"user_item_affinity_{j}"] for j in range(34)] == [float(r[f"user-item_affinity_{j}"]) for j in range(34)]
        item = items[r["item_id"]]
        assert cand == {"item_id": int(r["item_id"]), "item_feature_0": float(item["item_feature_0"]),
                        **{f"item_feature_{k}": item[f"item_feature_{k}"] for k in (1, 2, 3)}}
        assert row["item_feature_0"] == float(item["item_feature_0"])
        assert row["affinity_total"] == pytest.approx(sum(float(r[f"user-item_affinity_{j}"]) for j in range(34)))
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["action"], first["position"], first["reward"]) == ("14", 3, 0.0)
    assert first["timestamp_ns"] == 1574553793442536000  # 2019-11-24 00:03:13.442536 UTC


def test_the_cli_imports_it_and_prints_the_counts(tmp_path):
    from typer.testing import CliRunner

    from closedloop.cli.main import app

    r = CliRunner().invoke(app, [
        "--home", str(tmp_path / "home"), "dataset", "import", str(MEN / "men.csv"), "--system", "examples.obd.system:men",
        "--action", "item_id", "--position", "position", "--reward", "click", "--propensity", "propensity_score",
        "--time", "timestamp", "--candidates", str(MEN / "item_context.csv"),
    ])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["counts"]["slots"] == {"read": 10_000, "rows": 10_000, "rejected": 0}
    assert (tmp_path / "home" / "datasets" / out["id"] / "data.parquet").is_file()
