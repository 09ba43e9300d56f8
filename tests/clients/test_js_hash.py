"""Exploration's uniform draw in JavaScript equals Python's bit for bit on many decision ids: 32-hex
ids (splitmix64) and any other text (BLAKE2b, implemented in the client runtime), with salts."""

from __future__ import annotations

import json
import random
from pathlib import Path

from closedloop.experience.exploration import uniform
from support.node_runtime import run_node

CHECK = """
const { uniform } = await import("./src/runtime/hash.js");
const fs = await import("node:fs");
const rows = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
console.log(JSON.stringify(rows.map(([id, salt]) => uniform(id, salt))));
"""


def test_uniform_matches_python_on_many_ids(tmp_path: Path) -> None:
    rng = random.Random(5)
    alphabet = "abcxyz019-_:/. éß日本😀\n"
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(5000)]
    ids += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(5000)]
    ids += ["", "0" * 32, "f" * 32, "F" * 32, "0" * 31, "g" * 32, "x" * 127, "x" * 128, "x" * 129]  # edges of both paths
    rows = [[i, rng.choice((0, 0, 1, 7, 12345))] for i in ids]
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    got = json.loads(run_node("--input-type=module", "-e", CHECK, str(path)))
    want = [uniform(i, s) for i, s in rows]
    diff = [(rows[k], got[k], want[k]) for k in range(len(rows)) if got[k] != want[k]]
    assert not diff, diff[:3]
