"""The join on Spark: the same stages, their DuckDB SQL rendered for Spark SQL by SQLGlot.

:class:`SparkConnection` stands in for the DuckDB connection the stages run on: each statement
they build (DuckDB SQL, ``$name`` parameters) is parsed by SQLGlot, its parameters bound as
literals, and rendered in Spark's dialect (1-based list indexes become 0-based, ``arg_max``
becomes ``max_by``, ``QUALIFY`` a subquery, JSON paths ``get_json_object``, …). A ``CREATE TEMP
TABLE`` becomes a cached temp view, ``COPY … TO`` a Spark write of part files in the dataset's
row order that DuckDB then copies into the one data file (the same writer as the DuckDB engine).
The few differences SQLGlot cannot render are explicit in the stages (``Selection.engine``):
the ASOF join (:func:`~closedloop.datasets.join.link.link_ctes`), the test of a decision copy
(:func:`~closedloop.datasets.join.dedupe.not_a_copy`) and the order of the written rows.

:func:`register_spark_files` reads the lake's Parquet files into the views ``dec_files`` and
``out_files``: the records' columns (a column missing from every file is null, as DuckDB's
``union_by_name``), ``filename`` (the file's position in the sorted list) and ``file_row_number``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa

from closedloop.datasets.join.sql import quote
from closedloop.errors import DatasetError

__all__ = ["ORDER_COLUMNS", "SPARK_DRIVER_MEMORY", "SparkConnection", "hadoop_path", "register_spark_files", "spark_conf", "spark_session"]

#: The Spark driver's memory (in ``local[…]`` the executors run inside the driver's JVM).
SPARK_DRIVER_MEMORY = "2g"
#: The columns the write stage adds for the row order (the file's position, the row's in its file).
ORDER_COLUMNS = ("__file", "__row")

_LOG4J = Path(__file__).with_name("spark-log4j2.properties")


@contextmanager
def spark_session(master: str | None, local_dir: Path) -> Iterator[Any]:
    """The SparkSession of one build: the one already active in this process (left running), or
    one started on ``master`` (default ``local[2]``) and stopped at the end."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DatasetError(
            "The dataset 'engine' 'spark' needs PySpark and SQLGlot (pip install 'closedloop[spark]') and a Java 17 runtime."
        ) from None
    if master is not None and (not isinstance(master, str) or not master.strip()):
        raise DatasetError(f"The dataset 'spark_master' must be a Spark master URL such as 'local[2]'. Got {master!r} instead.")
    active = SparkSession.getActiveSession()
    if active is not None:
        have = active.sparkContext.master
        if master is not None and master != have:
            raise DatasetError(
                f"The dataset 'spark_master' must be the active SparkSession's master {have!r} (or None). Got {master!r} instead."
            )
        yield active
        return
    master = master or "local[2]"
    builder = SparkSession.builder.master(master).appName("closedloop-dataset")
    for k, v in spark_conf(master, local_dir).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def spark_conf(master: str, local_dir: Path) -> dict[str, str]:
    """The session's settings: DuckDB's semantics where they differ (no ANSI errors: an index
    past a list's end or a division by zero is null), a quiet log, no UI; in ``local[…]`` the
    driver's memory, a loopback address and the build's scratch directory."""
    conf = {
        "spark.sql.ansi.enabled": "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={_LOG4J.as_uri()}",
    }
    if master.startswith("local"):  # a cluster's executors have their own memory and scratch space
        conf |= {"spark.driver.memory": SPARK_DRIVER_MEMORY, "spark.driver.host": "127.0.0.1",
                 "spark.driver.bindAddress": "127.0.0.1", "spark.local.dir": str(local_dir)}
    return conf


