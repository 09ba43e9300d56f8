"""LightGBM's text model format (``Booster.model_to_string()``), parsed and validated without
LightGBM: :func:`parse_lightgbm` reads the header and every tree into the flat arrays of a
:class:`ParsedForest`, and refuses, naming the tree, the entry and the value, anything
closedloop does not score exactly (the rules are in :mod:`closedloop.intelligence.lightgbm`'s
docstring, where the forest is scored). Nothing is imported or executed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop.errors import IntelligenceError

__all__ = ["ParsedForest", "parse_lightgbm"]

_IDENTITY_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
_VERSIONS = ("v2", "v3", "v4")
_DEFAULT_LEFT = 2
_CATEGORICAL = 1


def _bad(rule: str, value: Any, where: str = "") -> IntelligenceError:
    at = f" ({where})" if where else ""
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return IntelligenceError(f"The LightGBM model text must {rule}{at}. Got {text} instead.")


class ParsedForest:
    """A LightGBM text model as validated arrays (the trees concatenated, in file order).

    ``roots[t]`` is tree t's first node, or ``~leaf`` for a one-leaf tree; node arrays are
    indexed by global node number, children are global node numbers or ``~global leaf``.
    """

    __slots__ = (
        "average_output", "feature", "feature_names", "flags", "leaves", "left", "n_trees", "objective",
        "right", "roots", "sigmoid", "threshold",
    )

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    feature_names: list[str]
    objective: str  # "binary" or "identity"
    sigmoid: float
    average_output: bool
    n_trees: int
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    flags: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaves: np.ndarray


def _ints(text: str, key: str, where: str) -> list[int]:
    try:
        return [int(t) for t in text.split()]
    except ValueError:
        raise _bad(f"hold integers in '{key}'", text, where) from None


def _floats(text: str, key: str, where: str) -> list[float]:
    try:
        return [float(t) for t in text.split()]
    except ValueError:
        raise _bad(f"hold numbers in '{key}'", text, where) from None


def _int_value(entries: Mapping[str, str], key: str, where: str) -> int:
    if key not in entries:
        raise _bad(f"contain '{key}='", None, where)
    vals = _ints(entries[key], key, where)
    if len(vals) != 1:
        raise _bad(f"hold one integer in '{key}'", entries[key], where)
    return vals[0]


def _parse_objective(line: str | None) -> tuple[str, float]:
    if line is None:
        raise _bad("name its objective ('objective=…')", None, "header")
    tokens = line.split()
    if not tokens:
        raise _bad("name its objective", line, "header 'objective'")
    name, params = tokens[0], tokens[1:]
    if name == "binary":
        scale = None
        for p in params:
            key, _, val = p.partition(":")
            if key != "sigmoid" or scale is not None:
                raise _bad("give the binary objective only its 'sigmoid:' parameter", line, "header 'objective'")
            try:
                scale = float(val)
            except ValueError:
                raise _bad("give a number as the binary objective's sigmoid", line, "header 'objective'") from None
        if scale is None or not math.isfinite(scale) or scale <= 0:
            raise _bad("give the binary objective a finite sigmoid > 0", line, "header 'objective'")
        return "binary", scale
    if name in _IDENTITY_OBJECTIVES:
        if params:
            raise _bad(
                f"use the '{name}' objective without options (closedloop scores its raw output; "
                f"'sqrt' and the like are not supported)", line, "header 'objective'",
            )
        return "identity", 1.0
    raise _bad(
        f"use an objective closedloop scores exactly: 'binary' or one of {list(_IDENTITY_OBJECTIVES)}",
        line, "header 'objective'",
    )


def parse_lightgbm(text: str) -> ParsedForest:
    """Parse and validate LightGBM's text model format (``Booster.model_to_string()``)."""
    if not isinstance(text, str):
        raise _bad("be text", type(text).__name__)
    lines = text.splitlines()
    if not lines or lines[0].strip() != "tree":
        raise _bad("start with the line 'tree'", lines[0] if lines else "")
    header, flags_seen, i = _read_header(lines)
    names, objective, scale = _check_header(header)
    nodes, t, i = _read_trees(lines, i, len(names))
    if i >= len(lines) or lines[i].strip() != "end of trees":
        raise _bad("end its trees with the line 'end of trees'", lines[i].strip() if i < len(lines) else "<end of text>")
    if t == 0:
        raise _bad("hold at least one tree", 0)
    sizes = header.get("tree_sizes")
    if sizes is not None and len(sizes.split()) != t:
        raise _bad(f"list one tree size per tree ({t} trees)", sizes, "header 'tree_sizes'")
    return ParsedForest(
        feature_names=names,
        objective=objective,
        sigmoid=scale,
        average_output="average_output" in flags_seen,
        n_trees=t,
        roots=np.asarray(nodes["roots"], dtype=np.int32),
        feature=np.asarray(nodes["feature"], dtype=np.int32),
        threshold=np.asarray(nodes["threshold"], dtype=np.float64),
        flags=np.asarray(nodes["flags"], dtype=np.uint8),
        left=np.asarray(nodes["left"], dtype=np.int32),
        right=np.asarray(nodes["right"], dtype=np.int32),
        leaves=np.asarray(nodes["leaves"], dtype=np.float64),
    )


