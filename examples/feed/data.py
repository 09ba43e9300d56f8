"""Synthetic feed requests: a user, a moment and N candidate items each.

``generate(n, n_candidates, seed)`` returns ``n`` request contexts as the single-decision path
takes them (request fields plus ``"candidates"``: a list of item mappings); ``columnar(contexts)``
turns them into the two columnar batches of the batch path (requests, and candidates with the
``request`` column naming each one's request row). Everything is drawn from one
``numpy.random.Generator(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .system import CATEGORIES

__all__ = ["columnar", "generate"]

COUNTRIES = ("us", "de", "fr", "br", "in", "jp", "")


def generate(n: int, n_candidates: int | Sequence[int] = 80, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` requests with ``n_candidates`` candidates each (one count, or one per request)."""
    rng = np.random.default_rng(seed)
    counts = [int(n_candidates)] * n if isinstance(n_candidates, int) else [int(c) for c in n_candidates]
    if len(counts) != n:
        raise ValueError(f"n_candidates must be one count or {n} counts. Got {len(counts)} instead.")
    out = []
    next_item = 0
    for i in range(n):
        c = counts[i]
        ctr = np.clip(rng.beta(2.0, 30.0, size=c), 0.0, 1.0)
        age = rng.exponential(20.0, size=c)
        cats = rng.integers(0, len(CATEGORIES), size=c)
        items = [
            {
                "item_id": f"item-{next_item + j}",
                "category": CATEGORIES[int(cats[j])],
                "item_ctr": float(ctr[j]),
                "age_hours": float(age[j]),
                "is_new": bool(age[j] < 3.0),
            }
            for j in range(c)
        ]
        next_item += c
        out.append(
            {
                "user_id": f"user-{int(rng.integers(0, max(1, n // 3)))}",
                "country": COUNTRIES[int(rng.integers(0, len(COUNTRIES)))],
                "hour": int(rng.integers(0, 24)),
                "candidates": items,
            }
        )
    return out


def columnar(contexts: Sequence[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """(requests, candidates) as Arrow tables; ``candidates["request"]`` is the request row."""
    req_fields = [k for k in contexts[0] if k != "candidates"] if contexts else []
    requests = pa.table({k: [c[k] for c in contexts] for k in req_fields})
    rows = [(i, item) for i, c in enumerate(contexts) for item in c["candidates"]]
    cand_fields = list(rows[0][1]) if rows else []
    cands: dict[str, Any] = {k: [item[k] for _, item in rows] for k in cand_fields}
    cands["request"] = np.array([i for i, _ in rows], dtype=np.int64)
    return requests, pa.table(cands)
