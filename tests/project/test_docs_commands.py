"""Every ```sh command of README.md and docs/*.md runs, as written, against a scratch home.

Placeholders (`<id>`, `ID`, `<candidate>`, `…`, the token printed) are filled in from fixtures: a
scaffolded system with telemetry, a dataset, a trained candidate and a deployed production, or the
phishing example with a corpus, a dataset and bundles. Each block runs in a fresh copy of its
workspace, in order; `closedloop serve` starts a real server on 127.0.0.1. A line that cannot run
in a test is in SKIP with the reason; a line neither run nor skipped fails the test, and so does a
SKIP entry no document has any more.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from closedloop.cli.main import app
from support.commands import command_lines, forget_modules, session, sh_blocks

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: (document, the command line as written) → why it does not run in this test.
SKIP: dict[tuple[str, str], str] = {
    # make targets: the set-up, the 4-minute demo, the whole suite and the linters are not closedloop commands
    ("README.md", "make demo    # creates .venv, installs closedloop, runs the 60-day phishing loop demo (no servers)"):
        "a 4-minute run of the demo (tests/examples/test_demo.py covers the demo)",
    ("README.md", "make test    # the same set-up, then the whole test suite"): "the whole test suite",
    ("README.md", "make lint    # ruff, then mypy over src/closedloop (docs/typing.md)"): "the linters, not a command",
    ("demo.md", "make demo                                            # set-up, then one seed (seed 1)"):
        "a 4-minute run of the demo (tests/examples/test_demo.py covers the demo)",
    ("demo.md", ".venv/bin/python -m examples.phishing.demo --seeds 3 # seeds 1, 2, 3 one after another"):
        "three 4-minute runs of the demo",
    ("demo.md", ".venv/bin/python -m examples.phishing.demo --help    # days, visits, fault day, homes, report path"):
        "not a closedloop command (the demo's own options; tests/examples/test_demo.py runs the demo)",
    # the operations console: servers a browser talks to (tests/console drive the same app with a test client)
    ("README.md", "closedloop console --system …                       # the operations console: http://127.0.0.1:8470/"):
        "serves the console until stopped (tests/console run create_console_app, the app it serves)",
    ("console.md", "closedloop console --system examples.phishing.system:phishing            # http://127.0.0.1:8470/"):
        "serves the console until stopped (tests/console run create_console_app, the app it serves)",
    ("console.md", "closedloop serve --system examples.phishing.system:phishing --console    # the service, and the console at /console"):
        "serves until stopped (tests/console/test_console_overview.py mounts the console on the service app as --console does)",
    # several hosts: servers the line names (tests/service/test_cluster*.py start them for real)
    ("README.md", "closedloop dataset build --system … --engine spark                          # the label join on Spark"):
        "starts a JVM for Spark (tests/datasets/test_dataset_spark.py builds through `dataset build --engine spark`)",
    ("README.md", "closedloop serve --system … --redis-url redis://… --telemetry-url nats://…  # one of several replicas"):
        "needs a Redis and a NATS server (tests/support/cluster.py starts both and replicas with these options)",
    ("README.md", "closedloop telemetry collect --url nats://… --system phishing               # the log into the lake"):
        "runs until stopped against a NATS server (tests/telemetry/test_collector.py runs it as processes)",
    # runs forever by design
    ("orchestration.md", "closedloop loop run --plan examples.phishing.loop:plan --every 1h  # a cycle every hour"):
        "runs a cycle every hour until stopped (--once, in the same block, runs)",
}


@dataclass
class Workspace:
    path: Path
    token: str
    subs: dict[str, str]


def _invoke(cwd: Path, args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        r = CliRunner().invoke(app, args, input=stdin, env={"CLOSEDLOOP_HOME": "", "CLOSEDLOOP_TOKEN": "", **env})
    forget_modules()
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.stdout


def _shop_contexts(n: int, seed: int) -> tuple[list[dict], list[int]]:
    """Requests whose badness the heuristic's rules mostly miss (an unknown country is what
    matters), so that a trained candidate beats it at the gate."""
    rng = random.Random(seed)
    rows, bad = [], []
    for i in range(n):
        unknown = rng.random() < 0.25
        rows.append({"user_id": f"u{i}", "amount": rng.uniform(5, 2000), "account_age_days": rng.randint(0, 900),
                     "new_device": rng.random() < 0.5, "country": "" if unknown else "US",
                     "channel": rng.choice(["web", "app", "api"])})
        bad.append(int(unknown and rng.random() < 0.9))
    return rows, bad


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A scaffolded system (`system:system`): decisions and outcomes logged, a dataset, a trained
    candidate, the heuristic in production, an admin token; outcomes.jsonl and corpus.csv."""
    ws = tmp_path_factory.mktemp("shop") / "ws"
    _invoke(ws.parent, ["init", "ws", "--name", "shop"], {})
    (heuristic,) = [p.name for p in (ws / ".closedloop" / "bundles").iterdir()]
    token = _invoke(ws, ["token", "add", "fixture", "--role", "admin"], {}).strip()
    env = {"CLOSEDLOOP_TOKEN": token}
    rows, bad = _shop_contexts(600, 3)
    _invoke(ws, ["decide", "--system", "system:system", "--bundle", heuristic, "--log"], env,
            "\n".join(json.dumps(r) for r in rows) + "\n")
    outcomes = "\n".join(json.dumps({"unit": r["user_id"], "kind": "chargeback", "source": "bank"})
                         for r, b in zip(rows, bad, strict=True) if b) + "\n"
    (ws / "outcomes.jsonl").write_text(outcomes)
    _invoke(ws, ["outcomes", "ingest", "outcomes.jsonl", "--system", "system:system"], env)
    today = dt.datetime.now(dt.UTC).date()
    built = json.loads(_invoke(ws, ["dataset", "build", "--system", "system:system", "--since", str(today),
                                    "--until", str(today + dt.timedelta(days=1)),
                                    "--cutoff", str(today + dt.timedelta(days=31))], env))
    candidate = json.loads(_invoke(ws, ["train", "--system", "system:system", "--dataset", built["id"],
                                        "--model", "logistic", "--thresholds", "cost"], env))["version"]
    shutil.copytree(ws, ws.parent / "fresh", symlinks=True)  # nothing deployed yet
    _invoke(ws, ["evaluate", "--system", "system:system", "--bundle", heuristic, "--bundle", candidate,
                 "--dataset", built["id"], "--register", "--bootstrap", "10"], env)
    _invoke(ws, ["deploy", heuristic, "--system", "system:system", "--reason", "the heuristic starts"], env)
    corpus = {k: [r[k] for r in rows] for k in rows[0]}
    corpus["is_phish"] = bad
    pcsv.write_csv(pa.table(corpus), ws / "corpus.csv")
    subs = {"<id>": built["id"], "<deployed>": heuristic, "<production>": heuristic, "<candidate>": candidate,
            "<version>": heuristic, "<bundle>": heuristic, "PATH": f".closedloop/bundles/{heuristic}"}
    return Workspace(ws, token, subs)