def _read_header(lines: list[str]) -> tuple[dict[str, str], set[str], int]:
    """The header after the first line: (its ``key=value`` entries, its bare flags such as
    ``average_output``, the index of the first line after it)."""
    header: dict[str, str] = {}
    flags_seen: set[str] = set()
    i = 1
    while i < len(lines) and not lines[i].startswith("Tree=") and lines[i].strip() != "end of trees":
        line = lines[i].strip()
        if line:
            key, eq, val = line.partition("=")
            if eq:
                header[key] = val
            else:
                flags_seen.add(line)
        i += 1
    return header, flags_seen, i


def _check_header(header: Mapping[str, str]) -> tuple[list[str], str, float]:
    """The header validated: (the feature names, the objective — ``"binary"`` or ``"identity"`` —
    and its sigmoid scale)."""
    if header.get("version") not in _VERSIONS:
        raise _bad(f"be a LightGBM model of version {list(_VERSIONS)}", header.get("version"), "header 'version'")
    for key in ("num_class", "num_tree_per_iteration"):
        if _int_value(header, key, "header") != 1:
            raise _bad(
                f"have {key}=1 (one score; multi-class models are not supported)", header[key], "header"
            )
    max_idx = _int_value(header, "max_feature_idx", "header")
    if max_idx < 0:
        raise _bad("have max_feature_idx ≥ 0", max_idx, "header")
    n_features = max_idx + 1
    names = header.get("feature_names", "").split()
    if len(names) != n_features:
        raise _bad(f"list {n_features} feature_names (max_feature_idx + 1)", names, "header")
    objective, scale = _parse_objective(header.get("objective"))
    return names, objective, scale


def _read_trees(lines: list[str], i: int, n_features: int) -> tuple[dict[str, list[Any]], int, int]:
    """Every ``Tree=t`` block from line ``i`` on, in order, validated by :func:`_parse_tree`:
    (the concatenated node arrays and each tree's root, the number of trees, the index of the
    first line after them)."""
    nodes: dict[str, list[Any]] = {k: [] for k in ("roots", "feature", "threshold", "flags", "left", "right", "leaves")}
    feature, leaves = nodes["feature"], nodes["leaves"]
    t = 0
    while i < len(lines) and lines[i].startswith("Tree="):
        where = f"tree {t}"
        if lines[i].strip() != f"Tree={t}":
            raise _bad(f"number its trees 0, 1, 2, … in order; expected 'Tree={t}'", lines[i].strip(), where)
        i += 1
        entries: dict[str, str] = {}
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("Tree="):
            key, eq, val = lines[i].strip().partition("=")
            if not eq:
                raise _bad("hold key=value lines in a tree", lines[i].strip(), where)
            entries[key] = val
            i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        node_base, leaf_base = len(feature), len(leaves)
        root = _parse_tree(
            entries, n_features, where, feature, nodes["threshold"], nodes["flags"], nodes["left"], nodes["right"],
            leaves, node_base, leaf_base,
        )
        nodes["roots"].append(root)
        t += 1
    return nodes, t, i


