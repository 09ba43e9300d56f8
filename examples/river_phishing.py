"""River's shipped Phishing dataset as a small system of its own.

``river.datasets.Phishing`` holds 1,250 real web pages (the UCI "Website Phishing" data), each
with 9 features already scaled to {0, 0.5, 1} (or {0, 1}) and whether it is phishing. The data
ships inside River's wheel (``phishing.csv.gz``): nothing is downloaded.

The file has no unit and no time column, so the dataset's row index stands in for both (the
report says so in ``metadata.notes``). Run the whole flow — import, train a heuristic, a logistic
and a LightGBM bundle, evaluate them side by side, write the report — with::

    python -m examples.river_phishing [OUT_DIR]

(``pip install river``: it is in the ``dev`` extra.)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from closedloop import F, Float, Str, System, Thresholds

#: The dataset's features, in the file's order.
FEATURES = (
    "empty_server_form_handler",
    "popup_window",
    "https",
    "request_from_other_domain",
    "anchor_from_other_domain",
    "is_popular",
    "long_url",
    "age_of_domain",
    "ip_in_url",
)
LABEL = "is_phishing"

system = System(
    "river_phishing",
    description="Warn or block a page from the 9 page features of River's Phishing dataset.",
    # The file has no unit: the field exists for the runtime (and stays empty); the dataset's unit
    # column holds the row index that stands in for it.
    context=[Str("page", default=""), *[Float(name, ge=0, le=1) for name in FEATURES]],
    unit="page",
    features={name: F.col(name) for name in FEATURES},
    actions=["allow", "warn", "block"],
    experience=Thresholds("phish", {"block": 0.9, "warn": 0.5}, otherwise="allow"),
    labels=("legit", "phish"),
    costs={"allow": {"phish": 100.0}, "warn": {"legit": 2.0, "phish": 10.0}, "block": {"legit": 25.0}},
    slices=["https", "age_of_domain"],
)

#: A hand-written baseline: an empty or blank form handler, pop-ups, no or bad HTTPS, a young domain.
HEURISTIC_RULES = [
    ["empty_server_form_handler", "<", 0.75, 0.45],
    ["popup_window", "<", 0.25, 0.2],
    ["https", "<", 0.75, 0.25],
    ["age_of_domain", "<", 0.5, 0.1],
]
LOGISTIC_PARAMS: dict[str, Any] = {"C": 1.0}
LIGHTGBM_PARAMS: dict[str, Any] = {"num_leaves": 7, "num_boost_round": 60, "learning_rate": 0.1}


def rows() -> list[tuple[dict[str, float], bool]]:
    """The 1,250 (features, is_phishing) pairs as River yields them."""
    from river import datasets

    return list(datasets.Phishing())


def write_csv(path: Path | str) -> Path:
    """River's Phishing pages as a labeled CSV file (the 9 features and ``is_phishing`` 0/1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*FEATURES, LABEL])
        for x, y in rows():
            w.writerow([*(x[name] for name in FEATURES), int(y)])
    return path


def run(out: Path | str, *, bootstrap: int = 100) -> dict[str, Any]:
    """Import → train heuristic, logistic and LightGBM → evaluate side by side → the report
    (also written to ``out/report.json``). Returns ``{"dataset", "runs", "report", "path"}``."""
    from closedloop.datasets import import_dataset
    from closedloop.evaluation.report import evaluate
    from closedloop.training import train

    out = Path(out)
    ds = import_dataset(write_csv(out / "phishing.csv"), system, label=LABEL, out=out / "dataset")
    runs = {
        "heuristic": train(system, ds.path, model="heuristic", params={"rules": HEURISTIC_RULES}),
        "logistic": train(system, ds.path, model="logistic", params=LOGISTIC_PARAMS),
        "lightgbm": train(system, ds.path, model="lightgbm", params=LIGHTGBM_PARAMS),
    }
    report = evaluate(system, [r.bundle for r in runs.values()], ds.path, bootstrap=bootstrap)
    path = out / "report.json"
    path.write_text(json.dumps(report, allow_nan=False, indent=1))
    return {"dataset": ds, "runs": runs, "report": report, "path": path}


def main(argv: list[str] | None = None) -> None:
    import tempfile

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="river-phishing-"))
    result = run(out)
    rep = result["report"]
    print(f"{rep['rows']['n']} evaluation rows ({rep['rows']['positives']} phishing); {' '.join(rep['metadata']['notes'])}")
    for b in rep["bundles"]:
        q = b["quality"]
        print(f"  {b['kind']:>14}  AUC {q['auc']:.4f}  log loss {q['log_loss']:.4f}  precision {q['precision']:.3f}  "
              f"recall {q['recall']:.3f}  cost/1000 {b['mistakes']['cost_per_1000']:.1f}")
    if rep["heuristic_note"]:
        print(rep["heuristic_note"])
    print(f"gate: {'pass' if rep['gate']['passed'] else 'fail'} {rep['gate']['reasons']}")
    print(f"report: {result['path']}")


if __name__ == "__main__":
    main()
