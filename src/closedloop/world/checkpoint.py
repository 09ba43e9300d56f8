"""Checkpoints of a world: its whole state written to a directory and read back.

:func:`save_world` writes ``state.npz`` (every array: catalog, sites, users, campaigns, each day's
record, the outcome queue, pending protection changes — no pickles) and ``state.json`` (the
rest: seed, day, events, faults …) into a fresh directory, atomically; :func:`load_world`
restores a world from it, with the configuration it was saved with
(:meth:`~.phishing.PhishingWorld.save` and :meth:`~.phishing.PhishingWorld.load`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from closedloop.errors import SpecError
from closedloop.world.campaigns import Campaigns
from closedloop.world.config import WorldConfig
from closedloop.world.outcomes import OUTCOME_COLUMNS, OutcomeQueue
from closedloop.world.pages import Catalog
from closedloop.world.sites import Sites
from closedloop.world.users import Users
from closedloop.world.visits import DayRecord

if TYPE_CHECKING:
    from closedloop.world.phishing import PhishingWorld

__all__ = ["STATE_VERSION", "load_world", "save_world"]

STATE_VERSION = 1
#: The arrays of a day's record, in :class:`~.visits.DayRecord`'s field order.
_DAY_ARRAYS = ("ts", "user", "page", "phish", "campaign", "role", "action", "victim", "continued", "u_ref")


def save_world(world: PhishingWorld, path: Path | str) -> Path:
    """Write ``world``'s state to the directory ``path`` (which must not exist yet), atomically."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=False)
    arrays = _arrays(world)
    with open(tmp / "state.npz", "wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)  # no object arrays: load refuses pickles too
    (tmp / "state.json").write_text(json.dumps(_meta(world)))
    if path.exists():
        raise SpecError(f"PhishingWorld.save 'path' must not exist yet. Got {str(path)!r}, which does.")
    os.replace(tmp, path)
    return path


def _arrays(world: PhishingWorld) -> dict[str, np.ndarray]:
    """Every array of the state, by name (``state.npz``)."""
    arrays: dict[str, np.ndarray] = {}
    arrays.update(world.catalog.state())
    arrays.update(world.sites.state())
    arrays.update(world.users.state())
    arrays.update(world.campaigns.state())
    for d, D in world._days.items():
        for k in (*_DAY_ARRAYS, "outcomes"):
            arrays[f"day{d}.{k}"] = getattr(D, k)
    q = world.queue.peek()
    for name in q.column_names:
        col = q[name].to_numpy(zero_copy_only=False)
        arrays[f"queue.{name}"] = col.astype(str) if col.dtype == object else col
    for j, (users, until) in enumerate(world._disable):
        arrays[f"disable{j}.users"], arrays[f"disable{j}.until"] = users, until
    return arrays


def _meta(world: PhishingWorld) -> dict[str, object]:
    """The rest of the state, as JSON-ready values (``state.json``)."""
    return {
        "version": STATE_VERSION, "config_digest": world.config.digest, "seed": world.seed, "day": world.day,
        "id_base": world._id_base, "days": {str(d): {"disables": D.disables, "adapted": D.adapted,
                                                     "retool_decided": D.retool_decided} for d, D in world._days.items()},
        "disable_parts": len(world._disable), "events": world.campaigns.events,
        "pending_adapted": world._pending_adapted,
        "faults": {str(d): k for d, k in world._faults.items()},
        "fault_hits": {str(d): k for d, k in world._fault_hits.items()},
    }


def load_world(cls: type[PhishingWorld], path: Path | str, config: WorldConfig | None = None) -> PhishingWorld:
    """Restore a world written by :func:`save_world` (with the same configuration)."""
    path = Path(path)
    config = config if config is not None else WorldConfig.load()
    meta = json.loads((path / "state.json").read_text())
    if meta.get("version") != STATE_VERSION:
        raise SpecError(f"World state version must be {STATE_VERSION}. Got {meta.get('version')!r} instead.")
    if meta["config_digest"] != config.digest:
        raise SpecError(
            f"World state {str(path)!r} must be loaded with the configuration it was saved with "
            f"(digest {meta['config_digest'][:12]}…). Got digest {config.digest[:12]}… instead."
        )
    with np.load(path / "state.npz", allow_pickle=False) as z:
        st = {k: z[k] for k in z.files}
    w = cls.__new__(cls)
    w.config, w.seed, w.day, w._id_base = config, int(meta["seed"]), int(meta["day"]), int(meta["id_base"])
    w.catalog = Catalog.from_state(st)
    w.sites = Sites.from_state(st)
    w.users = Users.from_state(st)
    w.campaigns = Campaigns.from_state(st, meta["events"])
    w._days = {}
    for d_s, info in meta["days"].items():
        d = int(d_s)
        D = DayRecord(d, *(st[f"day{d}.{k}"] for k in _DAY_ARRAYS))
        D.outcomes = st[f"day{d}.outcomes"]
        D.disables, D.adapted, D.retool_decided = info["disables"], info["adapted"], info["retool_decided"]
        w._days[d] = D
    w.queue = OutcomeQueue()
    w.queue.push(pa.table({f.name: pa.array(st[f"queue.{f.name}"].tolist(), type=f.type) for f in OUTCOME_COLUMNS},
                          schema=OUTCOME_COLUMNS))
    w._disable = [(st[f"disable{j}.users"], st[f"disable{j}.until"]) for j in range(meta["disable_parts"])]
    w._pending_adapted = list(meta["pending_adapted"])
    w._faults = {int(d): k for d, k in meta["faults"].items()}
    w._fault_hits = {int(d): int(k) for d, k in meta["fault_hits"].items()}
    w.timings = {"visits": 0.0, "observe": 0.0, "due": 0.0}
    return w
