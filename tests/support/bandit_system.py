"""A bandit-world ranking system importable as ``support.bandit_system:system`` (for the CLI tests)."""

from __future__ import annotations

from closedloop.experience.exploration import Softmax
from closedloop.world.bandit import BanditWorld

world = BanditWorld(seed=1, n_candidates=6)
system = world.system(k=2, explore=Softmax(0.1))
