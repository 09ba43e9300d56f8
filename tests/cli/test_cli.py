"""The `closedloop` CLI: init → decide end to end, bundle inspect/verify, settings, bad input."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from closedloop.cli.main import app
from closedloop.cli.scaffold import EXAMPLE_CONTEXT, system_name_for
from closedloop.settings import Settings

runner = CliRunner()


def good(user: str, amount: float = 10.0, **extra: object) -> str:
    """A valid context of an old account in a known country (low risk unless `extra` says so)."""
    return json.dumps(
        {"user_id": user, "amount": amount, "account_age_days": 400, "country": "US", **extra}
    )


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch):
    """`--system system:system` imports a module named `system` from the working directory;
    forget it (and sys.path additions) between tests, whose projects live in different dirs."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "system" or m.startswith("_closedloop_system_")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m == "system" or m.startswith("_closedloop_system_")]:
        del sys.modules[name]


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_imports: None
) -> dict[str, object]:
    """A freshly scaffolded project; the working directory is the project directory."""
    directory = tmp_path / "Demo Fraud"
    result = runner.invoke(app, ["init", str(directory)])
    assert result.exit_code == 0, result.output
    bundles = list((directory / ".closedloop" / "bundles").iterdir())
    assert len(bundles) == 1
    monkeypatch.chdir(directory)
    return {
        "dir": directory,
        "version": bundles[0].name,
        "bundle": bundles[0],
        "out": result.stdout,
    }


def decide(project: dict[str, object], lines: list[str], *extra: str):
    args = ["decide", "--system", "system:system", "--bundle", str(project["bundle"]), *extra]
    return runner.invoke(app, args, input="\n".join(lines) + "\n")


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def tamper(path: Path) -> None:
    path.chmod(0o644)  # bundle files are saved read-only
    data = bytearray(path.read_bytes())
    data[data.index(b"0.3")] = ord("9")  # a rule's points, same length: only the checksum notices
    path.write_bytes(bytes(data))


# -- init ---------------------------------------------------------------------------------------
def test_init_scaffolds_a_system_its_home_and_a_bundle(project: dict[str, object]) -> None:
    directory = project["dir"]
    version = project["version"]
    assert isinstance(directory, Path)
    assert version.startswith("demo_fraud-")
    assert (directory / "system.py").is_file()
    assert (project["bundle"] / "manifest.json").is_file()
    readme = (directory / "README.md").read_text()
    assert f"--bundle .closedloop/bundles/{version}" in readme
    assert "closedloop decide --system system:system" in readme
    assert json.dumps(EXAMPLE_CONTEXT) in readme
    (command,) = [line for line in readme.splitlines() if line.startswith("cd ")]
    assert command in project["out"]  # init prints the README's command too


def test_init_creates_the_homes_signing_key_and_signs_the_bundle(project: dict[str, object]) -> None:
    import stat

    home = project["dir"] / ".closedloop"
    key = home / "keys" / "bundle-signing.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    shown = json.loads(runner.invoke(app, ["--home", str(home), "key", "show"]).stdout)
    assert shown["created"] is False
    sig = json.loads((project["bundle"] / "signature.json").read_text())
    assert sig["key_id"] == shown["key_id"]
    listed = runner.invoke(app, ["--home", str(home), "key", "list"]).stdout.splitlines()
    assert [json.loads(line)["key_id"] for line in listed] == [shown["key_id"]]  # the home's registry trusts it


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 1
    assert "not empty" in result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    result = runner.invoke(app, ["init", str(tmp_path / "f")])
    assert result.exit_code == 1
    assert "it is a file" in result.stderr


def test_init_into_an_existing_empty_directory_with_a_name(
    tmp_path: Path, clean_imports: None
) -> None:
    result = runner.invoke(app, ["init", str(tmp_path), "--name", "spam-filter"])
    assert result.exit_code == 0, result.output
    (bundle,) = (tmp_path / ".closedloop" / "bundles").iterdir()
    assert bundle.name.startswith("spam-filter-")
    assert 'System(\n    "spam-filter"' in (tmp_path / "system.py").read_text()


def test_init_rejects_an_invalid_name(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(tmp_path / "x"), "--name", "Bad Name"])
    assert result.exit_code == 2
    assert "Bad Name" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("dirname", "expected"),
    [
        ("My Fraud-Check 2", "my_fraud-check_2"),
        ("2024_spam", "spam"),
        ("!!!", "system"),
        ("ok", "ok"),
    ],
)
def test_system_name_for_normalizes_the_directory_name(dirname: str, expected: str) -> None:
    assert system_name_for(Path("/somewhere") / dirname) == expected


