"""The declaration of an intelligent system: ``spec`` (System), ``validate`` (the check of each of its
parts), ``labels`` (LabelPolicy, OutcomeRule), ``goals`` (Goal), ``splits`` (how its data is split
for evaluation) and ``loading`` (a System from 'module:attr')."""

from __future__ import annotations
