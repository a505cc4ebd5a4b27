"""The loaders ours is measured against, on the same rows: a raw COPY, ``psql \\copy`` of the
shaped valid rows into a keyed table (the reference), the binary-COPY ceiling through the
loader's own encoder, ADBC, and Spark's JDBC sink.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.database import connection, migrate
from ecom_ingest_dagster.tools.bench.harness import copy_files, count_rows, drop_schema, fresh_schema



JDBC_JARS = ("/usr/share/java/postgresql.jar",)


def raw_copy(url: str, files: list[Path]) -> dict:
    """PostgreSQL's own speed for these files: COPY into text columns, nothing checked."""
    schema = fresh_schema(url, "bench_raw")
    try:
        with connection(url, autocommit=True) as conn:
            with files[0].open(encoding="utf-8", newline="") as handle:
                header = next(csv.reader(handle))
            columns = ", ".join(f'"{name}" text' for name in header)
            conn.execute(f'CREATE TABLE "{schema}".events ({columns})')
        seconds, tool = copy_files(url, f'"{schema}".events', files, header=True)
        loaded = count_rows(url, f'"{schema}".events')
    finally:
        drop_schema(url, schema)
    return {"tool": tool, "seconds": seconds, "rows": loaded, "rows_per_s": loaded / seconds}


@dataclasses.dataclass
class ShapedRows:
    """The files' valid rows shaped as the loader sends them, made once before any timing."""

    csv: list[Path]  # text, for psql \copy (typed_copy)
    arrow: list[Path]  # Arrow IPC of the loader's binary-COPY types, for binary_copy / adbc_copy


def shape_valid_rows(files: list[Path], out: Path) -> ShapedRows:
    """The files' valid rows exactly as the loader sends them to user_events (not timed).

    Each block is validated once and written in both forms, so every COPY gets the same rows.
    """
    import pyarrow as pa

    from ecom_ingest_dagster.pipeline.encode import DIRECT_SCHEMA, binary_frame, text_frame
    from ecom_ingest_dagster.pipeline.quarantine import to_csv
    from ecom_ingest_dagster.pipeline.read import CsvDrop
    from ecom_ingest_dagster.pipeline.validate import validate

    out.mkdir(parents=True, exist_ok=True)
    shaped = ShapedRows([], [])
    for path in files:
        text, arrow = out / path.name, out / f"{path.stem}.arrow"
        with open(text, "wb") as handle, pa.ipc.new_file(str(arrow), DIRECT_SCHEMA) as writer:
            for chunk in CsvDrop(path):
                valid = validate(chunk.rows).valid
                handle.write(to_csv(text_frame(valid, path.name, 0)))
                writer.write_table(binary_frame(valid, DIRECT_SCHEMA, path.name, 0))
        shaped.csv.append(text)
        shaped.arrow.append(arrow)
    return shaped


def typed_copy(url: str, shaped: list[Path]) -> dict:
    """The reference of the issue's headline ratio: ``psql \\copy`` of the rows already validated
    and shaped into a fresh ``user_events`` (typed columns, uuid primary key)."""
    schema = fresh_schema(url, "bench_typed")
    columns = ", ".join([*c.COLUMNS, "source_file", "batch_id"])
    try:
        with connection(url, autocommit=True) as conn:
            migrate(conn, schema)
        seconds, _ = copy_files(url, f'"{schema}".user_events ({columns})', shaped, header=False)
        loaded = count_rows(url, f'"{schema}".user_events')
    finally:
        drop_schema(url, schema)
    return {"seconds": seconds, "rows": loaded, "rows_per_s": loaded / seconds}


def _read_arrow(path: Path):
    """A prepared table, read whole into memory (not memory-mapped: no page faults on the clock)."""
    import pyarrow as pa

    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _prepared_load(url: str, prefix: str, shaped: list[Path], connect: Callable, load_table: Callable) -> dict:
    """The prepared Arrow tables into a fresh keyed ``user_events`` (migrated, then dropped),
    one transaction per file: ``load_table(conn, schema, table)`` and the commit are timed."""
    schema = fresh_schema(url, prefix)
    seconds = 0.0
    try:
        with connection(url, autocommit=True) as conn:
            migrate(conn, schema)
        with connect() as conn:
            for path in shaped:
                table = _read_arrow(path)
                started = time.perf_counter()
                load_table(conn, schema, table)
                conn.commit()
                seconds += time.perf_counter() - started
                del table
        loaded = count_rows(url, f'"{schema}".user_events')
    finally:
        drop_schema(url, schema)
    return {"seconds": seconds, "rows": loaded, "rows_per_s": loaded / seconds}


