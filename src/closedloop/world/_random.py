"""Reproducible randomness for the world, in two forms.

Streams
    :func:`stream` gives a ``numpy.random.Generator`` for one purpose on one day (or one
    campaign generation), seeded from ``(seed, *key)`` by ``SeedSequence``: what happens on day 5
    does not depend on how many numbers day 4 drew.
Counter-based draws
    :func:`uniform` hashes ``(key, purpose, index)`` with SplitMix64 into a uniform in [0, 1):
    the draw for visit ``i`` does not depend on which other visits were drawn, or in which
    slices. Outcomes use it, so two worlds with the same seed that decide differently still
    share every random number of every visit (common random numbers: a fair comparison of
    policies on the same visit stream).
"""

from __future__ import annotations

import numpy as np

__all__ = ["categorical", "key_of", "lognormal", "normal", "stream", "uniform"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / float(1 << 53)


def stream(seed: int, *key: int) -> np.random.Generator:
    """A generator for ``(seed, *key)``; keys are small non-negative integers."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, *map(int, key)]))


def key_of(seed: int, *parts: int) -> int:
    """A 64-bit key for counter-based draws, from a seed and a few integers."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, *map(int, parts)])
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniform(key: int, purpose: int, index: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1), one per ``index`` (int64 array), independent across ``purpose``."""
    with np.errstate(over="ignore"):
        base = _mix(np.array([np.uint64(key) ^ (np.uint64(purpose + 1) * _GOLDEN)], dtype=np.uint64))[0]
        z = base + (np.asarray(index).astype(np.uint64) + np.uint64(1)) * _GOLDEN
        return (_mix(z) >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def normal(key: int, purpose: int, index: np.ndarray) -> np.ndarray:
    """Standard normals (Box–Muller over two counter-based uniforms)."""
    u1 = uniform(key, 2 * purpose + 1000, index)
    u2 = uniform(key, 2 * purpose + 1001, index)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def lognormal(key: int, purpose: int, index: np.ndarray, median: float, sigma: float) -> np.ndarray:
    return median * np.exp(sigma * normal(key, purpose, index))


def categorical(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws of category indices with probabilities ∝ ``weights``, in random order.

    Counts per category come from one multinomial draw, then the repeated indices are shuffled:
    the same distribution as ``rng.choice(len(weights), n, p=…)``, several times faster when
    there are many categories (no random-access search per draw)."""
    w = np.asarray(weights, dtype=np.float64)
    counts = rng.multinomial(n, w / w.sum())
    out = np.repeat(np.arange(w.size, dtype=np.int64), counts)
    rng.shuffle(out)
    return out
