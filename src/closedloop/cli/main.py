"""The ``closedloop`` command line.

::

    closedloop init DIR [--name NAME]                       scaffold a system that decides right away
    closedloop decide --system MOD:ATTR --bundle PATH       JSON lines in, decisions out
    closedloop bundle inspect PATH [--system MOD:ATTR]      the manifest, after verifying it
    closedloop bundle verify PATH [--system MOD:ATTR]       "ok <version>" or the failed check
    closedloop bundle export PATH --system MOD:ATTR --target js --out FILE   the signed client form (clients/js)

Settings (the project home) are read once, here, from ``--home`` / ``CLOSEDLOOP_HOME`` /
``./.closedloop``, and passed down. A :class:`~closedloop.errors.ClosedLoopError` ends a command
with its message on stderr and exit code 1; a bad option value exits 2.

The root options (``--home``, ``--token``) work before or after the subcommand
(:func:`hoist_root_options`); a subcommand's own option of the same name is the subcommand's
(``key trust --home``). Without a terminal, help and tables are :data:`NO_TERMINAL_WIDTH` columns
wide unless ``COLUMNS`` says otherwise (rich's fallback, 80, cuts them).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Annotated, Any

import msgspec
import typer
from typer.core import TyperGroup

from closedloop.cli.console import console
from closedloop.cli.data import dataset_app, outcomes_app, telemetry_app
from closedloop.cli.evaluate import evaluate
from closedloop.cli.export import bundle_export
from closedloop.cli.guardrails import guardrails_app
from closedloop.cli.keys import key_app
from closedloop.cli.loop import loop_app
from closedloop.cli.ope import ope
from closedloop.cli.options import (
    BundleArgument,
    BundleOption,
    JsonOption,
    OptionalSystemOption,
    SystemOption,
    system_from,
)
from closedloop.cli.registry import register as _register_registry
from closedloop.cli.scaffold import init_project, is_system_name
from closedloop.cli.serve import serve
from closedloop.cli.tokens import token_app
from closedloop.cli.train import train
from closedloop.errors import BundleError, ClosedLoopError, ContextError
from closedloop.runtime.bundle import Bundle, bundle_path
from closedloop.runtime.ids import DecisionIds
from closedloop.runtime.runtime import Runtime
from closedloop.settings import ENV_HOME, Settings

__all__ = [
    "NO_TERMINAL_WIDTH", "app", "decide_lines", "hoist_root_options", "main", "no_terminal_columns",
]


#: The width help and tables get when no terminal tells one and COLUMNS is unset (rich's default,
#: 80, cuts tables and wraps help in a log, a pipe or CI).
NO_TERMINAL_WIDTH = 160


class _Group(TyperGroup):
    """The root group: root options anywhere, a width without a terminal, and any command that
    raises a ClosedLoopError ended with its message and exit code 1."""

    def main(self, args: Any = None, *a: Any, **kw: Any) -> Any:
        # Without a terminal rich (help, tables) falls back to 80 columns; give it COLUMNS for this
        # command only (rich, typer's help and click all read it), restored after.
        columns = no_terminal_columns(os.environ, terminal=_has_terminal())
        if columns is None:
            return super().main(args, *a, **kw)
        before = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = columns
        try:
            return super().main(args, *a, **kw)
        finally:
            if before is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = before

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_root_options(self, args))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClosedLoopError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None


# Typer vendors its own click: commands and parameters are recognised by what they have.
def _takes_value(param: Any) -> bool:
    return not getattr(param, "is_flag", False) and not getattr(param, "count", False)


def _options(command: Any) -> dict[str, Any]:
    return {
        name: p
        for p in command.params
        if getattr(p, "param_type_name", None) == "option"
        for name in (*p.opts, *p.secondary_opts)
    }


def hoist_root_options(group: Any, args: list[str]) -> list[str]:
    """``args`` with the root group's options found after the subcommand moved in front of it
    (``closedloop deploy V … --token T`` → ``closedloop --token T deploy V …``), so that root
    options work wherever users put them.

    An option of the subcommand (or of a sub-group on the way) with the same name is the
    subcommand's and stays (``key trust --home``); values of the subcommand's options, and
    everything after ``--``, are never taken for options. Order is kept, so a root option given
    twice takes its last value, as click does. Unknown commands are left for click to refuse.
    """
    root = _options(group)
    command: Any = group
    below: dict[str, Any] = {}  # options of the commands after the root
    out: list[str] = []
    moved: list[str] = []
    at: int | None = None  # where the subcommand's name is in ``out``
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if arg.startswith("-") and len(arg) > 1:
            name, eq, _ = arg.partition("=")
            if at is not None and name in root and name not in below:
                n = 1 if eq or not _takes_value(root[name]) else 2
                if i + n > len(args):
                    raise typer.BadParameter("needs a value. Got none (it ends the command) instead.",
                                             param_hint=f"'{name}'")
                moved.extend(args[i : i + n])
                i += n
                continue
            param = (root if at is None else below).get(name)
            n = 2 if param is not None and _takes_value(param) and not eq else 1
            out.extend(args[i : i + n])
            i += n
            continue
        out.append(arg)
        i += 1
        commands = getattr(command, "commands", None)
        if isinstance(commands, dict):
            sub = commands.get(arg)
            if sub is None:
                return args
            if at is None:
                at = len(out) - 1
            command = sub
            below.update(_options(sub))
    if at is None or not moved:
        return args
    return out[:at] + moved + out[at:]


def no_terminal_columns(environ: Mapping[str, str], *, terminal: bool) -> str | None:
    """The ``COLUMNS`` a command should run with: :data:`NO_TERMINAL_WIDTH` when there is no
    terminal and ``COLUMNS`` is unset, else ``None`` (leave the terminal's, or the user's, width)."""
    if terminal or environ.get("COLUMNS", "").strip():
        return None
    return str(NO_TERMINAL_WIDTH)


def _has_terminal() -> bool:
    """Whether stdin, stdout or stderr is a terminal with a width (where rich looks)."""
    for fd in (0, 1, 2):
        try:
            if os.get_terminal_size(fd).columns > 0:
                return True
        except (OSError, ValueError):
            continue
    return False


app = typer.Typer(
    cls=_Group,
    name="closedloop",
    help="Build, run and grow closed-loop intelligent systems. The options below (--home, --token) may come "
    "before or after the command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
bundle_app = typer.Typer(help="Inspect and verify bundles.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")
bundle_app.command("export")(bundle_export)
app.add_typer(outcomes_app, name="outcomes")
app.add_typer(telemetry_app, name="telemetry")
app.add_typer(dataset_app, name="dataset")
app.add_typer(token_app, name="token")
app.add_typer(key_app, name="key")
app.add_typer(loop_app, name="loop")
app.add_typer(guardrails_app, name="guardrails")
app.command()(train)
app.command()(evaluate)
app.command()(ope)
_register_registry(app)
app.command()(serve)
app.command()(console)

@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            metavar="DIR",
            help="The project home (default: $CLOSEDLOOP_HOME, else ./.closedloop).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="Your credential's token, for commands that change what serves (default: $CLOSEDLOOP_TOKEN).",
        ),
    ] = None,
) -> None:
    """Build, run and grow closed-loop intelligent systems.

    --home and --token may also follow the subcommand (`closedloop deploy V … --token T`).
    """
    ctx.obj = Settings.from_env(home=home, token=token)
    # whether the home was named (not the ./.closedloop default): `init` puts the home there
    ctx.meta[_HOME_GIVEN] = home is not None or bool(os.environ.get(ENV_HOME))


# -- closedloop init ------------------------------------------------------------------------------
_HOME_GIVEN = "closedloop.home_given"


@app.command()
def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A new or empty directory.")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="The system name (default: the directory name, normalized)."),
    ] = None,
) -> None:
    """Scaffold a new system in DIR, ready for `closedloop decide`.

    Writes DIR/system.py (the declaration and its heuristic), DIR/loop.py (its LoopPlan), DIR/README.md (the commands from a first \
decision to a cycle of the loop) and the project home with the heuristic saved as a signed bundle. The home is --home or \
$CLOSEDLOOP_HOME when given, else DIR/.closedloop (the default home of commands run in DIR). DIR must be new or empty.
    """
    if name is not None and not is_system_name(name):
        raise typer.BadParameter(
            f"{name!r} is not a system name: use lower-case letters, digits, '_' or '-', "
            "starting with a letter (at most 63 characters).",
            param_hint="'--name'",
        )
    settings: Settings = ctx.obj
    project = init_project(directory, name, home=settings.home if ctx.meta.get(_HOME_GIVEN) else None)
    typer.echo(f"Created system '{project.name}' in {project.directory}")
    typer.echo(f"  {project.system_file}")
    typer.echo(f"  {project.loop_file}")
    typer.echo(f"  {project.readme}")
    typer.echo(f"  {project.bundle_path}  (heuristic bundle, in the project home {project.settings.home})")
    typer.echo("Try it (see README.md):")
    typer.echo(f"  {project.example_command}")


# -- closedloop decide -----------------------------------------------------------------------------
@app.command()
def decide(
    ctx: typer.Context,
    system: SystemOption,
    bundle: BundleOption,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed the decision ids, for reproducible runs.")
    ] = None,
    log: Annotated[
        bool, typer.Option("--log/--no-log", help="Log every decision to the project home's telemetry.")
    ] = False,
) -> None:
    """Decide for contexts (JSON lines on stdin), writing decisions (JSON lines on stdout).

    A line that is not JSON or not a valid context gives {"line": N, "error": {...}} in its place and the other lines go on; blank \
