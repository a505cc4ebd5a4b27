"""Benchmarks: our pipeline beside PostgreSQL's own COPY and Spark's JDBC sink, same data, same run.

Bulk: one invocation generates the data, shapes its valid rows once (CSV and Arrow, not
timed), then, for each repetition and in this order, measures (a) a raw COPY of the files
into a same-shaped all-text table (``psql \\copy`` when psql exists, else psycopg COPY),
(a') ``psql \\copy`` of the shaped valid rows into a fresh keyed ``user_events``: the
reference of the headline ratio, (d) the binary-COPY ceiling: the same rows as prepared
Arrow through the loader's pgpq encoder and psycopg, (d') the same through ADBC's
PostgreSQL driver when it is installed, (b) Spark's default JDBC sink when a PostgreSQL
JDBC jar is installed, (c) ``ecom-ingest ingest`` in its own process, whose whole process
tree (JVM and Python workers) is watched for peak memory. Ratios are taken within each
repetition, then the median; machines are noisy.

Latency: continuous mode (trigger 0, one 20-row drop a second) and, on request, sensor
mode through a real ``dagster dev``: drop to committed, p50/p95/p99.

History (``--history N``): a sensor tick's scan and a run's start-up landing sweep with an
empty history and with N ingested files of it, archived (today) and kept in the landing
directory (before, with the old whole-ledger replaced-file check): the cost must stay flat.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import psutil

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.database import connection, migrate
from ecom_ingest_dagster.tools.generator import generate_events, write_drop
from ecom_ingest_dagster.pipeline.measure import percentile

ROWS_PER_FILE = 1_000_000
ORIGINAL_BATCH_MS = 120.8  # the original report's sample: one 20-record batch's processing time
JDBC_JARS = ("/usr/share/java/postgresql.jar",)


@dataclasses.dataclass
class BenchConfig:
    database_url: str
    out_dir: Path
    rows: int = 1_000_000
    invalid_rate: float = 0.02
    repeat: int = 3
    jdbc: bool = True
    adbc: bool = True  # ADBC's PostgreSQL driver beside the binary-COPY ceiling, when it is installed
    latency_drops: int = 0  # continuous mode drops; 0 skips the latency benchmark
    sensor_drops: int = 0  # sensor mode drops through dagster dev; 0 skips it
    history: int = 0  # files of landing history for the flat-cost benchmark; 0 skips it
    backlog: int = 0  # 20-row drops for the backlog and cold-drop benchmarks (bench_small); 0 skips them
    rates: tuple[int, ...] = ()  # drops/s into a running stream (bench_small.sustained); empty skips it
    rate_seconds: float = 20.0  # how long each rate is held
    seed: int = 42
    log: Callable[[str], None] = print


def run(config: BenchConfig) -> dict:
    """Run the benchmarks; returns the results and writes ``results.json`` / ``results.md``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = config.out_dir / stamp
    work = Path(tempfile.mkdtemp(prefix="ecom-ingest-bench-"))
    results: dict = {"started_at": stamp, "machine": machine(), "config": _config_summary(config)}
    try:
        if config.rows:
            data = work / "data"
            started = time.perf_counter()
            files = generate(data, config.rows, config.invalid_rate, config.seed)
            results["generate"] = {"files": len(files), "rows": config.rows,
                                   "bytes": sum(f.stat().st_size for f in files),
                                   "seconds": round(time.perf_counter() - started, 2)}
            config.log(f"generated {config.rows:,} rows in {len(files)} file(s), "
                       f"{results['generate']['bytes'] / 1e6:.0f} MB, {results['generate']['seconds']} s")
            results["bulk"] = bulk(config, files, work)
        if config.latency_drops:
            results["latency_continuous"] = latency_continuous(config, work)
            # The same drops with every batch sent to the executors (a Spark job each): the
            # baseline for the driver-loaded small batches, measured in the same run.
            results["latency_continuous_executors"] = latency_continuous(config, work, driver_batch_max_bytes=0)
        if config.sensor_drops:
            results["latency_sensor"] = latency_sensor(config, work)
        if config.history:
            results["history"] = history(config, work)
        if config.backlog:
            from ecom_ingest_dagster.tools import bench_small

            results["cold_small"] = bench_small.cold_small(config, work)
            results["backlog"] = bench_small.backlog(config, work)
        if config.rates:
            from ecom_ingest_dagster.tools import bench_small

            results["sustained"] = bench_small.sustained(config, work, config.rates, config.rate_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))
    results["out_dir"] = str(out)
    return results


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _config_summary(config: BenchConfig) -> dict:
    return {"rows": config.rows, "invalid_rate": config.invalid_rate, "repeat": config.repeat,
            "jdbc": config.jdbc, "adbc": config.adbc, "latency_drops": config.latency_drops,
            "sensor_drops": config.sensor_drops, "history": config.history, "seed": config.seed}


