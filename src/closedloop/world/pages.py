"""Pages: the catalog of URLs users load, legitimate sites' and phishing campaigns'.

The catalog is append-only (a page's row number never changes, so what a past visit loaded stays
known); pages of replaced sites and retired kit generations simply stop being visited. Each row
holds what the browser can see when the page loads — the phishing system's context fields —
and, for phishing pages, the campaign, kit generation and trait categories that made it.

The page kinds and the vocabulary (brands, words, paths, referrers: :mod:`.vocab`) follow the
static generator of the running example (``examples/phishing/data.py``), so that the world's
pages and that generator's look alike; here they are generated per *site*
(:func:`~.legit_sites.legit_pages`) or per *kit* (:func:`~.phish_kits.phish_pages`), once, and
visits pick rows of the catalog (the hot path touches no strings). Both generators and the
vocabulary names used elsewhere are importable from this module too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.world.config import TRAITS
from closedloop.world.legit_sites import legit_pages
from closedloop.world.phish_kits import phish_pages
from closedloop.world.vocab import _BAD_TLDS as _BAD_TLDS
from closedloop.world.vocab import _LEGIT_PATHS as _LEGIT_PATHS
from closedloop.world.vocab import _LOGIN_PATHS as _LOGIN_PATHS
from closedloop.world.vocab import _LOGIN_SUBS as _LOGIN_SUBS
from closedloop.world.vocab import _LURES as _LURES
from closedloop.world.vocab import _PLATFORM_PATHS as _PLATFORM_PATHS
from closedloop.world.vocab import _POPULAR as _POPULAR
from closedloop.world.vocab import _SUBS as _SUBS
from closedloop.world.vocab import _TLDS as _TLDS
from closedloop.world.vocab import _TRACKING as _TRACKING
from closedloop.world.vocab import _WORDS as _WORDS
from closedloop.world.vocab import EMAIL_REFERRERS, LEGIT_REFERRERS, OTHER_PHISH_REFERRERS
from closedloop.world.vocab import _paths as _paths
from closedloop.world.vocab import _pick as _pick

__all__ = [
    "COLUMNS",
    "EMAIL_REFERRERS",
    "LEGIT_REFERRERS",
    "N_TRAITS",
    "OTHER_PHISH_REFERRERS",
    "TRAIT_INDEX",
    "Catalog",
    "legit_pages",
    "phish_pages",
]

N_TRAITS = len(TRAITS)
TRAIT_INDEX = {name: i for i, (name, _) in enumerate(TRAITS)}

#: Columns of the catalog: name → numpy dtype (object: Python strings).
COLUMNS: dict[str, Any] = {
    "url": object, "domain": object, "page_brand": object,
    "age0": np.float64, "age_fixed": np.bool_, "born": np.int32,
    "num_forms": np.int64, "has_password_field": np.bool_, "num_links": np.int64,
    "num_external_links": np.int64, "num_resources": np.int64, "num_external_resources": np.int64,
    "https": np.bool_, "popularity_rank": np.int64,
    "site": np.int64, "kind": np.int16, "campaign": np.int64, "generation": np.int32,
    "efficacy": np.float64,  # how well the page deceives (phishing; 1 for legitimate pages)
}


class Catalog:
    """Every page ever created, as columns (append-only); Arrow copies of the text columns are
    rebuilt lazily when pages were added."""

    def __init__(self) -> None:
        self.n = 0
        self.cols: dict[str, np.ndarray] = {k: np.empty(0, dtype=t) for k, t in COLUMNS.items()}
        self.traits = np.empty((0, N_TRAITS), dtype=np.int8)
        self._arrow: dict[str, pa.Array] | None = None

    def append(self, cols: dict[str, Any], traits: np.ndarray | None = None) -> np.ndarray:
        """Add pages (every column given, same length); returns their row numbers."""
        m = len(cols["url"])
        new = {}
        for k, t in COLUMNS.items():  # every column checked before any is added: a refusal changes nothing
            v = np.asarray(cols[k], dtype=t) if t is not object else _objects(cols[k])
            if v.shape != (m,):
                raise SpecError(f"The catalog column {k!r} must have one value per page ({m}, as 'url' has). "
                                f"Got shape {v.shape} instead.")
            new[k] = v
        if traits is None:
            traits = np.full((m, N_TRAITS), -1, dtype=np.int8)
        if traits.shape != (m, N_TRAITS):
            raise SpecError(f"The 'traits' of the catalog's new pages must have shape {(m, N_TRAITS)}. "
                            f"Got {traits.shape} instead.")
        for k, v in new.items():
            self.cols[k] = np.concatenate([self.cols[k], v])
        self.traits = np.concatenate([self.traits, traits.astype(np.int8)])
        rows = np.arange(self.n, self.n + m, dtype=np.int64)
        self.n += m
        self._arrow = None
        return rows

    def arrow(self, name: str) -> pa.Array:
        """The text column ``name`` as an Arrow string array (built once per change)."""
        if self._arrow is None:
            self._arrow = {}
        a = self._arrow.get(name)
        if a is None:
            a = self._arrow[name] = pa.array(self.cols[name].tolist(), type=pa.string())
        return a

    # -- persistence (no pickle: text as fixed-width unicode) --------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"page.{k}": (v.astype(str) if v.dtype == object else v) for k, v in self.cols.items()}
        out["page.traits"] = self.traits
        return out

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> Catalog:
        c = cls()
        for k, t in COLUMNS.items():
            v = st[f"page.{k}"]
            c.cols[k] = _objects(v.tolist()) if t is object else v.astype(t)
        c.traits = st["page.traits"].astype(np.int8)
        c.n = int(c.cols["url"].shape[0])
        return c


def _objects(values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out
