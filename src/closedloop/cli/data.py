"""CLI commands over the project home's telemetry and datasets.

::

    closedloop outcomes ingest FILE --system MOD:ATTR      validate line by line, log, make durable
    closedloop telemetry stats [--window-days N]           counts, open-window backlog, torn tails
    closedloop telemetry compact                           sealed segments → day-partitioned Parquet
    closedloop telemetry forget --unit ID [--system …]      remove one unit's decisions and outcomes
    closedloop telemetry retain --days N | --system …       drop data older than N days
    closedloop telemetry collect --url nats://… --system NAME [--group G]   the log (NATS JetStream) → the lake
    closedloop dataset build --system … --since … --until … [--cutoff …] [--out DIR]
                             [--engine duckdb|spark] [--spark-master URL]
    closedloop dataset import FILE --system … --label COL [--unit COL] [--time COL] [--out DIR]
    closedloop dataset import FILE --system … --action COL --reward COL --propensity COL [--position COL]
                              [--decision COL] [--candidates FILE] [--unit COL] [--time COL]   logged bandit data

Times are ISO-8601 (``2026-11-01``, ``2026-11-01T12:00:00Z``) or integer nanoseconds.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from closedloop.base.files import make_private_dirs
from closedloop.cli.options import OptionalSystemOption, SystemOption, parse_time, system_from
from closedloop.errors import OutcomeError
from closedloop.settings import Settings

__all__ = ["dataset_app", "outcomes_app", "telemetry_app"]

outcomes_app = typer.Typer(help="Ingest outcomes into telemetry.", no_args_is_help=True)
telemetry_app = typer.Typer(help="Inspect and maintain the telemetry log.", no_args_is_help=True)
dataset_app = typer.Typer(help="Build datasets: decisions joined with outcomes.", no_args_is_help=True)


class Engine(StrEnum):
    """What runs a dataset's join (closedloop.datasets.dataset.ENGINES)."""

    duckdb = "duckdb"
    spark = "spark"


#: ``--engine duckdb|spark`` (a value not listed is refused, naming both).
EngineOption = Annotated[Engine, typer.Option("--engine", help="The join's engine: duckdb (this machine) or spark.")]


# -- closedloop outcomes ingest ------------------------------------------------------------------
@outcomes_app.command("ingest")
def outcomes_ingest(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Outcomes as .jsonl or .parquet.")],
    system: SystemOption,
) -> None:
    """Validate FILE line by line and log every valid outcome; report each rejected line (line
    number and reason). Returns once every logged outcome is durable (or its commit failed) and
    prints ``ingested`` (outcomes logged) beside ``durable`` (made durable: written and fsynced).
    Exits 1 if any line was rejected (the others are kept) or any outcome was not made durable
    (e.g. a full disk: the reason is on stderr; ingest the file again once it is fixed)."""
    from closedloop.datasets import read_outcomes
    from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
    from closedloop.telemetry.slates import learn_logged_slates, slot_refusal

    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    if not file.is_file():
        raise typer.BadParameter(f"no such file {str(file)!r}", param_hint="'FILE'")
    table, errors = read_outcomes(file)
    rows = table.to_pylist()
    other = 0
    refused: list[tuple[int, str]] = []
    with Telemetry(SegmentLog(settings.home), system=sys_obj, key=settings.telemetry_key) as tel:
        if any(r["candidate_id"] is not None or r["slot"] is not None for r in rows):
            learn_logged_slates(tel.slates, TelemetryStore(settings.home),
                                {r["decision_id"] for r in rows if r["decision_id"] is not None})
        for r in rows:
            if r.get("system") not in (None, sys_obj.name):
                other += 1
                continue
            try:
                tel.log_outcome(
                    r["decision_id"], r["unit"], kind=r["kind"], value=r["value"], event_ns=r["event_ns"],
                    source=r["source"], outcome_id=r["outcome_id"], candidate=r["candidate_id"], slot=r["slot"],
                )
            except OutcomeError as e:  # a candidate its decision did not show, a slot past its slate
                refused.append((r["line"], slot_refusal(e)))
        watermark = tel.flush()
    errors = sorted(errors + refused)
    stats = tel.stats()  # closed: every commit is counted, made durable or failed
    ingested = len(rows) - other - len(refused)
    durable = int(stats.get("outcomes", 0))
    for line, reason in errors[:20]:
        typer.echo(f"line {line}: {reason}", err=True)
    if len(errors) > 20:
        typer.echo(f"… and {len(errors) - 20} more rejected lines", err=True)
    if durable < ingested:
        typer.echo(f"Error: {ingested - durable} of {ingested} outcomes were not made durable "
                   f"({stats.get('last_error') or 'telemetry refused them'}); fix the cause and ingest "
                   f"{str(file)!r} again (outcome ids make the outcomes already durable count once).", err=True)
    typer.echo(json.dumps({
        "ingested": ingested, "durable": durable, "not_durable": ingested - durable, "rejected": len(errors),
        "other_system": other, "durable_watermark": watermark,
    }))
    if errors or durable < ingested:
        raise typer.Exit(1)