def register_spark_files(spark: Any, name: str, files: Sequence[str], schema: pa.Schema) -> None:
    """The temp view ``name`` over the Parquet ``files`` (sorted) with the columns of ``schema``,
    ``filename`` (the file's position in ``files``) and ``file_row_number``."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    spark_schema = from_arrow_schema(schema)
    if not files:
        df = spark.createDataFrame([], spark_schema).withColumn("filename", F.lit(0)).withColumn("file_row_number", F.lit(0).cast("bigint"))
        df.createOrReplaceTempView(name)
        return
    raw = spark.read.option("mergeSchema", "true").parquet(*map(hadoop_path, files))
    have = set(raw.columns)
    cols = [F.col(f.name) if f.name in have else F.lit(None).cast(f.dataType).alias(f.name) for f in spark_schema.fields]
    index = {f: i for i, f in enumerate(files)}  # a URI as given (e.g. an object store's), or a local path
    local = {os.path.abspath(f): i for i, f in enumerate(files)}
    pos = {}
    for (uri,) in raw.select("_metadata.file_path").distinct().collect():
        i = index.get(uri, local.get(os.path.abspath(unquote(urlparse(uri).path))))
        if i is None:
            raise DatasetError(f"Spark read the file {uri!r}, which is not one of the dataset's files.")
        pos[uri] = i
    mapping = spark.createDataFrame(sorted(pos.items()), "__uri string, filename int")
    df = raw.select(*cols, F.col("_metadata.file_path").alias("__uri"), F.col("_metadata.row_index").alias("file_row_number"))
    df = df.join(F.broadcast(mapping), "__uri").drop("__uri")
    df.createOrReplaceTempView(name)


class SparkConnection:
    """What the join's stages need of a DuckDB connection (``execute`` → ``fetchone`` /
    ``fetchall``, ``close``), on a SparkSession."""

    def __init__(self, spark: Any, work: Path) -> None:
        self.spark = spark
        self.work = work
        self._rows: list[tuple[Any, ...]] = []
        self._cached: dict[str, Any] = {}

    def execute(self, sql: str, params: dict[str, int] | None = None) -> SparkConnection:
        """Run one statement of DuckDB SQL on Spark; ``SET`` / ``RESET`` (DuckDB's settings) do nothing."""
        import sqlglot
        from sqlglot import exp

        self._rows = []
        if sql.lstrip().split(None, 1)[0].upper() in ("SET", "RESET"):
            return self
        tree = sqlglot.parse_one(sql, read="duckdb")
        if tree.find(exp.ReadParquet) is not None and not isinstance(tree, exp.Create | exp.Copy):
            # a file this build wrote (the data file): on this machine, where DuckDB reads it
            self._rows = _duckdb_rows(sql, params)
            return self
        tree = tree.transform(lambda node: _bind(node, params or {}))
        if isinstance(tree, exp.Create):
            df = self.spark.sql(tree.expression.sql(dialect="spark")).cache()
            df.createOrReplaceTempView(tree.this.name)
            self._cached[tree.this.name] = df
        elif isinstance(tree, exp.Copy):
            self._copy(tree.this.this.sql(dialect="spark"), tree.args["files"][0].name)
        else:
            self._rows = [tuple(r) for r in self.spark.sql(tree.sql(dialect="spark")).collect()]
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def close(self) -> None:
        """Drop what the build made in the session (it may be the caller's, used again)."""
        for name, df in self._cached.items():
            df.unpersist()
            self.spark.catalog.dropTempView(name)
        for name in ("dec_files", "out_files"):
            self.spark.catalog.dropTempView(name)
        self._cached.clear()

    def _copy(self, query: str, target: str) -> None:
        """The rows of ``query`` written to the Parquet file ``target`` in the order of
        :data:`ORDER_COLUMNS` (which are left out): Spark sorts and writes part files in order,
        DuckDB copies them, in that order on one thread, into the one file (zstd)."""
        import duckdb

        parts = self.work / "parts"
        df = self.spark.sql(query).orderBy(*ORDER_COLUMNS)
        df.write.mode("overwrite").parquet(str(parts))
        files = sorted(str(p) for p in parts.glob("part-*.parquet"))
        con = duckdb.connect()
        try:
            con.execute("SET threads=1")
            lst = "[" + ", ".join(quote(f) for f in files) + "]"
            con.execute(
                f"COPY (SELECT * EXCLUDE ({', '.join(ORDER_COLUMNS)}) FROM read_parquet({lst})) "
                f"TO {quote(target)} (FORMAT parquet, COMPRESSION zstd)"
            )
        finally:
            con.close()
            shutil.rmtree(parts, ignore_errors=True)


def _duckdb_rows(sql: str, params: dict[str, int] | None) -> list[tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect()
    try:
        return [tuple(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


def hadoop_path(path: str) -> str:
    """``path`` for Spark's readers, which take a path as a glob: its glob characters escaped."""
    return "".join("\\" + c if c in "\\{}[]*?" else c for c in path)


def _bind(node: Any, params: dict[str, int]) -> Any:
    """A ``$name`` parameter of the statement → its value as a literal."""
    from sqlglot import exp

    if isinstance(node, exp.Placeholder | exp.Parameter):
        key = node.name
        if key in params:
            return exp.Literal.number(params[key])
    return node
