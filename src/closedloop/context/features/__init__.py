"""Features: declared once as expressions, computed two ways with identical results.

A feature is a named expression over context fields::

    from closedloop.context import features as F

    features = {
        "domain_age_log": F.log1p(F.col("domain_age_days")),
        "ip_in_url": F.col("url").matches(r"^[a-z]+://\\d{1,3}(\\.\\d{1,3}){3}"),
        "brand_not_in_domain": F.col("page_brand").nonempty()
                               & ~F.col("domain").lower().contains(F.col("page_brand").lower()),
    }

Every expression has a **scalar form** (one context) and a **vectorized form** (a columnar batch).
The scalar form of a whole feature set is compiled into one Python function (field loads hoisted,
common sub-expressions computed once), so one context costs a single call. The vectorized form
uses numpy for arithmetic and Arrow compute for text.

The two forms are **bitwise equal** by construction, and :func:`closedloop.runtime.checks.check_features`
proves it on generated contexts:

* arithmetic, comparisons, min/max and abs are exactly rounded IEEE-754 operations in both forms,
  evaluated in the same order (numpy never fuses a multiply and an add across two ufunc calls);
* transcendental functions (``log1p``) call the same C library function in both forms — through
  ``math`` for one context, through a compiled column loop for a batch (:mod:`closedloop.base.numeric`);
  numpy's SIMD ``log``/``exp`` may differ from libm in the last bit, so they are not used;
* text operations have the same semantics in Python and Arrow: code-point lengths, non-overlapping
  counts, ASCII-only lower-casing, and regular expressions restricted to the subset on which
  Python's ``re`` (with ``re.ASCII``) and RE2 agree (see :func:`~closedloop.context.features.regex._translate_regex`);
* division by zero yields a declared value (0.0 by default) in both forms.

``F.custom`` takes a feature whose two forms you write yourself; the conformance suite is what
proves them equal.

The parts, one module each: :mod:`~closedloop.context.features.expr` (the expression tree, its
operators and the numeric nodes), :mod:`~closedloop.context.features.text` (the text nodes),
:mod:`~closedloop.context.features.functions` (log1p, sqrt, abs, min, max, where),
:mod:`~closedloop.context.features.custom_feature`, :mod:`~closedloop.context.features.regex` (the portable
regular expressions), :mod:`~closedloop.context.features.ops` (the elementwise operations both forms
call), :mod:`~closedloop.context.features.scalar` (the generated scalar function),
:mod:`~closedloop.context.features.vector` (the feature matrix of a batch) and
:mod:`~closedloop.context.features.featureset` (Feature, FeatureSet). This package is their import
surface.
"""

from __future__ import annotations

from closedloop.context.features.custom_feature import custom
from closedloop.context.features.expr import NUM as NUM
from closedloop.context.features.expr import STR as STR
from closedloop.context.features.expr import Expr, col, const
from closedloop.context.features.featureset import Feature, FeatureSet
from closedloop.context.features.functions import abs_, log1p, maximum, minimum, sqrt, where
from closedloop.context.features.ops import ascii_lower as ascii_lower

__all__ = [
    "Expr",
    "Feature",
    "FeatureSet",
    "abs_",
    "col",
    "const",
    "custom",
    "log1p",
    "maximum",
    "minimum",
    "sqrt",
    "where",
]