# -- closedloop telemetry … -------------------------------------------------------------------------
@telemetry_app.command("stats")
def telemetry_stats(
    ctx: typer.Context,
    window_days: Annotated[
        float | None, typer.Option("--window-days", help="Label window, for the open-window backlog.")
    ] = None,
) -> None:
    """Counts by day, bundle version, action and outcome kind, the backlog of decisions whose
    windows are still open, and torn segment tails (JSON)."""
    from closedloop.telemetry import TelemetryStore

    settings: Settings = ctx.obj
    store = TelemetryStore(settings.home)
    window_ns = None if window_days is None else int(window_days * 86_400 * 1_000_000_000)
    out = store.stats(window_ns=window_ns, now_ns=time.time_ns())
    typer.echo(json.dumps(out, indent=2, default=str))


@telemetry_app.command("compact")
def telemetry_compact(ctx: typer.Context) -> None:
    """Move sealed segments into Parquet partitioned by day (idempotent, crash-safe)."""
    from closedloop.telemetry import TelemetryStore

    settings: Settings = ctx.obj
    typer.echo(json.dumps(TelemetryStore(settings.home).compact()))


@telemetry_app.command("forget")
def telemetry_forget(
    ctx: typer.Context,
    unit: Annotated[str, typer.Option("--unit", metavar="ID", help="The unit to remove.")],
    system: OptionalSystemOption = None,
) -> None:
    """Remove one unit's decisions and outcomes from the log (datasets built later won't have
    them). --system is needed when the unit field is hashed."""
    from closedloop.telemetry import Sanitizer, TelemetryStore

    settings: Settings = ctx.obj
    sanitizer = None
    if system is not None:
        sys_obj = system_from(system)
        sanitizer = Sanitizer(sys_obj.schema, sys_obj.unit, settings.telemetry_key)
    typer.echo(json.dumps(TelemetryStore(settings.home).forget(unit, sanitizer=sanitizer)))


@telemetry_app.command("retain")
def telemetry_retain(
    ctx: typer.Context,
    days: Annotated[
        float | None, typer.Option("--days", help="Keep this many days; drop older data.")
    ] = None,
    system: OptionalSystemOption = None,
) -> None:
    """Apply retention: drop decisions and outcomes older than N days (--days, or the
    ``retention_days`` the --system declares)."""
    from closedloop.telemetry import TelemetryStore

    if days is None and system is not None:
        days = system_from(system).retention_days
        if days is None:
            raise typer.BadParameter(f"{system!r} declares no retention_days; give --days.", param_hint="'--system'")
    if days is None or not days > 0:
        raise typer.BadParameter(f"must be a number > 0. Got {days!r} instead.", param_hint="'--days'")
    settings: Settings = ctx.obj
    typer.echo(json.dumps(TelemetryStore(settings.home).apply_retention(days, time.time_ns())))


