"""The parts of a bundle's client form (:mod:`closedloop.runtime.export_js`): feature expressions
as JSON trees (regular expressions translated for JavaScript), the intelligence as the parameters
the JavaScript runtime scores with, and the refusal of what cannot run in a client.

Nothing here is code: a client evaluates these trees with a small interpreter
(``clients/js/src/runtime``); no bundle content is ever evaluated as source.
"""

from __future__ import annotations

import math
from typing import Any

from closedloop.context.features import FeatureSet
from closedloop.context.features.regex import _translate_regex
from closedloop.context.fields import Bool, Float, Int, Str
from closedloop.errors import BundleError, ClosedLoopError
from closedloop.intelligence import (
    AffinityModel,
    Calibrated,
    Intelligence,
    LightGBMModel,
    LinearModel,
    LogisticModel,
    LookupTable,
    Partitioned,
    ScoringRules,
    Stacking,
    ThresholdRule,
    WeightedVote,
)
from closedloop.intelligence.lightgbm import K_ZERO

__all__ = ["ClientRefusal", "expr_tree", "field_tree", "intelligence_tree", "js_regex", "number"]

#: Every operator of the expression tree the client interpreter knows, with its arity (children).
EXPR_OPS = {
    "col": 0, "const": 0, "+": 2, "-": 2, "*": 2, "/": 2, "neg": 1, ">": 2, ">=": 2, "<": 2, "<=": 2,
    "==": 2, "!=": 2, "and": 2, "or": 2, "not": 1, "where": 3, "log1p": 1, "sqrt": 1, "abs": 1, "min": 2,
    "max": 2, "length": 1, "count": 1, "contains": 1, "startswith": 1, "endswith": 1, "nonempty": 1,
    "matches": 1, "contains_col": 2, "isin": 1, "lower": 1,
}
_JS_SYNTAX = set("^$\\.*+?()[]{}|/")


class ClientRefusal(BundleError):
    """A bundle (or system) part that cannot run in a client; ``check`` names the part."""


def number(x: float) -> Any:
    """A float as JSON: finite numbers as themselves, ±inf / NaN as the strings the client reads."""
    if math.isfinite(x):
        return float(x)
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


# -- context fields -----------------------------------------------------------------------------
def field_tree(f: Any) -> dict[str, Any]:
    """A context field as the client validates it: kind, default, bounds, choices, limit, the rule text."""
    out: dict[str, Any] = {"name": f.name, "required": f.required}
    if not f.required:
        out["default"] = f.default
    if isinstance(f, Float):
        out.update(kind="float", ge=f.ge, le=f.le, nonfinite=f.nonfinite, rule=f.rule())
    elif isinstance(f, Int):
        out.update(kind="int", ge=f.ge, le=f.le, rule=f.rule())
    elif isinstance(f, Bool):
        out.update(kind="bool", rule=f.rule())
    elif isinstance(f, Str):
        out.update(kind="str", choices=list(f.choices) if f.choices is not None else None, limit=f.limit, rule=f.rule())
    else:  # pragma: no cover - a schema holds only these four
        raise ClientRefusal("schema", f"context field {f.name!r} is of a kind the client does not know")
    return out


# -- regular expressions -------------------------------------------------------------------------
def _quantifier(pattern: str, i: int) -> tuple[str, int] | None:
    """A ``{n}``, ``{n,}``, ``{n,m}`` or ``{,m}`` quantifier at ``pattern[i]`` as JavaScript writes it
    (``{,m}`` as ``{0,m}``, Python's reading) and the index after it; None if ``{`` is a literal."""
    j = pattern.find("}", i)
    if j < 0:
        return None
    body = pattern[i + 1 : j]
    lo, comma, hi = body.partition(",")
    ok = (lo.isdigit() or (comma and not lo and hi.isdigit())) and (not hi or hi.isdigit()) and lo.isascii() and hi.isascii()
    if not ok:
        return None
    return "{" + (lo or "0") + comma + hi + "}", j + 1


