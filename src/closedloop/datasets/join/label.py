"""Stage *label*: the label policy as SQL (:class:`Labeling`).

The labels' side ``l`` is one row per decision with a matched outcome: per rule ``i`` the count
``n{i}`` and the aggregate ``a{i}`` of its outcomes of the rule's kind (and ``sw``, the smallest
source weight, when sources are weighted). A row's label is the first rule with a counted outcome,
else its entity's label (``LabelPolicy(entity=)``, the temp table ``ent``), else the default of
its action; its weight is ``1 / sample_prob`` (``× 1 / propensity`` under inverse propensity),
times the audit weight of its band (``LabelPolicy(audit=)``) and its source weight. The rules, in
words: docs/datasets.md ("Aggregation", "Label", "Weight", "Sources").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from closedloop.datasets.join.dedupe import not_a_copy
from closedloop.datasets.join.inputs import JoinInputs
from closedloop.datasets.join.select import Selection
from closedloop.datasets.join.sql import quote
from closedloop.system.spec import LabelPolicy

__all__ = [
    "Labeling", "RuleSql", "aggregate_sql", "audit_weights", "default_sql", "entity_labels", "label", "labels_cte",
    "rows_where", "rule_sql", "source_weight",
]


@dataclass(frozen=True)
class Labeling:
    """What the write stage needs of the label policy: the labels' side's aggregate columns, the
    rows of the dataset (``rows_where``), the ``label`` and ``weight`` expressions, the join to
    the entity labels (or ``""``), and the audit's figures for the manifest (or None)."""

    agg_cols: list[str]
    rows_where: str
    label_expr: str
    weight_expr: str
    entity_join: str
    audit: dict[str, Any] | None

    @property
    def labels_cte(self) -> str:
        """The CTE ``l``, the labels' side."""
        return labels_cte(self.agg_cols)


@dataclass(frozen=True)
class RuleSql:
    """Per rule of the policy: its two aggregate columns (``n{i}``, ``a{i}``), the class it gives
    when it has a counted outcome, and its ``WHEN`` case of the label."""

    agg_cols: list[str]
    rule_label: list[str]
    label_cases: list[str]


def aggregate_sql(aggregate: str, kind: str) -> str:
    """The aggregate (``earliest``, ``latest``, ``sum``, ``max``, ``any``) of the values of the
    outcomes of ``kind``; earliest and latest by (event, ingest, outcome id)."""
    flt = f"FILTER (WHERE kind = {quote(kind)})"
    key = "struct_pack(e := event_ns, i := ingest_ns, o := outcome_id)"
    return {
        "earliest": f"arg_min(value, {key}) {flt}",
        "latest": f"arg_max(value, {key}) {flt}",
        "sum": f"sum(value) {flt}",
        "max": f"max(value) {flt}",
        "any": f"max(CASE WHEN value <> 0 THEN 1.0 ELSE 0.0 END) {flt}",
    }[aggregate]


def rule_sql(policy: LabelPolicy, pos: str, neg: str) -> RuleSql:
    """The rules of ``policy`` as SQL; a rule without a label gives ``pos`` for a nonzero
    aggregate, else ``neg``."""
    rule_label = [quote(r.label) if r.label is not None else f"CASE WHEN l.a{i} <> 0 THEN {quote(pos)} ELSE {quote(neg)} END"
                  for i, r in enumerate(policy.rules)]
    label_cases = [f"WHEN l.n{i} > 0 THEN {rule_label[i]}" for i in range(len(policy.rules))]
    agg_cols = []
    for i, r in enumerate(policy.rules):
        agg_cols.append(f"count(*) FILTER (WHERE kind = {quote(r.kind)}) AS n{i}")
        agg_cols.append(f"{aggregate_sql(r.aggregate, r.kind)} AS a{i}")
    return RuleSql(agg_cols, rule_label, label_cases)


def labels_cte(agg_cols: list[str]) -> str:
    """The CTE ``l``: the columns ``agg_cols`` over each decision's matched outcomes in ``lo``."""
    return f"""l AS (
            SELECT decision_id, {", ".join(agg_cols)}
            FROM lo WHERE status = 'matched' GROUP BY decision_id
          )"""


def rows_where(sel: Selection, early_labels: bool) -> str:
    """The predicate of a decision ``d`` (joined with ``l``) in the dataset: in the time range,
    its window closed by the cut-off (or, with ``early_labels``, a counted outcome already), not
    a copy (docs/datasets.md, "Decisions in the dataset")."""
    closed = "(d.timestamp_ns + $window <= $cutoff OR l.decision_id IS NOT NULL)" if early_labels \
        else "d.timestamp_ns + $window <= $cutoff"
    return f"""{sel.at_cutoff("d.")}
            AND d.timestamp_ns >= $since AND d.timestamp_ns < $until
            AND {closed}
            AND {not_a_copy("d.", sel.engine)}"""


def default_sql(policy: LabelPolicy) -> str:
    """The label of a row without a counted outcome: per action, else the policy default."""
    def lit(label: str | None) -> str:
        return quote(label) if label is not None else "NULL::VARCHAR"

    if not policy.action_defaults:
        return lit(policy.default)
    cases = " ".join(f"WHEN {quote(a)} THEN {lit(lab)}" for a, lab in sorted(policy.action_defaults.items()))
    return f"CASE d.action {cases} ELSE {lit(policy.default)} END"