@telemetry_app.command("collect")
def telemetry_collect(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="The NATS server(s): nats://host:port, several comma-separated.")],
    system: Annotated[str, typer.Option("--system", help="The system whose telemetry to collect: its name, or MOD:ATTR.")],
    group: Annotated[str, typer.Option("--group", help="The consumer group; collectors of one lake share one.")] = "collectors",
    batch: Annotated[int, typer.Option("--batch", help="The most messages fetched and written at a time.")] = 200,
    ack_wait: Annotated[float, typer.Option("--ack-wait", help="Seconds before an unacknowledged message is delivered again.")] = 30.0,
    lake: Annotated[str | None, typer.Option("--lake", help="A pyarrow.fs URI to write to instead of the home (untested "
                                             "but for file://).")] = None,
) -> None:
    """Write a system's telemetry from NATS JetStream into the home's day-partitioned Parquet lake,
    exactly once per record, until SIGTERM or Ctrl-C (any number of collectors may run in one group).
    Logs its counts every 10 s on stderr and prints them as JSON when it stops."""
    import logging
    import signal
    import threading

    from closedloop.errors import TransportError
    from closedloop.telemetry.collector import Collector
    from closedloop.telemetry.jetstream import JetStreamTransport

    settings: Settings = ctx.obj
    name = system_from(system).name if ":" in system else system
    try:
        transport = JetStreamTransport(url)
        collector = Collector(transport, lake or settings.home, name, group=group, batch=batch, ack_wait=ack_wait)
    except TransportError as e:
        raise typer.BadParameter(str(e)) from e
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"collecting system {name!r} from {url} (group {group!r}) into {lake or settings.home}", err=True)
    try:
        counts = collector.run(stop)
    finally:
        transport.close()
    typer.echo(json.dumps(counts))


# -- closedloop dataset build ------------------------------------------------------------------------
@dataset_app.command("build")
def dataset_build(
    ctx: typer.Context,
    system: SystemOption,
    since: Annotated[str, typer.Option("--since", help="Decisions at or after this time.")],
    until: Annotated[str, typer.Option("--until", help="Decisions before this time.")],
    cutoff: Annotated[
        str | None, typer.Option("--cutoff", help="Point in time (ingest time) of the dataset; default: now.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Where to write it (default: <home>/datasets/<id>).")
    ] = None,
    engine: EngineOption = Engine.duckdb,
    spark_master: Annotated[str | None, typer.Option(
        "--spark-master", metavar="URL", help="With --engine spark: the Spark master (default local[2]).")] = None,
) -> None:
    """Join decisions with outcomes under the system's label policy into a dataset (Parquet and
    a manifest with its id, policy, time range, cut-off and counts). A system that declares rewards
    (a choice or ranking system) gets its reward dataset: one row per decision and slot shown.
    ``--engine spark`` runs the same join on Spark (the same dataset; docs/datasets.md, "Spark")."""
    import shutil
    import tempfile

    from closedloop.datasets import build_dataset, build_reward_dataset
    from closedloop.telemetry import TelemetryStore

    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    since_ns, until_ns = parse_time(since, "--since"), parse_time(until, "--until")
    cutoff_ns = time.time_ns() if cutoff is None else parse_time(cutoff, "--cutoff")
    if not since_ns < until_ns:
        raise typer.BadParameter("--since must be before --until.", param_hint="'--since'")
    rewards = getattr(sys_obj, "rewards", None) is not None
    engine_name = Engine(engine).value
    if spark_master is not None and engine_name != "spark":
        raise typer.BadParameter("is for --engine spark only.", param_hint="'--spark-master'")
    if rewards and engine_name != "duckdb":
        raise typer.BadParameter(f"a reward dataset is built with duckdb only. Got {engine_name!r} instead.", param_hint="'--engine'")
    store = TelemetryStore(settings.home)
    store.compact()
    staging = None
    if out is None:
        make_private_dirs(settings.datasets)
        staging = target = Path(tempfile.mkdtemp(prefix=".build-", dir=settings.datasets)) / "dataset"
    else:
        target = out
    if rewards:
        manifest = build_reward_dataset(sys_obj, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                        since_ns=since_ns, until_ns=until_ns, cutoff_ns=cutoff_ns, out=target)
    else:
        manifest = build_dataset(sys_obj, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                                 since_ns=since_ns, until_ns=until_ns, cutoff_ns=cutoff_ns, out=target,
                                 engine=engine_name, spark_master=spark_master)
    path = manifest.path
    if staging is not None:
        final = settings.datasets / manifest.id
        if final.exists():
            shutil.rmtree(staging.parent)
            path = final
        else:
            staging.rename(final)
            shutil.rmtree(staging.parent, ignore_errors=True)
            path = final
    typer.echo(json.dumps({"id": manifest.id, "path": str(path), "counts": manifest.counts}, default=str))



