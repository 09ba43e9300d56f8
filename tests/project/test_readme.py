"""The README's Python tour runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    d = namespace["d"]
    assert d.action == "block" and d.bundle_version == namespace["bundle"].version
    assert len(namespace["batch"]) == 2
    d2 = namespace["d2"]
    assert (d2.action, d2.guardrail, d2.shadows[0].action) == ("allow", "partners", "block")
    assert namespace["rt2"].killswitch
    assert namespace["watermark"] >= 1  # the decision and its outcome are durable
    assert namespace["store"].read("decisions").num_rows == 1
