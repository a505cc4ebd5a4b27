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

Small drops (``--backlog N``, ``--rates``; ``small.py``): one 20-row drop cold, a backlog of
N drops, and steady rates into a running stream, each against its baseline. Soak
(``--soak-minutes N``; ``soak.py``): an always-on deployment for N minutes, with a PostgreSQL
restart and a killed run. One module per benchmark; ``harness.py`` holds what they share.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from ecom_ingest_dagster.tools.bench import bulk, history, latency, small, soak
from ecom_ingest_dagster.tools.bench.harness import BenchConfig, generate

__all__ = ["BenchConfig", "run", "markdown", "machine"]


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
            results["bulk"] = bulk.bulk(config, files, work)
        if config.latency_drops:
            results["latency_continuous"] = latency.latency_continuous(config, work)
            # The same drops with every batch sent to the executors (a Spark job each): the
            # baseline for the driver-loaded small batches, measured in the same run.
            results["latency_continuous_executors"] = latency.latency_continuous(config, work, driver_batch_max_bytes=0)
        if config.sensor_drops:
            results["latency_sensor"] = latency.latency_sensor(config, work)
        if config.history:
            results["history"] = history.history(config, work)
        if config.backlog:
            results["cold_small"] = small.cold_small(config, work)
            results["backlog"] = small.backlog(config, work)
        if config.rates:
            results["sustained"] = small.sustained(config, work, config.rates, config.rate_seconds)
        if config.soak_minutes:
            results["soak"] = soak.soak(config, work)
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
            "sensor_drops": config.sensor_drops, "history": config.history, "backlog": config.backlog,
            "rates": config.rates, "soak_minutes": config.soak_minutes, "seed": config.seed}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Run {results['started_at']} on {m['cpus']} CPUs, {m['memory_gb']} GiB, Python {m['python']}.", ""]
    for section in (bulk, latency, history, small, soak):
        lines += section.markdown(results)
    return "\n".join(lines) + "\n"

