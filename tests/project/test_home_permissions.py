"""A project home is its owner's alone: data files 0600, folders 0700.

The home holds raw contexts (a segment held a raw URL), outcomes, the registry, datasets and
reports; with the usual umask 0o022 every one of them used to be created world-readable.
Saved bundles are read-only for their owner (0400 files in 0700 folders), the home's signing key
0600 in a 0700 folder.
"""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from closedloop import F, Float, LabelPolicy, OutcomeRule, Str, System, Thresholds
from closedloop.base.files import (
    create_private,
    make_private_dirs,
    open_private_file,
    restrict_tree,
)
from closedloop.runtime.decision import Decision
from closedloop.settings import Settings
from closedloop.telemetry import SegmentLog, Telemetry, TelemetryStore
from support.pages import import_pages

DAY = 86_400 * 10**9
T0 = 20_718 * DAY


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _open_to_others(home: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every file or folder under ``home`` (and ``home``) that group or others may read, write or
    enter, walked with ``os.lstat`` (links are not followed)."""
    bad = []
    for root, dirs, files in os.walk(home):
        if Path(root) == home:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in [*dirs, *files]:
            p = Path(root, name)
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                continue
            if mode & 0o077:
                bad.append(f"{p.relative_to(home)} {stat.filemode(mode)}")
    if os.lstat(home).st_mode & 0o077:
        bad.append(f". {stat.filemode(os.lstat(home).st_mode)}")
    return sorted(bad)


def _tiny() -> System:
    return System(
        "tiny", context=[Str("user"), Str("url", default=""), Float("x", default=0.0)], unit="user",
        features={"f": F.col("x") * 2.0}, actions=["allow", "block"],
        experience=Thresholds("p", {"block": 0.5}, otherwise="allow"), labels=("ok", "bad"),
        label_policy=LabelPolicy(timedelta(days=1), [OutcomeRule("reported", label="bad", aggregate="any")],
                                 default="ok"),
    )


def _log(home: Path, system: System, start: int, n: int) -> None:
    with Telemetry(SegmentLog(home), system=system) as tel:
        for i in range(start, start + n):
            c = system.schema.validate({"user": f"u{i % 7}", "url": f"https://example.com/secret/{i}", "x": float(i)})
            d = Decision(f"{i:032x}", "tiny", f"u{i % 7}", T0 + i, "v1", {"p": (i % 10) / 10},
                         "block" if i % 10 >= 5 else "allow", 1.0, "threshold")
            tel.log_decision(d, c, system.features.one(c))
            if i % 3 == 0:
                tel.log_outcome(f"{i:032x}", kind="reported", event_ns=T0 + i + 5, source="analyst")
        tel.flush()


def test_a_home_after_a_realistic_flow_has_nothing_readable_by_others(tmp_path, umask_022, phishing):
    from examples.phishing.data import generate

    from closedloop.datasets import build_dataset
    from closedloop.evaluation import write_html
    from closedloop.evaluation.report import evaluate, write_report
    from closedloop.orchestration.alerts import Alert, JsonLinesAlertSink
    from closedloop.orchestration.goals import SeriesStore
    from closedloop.registry import Registry
    from closedloop.training import train

    home = tmp_path / "home"  # created by closedloop itself, under the umask
    settings = Settings(home=home)
    system = _tiny()

    # telemetry: logged and committed, compacted, then more logged (live segments stay)
    _log(home, system, 0, 60)
    store = TelemetryStore(home)
    assert store.compact()["decisions"] == 60
    _log(home, system, 60, 20)
    assert list((home / "telemetry" / "segments" / "decisions").glob("*.seg"))

    # a dataset built from telemetry, another imported from a file outside the home
    build_dataset(system, decision_files=store.decision_files(), outcome_files=store.outcome_files(),
                  since_ns=T0, until_ns=T0 + DAY, cutoff_ns=T0 + 2 * DAY, out=settings.datasets / "joined")
    cols, labels = generate(600, 3, phish_rate=0.3)
    ds = import_pages(phishing, cols, labels, tmp_path, out=settings.datasets / "pages")

    # a report, as JSON and HTML
    bundle = train(phishing, ds.path, model="heuristic",
                   params={"rules": [["ip_in_url", ">", 0.5, 0.5]]}).bundle
    rep = evaluate(phishing, [bundle], ds.path, bootstrap=0)
    write_report(rep, home / "reports" / "r.json")
    write_html(rep, home / "reports" / "r.html")

    # goal series and alert log (with their lock files)
    SeriesStore(home / "goals" / "series.jsonl").append(
        [{"name": "share", "window": "2026-09-22", "start_ns": T0, "value": 0.5}])
    JsonLinesAlertSink(home / "orchestration" / "alerts.jsonl").send(
        [Alert("goal", "share", 0.5, 0.4, "share above target")])

    # the registry, open: its -wal and -shm files exist while it is; a bundle saved signed by
    # the home's key (both created here) and registered into the store
    with Registry.from_settings(settings).open() as reg:
        reg.add_bundle(bundle.signed(reg.signing_key(home)), actor="alice")
        assert (home / "bundles" / bundle.version / "signature.json").is_file()
        assert (home / "registry.sqlite-wal").exists() and (home / "registry.sqlite-shm").exists()
        offenders = _open_to_others(home)
    assert offenders == [], "\n".join(offenders)
    assert (home / "registry.sqlite").stat().st_mode & 0o777 == 0o600
    assert (home / "telemetry").stat().st_mode & 0o777 == 0o700


def test_the_helpers_give_exact_modes_whatever_the_umask(tmp_path):
    old = os.umask(0o277)  # takes even the owner's write bit
    try:
        d = make_private_dirs(tmp_path / "a" / "b")
        with open_private_file(d / "f", "wb") as fh:
            fh.write(b"x")
        create_private(d / "g")
        create_private(d / "g")  # exists: contents kept, mode kept
    finally:
        os.umask(old)
    assert [os.stat(p).st_mode & 0o777 for p in (tmp_path / "a", d, d / "f", d / "g")] == [0o700, 0o700, 0o600, 0o600]
    (d / "h").write_bytes(b"y")
    os.chmod(d / "h", 0o644)
    os.chmod(d, 0o755)
    restrict_tree(tmp_path / "a")
    assert os.stat(d / "h").st_mode & 0o777 == 0o600 and os.stat(d).st_mode & 0o777 == 0o700
    with pytest.raises(FileExistsError):
        make_private_dirs(d / "f")


def test_a_file_of_an_older_home_is_tightened_when_reopened(tmp_path):
    p = tmp_path / "lock"
    p.write_bytes(b"")
    os.chmod(p, 0o644)
    create_private(p)
    assert p.stat().st_mode & 0o777 == 0o600
