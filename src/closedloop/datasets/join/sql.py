"""SQL text for the join: quoting, and telemetry Parquet files registered as a DuckDB view."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["ident", "quote", "register_files"]


def quote(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def ident(s: str) -> str:
    """A SQL identifier (a column name), quoted."""
    return '"' + s.replace('"', '""') + '"'


def register_files(con: Any, name: str, files: Sequence[Path | str], schema: pa.Schema) -> None:
    """The temp view ``name`` over the Parquet ``files`` (with ``filename`` and ``file_row_number``
    columns: a row's position, which deduplication drops copies by; files of an older record schema
    read with the columns added since null: ``union_by_name``); no files → an empty view of
    ``schema`` plus those two columns."""
    paths = [str(f) for f in files]
    if paths:
        lst = "[" + ", ".join(quote(f) for f in paths) + "]"
        con.execute(
            f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet({lst}, union_by_name=true, filename=true, "
            "file_row_number=true)"
        )
    else:
        empty = schema.append(pa.field("filename", pa.string())).append(
            pa.field("file_row_number", pa.int64())
        ).empty_table()
        con.register(f"{name}_empty", empty)
        con.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM {name}_empty")