@dataset_app.command("import")
def dataset_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A labeled .csv or .parquet file.")],
    system: SystemOption,
    label: Annotated[
        str | None, typer.Option("--label", metavar="COLUMN", help="The label column (0/1 or class names).")
    ] = None,
    unit: Annotated[
        str | None, typer.Option("--unit", metavar="COLUMN", help="The unit column (default: the row index).")
    ] = None,
    time_col: Annotated[
        str | None, typer.Option("--time", metavar="COLUMN", help="The time column (default: the row index).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Where to write it (default: <home>/datasets/<id>).")
    ] = None,
    action: Annotated[str | None, typer.Option("--action", metavar="COLUMN",
                                               help="Logged bandit data: the action / candidate id column.")] = None,
    position: Annotated[str | None, typer.Option("--position", metavar="COLUMN", help="The 1-based slot column.")] = None,
    reward: Annotated[str | None, typer.Option("--reward", metavar="COLUMN", help="The reward column.")] = None,
    propensity: Annotated[str | None, typer.Option("--propensity", metavar="COLUMN",
                                                   help="The logged propensity column.")] = None,
    decision: Annotated[str | None, typer.Option("--decision", metavar="COLUMN",
                                                 help="The decision / impression id column (default: the row index).")] = None,
    candidates: Annotated[Path | None, typer.Option("--candidates", metavar="FILE",
                                                    help="A ranking system's candidate fields, one row per candidate id.")] = None,
) -> None:
    """Turn a labeled file into a dataset (a curated corpus), or logged bandit data (--action …)
    into one row per (decision, slot); rows refused (a context that fails validation, a slot out
    of range, a bad propensity or reward) are counted with their reasons in the manifest and the output."""
    import shutil
    import tempfile

    from closedloop.datasets import import_dataset

    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    if not file.is_file():
        raise typer.BadParameter(f"no such file {str(file)!r}", param_hint="'FILE'")
    staging = None
    if out is None:
        make_private_dirs(settings.datasets)
        staging = target = Path(tempfile.mkdtemp(prefix=".import-", dir=settings.datasets)) / "dataset"
    else:
        target = out
    if action is None and label is None:
        raise typer.BadParameter("give --label COLUMN (a labeled file) or --action COLUMN (logged bandit data)",
                                 param_hint="'--label'")
    try:
        manifest = import_dataset(file, sys_obj, label=label, unit=unit, time=time_col, out=target, action=action,
                                  position=position, reward=reward, propensity=propensity, decision=decision,
                                  candidates=candidates)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging.parent, ignore_errors=True)
        raise
    path = manifest.path
    if staging is not None:
        final = settings.datasets / manifest.id
        if not final.exists():
            staging.rename(final)
        shutil.rmtree(staging.parent, ignore_errors=True)
        path = final
    typer.echo(json.dumps({"id": manifest.id, "path": str(path), "counts": manifest.counts}, default=str))
