"""What a decision sees: the context's fields (``fields``) and their validation (``schema``: one
context, and a columnar batch column by column in ``columnar``, giving ``columns.Columns``), and the
features computed from them, in one scalar and one vectorized form (the ``features`` package)."""

from __future__ import annotations
