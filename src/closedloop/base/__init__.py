"""The base every package may import: the numeric kernel's Python side (``numeric``), private
files and atomic writes (``files``), times (``times``) and the package's version (``version``)."""

from __future__ import annotations