def js_regex(pattern: str) -> str:
    """``pattern`` (a feature's regular expression, checked by the portable subset's rules) in
    the JavaScript form that finds the same matches as Python's ``re`` with ``re.ASCII`` when
    compiled with the ``u`` flag: ``.`` as ``[^\\n]`` (JavaScript's ``.`` also stops at ``\\r``
    and the line separators), escaped punctuation as JavaScript accepts it, a literal ``{``/``}``
    escaped, ``{,m}`` as ``{0,m}``, a ``]`` first in a class escaped. ``$`` and ``^`` are already
    the ends of the text in both (no multi-line flag)."""
    _translate_regex(pattern)  # refuses what is outside the portable subset
    out: list[str] = []
    i, n, in_class, class_start = 0, len(pattern), False, False
    while i < n:
        ch = pattern[i]
        first = class_start
        class_start = False
        if ch == "\\":
            nxt = pattern[i + 1]
            if nxt in "dDwWbB" or nxt in _JS_SYNTAX or (in_class and nxt == "-"):
                out.append("\\" + nxt)
            else:
                out.append(nxt)
            i += 2
            continue
        if in_class:
            if ch == "]" and not first:
                in_class = False
                out.append("]")
            elif ch in "[]":
                out.append("\\" + ch)
            else:
                out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = class_start = True
            negated = pattern[i + 1 : i + 2] == "^"
            out.append("[^" if negated else "[")
            i += 2 if negated else 1
            continue
        if ch == "{":
            q = _quantifier(pattern, i)
            if q is not None:
                out.append(q[0])
                i = q[1]
                continue
            out.append("\\{")
        elif ch == "}":
            out.append("\\}")
        elif ch == ".":
            out.append("[^\\n]")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


# -- expressions ---------------------------------------------------------------------------------
def expr_tree(node: Any, where: str) -> Any:
    """A feature expression's description (``Expr.describe()``) as the client's tree: the same
    nodes, a regular expression carried in both forms (``["matches", a, pattern, js_pattern]``);
    a custom feature (Python code) is refused, naming ``where``."""
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise ClientRefusal("features", f"{where} is not a feature expression the client knows: {node!r}")
    op = node[0]
    if op == "custom":
        raise ClientRefusal(
            "features", f"{where} uses the custom feature {node[1]!r} (Python code), which cannot run in a client"
        )
    if op not in EXPR_OPS:
        raise ClientRefusal("features", f"{where} uses the operation {op!r}, which the client runtime does not implement")
    if op == "col":
        return ["col", node[1]]
    if op == "const":
        return ["const", node[1]]
    k = EXPR_OPS[op]
    kids = [expr_tree(c, where) for c in node[1 : 1 + k]]
    rest = list(node[1 + k :])
    if op == "matches":
        rest = [rest[0], js_regex(rest[0])]
    return [op, *kids, *rest]


# -- intelligence --------------------------------------------------------------------------------
def _idx(features: FeatureSet, names: Any) -> list[int]:
    return [features.index[n] for n in names]