# -- decide -------------------------------------------------------------------------------------
def test_decide_writes_one_decision_per_line(project: dict[str, object]) -> None:
    result = decide(
        project,
        [
            good("a"),
            "",
            json.dumps(EXAMPLE_CONTEXT),
            good("c", 600.0, channel="api", new_device=True),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = records(result.stdout)
    assert [d["unit"] for d in out] == ["a", "u-1", "c"]
    assert [d["action"] for d in out] == ["allow", "block", "review"]
    assert all(d["bundle_version"] == project["version"] for d in out)
    assert all(d["system"] == "demo_fraud" and d["propensity"] == 1.0 for d in out)
    assert len({d["decision_id"] for d in out}) == 3


def test_decide_reports_bad_lines_in_place_and_goes_on(project: dict[str, object]) -> None:
    lines = [good("a"), good("b"), "{not json", good("d", -5.0), "[1, 2]", "", good("g")]
    result = decide(project, lines)
    assert result.exit_code == 1
    out = records(result.stdout)
    assert [d.get("unit") for d in out] == ["a", "b", None, None, None, "g"]
    assert out[2] == {
        "line": 3,
        "error": {"type": "JSONError", "message": out[2]["error"]["message"]},
    }
    assert "malformed" in out[2]["error"]["message"]
    assert out[3]["line"] == 4
    assert out[3]["error"] == {
        "type": "ContextError",
        "field": "amount",
        "rule": "a number ≥ 0",
        "value": -5.0,
        "message": "Context field 'amount' must be a number ≥ 0. Got -5.0 instead.",
    }
    assert out[4]["line"] == 5 and out[4]["error"]["field"] == "<context>"
    ids = [d["decision_id"] for d in out if "decision_id" in d]
    assert len(ids) == len(set(ids)) == 3
    assert result.stderr.strip() == "decided 3, failed 3"


def test_decide_seed_makes_ids_reproducible(project: dict[str, object]) -> None:
    lines = [good(f"u{i}") for i in range(5)]

    def counters(*extra: str) -> list[str]:
        result = decide(project, lines, *extra)
        assert result.exit_code == 0, result.output
        return [d["decision_id"][12:] for d in records(result.stdout)]  # drop the ms timestamp

    assert counters("--seed", "7") == counters("--seed", "7")
    assert counters("--seed", "7") != counters("--seed", "8")


def test_decide_accepts_a_file_spec_and_a_version_in_the_home(
    project: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = project["dir"]
    monkeypatch.chdir(tmp_path)
    args = [
        "--home",
        str(directory / ".closedloop"),
        "decide",
        "--system",
        f"{directory}/system.py:system",
        "--bundle",
        str(project["version"]),
    ]
    result = runner.invoke(app, args, input=good("a") + "\n")
    assert result.exit_code == 0, result.output
    assert records(result.stdout)[0]["bundle_version"] == project["version"]


def test_decide_with_a_missing_bundle_is_a_clean_error(project: dict[str, object]) -> None:
    result = runner.invoke(
        app, ["decide", "--system", "system:system", "--bundle", "nowhere"], input=""
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Bundle check 'path' failed for nowhere")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("system", "expected 'module:attr'"),
        ("nosuchmod_x:system", "no module named 'nosuchmod_x'"),
        ("system:nope", "has no attribute 'nope'"),
        ("system:heuristic", "is a function, not a"),
        ("gone.py:system", "no such file"),
    ],
)
def test_bad_system_spec_names_the_value_and_exits_2(
    project: dict[str, object], spec: str, why: str
) -> None:
    result = runner.invoke(
        app, ["decide", "--system", spec, "--bundle", str(project["bundle"])], input=""
    )
    assert result.exit_code == 2
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())  # unwrap rich's error panel
    assert "--system" in text
    assert repr(spec) in text
    assert why in text


def test_a_system_module_that_raises_a_closedloop_error_is_a_clean_error(
    project: dict[str, object],
) -> None:
    Path("broken.py").write_text(
        "from closedloop import System\nsystem = System('Bad', context=[], unit='u', features={}, actions=[], experience=None)\n"
    )
    result = runner.invoke(
        app, ["decide", "--system", "broken:system", "--bundle", str(project["bundle"])], input=""
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: The 'name' of a System must be lower-case")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("tty", [True, False])
def test_decide_lines_flushes_per_line_only_for_a_tty(
    project: dict[str, object], tty: bool
) -> None:
    from closedloop import Bundle, Runtime
    from closedloop.cli.main import decide_lines
    from closedloop.system.loading import load_system

    class Out(io.BytesIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    system = load_system("system:system")
    runtime = Runtime(system, Bundle.load(project["bundle"], system))
    out = Out()
    lines = [(good(f"u{i}") + "\n").encode() for i in range(4)] + [b"\n", b"oops\n"]
    assert decide_lines(runtime, lines, out, flush=tty) == (4, 1)
    assert out.flushes == (5 + 1 if tty else 1)
    assert len(out.getvalue().splitlines()) == 5


# -- bundle verify / inspect --------------------------------------------------------------------
def test_verify_ok(project: dict[str, object]) -> None:
    result = runner.invoke(
        app, ["bundle", "verify", str(project["bundle"]), "--system", "system:system"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok {project['version']}\n"


def test_verify_names_the_failed_check_of_a_tampered_bundle(project: dict[str, object]) -> None:
    tamper(project["bundle"] / "intelligence.json")
    result = runner.invoke(app, ["bundle", "verify", str(project["bundle"])])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("failed checksum: Bundle check 'checksum' failed")


def test_verify_refuses_a_bundle_of_another_system(
    project: dict[str, object], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    assert runner.invoke(app, ["init", str(other)]).exit_code == 0
    (bundle,) = (other / ".closedloop" / "bundles").iterdir()
    result = runner.invoke(app, ["bundle", "verify", str(bundle), "--system", "system:system"])
    assert result.exit_code == 1
    assert result.stderr.startswith("failed system:")
    assert "'other'" in result.stderr


def test_inspect_json_is_the_verified_manifest(project: dict[str, object]) -> None:
    result = runner.invoke(app, ["bundle", "inspect", str(project["bundle"]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = json.loads((project["bundle"] / "manifest.json").read_text())
    assert report == {**manifest, "verified": True, "size_bytes": report["size_bytes"]}
    assert report["size_bytes"] == (project["bundle"] / "intelligence.json").stat().st_size
    assert report["version"] == project["version"]
    assert report["intelligence"]["kind"] == "scoring_rules"


def test_inspect_summary_lists_files_with_checksums(project: dict[str, object]) -> None:
    result = runner.invoke(
        app, ["bundle", "inspect", str(project["version"])]
    )  # found in ./.closedloop
    assert result.exit_code == 0, result.output
    manifest = json.loads((project["bundle"] / "manifest.json").read_text())
    sha = manifest["files"]["intelligence.json"]["sha256"]
    assert f"version         {project['version']}  (verified)" in result.stdout
    assert "intelligence    scoring_rules" in result.stdout
    assert "outputs         risk" in result.stdout
    assert f"sha256 {sha}" in result.stdout
    assert "total size" in result.stdout


def test_inspect_of_a_tampered_bundle_fails_with_the_bundle_error(
    project: dict[str, object],
) -> None:
    tamper(project["bundle"] / "intelligence.json")
    result = runner.invoke(app, ["bundle", "inspect", str(project["bundle"]), "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Bundle check 'checksum' failed" in result.stderr


def test_home_comes_from_the_environment(
    project: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"CLOSEDLOOP_HOME": str(project["dir"] / ".closedloop")}
    result = runner.invoke(app, ["bundle", "verify", str(project["version"])], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["bundle", "verify", str(project["version"])], env={"CLOSEDLOOP_HOME": None}
    )
    assert result.exit_code == 1
    assert "failed path" in result.stderr


# -- settings -----------------------------------------------------------------------------------
def test_settings_precedence_option_then_environment_then_default() -> None:
    env = {"CLOSEDLOOP_HOME": "/from/env"}
    assert Settings.from_env("/from/option", environ=env).home == Path("/from/option")
    assert Settings.from_env(None, environ=env).home == Path("/from/env")
    assert Settings.from_env(None, environ={}).home == Path(".closedloop")
    assert Settings.from_env(None, environ={"CLOSEDLOOP_HOME": ""}).home == Path(".closedloop")
    assert Settings(Path("h")).bundles == Path("h/bundles")
    with pytest.raises(AttributeError):
        Settings(Path("h")).home = Path("x")  # type: ignore[misc]


# -- a real process ---------------------------------------------------------------------------
def test_the_readme_command_works_in_a_real_shell(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    bindir = Path(sys.executable).parent
    if bash is None or not (bindir / "closedloop").exists():
        pytest.skip("needs bash and the installed `closedloop` script next to the interpreter")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("CLOSEDLOOP_HOME", None)
    init = subprocess.run(
        [sys.executable, "-m", "closedloop.cli", "init", "my proj"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    readme = (tmp_path / "my proj" / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if line.startswith("cd ")]
    run = subprocess.run(
        [bash, "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    (decision,) = records(run.stdout)
    assert decision["system"] == "my_proj"
    assert decision["unit"] == EXAMPLE_CONTEXT["user_id"]
    assert decision["action"] == "block"

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "closedloop.cli",
            "decide",
            "--system",
            "system:system",
            "--bundle",
            command.rsplit(" ", 1)[1],
        ],
        cwd=tmp_path / "my proj",
        env=env,
        input=good("a") + "\nnope\n" + good("b") + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert [r.get("line") for r in records(bad.stdout)] == [None, 2, None]
    assert bad.stderr.strip() == "decided 2, failed 1"
