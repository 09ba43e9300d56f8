"""``ingest``: outcome files dropped in ``<home>/inbox/`` reach telemetry, durably, one commit per file.

Each inbox file (JSON lines or Parquet, validated line by line) in name order is logged to
telemetry in one commit and moved to ``inbox/done/`` only once that commit is durable (written
and fsynced); then the store is compacted. The first file whose commit fails (a full disk) stops
the step — it and the files after it stay in the inbox for the next run — and the cycle
(``ingest_failed``: no training on outcomes known to be missing).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from msgspec import UNSET, UnsetType

from closedloop.base.files import fsync_dir, make_private_dirs
from closedloop.datasets import read_outcomes
from closedloop.errors import OutcomeError
from closedloop.orchestration.steps.base import Step, StepContext, StepResult, Stop
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from closedloop.telemetry.slates import learn_logged_slates, slot_refusal

__all__ = ["Ingest", "IngestResult"]

SUFFIXES = (".jsonl", ".json", ".parquet")


class IngestResult(StepResult):
    """The files moved to ``inbox/done/``, the outcomes logged and made durable, the lines
    refused (at most 20 per file, with their reasons); on a failed commit, the file (``failed``)
    and the files waiting behind it; the compaction's counts, or its error."""

    files: list[str]
    ingested: int
    durable: int
    rejected: list[dict[str, Any]]
    failed: list[dict[str, Any]] | UnsetType = UNSET
    waiting: list[str] | UnsetType = UNSET
    compacted: dict[str, int] | UnsetType = UNSET
    compaction_error: str | UnsetType = UNSET


class Ingest(Step[IngestResult]):
    """Inbox files → telemetry, one durable commit per file; then compaction."""

    name = "ingest"
    Result = IngestResult

    def run(self, ctx: StepContext) -> IngestResult:
        inbox = ctx.home / "inbox"
        files = sorted(p for p in inbox.glob("*") if p.is_file() and p.suffix in SUFFIXES) if inbox.is_dir() else []
        result = IngestResult(files=[], ingested=0, durable=0, rejected=[])
        if files:
            _log_files(ctx, inbox, files, result)
        try:
            result.compacted = TelemetryStore(ctx.home).compact()
        except OSError as exc:  # e.g. the disk is full: the segments stay, the next run compacts them
            result.compaction_error = os_error(exc)
        if result.failed:
            x = result.failed[0]
            more = f" (and {len(result.waiting)} later file(s) wait behind it)" if result.waiting else ""
            raise Stop("ingest_failed", f"the outcomes of inbox file {x['file']!r} ({x['records']} records) could not "
                       f"be made durable: {x['error']}. It stays in the inbox{more}; the next run retries it.",
                       detail=result)
        if result.compaction_error:
            raise Stop("ingest_failed", f"telemetry could not be compacted: {result.compaction_error}. The "
                       "outcomes are durable in the telemetry log; the next run compacts them.", detail=result)
        return result


def _log_files(ctx: StepContext, inbox: Path, files: list[Path], result: IngestResult) -> None:
    """Log each file's outcomes in one commit and move it to ``done/`` once durable; stop at the
    first file whose commit fails (recorded in ``result.failed``, the rest in ``result.waiting``)."""
    done = inbox / "done"
    make_private_dirs(done)
    # no timed group commit: a file's outcomes go in one commit (one frame, one fsync), made
    # at the flush — all of them durable, or none
    with Telemetry(SegmentLog(ctx.home), system=ctx.system, clock=ctx.clock.now_ns,
                   flush_interval_ms=3_600_000, flush_events=1 << 62, buffer_limit=1 << 62) as tel:
        for f in files:
            table, errors = read_outcomes(f)
            before = tel.counters.get("outcomes", 0)
            logged, refused, slots = _log_table(ctx, tel, table)
            result.rejected += [{"file": f.name, "line": line, "reason": why} for line, why in sorted(errors + slots)[:20]]
            tel.flush()
            made = tel.counters.get("outcomes", 0) - before
            if refused or made < logged:
                error = tel.counters.get("last_error") or "the telemetry commit did not finish"
                result.failed = [{"file": f.name, "records": logged + refused, "durable": made, "error": error}]
                result.waiting = [g.name for g in files[len(result.files) + 1:]]
                return
            os.replace(f, done / f.name)
            fsync_dir(inbox)
            fsync_dir(done)
            result.files.append(f.name)
            result.ingested += logged
            result.durable += made


def _log_table(ctx: StepContext, tel: Telemetry, table: Any) -> tuple[int, int, list[tuple[int, str]]]:
    """Log one file's outcomes of this system; returns (logged, refused by the writer, the lines
    whose slot their decision did not show: (line, reason)). A ranking outcome's ``candidate_id`` /
    ``slot`` is checked against the logged slate of its decision, as ``outcomes ingest`` does."""
    logged = refused = 0
    slots: list[tuple[int, str]] = []
    rows = [r for r in table.to_pylist() if r.get("system") in (None, ctx.system.name)]
    if any(r["candidate_id"] is not None or r["slot"] is not None for r in rows):
        learn_logged_slates(tel.slates, TelemetryStore(ctx.home), {r["decision_id"] for r in rows if r["decision_id"]})
    for r in rows:
        try:
            seq = tel.log_outcome(r["decision_id"], r["unit"], kind=r["kind"], value=r["value"], event_ns=r["event_ns"],
                                  source=r["source"], outcome_id=r["outcome_id"], candidate=r["candidate_id"], slot=r["slot"])
        except OutcomeError as e:  # a candidate its decision did not show, a slot past its slate
            slots.append((r["line"], slot_refusal(e)))
            continue
        if seq is None:
            refused += 1
        else:
            logged += 1
    return logged, refused, slots


def os_error(exc: OSError) -> str:
    """An OSError as the telemetry writer records one: ``OSError [ENOSPC]: [Errno 28] …``."""
    name = f" [{errno.errorcode.get(exc.errno, exc.errno)}]" if exc.errno is not None else ""
    return f"{type(exc).__name__}{name}: {exc}"