def entity_labels(con: Any, sel: Selection, entity: str, rules: RuleSql, where: str, pos: str, neg: str) -> str:
    """Create the temp table ``ent`` (``e``, ``elabel``, ``n_silent``): per value of the context
    field ``entity``, the label most of its decisions with an outcome got (by their rules; a tie
    gives none, and is left out) and how many of its decisions have none (they take the entity's
    label: the manifest counts them) → the join of a dataset row to its entity's label."""
    path = '$."' + entity + '"'  # JSONPath to the field, quoted
    ent = f"json_extract_string(d.context_json, {quote(path)})"
    con.execute(
        f"""
        CREATE TEMP TABLE ent AS
        WITH {labels_cte(rules.agg_cols)}
        SELECT e, CASE WHEN p > q THEN {quote(pos)} WHEN q > p THEN {quote(neg)} END AS elabel, n_silent FROM (
          SELECT {ent} AS e, count(*) FILTER (WHERE rl = {quote(pos)}) AS p,
                 count(*) FILTER (WHERE rl = {quote(neg)}) AS q, count(*) FILTER (WHERE no_outcome) AS n_silent
          FROM (SELECT d.context_json, CASE {' '.join(rules.label_cases)} END AS rl, l.decision_id IS NULL AS no_outcome
                FROM dec_files d LEFT JOIN l ON d.decision_id = l.decision_id WHERE {where}) AS d
          GROUP BY e)
        WHERE e IS NOT NULL AND p <> q
        """,
        sel.params,
    )
    return f"LEFT JOIN ent ON {ent} = ent.e"


def audit_weights(
    con: Any, sel: Selection, policy: LabelPolicy, kind: str, hidden: list[str], rules: RuleSql, label_expr: str,
    weight_expr: str,
) -> tuple[dict[str, Any], str, str]:
    """``LabelPolicy(audit=kind)``: in the bands whose outcome is hidden (the actions ``hidden``),
    the audit alone labels, each audited decision standing for (decisions / audited decisions) of
    its action → (the manifest's ``audit``, the label expression, the weight expression)."""
    ai = [r.kind for r in policy.rules].index(kind)
    in_hidden = f"d.action IN ({', '.join(quote(a) for a in hidden)})"
    audit: dict[str, Any] = {"kind": kind, "actions": {}}
    rows = con.execute(
        f"""
        WITH a AS (SELECT DISTINCT decision_id FROM lo WHERE status = 'matched' AND kind = {quote(kind)})
        SELECT d.action, count(*), count(a.decision_id)
        FROM dec_files d LEFT JOIN a ON d.decision_id = a.decision_id
        WHERE {sel.at_cutoff("d.")}
          AND d.timestamp_ns >= $since AND d.timestamp_ns < $until
          AND d.timestamp_ns + $window <= $cutoff AND {in_hidden}
          AND {not_a_copy("d.", sel.engine)}
        GROUP BY d.action ORDER BY d.action
        """,
        sel.params,
    ).fetchall()
    factor = []
    for action, n, n_audited in rows:
        w = float(n) / float(n_audited) if n_audited else None
        audit["actions"][str(action)] = {"decisions": int(n), "audited": int(n_audited), "weight": w}
        if w is not None:
            factor.append(f"WHEN {quote(str(action))} THEN {w!r}")
    label_expr = (f"CASE WHEN {in_hidden} THEN (CASE WHEN l.n{ai} > 0 THEN {rules.rule_label[ai]} END) "
                  f"ELSE {label_expr} END")
    if factor:
        weight_expr = f"{weight_expr} * (CASE WHEN {in_hidden} THEN (CASE d.action {' '.join(factor)} ELSE 1.0 END) ELSE 1.0 END)"
    return audit, label_expr, weight_expr


def source_weight(weights: dict[str, float]) -> str:
    """The aggregate column ``sw`` of the labels' side: the smallest weight among the sources of
    a decision's matched outcomes (a source not named weighs 1)."""
    cases = " ".join(f"WHEN {quote(k)} THEN {v!r}" for k, v in sorted(weights.items()))
    return f"min(CASE source {cases} ELSE 1.0 END) AS sw"


def label(con: Any, sel: Selection, inputs: JoinInputs) -> Labeling:
    """The label policy of ``inputs`` as SQL over ``lo`` (creating ``ent`` for an entity policy)."""
    system, policy = inputs.system, inputs.policy
    pos, neg = system.labels[1], system.labels[0]
    rules = rule_sql(policy, pos, neg)
    where = rows_where(sel, inputs.early_labels)
    entity_join, entity_case = "", ""
    if policy.entity is not None:
        entity_join = entity_labels(con, sel, policy.entity, rules, where, pos, neg)
        entity_case = "WHEN ent.elabel IS NOT NULL THEN ent.elabel"
    label_expr = f"CASE {' '.join(rules.label_cases)} {entity_case} ELSE {default_sql(policy)} END"
    weight_expr = "1.0 / d.sample_prob"
    if policy.inverse_propensity:
        weight_expr = "1.0 / (d.sample_prob * d.propensity)"
    audit: dict[str, Any] | None = None
    hidden = [a for a in system.actions if policy.default_for(a) is None]
    if policy.audit is not None and hidden:
        audit, label_expr, weight_expr = audit_weights(con, sel, policy, policy.audit, hidden, rules, label_expr, weight_expr)
    agg_cols = rules.agg_cols
    if inputs.weights:
        agg_cols = [*agg_cols, source_weight(inputs.weights)]
        weight_expr = f"{weight_expr} * coalesce(l.sw, 1.0)"
    return Labeling(agg_cols, where, label_expr, weight_expr, entity_join, audit)
