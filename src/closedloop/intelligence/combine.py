"""Combinations of intelligences: ensembles, meta-models and per-segment intelligence.

:class:`WeightedVote`
    The weighted mean of its members' scores: ``Σ wᵢ·sᵢ / Σ wᵢ`` (weights finite and > 0).
:class:`Stacking`
    A meta-model over its members' scores: ``link(intercept + Σ wᵢ·t(sᵢ))`` with ``link`` the
    logistic function or the identity, and ``t`` the identity or the log-odds (``logit``) of
    each score. :func:`closedloop.training.fit_stacking` fits the weights.
:class:`Partitioned`
    A different intelligence per value of a text context field (per browser, per country…),
    with a ``default`` for every other value.

Members are any intelligences (combinations included); they are parameters too, saved inside
the combination's JSON and rebuilt with :func:`closedloop.intelligence.load_intelligence`, so a
bundle naming a kind outside ``kinds`` is refused however deep it is nested. Files a member
writes (larger models) are saved under a prefix of its position (``m0.``, ``m1.``…; for
:class:`Partitioned` ``p0.``… in sorted key order and ``default.``), so two members of the same
kind never overwrite each other's files; each member reads its own files back un-prefixed.

Both paths perform the same operations in the same order: sums accumulate left to right in
member order (Python floats in :meth:`~closedloop.intelligence.Scorer.one`, numpy columns in
:meth:`~closedloop.intelligence.Scorer.batch`), the logistic link and the log-odds run the
shared kernels of :mod:`closedloop.base.numeric` (``sigmoid``, ``log1p``), and a partition scores
each row with the member the single path would pick — so ``one`` equals the batch row bitwise.

The kinds live in one module each — :mod:`closedloop.intelligence.vote`,
:mod:`closedloop.intelligence.stacking` (with :func:`logit`), :mod:`closedloop.intelligence.partitioned` —
and what they share in :mod:`closedloop.intelligence.members`; every name stays importable from here.
"""

from __future__ import annotations

from closedloop.intelligence.partitioned import Partitioned
from closedloop.intelligence.stacking import LINKS, LOGIT_EPS, TRANSFORMS, Stacking, logit, logit_array
from closedloop.intelligence.vote import WeightedVote

__all__ = ["LINKS", "LOGIT_EPS", "TRANSFORMS", "Partitioned", "Stacking", "WeightedVote", "logit", "logit_array"]
