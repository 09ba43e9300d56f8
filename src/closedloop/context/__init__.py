"""What a decision sees: the context's fields and their validation (``schema``), and the features
computed from them, in one scalar and one vectorized form (``features``)."""

from __future__ import annotations
