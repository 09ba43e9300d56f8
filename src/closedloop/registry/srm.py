"""The sample-ratio-mismatch check of a deployment's flights, and the exposure it counts.

:func:`srm` is a chi-square goodness-of-fit test of the units seen per arm against the shares the
flights should get (:func:`closedloop.runtime.deployment.expected_shares`); it runs once every arm expects
at least :data:`SRM_MIN_EXPECTED` units and says "not enough data yet" before. :func:`srm_view`
counts exposure for it: from the change that set the current arms (a flight started, a promotion,
a new production …), and — since serving workers apply a change at their next poll, and a
decision record carries its bundle and flight but not the revision it was made under — in each
writer (process) only after its first decision that only the new arms can make (the new flight's
bundle, the new production bundle): decisions a worker made before it applied the change, and
the arms of a flight that has ended, are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

__all__ = ["SRM_ALPHA", "SRM_MIN_EXPECTED", "arms_change", "exposure_counts", "srm", "srm_view"]

#: p-value under which the sample ratio is called a mismatch (the usual, strict SRM threshold).
SRM_ALPHA = 0.001

#: Units every arm must expect before the chi-square test runs (its approximation's usual rule).
SRM_MIN_EXPECTED = 5

#: The newest applied events :func:`arms_change` reads first (then eight times as many each round).
_FIRST_READ = 64


def srm(observed: Mapping[Any, int], expected: Mapping[Any, float]) -> dict[str, Any]:
    """Chi-square goodness of fit of observed arm sizes (units) against expected shares.
    Keys are arm names (None: production). ``mismatch`` is p < 0.001."""
    from scipy import stats

    arms = list(expected)
    n = sum(int(observed.get(a, 0)) for a in arms)
    total = sum(expected.values())
    rows = []
    chi2 = 0.0
    for a in arms:
        o = int(observed.get(a, 0))
        e = n * expected[a] / total if total > 0 else 0.0
        if e > 0:
            chi2 += (o - e) ** 2 / e
        rows.append({"arm": a if a is not None else "production", "units": o, "expected_share": expected[a] / total,
                     "observed_share": (o / n) if n else None, "expected_units": e})
    df = len(arms) - 1
    if df == 0:
        return {"arms": rows, "units": n, "chi2": None, "df": df, "p_value": None, "mismatch": False,
                "verdict": "nothing to test", "note": "one arm only: there is no split to test"}
    smallest = min(expected[a] / total for a in arms) if total > 0 else 0.0
    needed = math.ceil(SRM_MIN_EXPECTED / smallest - 1e-9) if smallest > 0 else 0
    if n < needed:
        return {"arms": rows, "units": n, "units_needed": needed, "chi2": None, "df": df, "p_value": None,
                "mismatch": False, "verdict": "not enough data yet",
                "note": f"not enough data yet ({n} units; the test needs {needed}: {SRM_MIN_EXPECTED} expected "
                        f"in the smallest arm, {smallest * 100:.3g}%)"}
    p = float(stats.chi2.sf(chi2, df))
    mismatch = p < SRM_ALPHA
    return {"arms": rows, "units": n, "units_needed": needed, "chi2": chi2, "df": df, "p_value": p,
            "mismatch": mismatch, "alpha": SRM_ALPHA, "verdict": "mismatch" if mismatch else "ok"}


def _arms(st: Any) -> tuple[Any, ...]:
    """What decides a unit's arm: the production bundle and the flights (name, bundle, share)."""
    return (st.production, tuple((f.name, f.bundle, f.share) for f in st.flights))


def arms_change(registry: Any, name: str, state: Any) -> dict[str, Any] | None:
    """The applied change that set the current arms of ``state`` (``{"event", "before"}``: the
    history event and the state before it), or None when the history does not hold one.

    The history is read from its newest end, a few events first and then eight times as many
    each round (``registry.history(name, limit=…)``), so a long history is not read whole when
    the arms were set lately — the usual case; the answer is the one a walk over all of it gives."""
    from closedloop.registry.state import DeploymentState

    now = _arms(state)
    limit, oldest = _FIRST_READ, None  # the id of the oldest event looked at so far
    while True:
        events = registry.history(name, limit=limit, attempts=False)
        for e in reversed(events):
            if oldest is not None and e["id"] >= oldest:
                continue  # looked at in an earlier round
            after = DeploymentState.from_dict(e["after"])
            before = DeploymentState.from_dict(e["before"]) if e["before"] else DeploymentState(name)
            if _arms(before) != _arms(after):
                return {"event": e, "before": before} if _arms(after) == now else None
        if len(events) < limit:
            return None
        oldest, limit = events[0]["id"], limit * 8


