"""Dependencies run one way: every import in src/closedloop is one the table of
docs/architecture.md ("Packages and their dependencies") allows — the one place the allowed map is
written; this test reads it from there."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "closedloop"
DOC = ROOT / "docs" / "architecture.md"
SECTION = "## Packages and their dependencies"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|(.*)\|\s*$")

#: CLI modules that may import the command modules (the root app and the package's entry points).
CLI_TOP = {"closedloop.cli", "closedloop.cli.main", "closedloop.cli.__main__"}
CLI_SHARED = "closedloop.cli.options"


def read_table(text: str) -> list[tuple[int, str, list[str]]]:
    """The rows of the section's table: (layer, unit, the units it may import), in order."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    rows = []
    for line in text[start : end if end != -1 else None].splitlines():
        m = ROW.match(line)
        if m:
            rows.append((int(m.group(1)), m.group(2), re.findall(r"`([\w.]+)`", m.group(3))))
    return rows


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``closedloop.a.b`` names a module or package of the source tree (a compiled one too)."""
    rel = SRC.parent.joinpath(*name.split("."))
    return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file() or any(
        rel.parent.glob(rel.name + ".*.so")
    )


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth; ``from X import y`` gives
    ``X.y`` when that is a module, else ``X``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if base.startswith("closedloop") and is_module(sub) else base))
    return out


def unit_of(module: str) -> str:
    """``closedloop.runtime.bundle`` → ``runtime``; ``closedloop.errors`` → ``errors``;
    ``closedloop`` → ``""`` (the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


TABLE = read_table(DOC.read_text(encoding="utf-8"))
ALLOWED = {unit: set(deps) for _, unit, deps in TABLE}
BASE = {unit for layer, unit, _ in TABLE if layer == 0}


def test_the_table_is_read_and_points_one_way():
    assert len(TABLE) >= 15, "the table of docs/architecture.md was not found or not read"
    seen: set[str] = set()
    last = 0
    for layer, unit, deps in TABLE:
        assert unit not in seen, f"{unit} has two rows"
        assert layer >= last, f"{unit}: layers must not go down the table"
        for dep in deps:
            assert dep in seen, f"{unit} may import {dep}, which is not in a row above it"
            assert dep not in BASE or layer == 0, f"{unit}: the base goes without saying; drop {dep}"
        seen.add(unit)
        last = layer


def test_every_package_and_module_has_a_row():
    units = {p.name if p.is_dir() else p.name.split(".")[0] for p in SRC.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix in (".py", ".so")}
    units.discard("__init__")
    assert units - set(ALLOWED) == set(), "packages or modules missing from the table"
    assert set(ALLOWED) - units == set(), "rows of the table for packages or modules that do not exist"


def test_every_import_is_allowed_by_the_table():
    wrong = []
    used: dict[str, set[str]] = defaultdict(set)
    for path in sources():
        me = module_name(path)
        mine = unit_of(me)
        for line, target in imports(path):
            if not (target == "closedloop" or target.startswith("closedloop.")):
                continue
            where = f"{path.relative_to(SRC.parent)}:{line} imports {target}"
            to = unit_of(target)
            if me == "closedloop":
                continue  # the root: the public façade over every package
            if to == "":
                wrong.append(f"{where}: no module imports the root package")
            elif to == mine:
                continue
            elif mine in BASE:
                if to not in ALLOWED[mine]:
                    wrong.append(f"{where}: the base module {mine} may import only {sorted(ALLOWED[mine])}")
                used[mine].add(to)
            elif to in BASE:
                continue
            elif to not in ALLOWED.get(mine, set()):
                wrong.append(f"{where}: {mine} may import only the base and {sorted(ALLOWED.get(mine, ()))}")
            else:
                used[mine].add(to)
    assert wrong == [], "\n".join(wrong)
    unused = {unit: sorted(deps - used[unit]) for unit, deps in ALLOWED.items() if deps - used[unit]}
    assert unused == {}, "the table allows dependencies no import uses (drop them from the table)"


def test_cli_modules_import_only_the_shared_options():
    wrong = []
    for path in sorted((SRC / "cli").glob("*.py")):
        me = module_name(path)
        for line, target in imports(path):
            if not target.startswith("closedloop.cli") or target == me:
                continue
            if me in CLI_TOP:
                continue
            if target != CLI_SHARED or me == CLI_SHARED:
                wrong.append(f"{path.relative_to(SRC.parent)}:{line} imports {target}")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(u for u in ALLOWED if u != "cli"))
def test_only_the_cli_imports_typer(package):
    root = SRC / package
    paths = sorted(root.rglob("*.py")) if root.is_dir() else [SRC / f"{package}.py"]
    found = [f"{p.relative_to(SRC.parent)}:{line} imports {target}"
             for p in paths if p.is_file()
             for line, target in imports(p)
             if target.split(".")[0] == "typer" or target.startswith("closedloop.cli")]
    assert found == []


def test_the_service_imports_neither_the_cli_nor_typer():
    found = [f"{p.relative_to(SRC.parent)}:{line} imports {target}"
             for p in sorted((SRC / "service").rglob("*.py"))
             for line, target in imports(p)
             if target.split(".")[0] == "typer" or target == "closedloop.cli" or target.startswith("closedloop.cli.")]
    assert found == []
    assert "service" in ALLOWED and "cli" not in ALLOWED["service"]


def test_the_readers_parts():
    # the table reader stops at the next section; modules are told from other names
    rows = read_table(f"{SECTION}\n\n| Layer | Package | May import |\n|---|---|---|\n"
                      "| 0 | `errors` | — |\n| 3 | `system` | `context`, `experience` |\n\n## Next\n| 1 | `x` | — |\n")
    assert rows == [(0, "errors", []), (3, "system", ["context", "experience"])]
    assert unit_of("closedloop") == "" and unit_of("closedloop.runtime.bundle") == "runtime"
    assert is_module("closedloop._kernels") and is_module("closedloop.runtime.bundle")
    assert not is_module("closedloop.__version__")