def generate(data: Path, rows: int, invalid_rate: float, seed: int) -> list[Path]:
    """The benchmark's data: files of up to a million rows (a 10M run is ten files)."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(math.ceil(rows / ROWS_PER_FILE)):
        n = min(ROWS_PER_FILE, rows - i * ROWS_PER_FILE)
        files.append(write_drop(generate_events(n, rng=rng, invalid_rate=invalid_rate), data, f"bench_{i:04d}.csv"))
    return files


# -- bulk ---------------------------------------------------------------------------------


# The bulk targets (benchmark figures, never asserted by a test).
BULK_TARGET_VS_PSQL = 1.3  # psql \copy keyed seconds / our processing seconds, median, at 1M
BULK_TARGET_OF_CEILING = 0.90  # binary-COPY ceiling seconds / our processing seconds
BULK_TARGET_PEAK_RSS_MB = 1500.0  # the whole process tree, at 1M and at 10M
BULK_TARGET_WALL_VS_PSQL = 1.5  # a cold ingest's wall clock over psql \copy's
# Each repetition runs these in this order, so drift and the other jobs on the machine
# fall on every loader alike; ratios are taken within a repetition before the median.
BULK_ORDER = ("raw_copy", "typed_copy", "binary_copy", "binary_copy_keyed", "adbc_copy", "spark_jdbc", "pipeline")


def bulk(config: BenchConfig, files: list[Path], work: Path) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in BULK_ORDER}
    shaped = shape_valid_rows(files, work / "typed")
    jar = next((j for j in JDBC_JARS if Path(j).exists()), None)
    if "@/" in config.database_url or "host=/" in config.database_url:
        jar = None  # a Unix-socket database (the embedded one): JDBC needs TCP
    notes = {
        "spark_jdbc": None if config.jdbc and jar else (
            "skipped: no PostgreSQL JDBC jar (apt-get install libpostgresql-jdbc-java)" if config.jdbc else "skipped"),
        "adbc_copy": None if config.adbc and adbc_available() else (
            "skipped: adbc-driver-postgresql is not installed" if config.adbc else "skipped"),
    }
    tag = lambda rep: f"[{rep}/{config.repeat}]"  # noqa: E731
    settle = lambda: _checkpoint(config.database_url)  # noqa: E731
    notes["checkpoint"] = None if settle() else "no CHECKPOINT privilege: loaders may inherit each other's checkpoints"
    for rep in range(1, config.repeat + 1):
        settle()
        runs["raw_copy"].append(raw_copy(config.database_url, files))
        config.log(f"{tag(rep)} raw COPY (text, no key): {runs['raw_copy'][-1]['rows_per_s']:,.0f} rows/s")
        settle()
        runs["typed_copy"].append(typed_copy(config.database_url, shaped.csv))
        typed = runs["typed_copy"][-1]
        config.log(f"{tag(rep)} psql \\copy keyed user_events: {typed['rows_per_s']:,.0f} rows/s, {typed['seconds']:.2f} s")
        settle()
        runs["binary_copy"].append(binary_copy(config.database_url, shaped.arrow))
        b = runs["binary_copy"][-1]
        config.log(f"{tag(rep)} binary COPY ceiling (pgpq): {b['rows_per_s']:,.0f} rows/s, {b['seconds']:.2f} s "
                   f"({typed['seconds'] / b['seconds']:.2f}x psql)")
        settle()
        runs["binary_copy_keyed"].append(binary_copy(config.database_url, shaped.arrow, key_order=True))
        k = runs["binary_copy_keyed"][-1]
        config.log(f"{tag(rep)} binary COPY, each block in key order: {k['rows_per_s']:,.0f} rows/s, {k['seconds']:.2f} s "
                   f"({typed['seconds'] / k['seconds']:.2f}x psql)")
        if notes["adbc_copy"] is None:
            settle()
            try:
                runs["adbc_copy"].append(adbc_copy(config.database_url, shaped.arrow))
            except Exception as exc:  # an optional comparison: its failure is reported, not fatal
                notes["adbc_copy"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                runs["adbc_copy"].clear()  # a column with some repetitions missing would not pair up
                config.log(f"{tag(rep)} ADBC {notes['adbc_copy']}")
            else:
                a = runs["adbc_copy"][-1]
                config.log(f"{tag(rep)} ADBC adbc_ingest: {a['rows_per_s']:,.0f} rows/s, {a['seconds']:.2f} s "
                           f"({typed['seconds'] / a['seconds']:.2f}x psql)")
        if notes["spark_jdbc"] is None:
            settle()
            runs["spark_jdbc"].append(spark_jdbc(config.database_url, files, jar))
            config.log(f"{tag(rep)} Spark JDBC: {runs['spark_jdbc'][-1]['rows_per_s']:,.0f} rows/s")
        settle()
        runs["pipeline"].append(pipeline(config.database_url, files, work / f"pipeline_{rep}"))
        p = runs["pipeline"][-1]
        config.log(f"{tag(rep)} ecom-ingest: {p['rows_per_s']:,.0f} rows/s processing ({p['steady_s']:.2f} s), "
                   f"{p['wall_s']:.1f} s wall, peak RSS of the tree {p['peak_rss_mb']:,.0f} MB; "
                   f"psql/ours {typed['seconds'] / p['steady_s']:.2f}, ceiling/ours {b['seconds'] / p['steady_s']:.2f}, "
                   f"key-ordered ceiling/ours {k['seconds'] / p['steady_s']:.2f}")
    summary = summarize_bulk(runs, config.rows, notes)
    h, f = summary["vs_psql_keyed"], summary["of_ceiling"]
    config.log(f"bulk: psql \\copy keyed / our processing = {h['median']:.2f} median "
               f"({', '.join(f'{r:.2f}' for r in h['per_repetition'])}; target >= {h['target']}); "
               f"ours vs binary ceiling {f['median']:.0%} (target >= {f['target']:.0%}); "
               f"peak RSS {summary['peak_rss']['max_mb']:,.0f} MB (target <= {summary['peak_rss']['target_mb']:,.0f})")
    return {"summary": summary, "runs": runs}


def _checkpoint(url: str) -> bool:
    """A CHECKPOINT before each loader (not timed): PostgreSQL's WAL-triggered checkpoints
    (every ~1 GB of WAL, two or three loads' worth here) would otherwise land on whichever
    loader runs then, and the previous loader's dirty pages with them. False without the right."""
    import psycopg

    try:
        with connection(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:  # superuser or pg_checkpoint only
        return False
    return True


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _paired(reference: list[dict], ref_key: str, other: list[dict], other_key: str) -> list[float]:
    """``reference[i][ref_key] / other[i][other_key]`` per repetition (empty when either was skipped)."""
    if not reference or len(reference) != len(other):
        return []
    return [r[ref_key] / o[other_key] for r, o in zip(reference, other)]


def _target(per_repetition: list[float], target: float) -> dict:
    median = _median(per_repetition)
    return {"per_repetition": per_repetition, "median": median, "target": target,
            "met": None if median is None else median >= target}


def summarize_bulk(runs: dict[str, list[dict]], rows: int, notes: dict[str, str | None] | None = None) -> dict:
    """Medians, each repetition's ratios and the targets, from the runs of ``bulk()`` (pure).

    Every "x psql" figure is a time ratio within one repetition: ``psql \\copy`` seconds of
    the shaped valid rows into a fresh keyed ``user_events`` over the other loader's seconds
    (for ours, the batch ledger's processing time), then the median over repetitions.
    """
    notes = notes or {}
    typed, ours, binary = runs["typed_copy"], runs["pipeline"], runs["binary_copy"]

    def median(name: str, key: str):
        return _median(r.get(key) for r in runs.get(name, []))

    def vs_psql(name: str, key: str = "seconds"):
        return _median(_paired(typed, "seconds", runs.get(name, []), key))

    rss = [r["peak_rss_mb"] for r in ours]
    summary = {
        "rows": rows,
        "order": [name for name in BULK_ORDER if runs.get(name)],
        "raw_copy_tool": runs["raw_copy"][0]["tool"],
        "raw_copy_rows_per_s": median("raw_copy", "rows_per_s"),
        "typed_copy_rows_per_s": median("typed_copy", "rows_per_s"),
        "typed_copy_s": median("typed_copy", "seconds"),
        "binary_copy_rows_per_s": median("binary_copy", "rows_per_s"),
        "binary_copy_s": median("binary_copy", "seconds"),
        "binary_copy_encode_s": median("binary_copy", "encode_s"),
        "binary_copy_vs_psql": vs_psql("binary_copy"),
        "binary_copy_keyed_rows_per_s": median("binary_copy_keyed", "rows_per_s"),
        "binary_copy_keyed_s": median("binary_copy_keyed", "seconds"),
        "binary_copy_keyed_vs_psql": vs_psql("binary_copy_keyed"),
        "adbc_copy_rows_per_s": median("adbc_copy", "rows_per_s"),
        "adbc_copy_vs_psql": vs_psql("adbc_copy"),
        "adbc_copy_note": notes.get("adbc_copy"),
        "spark_jdbc_rows_per_s": median("spark_jdbc", "rows_per_s"),
        "spark_jdbc_vs_psql": vs_psql("spark_jdbc"),
        "spark_jdbc_note": notes.get("spark_jdbc"),
        "pipeline_rows_per_s": median("pipeline", "rows_per_s"),
        "pipeline_wall_s": median("pipeline", "wall_s"),
        "pipeline_startup_s": median("pipeline", "startup_s"),
        "pipeline_steady_s": median("pipeline", "steady_s"),
        "pipeline_peak_rss_mb": median("pipeline", "peak_rss_mb"),
        "pipeline_stage_ms": {stage: statistics.median(r["stage_ms"][stage] for r in ours) for stage in ours[0]["stage_ms"]},
        "pipeline_batch_rows_per_s": [_median(col) for col in zip(*(r.get("batch_rows_per_s", []) for r in ours))],
        "pipeline_correct": all(r["correct"] for r in ours),
        # what a user waits: our wall clock over psql's, each a process started for the job
        "wall_vs_psql_keyed": _median(_paired(ours, "wall_s", typed, "seconds")),
        "checkpoint_note": notes.get("checkpoint"),
        # the headline: psql \copy of the same rows into the same keyed table, over ours
        "vs_psql_keyed": _target(_paired(typed, "seconds", ours, "steady_s"), BULK_TARGET_VS_PSQL),
        # ours as a share of the binary-COPY ceiling (the same rows, prepared Arrow, nothing else to do)
        "of_ceiling": _target(_paired(binary, "seconds", ours, "steady_s"), BULK_TARGET_OF_CEILING),
        # the same with the ceiling's blocks in key order, as the loader sends them (no target of its own)
        "of_keyed_ceiling": _median(_paired(runs.get("binary_copy_keyed", []), "seconds", ours, "steady_s")),
        "peak_rss": {"per_repetition_mb": rss, "median_mb": _median(rss), "max_mb": max(rss, default=None),
                     "target_mb": BULK_TARGET_PEAK_RSS_MB,
                     "met": None if not rss else max(rss) <= BULK_TARGET_PEAK_RSS_MB},
    }
    summary["repetitions"] = [
        {
            "rep": i + 1,
            **{f"{name}_s": runs[name][i]["seconds"] for name in BULK_ORDER[:-1] if len(runs.get(name, [])) > i},
            "pipeline_s": p["steady_s"], "pipeline_wall_s": p["wall_s"], "peak_rss_mb": p["peak_rss_mb"],
            "vs_psql_keyed": summary["vs_psql_keyed"]["per_repetition"][i] if typed else None,
            "of_ceiling": summary["of_ceiling"]["per_repetition"][i] if binary else None,
            "of_keyed_ceiling": (runs["binary_copy_keyed"][i]["seconds"] / p["steady_s"]
                                 if len(runs.get("binary_copy_keyed", [])) > i else None),
        }
        for i, p in enumerate(ours)
    ]
    if summary["raw_copy_rows_per_s"] and summary["pipeline_rows_per_s"]:
        # Kept from the earlier reports: rows/s against the raw (text, unkeyed) COPY.
        summary["pipeline_vs_raw_copy"] = summary["pipeline_rows_per_s"] / summary["raw_copy_rows_per_s"]
        summary["ratios_per_repetition"] = [
            p["rows_per_s"] / r["rows_per_s"] for p, r in zip(ours, runs["raw_copy"])
        ]
    if summary["spark_jdbc_rows_per_s"] and summary["raw_copy_rows_per_s"]:
        summary["spark_jdbc_vs_raw_copy"] = summary["spark_jdbc_rows_per_s"] / summary["raw_copy_rows_per_s"]
    return summary


def _fresh_schema(url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connection(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name


def _drop_schema(url: str, name: str) -> None:
    with connection(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _without_password(url: str) -> tuple[str, dict[str, str]]:
    """``url`` as a libpq connection string without its password, and an environment with it.

    A command line is visible to every user of the machine (ps, /proc) and is quoted whole
    by CalledProcessError; the password goes to child processes in PGPASSWORD instead.
    """
    from psycopg import conninfo

    params = conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, "PGPASSWORD": password} if password else dict(os.environ)
    return conninfo.make_conninfo(**params), env


def _copy_files(url: str, target: str, files: list[Path], *, header: bool) -> tuple[float, str]:
    """COPY the files into ``target`` the fastest way at hand; returns seconds and the tool."""
    psql = shutil.which("psql")
    options = "CSV HEADER" if header else "CSV"
    dsn, env = _without_password(url)
    started = time.perf_counter()
    for path in files:
        if psql:
            subprocess.run([psql, dsn, "-v", "ON_ERROR_STOP=1", "-qc", f"\\copy {target} FROM '{path}' {options}"],
                           check=True, capture_output=True, env=env)
        else:
            with connection(url) as conn, conn.cursor() as cur:
                with cur.copy(f"COPY {target} FROM STDIN (FORMAT csv, HEADER {str(header).lower()})") as copy:
                    with open(path, "rb") as handle:
                        while block := handle.read(1 << 20):
                            copy.write(block)
    return time.perf_counter() - started, "psql \\copy" if psql else "psycopg COPY"


def _count(url: str, table_sql: str) -> int:
    with connection(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table_sql}").fetchone()[0]


def raw_copy(url: str, files: list[Path]) -> dict:
    """PostgreSQL's own speed for these files: COPY into text columns, nothing checked."""
    schema = _fresh_schema(url, "bench_raw")
    try:
        with connection(url, autocommit=True) as conn:
            with files[0].open(encoding="utf-8", newline="") as handle:
                header = next(csv.reader(handle))
            columns = ", ".join(f'"{name}" text' for name in header)
            conn.execute(f'CREATE TABLE "{schema}".events ({columns})')
        seconds, tool = _copy_files(url, f'"{schema}".events', files, header=True)
        loaded = _count(url, f'"{schema}".events')
    finally:
        _drop_schema(url, schema)
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

    from ecom_ingest_dagster.pipeline.encode import DirectSink, binary_frame, text_frame
    from ecom_ingest_dagster.pipeline.quarantine import to_csv
    from ecom_ingest_dagster.pipeline.read import CsvDrop
    from ecom_ingest_dagster.pipeline.validate import validate

    out.mkdir(parents=True, exist_ok=True)
    shaped = ShapedRows([], [])
    for path in files:
        text, arrow = out / path.name, out / f"{path.stem}.arrow"
        with open(text, "wb") as handle, pa.ipc.new_file(str(arrow), DirectSink.arrow_schema) as writer:
            for chunk in CsvDrop(path):
                valid = validate(chunk.rows).valid
                handle.write(to_csv(text_frame(valid, path.name, 0)))
                writer.write_table(binary_frame(valid, DirectSink.arrow_schema, path.name, 0))
        shaped.csv.append(text)
        shaped.arrow.append(arrow)
    return shaped


def typed_copy(url: str, shaped: list[Path]) -> dict:
    """The reference of the issue's headline ratio: ``psql \\copy`` of the rows already validated
    and shaped into a fresh ``user_events`` (typed columns, uuid primary key)."""
    schema = _fresh_schema(url, "bench_typed")
    columns = ", ".join([*c.COLUMNS, "source_file", "batch_id"])
    try:
        with connection(url, autocommit=True) as conn:
            migrate(conn, schema)
        seconds, _ = _copy_files(url, f'"{schema}".user_events ({columns})', shaped, header=False)
        loaded = _count(url, f'"{schema}".user_events')
    finally:
        _drop_schema(url, schema)
    return {"seconds": seconds, "rows": loaded, "rows_per_s": loaded / seconds}


def _read_arrow(path: Path):
    """A prepared table, read whole into memory (not memory-mapped: no page faults on the clock)."""
    import pyarrow as pa

    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _prepared_load(url: str, prefix: str, shaped: list[Path], connect: Callable, load_table: Callable) -> dict:
    """The prepared Arrow tables into a fresh keyed ``user_events`` (migrated, then dropped),
    one transaction per file: ``load_table(conn, schema, table)`` and the commit are timed."""
    schema = _fresh_schema(url, prefix)
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
        loaded = _count(url, f'"{schema}".user_events')
    finally:
        _drop_schema(url, schema)
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
                payload = sink.encode_table(in_key_order(block) if key_order else block)
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
    schema = _fresh_schema(url, "bench_jdbc")
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
        _drop_schema(url, schema)
    return {**timing, "rows": loaded, "rows_per_s": loaded / timing["seconds"]}


def _watch_tree(process: subprocess.Popen, interval: float = 0.2) -> tuple[int, float]:
    """Wait for ``process``; return its exit code and the peak RSS (MB) of its whole tree."""
    root = psutil.Process(process.pid)
    peak = 0.0
    while process.poll() is None:
        try:
            total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            peak = max(peak, total / 1e6)
        except psutil.Error:
            pass
        time.sleep(interval)
    return process.returncode, peak


def pipeline(url: str, files: list[Path], home: Path, *, extra_env: dict[str, str] | None = None) -> dict:
    """``ecom-ingest ingest`` over the files, in a process of its own, fresh state and schema
    (``extra_env``: settings of this run)."""
    schema = _fresh_schema(url, "bench_pipe")
    landing = home / "landing"
    landing.mkdir(parents=True)
    for path in files:
        os.link(path, landing / path.name) if _same_device(path, landing) else shutil.copy(path, landing)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")},
        "ECOM_INGEST_HOME": str(home), "ECOM_INGEST_LANDING_DIR": str(landing),
        "ECOM_INGEST_DATABASE_URL": url, "ECOM_INGEST_DB_SCHEMA": schema, **(extra_env or {}),
    }
    try:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        code, peak = _watch_tree(process)
        wall = time.perf_counter() - started
        output = process.stdout.read()
        if code != 0:
            raise RuntimeError(f"ecom-ingest ingest failed ({code}): {output[-2000:]}")
        batches = [json.loads(line) for line in (home / "logs" / "performance_metrics.json").read_text().splitlines()]
        with connection(url) as conn:
            loaded, rejected = conn.execute(
                f'SELECT (SELECT count(*) FROM "{schema}".user_events), (SELECT count(*) FROM "{schema}".rejected_events)'
            ).fetchone()
    finally:
        _drop_schema(url, schema)
    total = sum(b["total_records"] for b in batches)
    steady = sum(b["total_processing_time_ms"] for b in batches) / 1000.0
    stage_ms = {
        "read_parse": sum(b["read_parse_time_ms"] for b in batches),
        "validation": sum(b["validation_time_ms"] for b in batches),
        "dataframe_creation": sum(b["dataframe_creation_time_ms"] for b in batches),
        "db_write_wait": sum(b["db_write_time_ms"] for b in batches),
    }
    return {
        "rows": total, "loaded": loaded, "rejected": rejected, "batches": len(batches),
        "correct": loaded + rejected == total,
        "wall_s": wall, "steady_s": steady, "startup_s": wall - steady,
        "rows_per_s": total / steady, "peak_rss_mb": peak, "stage_ms": stage_ms,
        # one figure per micro-batch: at 10M (ten files) whether the rate holds as the table grows
        "batch_rows_per_s": [b["total_records"] * 1000.0 / b["total_processing_time_ms"]
                             for b in batches if b["total_processing_time_ms"]],
    }


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


# -- latency --------------------------------------------------------------------------------


def _drop_and_wait(url: str, schema: str, landing: Path, drops: int, every_s: float, timeout_s: float,
                   log: Callable[[str], None], *, first_alone: bool = False) -> list[float]:
    """Drop 20-row files at a steady pace; drop → committed (ms) for each, in drop order, from the ledger.

    ``first_alone``: the first drop is committed before the others are dropped (the first
    drop after idle pays the cold start; the trickle after it measures the warm path).
    """
    rng = np.random.default_rng(7)
    dropped: dict[str, float] = {}
    committed: dict[str, float] = {}

    def collect(conn, until: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            for name, at in conn.execute(f'SELECT file_name, extract(epoch FROM committed_at) FROM "{schema}".ingest_files'):
                committed[name] = float(at)
            time.sleep(0.05)

    with connection(url, autocommit=True) as conn:
        for i in range(drops):
            name = f"latency_{i:04d}.csv"
            write_drop(generate_events(20, rng=rng), landing, name)  # written aside, renamed in: the atomic drop
            dropped[name] = time.time()
            if first_alone and i == 0:
                collect(conn, lambda: name in committed, timeout_s)
                log(f"first drop committed after {(committed.get(name, math.nan) - dropped[name]):.1f} s")
            time.sleep(every_s)
        collect(conn, lambda: len(committed) >= drops, timeout_s)
    missing = set(dropped) - set(committed)
    if missing:
        raise RuntimeError(f"{len(missing)} drop(s) were not committed within {timeout_s:.0f} s")
    latencies = [(committed[n] - dropped[n]) * 1000.0 for n in dropped]
    log(f"latency over {drops} drops: p50 {percentile(latencies, 50):.0f} ms, p95 {percentile(latencies, 95):.0f} ms")
    return latencies


def _batch_processing_ms(home: Path) -> list[float]:
    """Each micro-batch's processing time (ms) from a run's metrics log."""
    path = home / "logs" / "performance_metrics.json"
    return [json.loads(line)["total_processing_time_ms"] for line in path.read_text().splitlines()] if path.exists() else []


def start_stream(url: str, schema: str, home: Path, args: list[str], *,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``ecom-ingest stream ARGS`` in a process of its own over ``home`` (its landing directory
    inside), returned once its query runs and its first triggers found the directory empty."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")},
        "ECOM_INGEST_HOME": str(home), "ECOM_INGEST_LANDING_DIR": str(home / "landing"),
        "ECOM_INGEST_DATABASE_URL": url, "ECOM_INGEST_DB_SCHEMA": schema, **(extra_env or {}),
    }
    process = subprocess.Popen([sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "stream", *args],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # Ready when the query has started: its checkpoint metadata exists.
        deadline = time.monotonic() + 120
        while not any((home / "checkpoints").glob("ingest-*/metadata")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stream did not start: {process.stdout.read()[-2000:]}")
            time.sleep(0.2)
        time.sleep(2)  # the first triggers find an empty directory
    except BaseException:
        _stop(process)
        raise
    return process


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (a clean stop between batches), then, if it hangs, kill its whole group:
    the Spark JVM and Python workers must not outlive the benchmark."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _latency_summary(latencies: list[float], **extra) -> dict:
    return {**extra, "drops": len(latencies), "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies), "samples_ms": latencies}


def latency_continuous(config: BenchConfig, work: Path, *, driver_batch_max_bytes: int | None = None) -> dict:
    """Continuous mode, trigger 0, one file per trigger: drop → queryable
    (``driver_batch_max_bytes``: the setting for the run, None for its default)."""
    home = work / ("latency" if driver_batch_max_bytes is None else f"latency_driver_max_{driver_batch_max_bytes}")
    landing = home / "landing"
    landing.mkdir(parents=True)
    schema = _fresh_schema(config.database_url, "bench_lat")
    extra = {} if driver_batch_max_bytes is None else {"ECOM_INGEST_DRIVER_BATCH_MAX_BYTES": str(driver_batch_max_bytes)}
    process = None
    try:
        process = start_stream(config.database_url, schema, home, ["--trigger-seconds", "0", "--max-files-per-trigger", "1"],
                               extra_env=extra)
        latencies = _drop_and_wait(config.database_url, schema, landing, config.latency_drops, 1.0, 120, config.log)
    finally:
        if process is not None:
            _stop(process)
        _drop_schema(config.database_url, schema)
    # The original report's own measure: a 20-row batch's processing time (its sample: 120.8 ms).
    batches = _batch_processing_ms(home)
    config.log(f"20-row batch processing over {len(batches)} batches: p50 {percentile(batches, 50):.0f} ms, "
               f"p95 {percentile(batches, 95):.0f} ms (the original report: {ORIGINAL_BATCH_MS} ms)")
    return _latency_summary(
        latencies, mode="continuous", trigger_seconds=0, max_files_per_trigger=1, driver_batch_max_bytes=driver_batch_max_bytes,
        batch_processing_ms={"batches": len(batches), "p50": percentile(batches, 50), "p95": percentile(batches, 95),
                             "max": max(batches), "original_report_ms": ORIGINAL_BATCH_MS},
    )


def latency_sensor(config: BenchConfig, work: Path, interval_s: int = 2) -> dict:
    """Sensor mode through the real daemon: a run per drop set, drop → queryable."""
    repo = Path(__file__).resolve().parents[2]
    home = work / "sensor"
    landing = home / "landing"
    dagster_home = home / "dagster_home"
    landing.mkdir(parents=True)
    dagster_home.mkdir()
    shutil.copy(repo / "infra" / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    schema = _fresh_schema(config.database_url, "bench_sensor")
    with connection(config.database_url, autocommit=True) as conn:
        migrate(conn, schema)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ECOM_INGEST_", "DAGSTER_"))},
        "DAGSTER_HOME": str(dagster_home), "ECOM_INGEST_HOME": str(home / "state"),
        "ECOM_INGEST_LANDING_DIR": str(landing), "ECOM_INGEST_DATABASE_URL": config.database_url,
        "ECOM_INGEST_DB_SCHEMA": schema, "ECOM_INGEST_SENSOR_INTERVAL_SECONDS": str(interval_s),
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(repo / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        import urllib.request

        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("dagster dev did not start")
                time.sleep(1)
        latencies = _drop_and_wait(config.database_url, schema, landing, config.sensor_drops, 5.0, 300, config.log,
                                   first_alone=True)
        breakdown = cold_start_breakdown(config.database_url, schema, dagster_home, "latency_0000.csv")
        config.log("first drop's path: " + ", ".join(f"{part} {seconds:.2f} s" for part, seconds in breakdown.items()))
    finally:
        _stop(process)
        _drop_schema(config.database_url, schema)
    warm = latencies[1:]
    return {
        **_latency_summary(warm or latencies, mode="sensor", sensor_interval_s=interval_s),
        "first_drop_ms": latencies[0], "cold_start_s": breakdown,
    }


# The parts of the first drop's path, in order, and the event that ends each one.
COLD_START_PARTS = (
    ("sensor tick (loop, settle margin, evaluation)", "run created"),
    ("run queue (dequeue)", "RUN_DEQUEUED"),
    ("run launch", "RUN_STARTING"),
    ("run process spawned", "process started"),
    ("run process start-up (imports, code location)", "RUN_START"),
    ("step start", "STEP_START"),
    ("database ready, landing sweep", "Spark start"),
    ("Spark session (JVM)", "Spark ready"),
    ("streaming query start, first trigger", "batch started"),
    ("first micro-batch (validate, COPY, commit)", "committed"),
)


def cold_start_breakdown(url: str, schema: str, dagster_home: Path, first_drop: str) -> dict[str, float]:
    """Seconds spent in each part of the first drop's path, from the drop's mtime to its commit:
    Dagster's own event log for the run that loaded it, and the ledgers."""
    import re

    import dagster as dg

    from ecom_ingest_dagster.pipeline.spark import SPARK_READY_MESSAGE

    with connection(url, autocommit=True) as conn:
        landed, committed, batch_started, run_id = conn.execute(
            f'SELECT extract(epoch FROM f.landed_at), extract(epoch FROM f.committed_at), extract(epoch FROM b.started_at),'
            f' b.run_id FROM "{schema}".ingest_files f JOIN "{schema}".ingest_batches b USING (stream_id, batch_id)'
            " WHERE f.file_name = %s", (first_drop,),
        ).fetchone()
    ready = re.compile(re.escape(SPARK_READY_MESSAGE).replace(r"\{seconds:\.2f\}", r"([0-9.]+)"))
    at: dict[str, float] = {"landed": float(landed), "batch started": float(batch_started), "committed": float(committed)}
    marks = {dg.DagsterEventType.RUN_DEQUEUED: "RUN_DEQUEUED", dg.DagsterEventType.RUN_STARTING: "RUN_STARTING",
             dg.DagsterEventType.RUN_START: "RUN_START", dg.DagsterEventType.STEP_START: "STEP_START"}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        at["run created"] = instance.get_run_record_by_id(run_id).create_timestamp.timestamp()
        for record in instance.get_records_for_run(run_id).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            text = (event.message if event else None) or entry.user_message or ""
            # By enum: their stored values are the old PIPELINE_* names.
            if event and event.event_type in marks:
                at.setdefault(marks[event.event_type], entry.timestamp)
            elif "Started process for run" in text:
                at.setdefault("process started", entry.timestamp)
            elif (found := ready.search(text)):
                at["Spark ready"] = entry.timestamp
                at["Spark start"] = entry.timestamp - float(found.group(1))
    spark_meanwhile = None
    if "Spark ready" in at and at["Spark ready"] > at["committed"]:
        # The drop was loaded before Spark was up (the run's waiting trickle): the session
        # started alongside, and nobody waited for it.
        spark_meanwhile = at.pop("Spark ready") - at.pop("Spark start")
        at.pop("batch started", None)
    parts, previous = {}, at["landed"]
    for part, ends in COLD_START_PARTS:
        if ends in at:
            parts[part] = at[ends] - previous
            previous = at[ends]
    parts["total (drop → committed)"] = at["committed"] - at["landed"]
    if spark_meanwhile is not None:
        parts["Spark session, started meanwhile (not waited for)"] = spark_meanwhile
    return parts


# -- landing history ------------------------------------------------------------------------

HISTORY_DAY = "2026-11-30"  # the archive folder the "after" history is placed in
HISTORY_NEW_DROPS = 10  # new (un-ledgered) drops present in every case
HISTORY_BUDGET_S = 0.5  # per case, side and repetition: sub-millisecond calls are repeated this long
HISTORY_MAX_CALLS = 2000
HISTORY_MIN_REPEAT = 5  # sub-millisecond figures on a shared machine: five medians' worth at least
HISTORY_TARGET_RATIO = 1.10  # the "within 10 % of an empty history"
_HISTORY_MTIME_S = 1_796_040_000  # 2026-11-30T12:00:00Z: the history files' mtime and their ledger's landed_at
_HEADER = (",".join(c.COLUMNS) + "\n").encode()


def _history_name(i: int) -> str:
    return f"hist_{i:07d}.csv"


def _write_small_files(directory: Path, names: list[str], content: bytes, *, mtime_ns: int | None = None) -> None:
    """Many small files fast: one open/write/close each (``utime`` on the open file when asked)."""
    directory.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    base = str(directory)
    for name in names:
        fd = os.open(os.path.join(base, name), flags, 0o644)
        try:
            os.write(fd, content)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)


def _history_ledger(url: str, schema: str, files: int) -> None:
    """``files`` ingested header-only drops in a freshly migrated schema, in one INSERT ... SELECT."""
    from psycopg import sql

    from ecom_ingest_dagster.pipeline.database import table

    with connection(url, autocommit=True) as conn:
        migrate(conn, schema)
        if files:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected,"
                    " file_size, stream_id, batch_id, landed_at, started_at, committed_at)"
                    " SELECT 'hist_' || lpad(i::text, 7, '0') || '.csv', 'ingested', 0, 0, 0, 0, %s, 'bench-history',"
                    " i / 100, to_timestamp(%s), to_timestamp(%s), to_timestamp(%s)"
                    " FROM generate_series(0, %s - 1) AS i"
                ).format(table(schema, "ingest_files")),
                (len(_HEADER), _HISTORY_MTIME_S, _HISTORY_MTIME_S, _HISTORY_MTIME_S, files),
            )
        conn.execute(sql.SQL("ANALYZE {}").format(table(schema, "ingest_files")))  # as autovacuum would


def _old_replaced_check(conn, schema: str, landing: Path) -> list[str]:
    """What a run's start-up did before drops left the landing directory (the old ``check_replaced``):
    read every ingested row of the ledger, then stat each of those names in the landing directory."""
    from psycopg import sql

    from ecom_ingest_dagster.pipeline.database import table

    rows = conn.execute(
        sql.SQL(
            # the old ledger.ingested_files: landed_at as Spark's millisecond mtime
            "SELECT file_name, file_size, (extract(epoch FROM landed_at) * 1000)::bigint"
            " FROM {} WHERE status = 'ingested'"
        ).format(table(schema, "ingest_files"))
    ).fetchall()
    replaced = []
    for name, size, mtime_ms in rows:
        try:
            stat = (landing / name).stat()
        except OSError:  # gone (moved, cleaned up): nothing was replaced
            continue
        if (size is not None and stat.st_size != size) or (
            mtime_ms is not None and stat.st_mtime_ns // 1_000_000 != mtime_ms
        ):
            replaced.append(name)
    return sorted(replaced)


def _paired_ms(empty_call: Callable[[], object], history_call: Callable[[], object], calls: int,
               flip: bool) -> tuple[float, float]:
    """Mean ms per call of each, alternating call by call (the order flips every call), so the
    machine's drift and noise fall on both sides alike."""
    totals = [0.0, 0.0]
    pair = (empty_call, history_call)
    for i in range(calls):
        for side in ((0, 1) if (i % 2 == 0) != flip else (1, 0)):
            started = time.perf_counter()
            pair[side]()
            totals[side] += time.perf_counter() - started
    return totals[0] * 1000.0 / calls, totals[1] * 1000.0 / calls


def history(config: BenchConfig, work: Path) -> dict:
    """Flat cost with history: a sensor tick's scan and a run's start-up sweep, for an empty
    history and for ``config.history`` files of it, after (archived) and before (kept in landing).

    Each case has ``HISTORY_NEW_DROPS`` new, un-ledgered drops in its landing directory and a
    cursor from before they arrived, so every scan finds exactly those and every sweep leaves
    them for Spark (nothing moves: each call sees the same state). "Before" is the layout of
    every drop staying in the landing directory forever (``after_commit=keep``), measured with
    today's sweep and with the old start-up check (``_old_replaced_check``), which is what a
    run did then. Within a repetition the empty and the history call alternate, call by call,
    for about ``HISTORY_BUDGET_S`` (one call each for the slow cases); each repetition keeps
    the mean per call, and the figures are the medians over ``HISTORY_MIN_REPEAT`` (or
    ``--repeat``, if more) repetitions.
    """
    from ecom_ingest_dagster.pipeline import landing as landing_mod
    from ecom_ingest_dagster.settings import Settings

    files = config.history
    reps = max(HISTORY_MIN_REPEAT, config.repeat)
    root = work / "history"
    homes = {name: root / name for name in ("empty", "after", "before")}
    schemas: dict[str, str] = {}
    log = config.log
    try:
        started = time.perf_counter()
        schemas["empty"] = _fresh_schema(config.database_url, "bench_hist0")
        schemas["history"] = _fresh_schema(config.database_url, "bench_hist")
        _history_ledger(config.database_url, schemas["empty"], 0)
        _history_ledger(config.database_url, schemas["history"], files)
        cursor, new = _history_layout(homes, files)
        setup_s = time.perf_counter() - started
        log(f"history: {files:,} ledger rows and files in the archive and in a landing directory, {setup_s:.1f} s")

        settings = {  # built once: a run has its settings before it sweeps
            (home, schema, policy): Settings.from_env({}, home=homes[home], db_schema=schemas[schema], after_commit=policy)
            for home, schema, policy in (("empty", "empty", "archive"), ("after", "history", "archive"),
                                         ("empty", "empty", "keep"), ("before", "history", "keep"))
        }

        with connection(config.database_url, autocommit=True) as conn:
            def scan(home: str):
                found = landing_mod.scan_new_drops(homes[home] / "landing", cursor)
                if sorted(found.names) != new:
                    raise RuntimeError(f"history bench: the scan of {home} found {found.names}, expected the new drops")
                return found

            def sweep(home: str, schema: str, after_commit: str):
                done = landing_mod.sweep(conn, settings[home, schema, after_commit])
                if done.finished or done.empty or done.replaced:
                    raise RuntimeError(f"history bench: the sweep of {home} changed something: {done}")
                return done

            def old_check(home: str, schema: str):
                replaced = _old_replaced_check(conn, schemas[schema], homes[home] / "landing")
                if replaced:
                    raise RuntimeError(f"history bench: the old check reported {len(replaced)} replaced file(s)")
                return replaced

            s0, sh = "empty", "history"
            cases: dict[tuple[str, str], tuple[Callable[[], object], Callable[[], object]]] = {
                ("after", "sensor_scan"): (lambda: scan("empty"), lambda: scan("after")),
                ("after", "startup_sweep"): (lambda: sweep("empty", s0, "archive"), lambda: sweep("after", sh, "archive")),
                ("before", "sensor_scan"): (lambda: scan("empty"), lambda: scan("before")),
                ("before", "startup_sweep"): (lambda: sweep("empty", s0, "keep"), lambda: sweep("before", sh, "keep")),
                ("before", "old_replaced_check"): (lambda: old_check("empty", s0), lambda: old_check("before", sh)),
            }
            calls = {}
            for key, (empty_call, history_call) in cases.items():  # warm-up (and the checks above)
                first = _paired_ms(empty_call, history_call, 1, False)
                if max(first) < 50:  # a first call is cold: size the fast cases on warm ones
                    first = _paired_ms(empty_call, history_call, 5, False)
                calls[key] = max(1, min(HISTORY_MAX_CALLS, int(HISTORY_BUDGET_S * 1000.0 / max(first))))
            samples: dict[tuple[str, str], dict[str, list[float]]] = {
                key: {"empty": [], "history": [], "calls": calls[key]} for key in cases
            }
            for rep in range(reps):
                for key, (empty_call, history_call) in cases.items():
                    empty_ms, history_ms = _paired_ms(empty_call, history_call, calls[key], rep % 2 == 1)
                    samples[key]["empty"].append(empty_ms)
                    samples[key]["history"].append(history_ms)
                log(f"[{rep + 1}/{reps}] history: " + ", ".join(
                    f"{layout} {op} {s['empty'][-1]:.3f}/{s['history'][-1]:.3f} ms"
                    for (layout, op), s in samples.items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for schema in schemas.values():
            _drop_schema(config.database_url, schema)

    return _history_result(samples, files, reps, setup_s, log)


def _history_layout(homes: dict[str, Path], files: int):
    """The history files (archived for "after", in the landing directory for "before"), then the
    new drops in every landing directory, settled; returns the sensor's cursor from before them."""
    from ecom_ingest_dagster.pipeline.landing import SETTLE_NS, LandingCursor, scan_new_drops

    names = [_history_name(i) for i in range(files)]
    mtime_ns = _HISTORY_MTIME_S * 1_000_000_000
    _write_small_files(homes["after"] / "archive" / HISTORY_DAY, names, _HEADER, mtime_ns=mtime_ns)
    _write_small_files(homes["before"] / "landing", names, _HEADER, mtime_ns=mtime_ns)
    for home in homes.values():
        (home / "landing").mkdir(parents=True, exist_ok=True)
    # The cursor the sensor holds once it has taken the whole history: the newest change
    # time among the history files (a timestamp of our own could sort before some of them:
    # the kernel hands out fine- and coarse-grained file times).
    cursor = scan_new_drops(homes["before"] / "landing", LandingCursor(), limit=files + 1, settle_ns=0).cursor
    time.sleep(0.05)  # past the file clock's tick: the new drops sort after the cursor
    new = [f"new_{i:02d}.csv" for i in range(HISTORY_NEW_DROPS)]
    for home in homes.values():
        _write_small_files(home / "landing", new, _HEADER)
    time.sleep(SETTLE_NS / 1e9 + 0.2)  # the new drops are settled: a tick takes them
    return cursor, new


def _history_result(samples: dict, files: int, reps: int, setup_s: float, log: Callable[[str], None]) -> dict:
    result: dict = {"files": files, "new_drops": HISTORY_NEW_DROPS, "repetitions": reps,
                    "budget_s_per_repetition": HISTORY_BUDGET_S, "target_ratio": HISTORY_TARGET_RATIO,
                    "setup_s": round(setup_s, 2), "after": {}, "before": {}}
    for (layout, op), s in samples.items():
        empty_ms, history_ms = statistics.median(s["empty"]), statistics.median(s["history"])
        result[layout][op] = {"empty_ms": empty_ms, "history_ms": history_ms, "ratio": history_ms / empty_ms,
                              "calls_per_repetition": s["calls"],
                              "empty_samples_ms": s["empty"], "history_samples_ms": s["history"]}
    after, before = result["after"], result["before"]
    result["before_vs_after"] = {
        # at the full history: what a tick / a run's start-up cost before, over what it costs now
        "sensor_scan": before["sensor_scan"]["history_ms"] / after["sensor_scan"]["history_ms"],
        "startup": before["old_replaced_check"]["history_ms"] / after["startup_sweep"]["history_ms"],
    }
    result["flat"] = all(f["ratio"] <= HISTORY_TARGET_RATIO for f in after.values())
    log("history: after, history/empty = " + ", ".join(f"{op} {f['ratio']:.2f}x" for op, f in after.items())
        + f"; before/after at {files:,}: scan {result['before_vs_after']['sensor_scan']:.0f}x, "
        f"start-up {result['before_vs_after']['startup']:.0f}x")
    return result


# -- output ---------------------------------------------------------------------------------


def _fmt(value, digits=0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Run {results['started_at']} on {m['cpus']} CPUs, {m['memory_gb']} GiB, Python {m['python']}.", ""]
    if "bulk" in results:
        lines += _bulk_markdown(results["bulk"]["summary"], results.get("config", {}))
    for key, title in (("latency_continuous", "Continuous mode (trigger 0, 1 file per trigger)"),
                       ("latency_continuous_executors",
                        "Continuous mode, every batch on the executors (ECOM_INGEST_DRIVER_BATCH_MAX_BYTES=0): the baseline"),
                       ("latency_sensor", "Sensor mode (real dagster dev), the drops after the first")):
        if key in results:
            r = results[key]
            lines += [f"### Latency, {title}: drop → committed over {r['drops']} drops of 20 rows", "",
                      "| p50 | p95 | p99 | max |", "|---|---|---|---|",
                      f"| {_fmt(r['p50_ms'])} ms | {_fmt(r['p95_ms'])} ms | {_fmt(r['p99_ms'])} ms | {_fmt(r['max_ms'])} ms |", ""]
            if "batch_processing_ms" in r:
                b = r["batch_processing_ms"]
                lines += [f"20-row batch processing over {b['batches']} batches: p50 {_fmt(b['p50'], 1)} ms, "
                          f"p95 {_fmt(b['p95'], 1)} ms, max {_fmt(b['max'], 1)} ms (the original report's sample: "
                          f"{b['original_report_ms']} ms; p50 {_x(b['p50'] / b['original_report_ms'])} of it).", ""]
            if "cold_start_s" in r:
                lines += [f"First drop after idle: {_fmt(r['first_drop_ms'] / 1000, 2)} s, drop to commit, by part:", "",
                          "| part | seconds |", "|---|---|",
                          *[f"| {part} | {_fmt(seconds, 2)} |" for part, seconds in r["cold_start_s"].items()], ""]
    if "history" in results:
        lines += _history_markdown(results["history"])
    from ecom_ingest_dagster.tools import bench_small

    lines += bench_small.markdown(results)
    return "\n".join(lines) + "\n"


def _x(value, digits=2) -> str:
    return f"{_fmt(value, digits)}×" if value is not None else "n/a"


def _met(flag) -> str:
    return "n/a" if flag is None else ("met" if flag else "**not met**")


def _bulk_markdown(s: dict, config: dict) -> list[str]:
    raw = s["raw_copy_rows_per_s"]

    def vs_raw(rows_per_s):
        return _x(rows_per_s / raw) if rows_per_s and raw else "n/a"

    h, f, rss = s["vs_psql_keyed"], s["of_ceiling"], s["peak_rss"]
    reps = ", ".join(_fmt(r, 2) for r in h["per_repetition"])
    order = ", ".join(s.get("order", []))
    invalid = config.get("invalid_rate")
    wall = s.get("wall_vs_psql_keyed")
    lines = [
        f"### Bulk load: {s['rows']:,} rows, {invalid:.0%} invalid, medians of {len(s['repetitions'])} repetitions"
        if invalid is not None else f"### Bulk load: {s['rows']:,} rows, medians of {len(s['repetitions'])} repetitions", "",
        f"Each repetition ran, in this order: {order}"
        f"{', each after a CHECKPOINT (not timed)' if not s.get('checkpoint_note') else ' (' + s['checkpoint_note'] + ')'}. "
        "×psql is a time ratio within a repetition "
        "(psql `\\copy` seconds of the same valid rows into a fresh keyed `user_events` over the loader's seconds; "
        "for ecom-ingest its processing time from the batch ledger), then the median.", "",
        "| loader | rows/s | × psql keyed COPY | vs raw COPY |", "|---|---|---|---|",
        f"| (a) raw COPY ({s['raw_copy_tool']}, text columns, no key, no checks) | {_fmt(raw)} | "
        f"{_x(_median(_ratio_list(s, 'typed_copy_s', 'raw_copy_s')))} | 1.00× |",
        f"| (a') psql `\\copy` of the valid rows, pre-shaped, into a fresh `user_events` (typed, uuid PK): the reference | "
        f"{_fmt(s['typed_copy_rows_per_s'])} | 1.00× | {vs_raw(s['typed_copy_rows_per_s'])} |",
        f"| (d) binary COPY ceiling: the same rows as prepared Arrow → pgpq (the loader's encoder) → psycopg, "
        f"one transaction per file | {_fmt(s['binary_copy_rows_per_s'])} | {_x(s['binary_copy_vs_psql'])} | "
        f"{vs_raw(s['binary_copy_rows_per_s'])} |",
        f"| (d\") the same, each block sorted by `event_id` first (on the clock), as the loader sends it | "
        f"{_fmt(s.get('binary_copy_keyed_rows_per_s'))} | {_x(s.get('binary_copy_keyed_vs_psql'))} | "
        f"{vs_raw(s.get('binary_copy_keyed_rows_per_s'))} |",
        f"| (d') ADBC PostgreSQL driver, `adbc_ingest` of the same Arrow tables | {_fmt(s.get('adbc_copy_rows_per_s'))} | "
        f"{_x(s.get('adbc_copy_vs_psql'))} | {vs_raw(s.get('adbc_copy_rows_per_s'))} {s.get('adbc_copy_note') or ''} |",
        f"| (b) Spark JDBC sink, default options | {_fmt(s['spark_jdbc_rows_per_s'])} | {_x(s.get('spark_jdbc_vs_psql'))} | "
        f"{vs_raw(s['spark_jdbc_rows_per_s'])} {s['spark_jdbc_note'] or ''} |",
        f"| (c) **ecom-ingest** (parse, validation, dedup, quarantine, ledger), processing time | "
        f"**{_fmt(s['pipeline_rows_per_s'])}** | **{_x(h['median'])}** | {vs_raw(s['pipeline_rows_per_s'])} |", "",
        f"- **What a user waits: `ecom-ingest ingest` {_fmt(s['pipeline_wall_s'], 1)} s wall against psql `\\copy`'s "
        f"{_fmt(s['typed_copy_s'], 1)} s wall: {_x(wall)}** (target ≤ {BULK_TARGET_WALL_VS_PSQL:.1f}×: "
        f"{_met(None if wall is None else wall <= BULK_TARGET_WALL_VS_PSQL)}).",
        f"- **psql `\\copy` keyed / our processing: {_x(h['median'])}** median (per repetition {reps}); "
        f"target ≥ {h['target']:.2f}×: {_met(h['met'])}.",
        f"- **Ours vs the binary-COPY ceiling** (ceiling seconds / our seconds): **{_fmt(f['median'], 2)}** median "
        f"(per repetition {', '.join(_fmt(r, 2) for r in f['per_repetition'])}); target ≥ {f['target']:.2f}: {_met(f['met'])}. "
        f"The ceiling's encoder share: {_fmt(s.get('binary_copy_encode_s'), 2)} s of {_fmt(s['binary_copy_s'], 2)} s. "
        f"Against the key-ordered ceiling (d\"): {_fmt(s.get('of_keyed_ceiling'), 2)}.",
        f"- **Peak RSS of the whole process tree**: {_fmt(rss['median_mb'])} MB median, {_fmt(rss['max_mb'])} MB max "
        f"(per repetition {', '.join(_fmt(r) for r in rss['per_repetition_mb'])}); "
        f"target ≤ {_fmt(rss['target_mb'])} MB: {_met(rss['met'])}.",
        f"- ecom-ingest: wall {_fmt(s['pipeline_wall_s'], 1)} s = start-up {_fmt(s['pipeline_startup_s'], 1)} s "
        f"(JVM, Spark session, Python workers) + processing {_fmt(s['pipeline_steady_s'], 1)} s; "
        f"every row accounted for: {'yes' if s['pipeline_correct'] else 'NO'}.",
    ]
    batches = s.get("pipeline_batch_rows_per_s") or []
    if len(batches) > 1:
        lines.append(f"- rows/s per micro-batch, first to last: {', '.join(_fmt(b) for b in batches)} "
                     f"(last/first {_fmt(batches[-1] / batches[0], 2)}).")
    lines += [
        "", "Per repetition (seconds):", "",
        "| rep | raw COPY | psql keyed | binary ceiling | key-ordered ceiling | ADBC | Spark JDBC | ours, processing "
        "| ours, wall | psql/ours | ceiling/ours | key-ordered ceiling/ours | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["repetitions"]:
        lines.append("| " + " | ".join([
            str(r["rep"]), *(_fmt(r.get(f"{name}_s"), 2) for name in ("raw_copy", "typed_copy", "binary_copy", "binary_copy_keyed",
                                                                       "adbc_copy", "spark_jdbc", "pipeline", "pipeline_wall")),
            _fmt(r.get("vs_psql_keyed"), 2), _fmt(r.get("of_ceiling"), 2), _fmt(r.get("of_keyed_ceiling"), 2),
            _fmt(r["peak_rss_mb"]),
        ]) + " |")
    lines += [
        "", "Stage time (summed over the run, ms; the COPY runs in a writer thread, so 'db write wait' is the time the "
        "reader waited for PostgreSQL):", "",
        "| read & parse | validation | DataFrame/encoding | db write wait |", "|---|---|---|---|",
        "| " + " | ".join(_fmt(s["pipeline_stage_ms"][k]) for k in
                         ("read_parse", "validation", "dataframe_creation", "db_write_wait")) + " |", "",
    ]
    return lines


def _ratio_list(s: dict, numerator: str, denominator: str) -> list[float]:
    return [r[numerator] / r[denominator] for r in s["repetitions"] if r.get(numerator) and r.get(denominator)]


def _ms(value: float) -> str:
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _history_markdown(h: dict) -> list[str]:
    n = f"{h['files']:,}"
    rows = (
        ("after", "sensor_scan", "**after** (archive): a sensor tick's scan"),
        ("after", "startup_sweep", "**after** (archive): a run's start-up sweep"),
        ("before", "sensor_scan", "before (history in landing, `keep`): a sensor tick's scan"),
        ("before", "old_replaced_check", "before: a run's start-up (the old whole-ledger replaced-file check)"),
        ("before", "startup_sweep", "today's sweep under `after_commit=keep` (history in landing)"),
    )
    lines = [
        f"### Landing history: {n} files, {h['new_drops']} new drops present, medians of {h['repetitions']} "
        "repetitions (empty and history calls alternating)", "",
        f"| operation | empty history | {n} files of history | history/empty | calls per repetition |",
        "|---|---|---|---|---|",
    ]
    for layout, op, label in rows:
        f = h[layout][op]
        lines.append(f"| {label} | {_ms(f['empty_ms'])} ms | {_ms(f['history_ms'])} ms | {_ratio(f['ratio'])}× "
                     f"| {f['calls_per_repetition']:,} |")
    b = h["before_vs_after"]
    lines += [
        "", f"At {n} files, before/after: sensor tick {_ratio(b['sensor_scan'])}×, run start-up {_ratio(b['startup'])}×. "
        f"Flat (after, history/empty ≤ {h['target_ratio']:.2f}×): {'yes' if h['flat'] else 'NO'}.", "",
    ]
    return lines
