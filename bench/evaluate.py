"""Benchmark: the evaluation report on 1M rows, 5 slice fields with 20 values in all, one bundle.

Run it as ``.venv/bin/python bench/evaluate.py`` (``--quick`` for a small run, ``--rows N``).

A bench-local system (a user id, 12 numbers, 5 slice fields: browser 5 values, country 6, os 4,
channel 3, new_user 2) and a logistic bundle. Rows are generated vectorized (excluded from the
timings); labels follow the model's probabilities, with extra label noise in one country so that
the slice test has something to find.

What is timed, in the same run:

* ``metrics + slices``: the framework's own measurement of one bundle's scores
  (:func:`closedloop.evaluation.report.measure` — AUC, log loss, Brier, precision / recall / F1
  at the operating point, both curves, calibration and ECE, the confusion and cost at the
  thresholds, the cost-minimizing thresholds, and every slice value's AUC, log loss, Brier,
  precision, recall, error rate and cost, with the slice-vs-rest tests and the
  Benjamini–Hochberg flags), including coding the slice columns;
* the **baseline**: the same metrics and per-slice metrics with scikit-learn called directly on
  the precomputed predictions — ``roc_auc_score``, ``log_loss``, ``brier_score_loss``,
  ``precision_recall_fscore_support``, ``roc_curve``, ``precision_recall_curve``,
  ``calibration_curve`` (+ numpy bin counts for the ECE), ``confusion_matrix`` of the actions
  at the thresholds; and for each slice value (a numpy mask) ``roc_auc_score``, ``log_loss``,
  ``brier_score_loss``, ``precision_recall_fscore_support`` and the error rate. Target: the
  framework ≤ 2× the baseline. A second baseline adds what the framework's slices also compute
  (each value's rest-of-data AUC by ``roc_auc_score``, the Hanley–McNeil test and BH), reported;
* separately: the runtime's batch scoring (``Runtime.decide_batch`` on the 1M contexts, as
  ``evaluate`` runs it); the confidence intervals — every slice value's AUC interval
  (:func:`~closedloop.evaluation.report.slice_intervals`, DeLong clustered by unit) and, for one
  comparison with a second bundle, the paired Poisson bootstrap by unit
  (:func:`~closedloop.evaluation.report.paired_intervals`, 100 resamples); ``evaluate()`` end to
  end on an imported 1M-row dataset (importing and loading the dataset reported apart); the JSON
  report's size; and the HTML rendering (``closedloop.evaluation.html.render_html``, when that
  module exists).

Timings are the best of several interleaved repeats (``--repeat``). Correctness: the framework's
figures must equal the baseline's (rel 1e-9) — the script exits 1 if not. The last line printed
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import best_of  # bench/ is the script's own folder

import closedloop
from closedloop import Bundle, F, Float, LogisticModel, Runtime, Str, System, Thresholds
from closedloop.evaluation import metrics as M
from closedloop.evaluation import report as R

N_NUM = 12
SLICES = {
    "browser": ("chrome", "edge", "firefox", "safari", "other"),
    "country": ("us", "de", "in", "br", "fr", "jp"),
    "os": ("windows", "macos", "linux", "android"),
    "channel": ("direct", "email", "social"),
    "new_user": ("no", "yes"),
}
REL = 1e-9


def make_system() -> System:
    return System(
        "bench_eval",
        context=[Str("user"), *[Float(f"x{i}") for i in range(N_NUM)],
                 *[Str(name, choices=vals) for name, vals in SLICES.items()]],
        unit="user",
        features={f"f{i}": F.col(f"x{i}") for i in range(N_NUM)},
        actions=["allow", "warn", "block"],
        experience=Thresholds("phish", {"block": 0.9, "warn": 0.6}, otherwise="allow"),
        labels=("legit", "phish"),
        costs={"allow": {"phish": 100.0}, "warn": {"legit": 2.0, "phish": 10.0}, "block": {"legit": 25.0}},
        slices=list(SLICES),
    )


def make_bundle(system: System, seed: int = 7) -> Bundle:
    rng = np.random.default_rng(seed)
    w = {f"f{i}": float(v) for i, v in enumerate(rng.normal(0.0, 0.6, N_NUM))}
    return Bundle.build(system, LogisticModel(w, -1.5, output="phish"))


def make_rows(n: int, seed: int, bundle: Bundle) -> tuple[pa.Table, np.ndarray]:
    """Contexts (an Arrow table) and labels drawn from the model's own probability, with 30 % of
    the labels flipped in country 'br'."""
    rng = np.random.default_rng(seed)
    n_users = max(1, n // 5)
    user = rng.integers(0, n_users, n)
    cols: dict[str, Any] = {"user": pa.array(np.char.add("u", user.astype(str)))}
    X = rng.normal(0.0, 1.0, (n, N_NUM))
    for i in range(N_NUM):
        cols[f"x{i}"] = pa.array(X[:, i])
    for name, vals in SLICES.items():
        # slice values belong to the user (browser, country …), as in real traffic
        per_user = rng.integers(0, len(vals), n_users)
        cols[name] = pa.DictionaryArray.from_arrays(pa.array(per_user[user].astype(np.int32)),
                                                    pa.array(vals)).dictionary_decode()
    w = np.asarray([bundle.intelligence.weights[f"f{i}"] for i in range(N_NUM)])
    p = 1.0 / (1.0 + np.exp(-(X @ w + bundle.intelligence.intercept)))
    y = (rng.random(n) < p).astype(np.int64)
    flip = (np.asarray(cols["country"].to_numpy(zero_copy_only=False)) == "br") & (rng.random(n) < 0.3)
    y[flip] = 1 - y[flip]
    return pa.table(cols), y


# -- the baseline: scikit-learn on precomputed predictions -------------------------------------


def baseline(y: np.ndarray, s: np.ndarray, th: Thresholds, slice_cols: dict[str, np.ndarray],
             tests: bool = False) -> dict[str, Any]:
    from sklearn import metrics as skm
    from sklearn.calibration import calibration_curve

    op = float(th.levels[-1][1])
    pred = s >= op
    out: dict[str, Any] = {
        "auc": skm.roc_auc_score(y, s),
        "log_loss": skm.log_loss(y, s),
        "brier": skm.brier_score_loss(y, s),
    }
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    out.update(precision=prec, recall=rec, f1=f1)
    out["roc"] = skm.roc_curve(y, s)
    out["pr"] = skm.precision_recall_curve(y, s)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10)
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], s), minlength=10)
    counts = counts[counts > 0]
    out["ece"] = float(np.dot(counts, np.abs(prob_true - prob_pred)) / counts.sum())
    action = np.full(y.size, len(th.levels))
    for j in range(len(th.levels) - 1, -1, -1):
        action[s >= th.levels[j][1]] = j
    out["confusion"] = skm.confusion_matrix(action, y, labels=list(range(len(th.levels) + 1)))[:, :2]
    slices: dict[str, dict[str, dict[str, float]]] = {}
    p_auc = []
    for field, col in slice_cols.items():
        rows = {}
        for v in np.unique(col):
            m = col == v
            ym, sm, pm = y[m], s[m], pred[m]
            pr_, rc_, _, _ = skm.precision_recall_fscore_support(ym, pm, average="binary", zero_division=0)
            row = {"n": int(m.sum()), "auc": skm.roc_auc_score(ym, sm), "log_loss": skm.log_loss(ym, sm),
                   "brier": skm.brier_score_loss(ym, sm), "precision": pr_, "recall": rc_,
                   "error_rate": float(np.mean(pm != ym))}
            if tests:
                yr = y[~m]
                rest = skm.roc_auc_score(yr, s[~m])
                pos_in, pos_rest = float(ym.sum()), float(yr.sum())
                row["p_auc"] = M.p_auc_worse(row["auc"], pos_in, ym.size - pos_in, rest, pos_rest, yr.size - pos_rest)
                p_auc.append(row["p_auc"])
            rows[str(v)] = row
        slices[field] = rows
    if tests:
        from scipy.stats import false_discovery_control

        out["bh_adjusted"] = false_discovery_control(p_auc)
    out["slices"] = slices
    return out


def framework(y: np.ndarray, s: np.ndarray, th: Thresholds, system: System,
              slice_arrays: dict[str, pa.Array]) -> tuple[dict[str, Any], R.Measured, list[R.SliceField]]:
    fields = [R.SliceField.of(name, col) for name, col in slice_arrays.items()]
    body, measured = R.measure(y, s, th, labels=system.labels, costs=system.costs, slices=fields)
    return body, measured, fields


def compare(body: dict[str, Any], base: dict[str, Any], y: np.ndarray) -> list[str]:
    bad = []

    def close(name: str, a: float, b: float) -> None:
        if not (a is not None and math.isclose(a, float(b), rel_tol=REL, abs_tol=1e-300)):
            bad.append(f"{name}: framework {a!r} != baseline {b!r}")

    q = body["quality"]
    for k in ("auc", "log_loss", "brier", "precision", "recall", "f1"):
        close(k, q[k], base[k])
    close("ece", body["calibration"]["ece"], base["ece"])
    conf = np.asarray([[c["legit"], c["phish"]] for c in body["mistakes"]["confusion"].values()])
    if not np.array_equal(conf, base["confusion"]):
        bad.append(f"confusion: {conf.tolist()} != {base['confusion'].tolist()}")
    fpr, tpr, _ = base["roc"]
    roc = body["curves"]["roc"]
    if not (len(roc["x"]) <= R.MAX_CURVE_POINTS and roc["x"][-1] == fpr[-1] and roc["y"][-1] == tpr[-1]):
        bad.append("roc curve ends differ")
    for field, rows in body["slices"].items():
        for row in rows:
            b = base["slices"][field][row["value"]]
            if row["n"] != b["n"]:
                bad.append(f"slice {field}={row['value']}: n {row['n']} != {b['n']}")
            for k in ("auc", "log_loss", "brier", "precision", "recall", "error_rate"):
                close(f"slice {field}={row['value']} {k}", row[k], b[k])
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small, fast run (100k rows)")
    ap.add_argument("--rows", type=int, default=None, help="rows (default 1,000,000; quick 100,000)")
    ap.add_argument("--repeat", type=int, default=None, help="repeats per timing (default 3; quick 2)")
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples (default 100)")
    ap.add_argument("--no-end-to-end", action="store_true", help="skip evaluate() on an imported dataset")
    args = ap.parse_args(argv)
    n = args.rows or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (2 if args.quick else 3)
    t_start = time.perf_counter()

    system = make_system()
    bundle = make_bundle(system)
    th = bundle.experience(system)
    table, y = make_rows(n, 1, bundle)
    ids = [str(i) for i in range(n)]
    ts = np.arange(n, dtype=np.int64)
    r: dict[str, Any] = {"rows": n, "slice_fields": len(SLICES), "slice_values": sum(len(v) for v in SLICES.values()),
                         "bootstrap": args.bootstrap}

    # -- the runtime's batch scoring -------------------------------------------------------------
    rt = Runtime(system, bundle)
    r["scoring_s"], batch = best_of(lambda: rt.decide_batch(table, decision_ids=ids, timestamps_ns=ts), 1)
    r["scoring_rows_per_s"] = n / r["scoring_s"]
    s = np.asarray(batch.scores("phish"), dtype=np.float64)
    del batch

    # -- metrics + slices: framework vs scikit-learn (interleaved) ---------------------------
    slice_arrays = {name: table[name].combine_chunks() for name in SLICES}
    slice_np = {name: np.asarray(col.to_numpy(zero_copy_only=False)).astype(str) for name, col in slice_arrays.items()}
    fw_t, base_t, base2_t = math.inf, math.inf, math.inf
    body = measured = fields = base = None
    for _ in range(repeat):
        t, (body, measured, fields) = best_of(lambda: framework(y, s, th, system, slice_arrays), 1)
        fw_t = min(fw_t, t)
        t, base = best_of(lambda: baseline(y, s, th, slice_np), 1)
        base_t = min(base_t, t)
    t, base2 = best_of(lambda: baseline(y, s, th, slice_np, tests=True), 1)
    base2_t = min(base2_t, t)
    r["metrics_slices_s"] = fw_t
    r["baseline_sklearn_s"] = base_t
    r["metrics_slices_vs_baseline"] = fw_t / base_t
    r["baseline_with_slice_tests_s"] = base2_t
    r["metrics_slices_vs_baseline_with_tests"] = fw_t / base2_t
    failures = compare(body, base, y)
    flagged = [f"{f}={row['value']}" for f, rows in body["slices"].items() for row in rows if row["significantly_worse"]]
    r["flagged_slices"] = flagged
    if flagged != ["country=br"]:
        failures.append(f"expected only country=br flagged, got {flagged}")

    # -- confidence intervals ---------------------------------------------------------------------
    enc = table["user"].combine_chunks().dictionary_encode()
    units = np.asarray(enc.indices, dtype=np.int64)
    r["slice_intervals_s"], slice_ci = best_of(lambda: R.slice_intervals(measured, units), repeat)
    missing_ci = sum(ci is None for per in slice_ci for ci in per)
    if missing_ci:
        failures.append(f"{missing_ci} slice intervals undefined")
    # a comparison's paired bootstrap (a second bundle's scores; its scoring and measuring untimed)
    other = make_bundle(system, seed=8)
    s2 = np.asarray(Runtime(system, other).decide_batch(table, decision_ids=ids, timestamps_ns=ts).scores("phish"))
    _, measured2 = R.measure(y, s2, th, labels=system.labels, costs=system.costs)
    r["paired_bootstrap_s"], paired = best_of(
        lambda: R.paired_intervals([measured, measured2], [(0, 1)], units, len(enc.dictionary), args.bootstrap, 0), 1)
    r["paired_bootstrap_per_resample_ms"] = 1000 * r["paired_bootstrap_s"] / max(1, args.bootstrap)
    if paired[0]["auc_diff_ci"] is None:
        failures.append("paired AUC interval undefined")

    # -- evaluate() end to end, the JSON size, the HTML ------------------------------------------
    report = None
    if not args.no_end_to_end:
        from closedloop.datasets import import_dataset
        from closedloop.datasets.dataset import load_dataset

        with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
            import pyarrow.parquet as pq

            y_table = table.append_column("label", pa.array(y))
            pq.write_table(y_table, Path(tmp) / "rows.parquet")
            t = time.perf_counter()
            ds = import_dataset(Path(tmp) / "rows.parquet", system, label="label", unit="user", out=Path(tmp) / "ds")
            r["import_s"] = time.perf_counter() - t
            del y_table
            r["load_dataset_s"], _ = best_of(lambda: load_dataset(ds.path, system), 1)
            t = time.perf_counter()
            report = R.evaluate(system, [bundle], ds.path, split="all", bootstrap=args.bootstrap)
            r["evaluate_end_to_end_s"] = time.perf_counter() - t
        text = json.dumps(report, allow_nan=False)
        r["json_bytes"] = len(text.encode())
        b0 = report["bundles"][0]
        r["json_curve_points_max"] = max(len(b0["curves"]["roc"]["x"]), len(b0["curves"]["pr"]["x"]))
        if not math.isclose(b0["quality"]["auc"], float(base["auc"]), rel_tol=REL):
            failures.append(f"evaluate() AUC {b0['quality']['auc']} != baseline {base['auc']}")
    try:
        from closedloop.evaluation.html import render_html  # type: ignore[import-not-found]
    except ImportError:
        render_html = None
    if render_html is not None and report is not None:
        r["html_s"], html = best_of(lambda: render_html(report), 1)
        r["html_bytes"] = len(html.encode()) if isinstance(html, str) else len(html)
    else:
        r["html_s"] = r["html_bytes"] = None
        r["html"] = "not measured: closedloop.evaluation.html.render_html does not exist here" \
            if render_html is None else "not measured: no end-to-end report"

    r["targets"] = {"metrics_slices_vs_baseline": "<= 2", "json_curve_points_max": "<= 500",
                    "html_bytes": "<= 5 MB"}
    met = r["metrics_slices_vs_baseline"] <= 2.0
    if "json_curve_points_max" in r:
        met = met and r["json_curve_points_max"] <= 500
    if r["html_bytes"] is not None:
        met = met and r["html_bytes"] <= 5 * 2**20
    r["targets_met"] = met
    r["correct"] = not failures
    r["elapsed_s"] = time.perf_counter() - t_start

    print(f"closedloop {closedloop.__version__} evaluate benchmark — {n:,} rows, {r['slice_fields']} slice fields "
          f"({r['slice_values']} values), one logistic bundle; Python {platform.python_version()}, "
          f"numpy {np.__version__}{' (quick run)' if args.quick else ''}; best of {repeat}")
    lines = [
        ("runtime batch scoring (decide_batch)", f"{r['scoring_s']:.3f} s", f"{r['scoring_rows_per_s']:,.0f} rows/s", "report"),
        ("metrics + slices (framework)", f"{fw_t:.3f} s", f"{r['metrics_slices_vs_baseline']:.2f}× sklearn", "≤ 2×"),
        ("  baseline: sklearn on predictions", f"{base_t:.3f} s", "1.00×", ""),
        ("  baseline + slice-vs-rest tests", f"{base2_t:.3f} s", f"{r['metrics_slices_vs_baseline_with_tests']:.2f}× (framework)", ""),
        ("slice AUC intervals (clustered DeLong)", f"{r['slice_intervals_s']:.3f} s",
         f"{r['slice_intervals_s'] / fw_t:.2f}× metrics + slices", "report"),
        (f"1 comparison: paired bootstrap ({args.bootstrap})", f"{r['paired_bootstrap_s']:.3f} s",
         f"{r['paired_bootstrap_per_resample_ms']:.1f} ms/resample", "report"),
    ]
    if report is not None:
        lines += [
            ("import_dataset (1 file → dataset)", f"{r['import_s']:.3f} s", "", "report"),
            ("load_dataset", f"{r['load_dataset_s']:.3f} s", "", "report"),
            ("evaluate() end to end", f"{r['evaluate_end_to_end_s']:.3f} s", "incl. load + bootstrap", "report"),
            ("JSON report", f"{r['json_bytes'] / 1024:.1f} KiB", f"curves ≤ {r['json_curve_points_max']} points", "≤ 500 points"),
        ]
    lines.append(("HTML rendering", "—" if r["html_s"] is None else f"{r['html_s']:.3f} s",
                  r.get("html", "") if r["html_s"] is None else f"{r['html_bytes'] / 2**20:.2f} MiB", "≤ 5 MB"))
    widths = [max(len(str(row[i])) for row in lines) for i in range(4)]
    for row in lines:
        print("  ".join(str(v).ljust(wd) for v, wd in zip(row, widths, strict=True)).rstrip())
    print(f"flagged slices: {flagged}")
    for f in failures:
        print(f"CORRECTNESS FAILURE: {f}")
    if not failures:
        print("correctness: the framework's metrics and every slice's equal scikit-learn's (rel 1e-9)")
    print(f"targets met: {r['targets_met']}   (elapsed {r['elapsed_s']:.1f} s)")
    print(json.dumps(r))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
