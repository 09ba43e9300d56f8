"""``dataset``: the label-policy join over ``LoopPlan.train_window``, in the cycle's directory.

Quarantined sources are excluded, down-weighted ones weighted, quarantined label days left out
(:mod:`closedloop.datasets.dataset`). Too few labeled rows (``LoopPlan.min_labeled``) stops the
cycle (``not_enough_labels``). A dataset whose manifest exists was finished: it is read, not
built again.
"""

from __future__ import annotations

import shutil
from typing import Any

from closedloop.datasets.dataset import DatasetManifest, build_dataset
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.orchestration.steps.monitor import MonitorResult

__all__ = ["Dataset", "DatasetResult"]


class DatasetResult(StepResult):
    """The dataset's id, its directory and its manifest's counts."""

    id: str
    path: str
    counts: dict[str, Any]


class Dataset(Step[DatasetResult]):
    """Build (or find) the training dataset."""

    name = "dataset"
    Result = DatasetResult

    def run(self, ctx: StepContext) -> DatasetResult:
        out = ctx.dir / "dataset"
        if (out / "manifest.json").is_file():
            m = DatasetManifest.read(out)
        else:
            shutil.rmtree(out, ignore_errors=True)
            mon = ctx.result("monitor", MonitorResult)
            dec, outc = ctx.files()
            now = ctx.now_ns
            m = build_dataset(
                ctx.system, decision_files=dec, outcome_files=outc,
                since_ns=now - int(ctx.plan.train_window.total_seconds() * 1e9), until_ns=now, cutoff_ns=now,
                out=out, exclude_sources=mon.quarantined, source_weights=mon.source_weights or None,
                exclude_ingested=[(q["kind"], q["start_ns"], q["end_ns"]) for q in ctx.record.get("label_quarantine", [])],
                early_labels=ctx.plan.early_labels,
            )
        labeled = m.counts["decisions"]["labeled"]
        if labeled < ctx.plan.min_labeled:
            raise Stop("not_enough_labels", f"the dataset has {labeled} labeled rows; the plan needs {ctx.plan.min_labeled}")
        return DatasetResult(id=m.id, path=str(out), counts=m.counts)