lines are skipped. Exits 1 (with "decided N, failed M" on stderr) if any line failed, and with --log also if any decision could not \
be logged (e.g. a full disk; the reason on stderr). A ranking system's line is a request with its "candidates"; its line out is \
the ranking (slate, slot_propensities, propensity, scores by candidate id), as the service answers it.
    """
    settings: Settings = ctx.obj
    sys_obj = system_from(system)
    loaded = Bundle.load(bundle_path(bundle, settings.bundles), sys_obj)
    telemetry = None
    if log:
        from closedloop.telemetry import SegmentLog, Telemetry

        telemetry = Telemetry(SegmentLog(settings.home), system=sys_obj, key=settings.telemetry_key).start()
    runtime = Runtime(sys_obj, loaded, ids=DecisionIds(seed), telemetry=telemetry)
    out = typer.get_binary_stream("stdout")
    try:
        decided, failed = decide_lines(
            runtime, typer.get_binary_stream("stdin"), out, flush=out.isatty()
        )
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(1) from None
    finally:
        if telemetry is not None:
            telemetry.close()  # flushes: every decision written out is durable, or counted as not
    lost = 0
    if telemetry is not None:
        stats = telemetry.stats()
        lost = int(stats.get("unlogged_errors", 0)) + int(stats.get("dropped_buffer_full", 0))
        if lost:
            typer.echo(f"Error: telemetry: {lost} of {decided} decisions were not logged "
                       f"({stats.get('last_error') or 'the telemetry buffer was full'}); the decisions on "
                       "stdout stand, their records are missing from the project home.", err=True)
    if failed:
        typer.echo(f"decided {decided}, failed {failed}", err=True)
    if failed or lost:
        raise typer.Exit(1)


def decide_lines(
    runtime: Runtime, lines: Iterable[bytes], out: IO[bytes], *, flush: bool = False
) -> tuple[int, int]:
    """Decide for each JSON line of ``lines`` and write one JSON line per decision (or error) to
    ``out``, in order. Returns (decided, failed). ``flush`` flushes after every line.

    A ranking system's line is a request with its ``"candidates"``; its line out is the ranking as
    the service answers it (:class:`~closedloop.service.ranked.Ranked`: slate, slot propensities,
    propensity, every candidate's score)."""
    decode: Callable[[bytes], Any] = runtime.system.schema.decode_json
    run: Callable[[Any], Any] = runtime.decide
    if runtime.system.candidate_id is not None:  # a ranking system (candidates go with a Ranking experience)
        from closedloop.service.ranked import ranked

        decode = msgspec.json.decode  # the runtime validates the request and its candidates
        run = lambda request: ranked(runtime.decide(request))  # noqa: E731
    encode = msgspec.json.Encoder().encode
    write = out.write
    decided = failed = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = encode(run(decode(line)))
        except ContextError as exc:
            record = encode({"line": n, "error": exc.to_dict()})
            failed += 1
        except msgspec.DecodeError as exc:
            record = encode({"line": n, "error": {"type": "JSONError", "message": str(exc)}})
            failed += 1
        else:
            decided += 1
        write(record + b"\n")
        if flush:
            out.flush()
    out.flush()
    return decided, failed


def _silence_stdout() -> None:
    """After a closed pipe (``… | head``), point stdout at /dev/null so exit is quiet."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
        pass


# -- closedloop bundle inspect / verify -------------------------------------------------------
@bundle_app.command("inspect")
def bundle_inspect(
    ctx: typer.Context,
    path: BundleArgument,
    system: OptionalSystemOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a bundle's checksums (and its fit to --system), then print its manifest summary
    (with --json: the manifest and the verification)."""
    sys_obj = system_from(system) if system is not None else None
    loaded = Bundle.load(bundle_path(path, ctx.obj.bundles), sys_obj)
    if as_json:
        report = {**loaded.manifest, "verified": True, "size_bytes": loaded.size_bytes()}
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    for line in _summary(loaded):
        typer.echo(line)


@bundle_app.command("verify")
def bundle_verify(
    ctx: typer.Context, path: BundleArgument, system: OptionalSystemOption = None
) -> None:
    """Verify a bundle (and its fit to --system): print "ok <version>" (exit 0) or the failed check and why (exit 1)."""
    sys_obj = system_from(system) if system is not None else None
    try:
        loaded = Bundle.load(bundle_path(path, ctx.obj.bundles), sys_obj)
    except BundleError as exc:
        typer.echo(f"failed {exc.check}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok {loaded.version}")


def _summary(bundle: Bundle) -> list[str]:
    m = bundle.manifest
    intel = m["intelligence"]
    thresholds = bundle.thresholds
    files = m["files"]
    lines = [
        f"version         {bundle.version}  (verified)",
        f"path            {bundle.path}",
        f"system          {bundle.system_name}",
        f"schema version  {bundle.schema_version}",
        f"created         {m['created_at']}",
        f"intelligence    {intel['kind']}",
        f"outputs         {', '.join(intel['outputs'])}",
        "thresholds      "
        + (
            "none (the system's own)"
            if thresholds is None
            else ", ".join(f"{a} ≥ {t!r}" for a, t in thresholds.items())
        ),
        f"parent          {bundle.parent or 'none'}",
        f"metrics         {json.dumps(m['metrics'], sort_keys=True) if m['metrics'] else 'none'}",
        f"files           {len(files)}",
    ]
    width = max(len(name) for name in files)
    for name, meta in sorted(files.items()):
        lines.append(f"  {name:<{width}}  sha256 {meta['sha256']}  {meta['size']} bytes")
    lines.append(f"total size      {bundle.size_bytes()} bytes")
    return lines


def main() -> None:
    """The ``closedloop`` console script."""
    app()


if __name__ == "__main__":
    main()
