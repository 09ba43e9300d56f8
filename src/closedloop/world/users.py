"""Users: browser profiles (the phishing system's unit), their habits and their protection.

Each profile has an id (``u0000042``), a browser, a country, the day it joined (a profile is a
*new user* for ``new_user_days``), an activity level (Pareto: a few browse far more), a
susceptibility (Beta: how readily it falls for a page or clicks through a warning), a report
propensity (LogNormal multiplier of every report rate) and a **role** — honest, or one of the
world's abusive reporters (known to the world only, for measurement). Protection can be turned
off: a false block sometimes makes a user disable it, for ``reenable_mean_days`` on average;
page loads of an unprotected profile are not decided (the browser does not ask) but the world
still counts them (phishing loads there are harm the system could not prevent).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from closedloop.world.config import BROWSERS, WorldConfig

__all__ = ["HONEST", "SMEAR", "UNBLOCK", "Users", "user_ids"]

HONEST, UNBLOCK, SMEAR = 0, 1, 2

_FIELDS = {
    "serial": np.int64, "joined": np.int64, "browser": np.int64, "country": np.int64, "activity": np.float64,
    "susceptibility": np.float64, "report_mult": np.float64, "role": np.int64, "protected": np.bool_,
    "reenable": np.int64,
}


def user_ids(serial: np.ndarray) -> pa.StringArray:
    """``u`` and the serial number in (at least) 7 digits — ``u0000042`` — built column-wise."""
    n = int(serial.shape[0])
    width = max(7, len(str(int(serial.max())))) if n else 7
    chars = np.empty((n, 1 + width), dtype=np.uint8)
    chars[:, 0] = ord("u")
    v = serial.astype(np.int64)
    for j in range(width, 0, -1):
        chars[:, j] = ord("0") + v % 10
        v = v // 10
    offsets = np.arange(0, (1 + width) * (n + 1), 1 + width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


class Users:
    # drawn per profile by _draw (set on first use, refilled for the profiles that churn)
    browser: np.ndarray
    country: np.ndarray
    activity: np.ndarray
    susceptibility: np.ndarray
    report_mult: np.ndarray

    def __init__(self, cfg: WorldConfig, rng: np.random.Generator) -> None:
        u = cfg.users
        n = u.count
        self.n = n
        self.next_serial = n
        self.serial = np.arange(n, dtype=np.int64)
        # joined so that initial_new_share are within their first new_user_days
        new = rng.random(n) < u.initial_new_share
        self.joined = np.where(new, -rng.integers(0, u.new_user_days, size=n), -u.new_user_days - rng.integers(0, 3650, size=n))
        self._draw(cfg, rng, np.arange(n))
        self.role = np.zeros(n, dtype=np.int64)
        k = cfg.abuse.sources
        if k:
            who = rng.choice(n, size=k, replace=False)
            n_smear = int(round(k * cfg.abuse.smear_share))
            self.role[who[:n_smear]] = SMEAR
            self.role[who[n_smear:]] = UNBLOCK
        self.protected = np.ones(n, dtype=bool)
        self.reenable = np.full(n, -1, dtype=np.int64)
        self._ids: pa.Array | None = None
        self._mean_s = float(self.susceptibility.mean())

    def _draw(self, cfg: WorldConfig, rng: np.random.Generator, idx: np.ndarray) -> None:
        u = cfg.users
        m = idx.size
        bw = np.array([w for _, w in u.browsers])
        bi = rng.choice(len(bw), size=m, p=bw / bw.sum())
        code = np.array([BROWSERS.index(name) for name, _ in u.browsers])
        cw = np.array([w for _, w in u.countries])
        values = {
            "browser": code[bi],
            "country": rng.choice(len(cw), size=m, p=cw / cw.sum()),
            "activity": rng.pareto(u.activity_pareto, size=m) + 1.0,
            "susceptibility": rng.beta(*u.susceptibility_beta, size=m),
            "report_mult": rng.lognormal(0.0, u.report_propensity_sigma, size=m)
            / np.exp(u.report_propensity_sigma**2 / 2),
        }
        for k, v in values.items():
            if not hasattr(self, k):
                setattr(self, k, np.empty(self.n, dtype=_FIELDS[k]))
            getattr(self, k)[idx] = v

    @property
    def ids(self) -> pa.Array:
        """Every profile's id as an Arrow string array (index = user number)."""
        if self._ids is None:
            self._ids = user_ids(self.serial)
        return self._ids

    def susceptibility_factor(self, idx: np.ndarray) -> np.ndarray:
        """Susceptibility relative to the population mean (multiplies victim and click rates)."""
        return self.susceptibility[idx] / self._mean_s

    def is_new(self, idx: np.ndarray, day: int, new_user_days: int) -> np.ndarray:
        return (day - self.joined[idx]) < new_user_days

    def evolve(self, cfg: WorldConfig, day: int, rng: np.random.Generator) -> int:
        """Start of ``day``: protection comes back where due; honest profiles churn (replaced by
        new ones, who join today). Returns how many were replaced."""
        back = (self.reenable >= 0) & (self.reenable <= day)
        self.protected[back] = True
        self.reenable[back] = -1
        honest = np.flatnonzero(self.role == HONEST)
        u = rng.random(self.n)
        gone = honest[u[honest] < cfg.users.churn_per_day]
        if gone.size:
            self.serial[gone] = np.arange(self.next_serial, self.next_serial + gone.size)
            self.next_serial += int(gone.size)
            self.joined[gone] = day
            self.protected[gone] = True
            self.reenable[gone] = -1
            self._draw(cfg, rng, gone)
            self._ids = None
        return int(gone.size)

    def disable(self, idx: np.ndarray, until: np.ndarray) -> None:
        """Protection off for ``idx`` until day ``until`` (exclusive)."""
        self.protected[idx] = False
        self.reenable[idx] = np.maximum(self.reenable[idx], until)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"user.{k}": getattr(self, k) for k in _FIELDS}
        out["user.meta"] = np.array([self.next_serial], dtype=np.int64)
        out["user.mean_s"] = np.array([self._mean_s])
        return out

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> Users:
        u = cls.__new__(cls)
        for k, t in _FIELDS.items():
            setattr(u, k, st[f"user.{k}"].astype(t))
        u.n = int(u.serial.shape[0])
        u.next_serial = int(st["user.meta"][0])
        u._mean_s = float(st["user.mean_s"][0])
        u._ids = None
        return u
