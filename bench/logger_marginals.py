"""Benchmark: the slot marginals a ranking report computes at feed scale, against their baselines.

Run it as ``.venv/bin/python bench/logger_marginals.py`` (``--quick``: 2,000 decisions).

20,000 decisions of 20 candidates, k = 5, logged under SquareCB(3000) (the feed demo's evaluation):

* the logger's marginals at its logged slots with the exact slots by the compiled loop
  (``_kernels.logger_exact``) against numpy's enumeration of every candidate (the same numbers
  within 1e-12: checked, exit 1 otherwise);
* the logger's marginals and one bundle's sampled marginals on :data:`THREADS` threads against one
  (the same bits: checked).

Each figure is the best of three; the last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import best_of  # bench/ is the script's own folder

from closedloop.evaluation import ranking_marginals as rm
from closedloop.experience.exploration import SquareCB
from closedloop.experience.ranking_kernel import rank_rows


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    R, N, k = (2000 if args.quick else args.decisions), 20, 5
    rng = np.random.default_rng(0)
    S, counts, explore = rng.normal(-2.0, 1.0, (R, N)), np.full(R, N), SquareCB(3000.0)
    logged = rank_rows(S, counts, k, explore, rng.random((R, k)))[0].astype(np.int64)
    compiled, threads = rm.compiled, rm.THREADS

    def logger() -> np.ndarray:
        return rm.logger_marginals(S, counts, logged, k, explore, seed=1)

    def sampled() -> np.ndarray:
        return rm.sampled_marginals(S, counts, k, explore, seed=1)

    try:
        t_c, got_c = best_of(logger, 3)
        rm.compiled = lambda name: None if name == "logger_exact" else compiled(name)  # type: ignore[assignment]
        t_np, got_np = best_of(logger, 3)
        rm.compiled = compiled
        rm.THREADS = 1
        t_l1, got_l1 = best_of(logger, 3)
        t_s1, got_s1 = best_of(sampled, 3)
        rm.THREADS = threads
        t_s, got_s = best_of(sampled, 3)
    finally:
        rm.compiled, rm.THREADS = compiled, threads
    same = bool(np.allclose(got_c, got_np, rtol=1e-12, equal_nan=True) and np.array_equal(got_c, got_l1, equal_nan=True)
                and np.array_equal(got_s, got_s1))
    fig = {"bench": "logger_marginals", "decisions": R, "candidates": N, "k": k, "threads": threads,
           "logger_compiled_exact_s": round(t_c, 3), "logger_numpy_exact_s": round(t_np, 3),
           "ratio_compiled_vs_numpy": round(t_c / t_np, 3), "logger_one_thread_s": round(t_l1, 3),
           "ratio_logger_threads_vs_one": round(t_c / t_l1, 3), "sampled_one_thread_s": round(t_s1, 3),
           "sampled_s": round(t_s, 3), "ratio_sampled_threads_vs_one": round(t_s / t_s1, 3), "same_numbers": same}
    print(f"{R:,} decisions × {N} candidates, k = {k}, SquareCB(3000), {threads} threads")
    print(f"  logger's marginals: compiled exact slots {t_c:.2f} s vs numpy's enumeration {t_np:.2f} s "
          f"({fig['ratio_compiled_vs_numpy']:.2f}×); one thread {t_l1:.2f} s ({fig['ratio_logger_threads_vs_one']:.2f}×)")
    print(f"  a bundle's sampled marginals: {t_s:.2f} s vs one thread {t_s1:.2f} s ({fig['ratio_sampled_threads_vs_one']:.2f}×)")
    print(f"  the same numbers: {same}")
    print(json.dumps(fig))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