def exposure_counts(decisions: pa.Table, system: str, since_ns: int, until_ns: int,
                    markers: Sequence[tuple[str | None, str]], *,
                    con: Any = None) -> tuple[dict[tuple[str | None, str], int], dict[str, int]]:
    """Distinct units per (flight or None, bundle version) among the decisions in [since, until]
    without the kill switch — with ``markers`` (the arms only the new deployment has), in each
    writer only the decisions after its first marker decision (by the writer's sequence
    number): that decision shows the writer had applied the change, and what follows it is an
    unselected stream of the new split. Returns the counts and ``{"writers", "writers_applied",
    "decisions", "decisions_counted"}``.
    ``con``: a DuckDB connection whose cursor runs the query (:func:`~closedloop.registry.guard.guard_check`
    passes one per check: a cursor costs microseconds, a new database tens of ms); None: a new database."""
    import duckdb

    cols = decisions.column_names
    writer = "writer" if "writer" in cols else "''"
    order = "seq" if "seq" in cols else "timestamp_ns"
    base = (f"SELECT {writer} AS w, {order} AS o, flight, bundle_version, unit FROM decisions "
            "WHERE system = ? AND timestamp_ns >= ? AND timestamp_ns <= ? AND NOT killswitch")
    params = [system, int(since_ns), int(until_ns)]
    cur = duckdb.connect() if con is None else con.cursor()
    try:
        cur.register("decisions", decisions)
        if markers:
            cur.register("markers", pa.table({"flight": pa.array([m[0] for m in markers], pa.string()),
                                              "bundle": pa.array([m[1] for m in markers], pa.string())}))
            first = ("s AS (SELECT d.w, min(d.o) AS o0 FROM d JOIN markers m ON d.flight IS NOT DISTINCT FROM m.flight "
                     "AND d.bundle_version = m.bundle GROUP BY d.w)")
            rows = cur.execute(f"WITH d AS ({base}), {first} SELECT d.flight, d.bundle_version, count(DISTINCT d.unit) "
                               "FROM d JOIN s ON d.w = s.w AND d.o > s.o0 GROUP BY 1, 2", params).fetchall()
            info = cur.execute(f"WITH d AS ({base}), {first} SELECT count(DISTINCT d.w), count(DISTINCT s.w), "
                               "count(*), count(*) FILTER (WHERE d.o > s.o0) FROM d LEFT JOIN s ON d.w = s.w",
                               params).fetchone()
        else:
            rows = cur.execute(f"WITH d AS ({base}) SELECT flight, bundle_version, count(DISTINCT unit) FROM d "
                               "GROUP BY 1, 2", params).fetchall()
            info = cur.execute(f"WITH d AS ({base}) SELECT count(DISTINCT w), count(DISTINCT w), count(*), count(*) "
                               "FROM d", params).fetchone()
    finally:
        cur.close()
    w, wa, n, nc = (int(x or 0) for x in (info or (0, 0, 0, 0)))
    return ({(f, v): int(u) for f, v, u in rows},
            {"writers": w, "writers_applied": wa, "decisions": n, "decisions_counted": nc})


def srm_view(registry: Any, system: Any, state: Any, decisions: pa.Table, until_ns: int, *,
             con: Any = None) -> dict[str, Any] | None:
    """The sample-ratio check of the current flights (None: no flight runs): units per arm
    counted from the change that set the arms (see :func:`exposure_counts`), against the shares
    the flights should get. The result of :func:`srm`, with ``since`` (the change), ``counted``
    (how exposure was counted) and ``writers`` / ``decisions`` (seen, and counted). ``con``: the
    DuckDB connection :func:`exposure_counts` queries through (None: a new one)."""
    from closedloop.base.times import iso
    from closedloop.runtime.deployment import expected_shares

    name = getattr(system, "name", system)
    if state.production is None or not state.flights:
        return None
    change = arms_change(registry, name, state)
    new = {(None, state.production)} | {(f.name, f.bundle) for f in state.flights}
    if change is None:
        since, markers = 0, []
    else:
        b = change["before"]
        old = ({(None, b.production)} if b.production is not None else set()) | {(f.name, f.bundle) for f in b.flights}
        since = int(change["event"]["at_ns"])
        markers = sorted(new - old, key=lambda m: (m[0] or "", m[1]))
    counts, info = exposure_counts(decisions, name, since, until_ns, markers, con=con)
    observed: dict[str | None, int] = {None: counts.get((None, state.production), 0)}
    for f in state.flights:
        observed[f.name] = counts.get((f.name, f.bundle), 0)
    out = srm(observed, expected_shares(state.flights))
    ev = None if change is None else change["event"]
    out["since"] = {"at_ns": since, "at": iso(since),
                    "change": None if ev is None else {k: ev[k] for k in ("id", "operation", "revision_after", "actor")}}
    if markers:
        shown = ", ".join(f"{'production' if f is None else 'flight ' + f} {v}" for f, v in markers)
        out["counted"] = (f"in each writer, from its first decision by {shown} (it had applied revision "
                          f"{ev['revision_after'] if ev else '?'}); before that, and in ended arms, not counted")
    elif change is not None:
        out["counted"] = (f"from {iso(since)}: the change only moved shares or ended a flight, so no decision shows "
                          "when a worker applied it — a mismatch within a poll interval of it may be workers that "
                          "had not yet")
    else:
        out["counted"] = "every decision (the history does not say when the arms were set)"
    out["writers"] = {"seen": info["writers"], "applied": info["writers_applied"]}
    out["decisions"] = {"seen": info["decisions"], "counted": info["decisions_counted"]}
    return out