def binary_copy(url: str, shaped: list[Path], *, key_order: bool = False) -> dict:
    """The binary-COPY ceiling: the shaped valid rows, as Arrow tables prepared before the clock
    starts, through the loader's own encoder (``DirectSink``: pgpq) and psycopg ``copy.write``
    into a fresh keyed ``user_events``, one transaction per file as the loader does.

    Only the COPY (encoding included: the loader encodes too) and the commit are timed;
    ``encode_s`` is the encoder's share of that. The issue's ceiling sends the rows in file
    order; with ``key_order`` each block is first sorted by ``event_id`` as the loader does
    (``encode.in_key_order``, on the clock): the tighter bound for the loader as it is now.
    """
    import pyarrow as pa

    from ecom_ingest_dagster.pipeline.encode import DirectSink, in_key_order

    encode_s = 0.0

    def load_table(conn, schema: str, table) -> None:
        nonlocal encode_s
        sink = DirectSink(schema)
        with conn.cursor() as cur, cur.copy(sink.statement(conn)) as copy:
            for batch in table.to_batches():  # the blocks the file was read in, as the loader sends them
                tick = time.perf_counter()
                block = pa.Table.from_batches([batch])
                payload = sink.encode_table(in_key_order(block, "event_id") if key_order else block)
                encode_s += time.perf_counter() - tick
                copy.write(payload)
            copy.write(sink.close())

    result = _prepared_load(url, "bench_binary", shaped, lambda: connection(url), load_table)
    return {**result, "encode_s": encode_s}


def adbc_available() -> bool:
    """ADBC's PostgreSQL driver is an optional comparison: the bench uses it when installed."""
    import importlib.util

    return importlib.util.find_spec("adbc_driver_postgresql") is not None


def adbc_copy(url: str, shaped: list[Path]) -> dict:
    """The same prepared Arrow tables through ADBC's PostgreSQL driver (``adbc_ingest``, its own
    binary COPY), into a fresh keyed ``user_events``, one transaction per file; only the ingest
    and the commit are timed. A comparison only: the loader needs psycopg's transaction."""
    import adbc_driver_postgresql.dbapi as adbc

    def load_table(conn, schema: str, table) -> None:
        with conn.cursor() as cur:
            cur.adbc_ingest("user_events", table, mode="append", db_schema_name=schema)

    return _prepared_load(url, "bench_adbc", shaped, lambda: adbc.connect(url), load_table)


_JDBC_SCRIPT = r"""
import json, os, sys, time
from pyspark.sql import SparkSession
url = os.environ["BENCH_DATABASE_URL"]  # not an argument: command lines are public
schema, jar, files = sys.argv[1], sys.argv[2], sys.argv[3:]
started = time.perf_counter()
spark = (SparkSession.builder.master("local[*]").config("spark.jars", jar)
         .config("spark.ui.enabled", "false").getOrCreate())
startup = time.perf_counter() - started
from urllib.parse import urlsplit
parts = urlsplit(url)
jdbc = f"jdbc:postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
props = {"user": parts.username or "postgres", "password": parts.password or "", "driver": "org.postgresql.Driver"}
started = time.perf_counter()
frame = spark.read.option("header", True).option("multiLine", True).option("escape", '"').csv(files)
frame.write.jdbc(jdbc, f'"{schema}".events', mode="append", properties=props)
print(json.dumps({"startup_s": startup, "seconds": time.perf_counter() - started}))
spark.stop()
"""


def spark_jdbc(url: str, files: list[Path], jar: str) -> dict:
    """What the original pipeline used: Spark's JDBC sink with default options."""
    schema = fresh_schema(url, "bench_jdbc")
    try:
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1", "BENCH_DATABASE_URL": url}
        done = subprocess.run(
            [sys.executable, "-c", _JDBC_SCRIPT, schema, jar, *map(str, files)],
            check=True, capture_output=True, text=True, env=env,
        )
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        with connection(url) as conn:
            loaded = conn.execute(f'SELECT count(*) FROM "{schema}".events').fetchone()[0]
    finally:
        drop_schema(url, schema)
    return {**timing, "rows": loaded, "rows_per_s": loaded / timing["seconds"]}

