"""Loading a System from ``module:attr`` / ``path/to/file.py:attr`` and resolving a bundle
reference: library functions below the CLI and the service, raising closedloop errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from closedloop import SpecError, System
from closedloop.runtime.bundle import bundle_path
from closedloop.system.loading import load_object, load_system, refused_reference

SYSTEM = """
from closedloop import F, Float, Str, System, Thresholds
system = System(
    "loading_demo", context=[Str("user_id"), Float("amount")], unit="user_id",
    features={"amount": F.col("amount")}, actions=["allow", "block"],
    experience=Thresholds("risk", {"block": 0.5}, otherwise="allow"), labels=("good", "bad"),
)
not_a_system = 42
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("loading_mod", "loading_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("loading_mod", "expected 'module:attr' or 'path/to/file.py:attr'"),
        ("no_such_module_x:system", "no module named 'no_such_module_x'"),
        ("loading_mod:nope", "'loading_mod' has no attribute 'nope'"),
        ("loading_mod:not_a_system", "'not_a_system' is a int, not a closedloop.System"),
        ("gone.py:system", "no such file 'gone.py'"),
    ],
)
def test_a_refused_reference_is_a_spec_error_naming_field_rule_and_value(workdir: Path, spec: str, rule: str) -> None:
    (workdir / "loading_mod.py").write_text(SYSTEM)
    with pytest.raises(SpecError) as info:
        load_system(spec)
    exc = info.value
    assert (exc.field, exc.value) == ("system", spec)  # type: ignore[attr-defined]
    assert exc.rule.startswith(rule)  # type: ignore[attr-defined]
    assert str(exc).startswith(f"The 'system' reference {spec!r} is refused: {rule}")
    assert refused_reference(exc, spec)


def test_modules_and_files_load(workdir: Path) -> None:
    (workdir / "loading_mod.py").write_text(SYSTEM)
    assert isinstance(load_system("loading_mod:system"), System)
    assert isinstance(load_system(f"{workdir / 'loading_mod.py'}:system"), System)
    assert load_object("loading_mod:not_a_system", field="plan") == 42


def test_an_error_of_the_module_itself_is_not_a_refused_reference(workdir: Path) -> None:
    (workdir / "loading_broken.py").write_text("from closedloop import SpecError\nraise SpecError('inside')\n")
    with pytest.raises(SpecError, match="inside") as info:
        load_system("loading_broken:system")
    assert not refused_reference(info.value, "loading_broken:system")


def test_a_bundle_reference_is_a_path_or_a_version_in_the_bundles_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bundles = tmp_path / "home" / "bundles"
    (bundles / "v1").mkdir(parents=True)
    (tmp_path / "here").mkdir()
    assert bundle_path("v1", bundles) == bundles / "v1"
    assert bundle_path("here", bundles) == Path("here")  # an existing path wins
    assert bundle_path("v2", bundles) == Path("v2")  # neither: the path, for Bundle.load to refuse
    assert bundle_path("sub/v1", bundles) == Path("sub/v1")  # not a bare name
