"""closedloop.context.schema and closedloop.context.features stay the import surfaces of their parts:
every name they gave keeps importing, as the very object of the module that now holds it."""

from __future__ import annotations

import closedloop.context.columnar as columnar
import closedloop.context.columns as columns
import closedloop.context.features as F
import closedloop.context.fields as fields
import closedloop.context.schema as schema
from closedloop.context.features import custom_feature, expr, featureset, functions, ops, scalar, text, vector


def test_the_schema_module_gives_every_name_it_gave():
    for name in ("DEFAULT_MAX_LENGTH", "MISSING", "Field", "Float", "Int", "Bool", "Str"):
        assert getattr(schema, name) is getattr(fields, name), name
    assert schema.Columns is columns.Columns and schema.concat_columns is columns.concat_columns
    assert schema._gather is columns._gather and schema._one_array is columnar._one_array
    assert schema.__all__ == ["DEFAULT_MAX_LENGTH", "Bool", "Columns", "Field", "Float", "Int", "Schema", "Str"]


def test_the_features_package_gives_every_name_it_gave():
    assert F.__all__ == ["Expr", "Feature", "FeatureSet", "abs_", "col", "const", "custom", "log1p", "maximum",
                         "minimum", "sqrt", "where"]
    assert F.Expr is expr.Expr and F.col is expr.col and F.const is expr.const
    assert F.Feature is featureset.Feature and F.FeatureSet is featureset.FeatureSet
    assert F.custom is custom_feature.custom and F.ascii_lower is ops.ascii_lower
    assert (F.NUM, F.STR) == (expr.NUM, expr.STR) == ("num", "str")
    for name in ("abs_", "log1p", "maximum", "minimum", "sqrt", "where"):
        assert getattr(F, name) is getattr(functions, name), name


def test_the_text_methods_build_the_text_nodes():
    c = F.col("s")
    assert isinstance(c.length(), text._StrNum) and isinstance(c.lower(), text._Lower)
    assert isinstance(c.matches("^a"), text._Matches) and isinstance(c.isin(["a"]), text._IsIn)
    assert isinstance(c.contains(F.col("t")), text._ContainsCol) and isinstance(c.contains("a"), text._StrNum)
    assert isinstance(F.col("x").clip(0, 1), functions._Func)


def test_the_two_forms_are_built_by_their_modules():
    fs = F.FeatureSet({"a": F.log1p(F.col("x")) + F.log1p(F.col("x"))}, schema.Schema([fields.Float("x")]))
    source, _ = scalar.compile_scalar(fs.features, fs.schema)
    assert source == fs.source and source.count("_log1p(") == 1  # the shared sub-expression once
    cols = fs.schema.validate_batch({"x": [0.0, 1.0]})
    assert (vector.feature_matrix(fs.features, cols) == fs.batch(cols)).all()
    assert fs.one(fs.schema.validate({"x": 1.0})) == (fs.batch(cols)[1, 0],)