def intelligence_tree(intel: Intelligence, features: FeatureSet, where: str = "intelligence") -> dict[str, Any]:
    """The client form of ``intel`` bound to ``features``: feature indices resolved, every number
    the scorer uses exported as Python holds it (so the client repeats the same operations)."""
    kind = getattr(intel, "kind", type(intel).__name__)
    try:
        if isinstance(intel, LinearModel):  # LogisticModel included
            names = list(intel.weights)
            return {"kind": "linear", "logistic": isinstance(intel, LogisticModel), "idx": _idx(features, names),
                    "w": [intel.weights[n] for n in names], "b": intel.intercept}
        if isinstance(intel, AffinityModel):
            return _affinity(intel, features)
        if isinstance(intel, ThresholdRule):
            return {"kind": "threshold_rule", "i": features.index[intel.feature], "op": intel.op, "t": intel.threshold,
                    "then": intel.then, "otherwise": intel.otherwise}
        if isinstance(intel, ScoringRules):
            return {"kind": "rules", "base": intel.base, "lo": intel.lo, "hi": intel.hi,
                    "rules": [[features.index[r.feature], r.op, r.value, r.points] for r in intel.rules]}
        if isinstance(intel, LookupTable):
            fb = intel.fallback
            return {"kind": "lookup", "field": intel.field, "lower": intel.lowercase, "keys": list(intel.table),
                    "values": list(intel.table.values()), "default": intel.default,
                    "fallback": None if fb is None else intelligence_tree(fb, features, f"{where}.fallback")}
        if isinstance(intel, LightGBMModel):
            return _forest(intel, features)
        if isinstance(intel, Calibrated):
            base = intelligence_tree(intel.base, features, f"{where}.base")
            if intel.method == "platt":
                return {"kind": "platt", "a": intel.a, "b": intel.b, "base": base}
            xs, ys = intel.x, intel.y
            slope = [(ys[j] - ys[j - 1]) / (xs[j] - xs[j - 1]) for j in range(1, len(xs))]
            return {"kind": "isotonic", "x": list(xs), "y": list(ys), "slope": slope, "base": base}
        if isinstance(intel, WeightedVote):
            return {"kind": "vote", "w": list(intel.weights), "total": intel.total,
                    "members": [intelligence_tree(m, features, f"{where}.members[{i}]") for i, m in enumerate(intel.members)]}
        if isinstance(intel, Stacking):
            return {"kind": "stacking", "w": list(intel.weights), "b": intel.intercept, "logistic": intel.link == "logistic",
                    "logit": intel.transform == "logit",
                    "members": [intelligence_tree(m, features, f"{where}.members[{i}]") for i, m in enumerate(intel.members)]}
        if isinstance(intel, Partitioned):
            keys = list(intel.parts)
            return {"kind": "partitioned", "field": intel.field, "keys": keys,
                    "parts": [intelligence_tree(intel.parts[k], features, f"{where}.parts[{k!r}]") for k in keys],
                    "default": intelligence_tree(intel.default, features, f"{where}.default")}
    except ClientRefusal:
        raise
    except (ClosedLoopError, KeyError) as exc:
        raise ClientRefusal("intelligence", f"{where} ({kind}) does not bind to the system's features: {exc}") from exc
    reason = "a scikit-learn estimator stored with skops runs only in Python" if kind == "sklearn" else (
        "the client runtime does not implement this kind")
    raise ClientRefusal("intelligence", f"{where} is of kind {kind!r}, which cannot run in a client: {reason}")


def _affinity(model: AffinityModel, features: FeatureSet) -> dict[str, Any]:
    """The affinity model compactly: its logistic part as ``linear``'s, and its table as the sorted
    distinct ``a`` and ``b`` texts, each pair's code ``index(a) · |B| + index(b)`` (ascending) and
    the offsets in code order — the arrays :class:`~closedloop.intelligence.pair_table.PairTable` holds."""
    for k in model.keys:
        if k not in features.schema.by_name:
            raise ClientRefusal("intelligence", f"the affinity model's key {k!r} is not a field of the system")
    names = list(model.weights)
    a, b, offsets = model.pairs.columns()
    a_values, b_values = sorted(set(a.to_pylist())), sorted(set(b.to_pylist()))
    ia, ib = {x: i for i, x in enumerate(a_values)}, {x: i for i, x in enumerate(b_values)}
    codes = [ia[x] * len(b_values) + ib[y] for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)]
    return {"kind": "affinity", "idx": _idx(features, names), "w": [model.weights[n] for n in names], "b": model.intercept,
            "keys": list(model.keys), "a": a_values, "bv": b_values, "codes": codes, "offsets": offsets.tolist()}


def _forest(model: LightGBMModel, features: FeatureSet) -> dict[str, Any]:
    p = model.parsed
    cols = _idx(features, model.feature_names)
    return {
        "kind": "lightgbm", "roots": p.roots.tolist(), "feature": [cols[f] for f in p.feature.tolist()],
        "threshold": p.threshold.tolist(), "flags": p.flags.tolist(), "left": p.left.tolist(), "right": p.right.tolist(),
        "leaves": p.leaves.tolist(), "binary": p.objective == "binary", "scale": p.sigmoid,
        "divisor": float(p.n_trees) if p.average_output else 0.0, "kzero": K_ZERO,
    }
