"""Simulation worlds: users, items, adversaries and feedback, to test the whole loop before
production and to demonstrate it (docs/world.md). The phishing world comes first; the feed
world (:class:`FeedWorld`, configured by ``feed.toml`` through :class:`FeedConfig`, driven by
:func:`run_feed_day`) is the ranking systems' own.

:class:`PhishingWorld` draws each simulated day's page loads (contexts of the phishing system),
takes the decisions back, and emits outcomes with realistic delays and selective labels;
:class:`WorldConfig` is its one committed configuration (``phishing.toml``);
:func:`run_days` drives a world through a real :class:`~closedloop.Runtime` and
:class:`~closedloop.telemetry.Telemetry` on simulated time. See ``docs/world.md``.
"""

from __future__ import annotations

from closedloop.world.config import ACTIONS, LEGIT_KINDS, TRAITS, WorldConfig
from closedloop.world.driver import DayRun, deliver, deliver_until, run_day, run_days
from closedloop.world.feed import FeedWorld
from closedloop.world.feed_config import FeedConfig
from closedloop.world.feed_driver import FeedDay, run_feed_day
from closedloop.world.outcomes import KINDS, OUTCOME_COLUMNS
from closedloop.world.phishing import PhishingWorld, Visits

__all__ = [
    "ACTIONS",
    "KINDS",
    "LEGIT_KINDS",
    "OUTCOME_COLUMNS",
    "TRAITS",
    "DayRun",
    "FeedConfig",
    "FeedDay",
    "FeedWorld",
    "PhishingWorld",
    "Visits",
    "WorldConfig",
    "deliver",
    "deliver_until",
    "run_day",
    "run_days",
    "run_feed_day",
]
