"""The base every package may import: the numeric kernel's Python side (``numeric``), private
files and atomic writes (``files``), times (``times``), an asyncio loop run by the thread that waits
on it (``driven_loop``) and the package's version (``version``)."""

from __future__ import annotations