@pytest.fixture(scope="module")
def shop_fresh(shop: Workspace) -> Workspace:
    """The same scaffolded system before anything was deployed."""
    return Workspace(shop.path.parent / "fresh", shop.token, shop.subs)


@pytest.fixture(scope="module")
def phishing(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The phishing example: pages.parquet / pages.csv (label / is_phish), an imported dataset, the
    heuristic (signed, in production) and a trained candidate, an admin token."""
    from examples.phishing.data import generate
    from examples.phishing.heuristic import heuristic_intelligence
    from examples.phishing.system import phishing as system

    from closedloop import Bundle
    from closedloop.registry import Registry
    from closedloop.settings import Settings

    ws = tmp_path_factory.mktemp("phishing") / "ws"
    ws.mkdir()
    cols, labels = generate(1500, 5, phish_rate=0.3)
    data = {k: (pa.array(v) if isinstance(v, np.ndarray) else pa.array(list(v))) for k, v in cols.items()}
    pq.write_table(pa.table({**data, "label": pa.array(labels.tolist())}), ws / "pages.parquet")
    pcsv.write_csv(pa.table({**data, "is_phish": pa.array(labels.tolist())}), ws / "pages.csv")
    settings = Settings(home=ws / ".closedloop")
    with Registry.from_settings(settings) as reg:
        key = reg.signing_key(settings.home)
    heuristic = Bundle.build(system, heuristic_intelligence())
    heuristic.save(settings.bundles / heuristic.version, key=key)
    token = _invoke(ws, ["token", "add", "fixture", "--role", "admin"], {}).strip()
    env = {"CLOSEDLOOP_TOKEN": token}
    sys_ = "examples.phishing.system:phishing"
    ds = json.loads(_invoke(ws, ["dataset", "import", "pages.parquet", "--system", sys_, "--label", "label"], env))
    candidate = json.loads(_invoke(ws, ["train", "--system", sys_, "--dataset", ds["id"], "--model", "logistic"],
                                   env))["version"]
    _invoke(ws, ["evaluate", "--system", sys_, "--bundle", heuristic.version, "--bundle", candidate,
                 "--dataset", ds["id"], "--register", "--bootstrap", "10"], env)
    _invoke(ws, ["deploy", heuristic.version, "--system", sys_, "--reason", "the heuristic starts"], env)
    subs = {"<id>": ds["id"], "ID": ds["id"], "DATASET_ID": ds["id"], "HEURISTIC": heuristic.version,
            "DEPLOYED": heuristic.version, "CANDIDATE": candidate, "VERSION": candidate, "<candidate>": candidate,
            "<deployed>": heuristic.version, "<v>": heuristic.version, "--system …": f"--system {sys_}",
            "mysystem:system": sys_}
    return Workspace(ws, token, subs)


#: Which workspace a block runs in: the first rule whose text the block contains (else the shop).
WORKSPACE = [
    ("examples.phishing", "phishing"),     # the phishing example's system, plan and corpus
    ("mysystem:system", "phishing"),       # docs/evaluation.md: a corpus with an is_phish column
    ('--reason "first model"', "shop_fresh"),  # docs/registry.md: the first production
]


#: Blocks whose commands after the first are alternatives ("1. … 2. or … 3. or …"): each runs on the
#: workspace as the first command left it.
ALTERNATIVES = ['--reason "first model"']


def _blocks() -> list[tuple[str, int, str]]:
    return [(doc.name, line, body) for doc in DOCS for line, body in sh_blocks(doc.read_text())]


def test_skip_entries_are_still_in_the_docs() -> None:
    lines = {(doc, raw.strip()) for doc, _, body in _blocks() for raw in body.splitlines()}
    assert not [k for k in SKIP if k not in lines], "SKIP names lines no document has: remove them"


def _fill(line: str, ws: Workspace, extra: dict[str, str]) -> str:
    subs = {**ws.subs, **extra}
    words = sorted((k for k in subs if re.fullmatch(r"[A-Z_]+", k)), key=len, reverse=True)
    for k in sorted((k for k in subs if k not in words), key=len, reverse=True):
        line = line.replace(k, subs[k])
    for k in words:
        line = re.sub(rf"(?<![\w./-]){k}(?![\w.-])", subs[k], line)
    line = line.replace("--token …", f"--token {ws.token}").replace('"…"', '"a reason"')
    return line.replace("<the token printed>", extra.get("<the token printed>", ws.token))


@pytest.mark.parametrize(("doc", "line", "body"), _blocks(), ids=[f"{d}:{n}" for d, n, _ in _blocks()])
def test_doc_block_runs(doc: str, line: int, body: str, shop: Workspace, shop_fresh: Workspace,
                        phishing: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = next((ws for text, ws in WORKSPACE if text in body), "shop")
    src = {"phishing": phishing, "shop": shop, "shop_fresh": shop_fresh}[kind]
    ws = tmp_path / "ws"
    shutil.copytree(src.path, ws, symlinks=True)
    extra: dict[str, str] = {}
    # commands name `examples.phishing…` as from the repository's root; a server imports it there too
    with session(ws, monkeypatch, env={"CLOSEDLOOP_TOKEN": src.token, "PYTHONPATH": str(ROOT)}) as s:

        def after(cmd: str, out: str) -> None:
            if cmd.startswith("closedloop token add"):
                extra["<the token printed>"] = out.strip()
            m = re.match(r"closedloop init (\S+)", cmd)
            if m:
                (v,) = [p.name for p in (s.cwd / m.group(1) / ".closedloop" / "bundles").iterdir()]
                extra["<version>"] = v
                extra["PATH"] = f".closedloop/bundles/{v}"
            if cmd.startswith("closedloop evaluate"):
                extra["<file>"] = Path(json.loads(out)["path"]).stem
            if cmd.startswith("closedloop key show"):
                from closedloop.runtime.signing import SigningKey

                other = SigningKey.generate()
                extra["<PUBLIC_KEY>"] = other.public_key
                extra["ed25519:0123456789abcdef"] = other.key_id

        s.after = after
        alternatives = any(text in body for text in ALTERNATIVES)
        ran = skipped = 0
        for cmd in command_lines(body):  # continued lines joined
            if (doc, cmd) in SKIP:
                skipped += 1
                continue
            if alternatives and ran == 1:
                shutil.copytree(ws, tmp_path / "after-first", symlinks=True)
            if alternatives and ran >= 1:
                shutil.rmtree(ws)
                shutil.copytree(tmp_path / "after-first", ws, symlinks=True)
            s.run(_fill(cmd, src, extra))
            ran += 1
        assert ran or skipped, f"{doc}:{line}: a block with nothing run and nothing skipped"
