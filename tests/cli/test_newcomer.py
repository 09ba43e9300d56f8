"""A newcomer's first hour: `closedloop init`, then the scaffold's README, command by command —
decide, serve, outcomes over HTTP, dataset, train, evaluate, deploy, a cycle of the loop."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from pathlib import Path

import httpx

from support.commands import Session, command_lines, session, sh_blocks

ROOT = Path(__file__).resolve().parents[2]


def _traffic(s: Session, app_token: str, n: int = 300) -> None:
    """What an application sends in its first hour: decisions, then chargebacks for most risky ones."""
    rng = random.Random(7)
    contexts = []
    for i in range(n):
        risky = rng.random() < 0.3
        contexts.append({
            "user_id": f"u{i}", "amount": rng.uniform(600, 2000) if risky else rng.uniform(5, 200),
            "account_age_days": rng.randint(0, 20) if risky else rng.randint(100, 900),
            "new_device": risky and rng.random() < 0.7, "country": "" if risky and rng.random() < 0.5 else "US",
            "channel": "api" if risky else "web",
        })
    h = {"Authorization": f"Bearer {app_token}"}
    r = httpx.post(f"{s.base}/v1/decide", json=contexts, headers=h)
    assert r.status_code == 200 and len(r.json()["decisions"]) == n, r.text[:300]
    outcomes = [{"unit": c["user_id"], "kind": "chargeback", "source": "bank"}
                for c in contexts if c["amount"] > 600 and rng.random() < 0.8]
    r = httpx.post(f"{s.base}/v1/outcomes", json=outcomes, headers=h)
    assert r.status_code == 202 and r.json()["accepted"] == len(outcomes), r.text[:300]


def test_a_fresh_scaffold_runs_its_readme_from_decide_to_a_loop_cycle(tmp_path: Path, monkeypatch) -> None:
    with session(tmp_path, monkeypatch) as s:
        # the main README: init, then the first decision
        main = (ROOT / "README.md").read_text()
        (block,) = [b for _, b in sh_blocks(main) if "closedloop init myproject" in b]
        lines = command_lines(block)
        s.run(lines[0])
        project = tmp_path / "myproject"
        home = project / ".closedloop"
        (version,) = [p.name for p in (home / "bundles").iterdir()]
        s.subs["<version>"] = version
        decision = json.loads(s.run(lines[1]))
        assert decision["bundle_version"] == version and s.cwd == project

        # the scaffold's README, every block in order
        today = dt.datetime.now(dt.UTC).date()
        s.subs.update({"<today>": today.isoformat(), "<tomorrow>": (today + dt.timedelta(days=1)).isoformat(),
                       "<31 days from now>": (today + dt.timedelta(days=31)).isoformat()})

        def after(line: str, out: str) -> None:
            if line.startswith("closedloop token add app"):
                s.subs["<the app token>"] = out.strip()
            elif line.startswith("closedloop token add ops"):
                s.subs["<the ops token>"] = out.strip()
            elif line.startswith("closedloop dataset build"):
                s.subs["<dataset id>"] = json.loads(out)["id"]
            elif line.startswith("closedloop train"):
                s.subs["<candidate>"] = json.loads(out)["version"]

        s.after = after
        s.cwd = tmp_path  # a new terminal, where init ran: the README's first command goes to the project
        readme = (project / "README.md").read_text()
        blocks = sh_blocks(readme)
        assert len(blocks) == 6, [b for _, b in blocks]
        outputs: dict[str, str] = {}
        for _, block in blocks:
            for line in command_lines(block):
                if line.startswith("closedloop dataset build"):
                    _traffic(s, s.subs["<the app token>"])  # more than the README's one decision
                outputs[line.split(" --")[0]] = s.run(line)
        assert s.env["CLOSEDLOOP_TOKEN"] == s.subs["<the ops token>"]
        cycle = json.loads(outputs["closedloop loop run"])
        assert cycle["outcome"] == "not_enough_labels"  # a cycle today: the label windows are open
        assert "triage" not in readme and "production" in outputs["closedloop status"]
        assert s.subs["<candidate>"] in outputs["closedloop status"]  # the shadow
        # one home: bundles, registry, telemetry, credentials, datasets, reports
        assert {p.name for p in home.iterdir()} >= {"bundles", "registry.sqlite", "telemetry", "credentials.json",
                                                    "datasets", "reports", "keys"}
        assert not (tmp_path / ".closedloop").exists()


def test_init_honours_the_home_the_other_commands_use(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "elsewhere"
    with session(tmp_path, monkeypatch, env={"CLOSEDLOOP_HOME": str(home)}) as s:
        s.run("closedloop init tickets")
        project = tmp_path / "tickets"
        assert not (project / ".closedloop").exists()
        (version,) = [p.name for p in (home / "bundles").iterdir()]
        readme = (project / "README.md").read_text()
        assert f"export CLOSEDLOOP_HOME={home}" in readme and ".closedloop/bundles" not in readme
        blocks = sh_blocks(readme)
        s.run(command_lines(blocks[0][1])[0])  # export CLOSEDLOOP_HOME=…
        for line in command_lines(blocks[1][1]) + command_lines(blocks[2][1]):  # decide, bundle verify/inspect
            s.run(line)
        # `python system.py` saves into the same home, signed: nothing new for the same rules
        out = re.sub(r"\s+", " ", (project / "system.py").read_text())
        assert f"or '{home}'" in out
    # --home after the subcommand names the home too
    with session(tmp_path, monkeypatch) as s:
        s.run(f"closedloop init other --home {tmp_path / 'h2'}")
        assert (tmp_path / "h2" / "bundles").is_dir() and (tmp_path / "h2" / "registry.sqlite").exists()
