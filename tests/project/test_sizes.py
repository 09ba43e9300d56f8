"""Small modules and short functions: a module of ``src/closedloop`` is at most 500
lines and a function at most 80 (its ``def`` line to its last, docstring included) — unless a
comment line starting with ``# size-exception:`` says why: for a module, among the first lines
after its docstring; for a function, on the line right above its ``def`` (or its decorators).
The reason must say something (at least a few words)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "closedloop"
MODULE_LINES = 500
FUNCTION_LINES = 80
MARK = "# size-exception:"


def _reason(line: str) -> str | None:
    line = line.strip()
    return line[len(MARK):].strip() if line.startswith(MARK) else None


def _module_exception(tree: ast.Module, lines: list[str]) -> str | None:
    """The reason marked right after the module docstring (within 15 lines of its end)."""
    start = tree.body[0].end_lineno if tree.body and isinstance(tree.body[0], ast.Expr) else 0
    for line in lines[start or 0:(start or 0) + 15]:
        if (r := _reason(line)) is not None:
            return r
    return None


def _function_exception(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return _reason(lines[first - 2]) if first >= 2 else None


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_modules_are_small_or_say_why():
    big = []
    for p in _modules():
        lines = p.read_text().splitlines()
        if len(lines) > MODULE_LINES:
            reason = _module_exception(ast.parse("\n".join(lines)), lines)
            if reason is None or len(reason.split()) < 3:
                big.append(f"{p.relative_to(SRC)}: {len(lines)} lines")
    assert not big, (f"modules over {MODULE_LINES} lines without a '{MARK} <reason>' line after the docstring: "
                     + "; ".join(big))


def test_functions_are_short_or_say_why():
    long = []
    for p in _modules():
        text = p.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > FUNCTION_LINES:
                    reason = _function_exception(node, lines)
                    if reason is None or len(reason.split()) < 3:
                        long.append(f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, (f"functions over {FUNCTION_LINES} lines without a '{MARK} <reason>' line above the def: "
                      + "; ".join(long))


def test_the_size_check_sees_a_marked_and_an_unmarked_function():
    text = "def f():\n" + "    x = 1\n" * 90 + "\n# size-exception: one table that reads best whole\ndef g():\n" \
        + "    y = 2\n" * 90
    lines = text.splitlines()
    found = {n.name: _function_exception(n, lines) for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef)}
    assert found == {"f": None, "g": "one table that reads best whole"}