def _parse_tree(
    e: Mapping[str, str], n_features: int, where: str, feature: list[int], threshold: list[float],
    flags: list[int], left: list[int], right: list[int], leaves: list[float], node_base: int, leaf_base: int,
) -> int:
    n_leaves = _int_value(e, "num_leaves", where)
    if n_leaves < 1:
        raise _bad("have num_leaves ≥ 1", n_leaves, where)
    if "num_cat" in e and _int_value(e, "num_cat", where) != 0:
        raise _bad("have no categorical splits (num_cat=0); closedloop scores numerical splits only", e["num_cat"], where)
    if "is_linear" in e and _int_value(e, "is_linear", where) != 0:
        raise _bad("have no linear trees (is_linear=0)", e["is_linear"], where)
    if "leaf_value" not in e:
        raise _bad("contain 'leaf_value='", None, where)
    vals = _floats(e["leaf_value"], "leaf_value", where)
    if len(vals) != n_leaves:
        raise _bad(f"hold num_leaves={n_leaves} leaf_value entries", len(vals), where)
    for k, v in enumerate(vals):
        if not math.isfinite(v):
            raise _bad("hold finite leaf values", v, f"{where}, leaf {k}")
    n_int = n_leaves - 1
    arrays: dict[str, list[Any]] = {}
    for key in ("split_feature", "threshold", "decision_type", "left_child", "right_child"):
        raw = e.get(key, "")
        if key not in e and n_int:
            raise _bad(f"contain '{key}='", None, where)
        arr: list[Any] = _floats(raw, key, where) if key == "threshold" else _ints(raw, key, where)
        if len(arr) != n_int:
            raise _bad(f"hold num_leaves - 1 = {n_int} '{key}' entries", len(arr), where)
        arrays[key] = arr
    seen_nodes = [False] * n_int
    seen_leaves = [False] * n_leaves
    for node in range(n_int):
        at = f"{where}, node {node}"
        f = arrays["split_feature"][node]
        if not 0 <= f < n_features:
            raise _bad(f"split on features 0…{n_features - 1} (max_feature_idx)", f, at)
        thr = arrays["threshold"][node]
        if math.isnan(thr):
            raise _bad("have thresholds that are numbers", thr, at)
        dt = arrays["decision_type"][node]
        if dt & _CATEGORICAL:
            raise _bad("have no categorical splits (decision_type bit 1); closedloop scores numerical splits only", dt, at)
        if not 0 <= dt < 16 or (dt >> 2) & 3 == 3:
            raise _bad("have a decision_type of missing type none, zero or NaN (0…11)", dt, at)
        children = []
        for key in ("left_child", "right_child"):
            c = arrays[key][node]
            if c >= 0:
                if not node < c < n_int:
                    raise _bad(f"have {key} after its node and below num_leaves - 1 = {n_int}", c, at)
                if seen_nodes[c]:
                    raise _bad("reach every node once (a tree, not a graph)", c, at)
                seen_nodes[c] = True
                children.append(node_base + c)
            else:
                leaf = ~c
                if leaf >= n_leaves:
                    raise _bad(f"have {key} leaves ~0…~{n_leaves - 1}", c, at)
                if seen_leaves[leaf]:
                    raise _bad("reach every leaf once (a tree, not a graph)", c, at)
                seen_leaves[leaf] = True
                children.append(~(leaf_base + leaf))
        feature.append(f)
        threshold.append(thr)
        missing = (dt >> 2) & 3
        flags.append((1 if dt & _DEFAULT_LEFT else 0) | (missing << 1))
        left.append(children[0])
        right.append(children[1])
    if n_int and (seen_nodes[0] or not all(seen_nodes[1:]) or not all(seen_leaves)):
        raise _bad("reach every node and leaf from node 0", "unreachable parts", where)
    leaves.extend(vals)
    return node_base if n_int else ~leaf_base

