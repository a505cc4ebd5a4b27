"""Resource use sampled while a run processes batches (the original report's section 7).

A background thread samples, every ``interval_s``: CPU and memory of this process tree (the
Python driver, Spark's JVM and its Python workers, via psutil), Spark's active tasks
(the status tracker), and PostgreSQL's connections, transaction rate and disk I/O
(``pg_stat_database``; ``pg_stat_io`` where the server has it, PostgreSQL 16+, in bytes from 18).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from typing import Callable, Iterable, Iterator, Sequence

import psutil

log = logging.getLogger(__name__)

FIELDS = (
    "cpu_pct", "rss_mb", "jvm_rss_mb", "python_workers_rss_mb", "active_tasks",
    "pg_connections", "pg_xact_per_s", "pg_read_mb_s", "pg_write_mb_s",
)


@dataclasses.dataclass
class Sample:
    sampled_at: dt.datetime
    cpu_pct: float
    rss_mb: float
    jvm_rss_mb: float
    python_workers_rss_mb: float
    active_tasks: int | None
    pg_connections: int | None
    pg_xact_per_s: float | None
    pg_read_mb_s: float | None
    pg_write_mb_s: float | None


class ProcessTree:
    """CPU and memory of a process and all its descendants, CPU as % of one core."""

    def __init__(self, root_pid: int):
        self.root = psutil.Process(root_pid)
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[float, float, float, float]:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0.0, 0.0, 0.0, 0.0
        cpu = rss = jvm = workers = 0.0
        alive = {}
        for proc in processes:
            known = self._known.get(proc.pid, proc)
            alive[proc.pid] = known
            try:
                # The first reading of a process is 0 by definition; later ones cover the interval.
                cpu += known.cpu_percent(None)
                mem = known.memory_info().rss / 1e6
                name = known.name()
            except psutil.Error:
                continue
            rss += mem
            if name.startswith("java"):
                jvm += mem
            elif known.pid != self.root.pid:
                workers += mem
        self._known = alive
        return cpu, rss, jvm, workers


def written_bytes_query(conn) -> str:
    """Bytes the server has written so far: the WAL (written at commit) plus data pages flushed,
    from whichever statistics this major version has."""
    columns = {row[0] for row in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('pg_catalog.pg_stat_io') AND attnum > 0"
    )}
    if "write_bytes" in columns:  # 18 and later count bytes per operation (and list the WAL: not twice)
        pages = "SELECT coalesce(sum(write_bytes), 0) FROM pg_stat_io WHERE object <> 'wal'"
    elif "op_bytes" in columns:  # 16 and 17
        pages = "SELECT coalesce(sum(writes * op_bytes), 0) FROM pg_stat_io WHERE op_bytes IS NOT NULL"
    else:  # 15: no pg_stat_io
        pages = ("SELECT (buffers_checkpoint + buffers_clean + buffers_backend)"
                 " * current_setting('block_size')::bigint FROM pg_stat_bgwriter")
    return f"SELECT ({pages}) + (SELECT wal_bytes FROM pg_stat_wal)"


class PostgresStats:
    """Rates from the database's cumulative statistics, between two calls."""

    def __init__(self, connect: Callable[[], object]):
        self._connect = connect
        self._conn = None
        self._last: tuple[float, float, float, float] | None = None
        self._written_query: str | None = None
        self._warned = False

    def sample(self) -> tuple[int | None, float | None, float | None, float | None]:
        try:
            if self._conn is None:
                self._conn = self._connect()
                self._conn.autocommit = True
                self._written_query = written_bytes_query(self._conn)
            row = self._conn.execute(
                "SELECT numbackends, xact_commit + xact_rollback, blks_read * current_setting('block_size')::bigint"
                " FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            written = self._conn.execute(self._written_query).fetchone()[0]
        except Exception as exc:  # statistics are best effort; the run must not care
            # But say so once: a query this server refuses (a column a new major version
            # removed) would otherwise blank the report's database figures in silence.
            (log.debug if self._warned else log.warning)("PostgreSQL statistics unavailable: %s", exc)
            self._warned = True
            self.close()
            return None, None, None, None
        now = time.monotonic()
        current = (now, float(row[1]), float(row[2]), float(written))
        previous, self._last = self._last, current
        if previous is None or now <= previous[0]:
            return int(row[0]), None, None, None
        seconds = now - previous[0]
        return (
            int(row[0]),
            (current[1] - previous[1]) / seconds,
            (current[2] - previous[2]) / seconds / 1e6,
            (current[3] - previous[3]) / seconds / 1e6,
        )

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None


class ResourceSampler:
    """Samples in a daemon thread from ``start()`` to ``stop()``.

    With ``on_full`` the samples are handed over every ``keep`` samples and forgotten, so a
    run that never ends (always on) holds a bounded number; otherwise they stay in memory.
    """

    def __init__(
        self,
        *,
        root_pid: int,
        connect: Callable[[], object] | None = None,
        active_tasks: Callable[[], int] | None = None,
        interval_s: float = 1.0,
        on_full: Callable[[list[Sample]], None] | None = None,
        keep: int = 120,
    ):
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._on_full = on_full
        self._keep = keep
        self._tree = ProcessTree(root_pid)
        self._pg = PostgresStats(connect) if connect else None
        self._active_tasks = active_tasks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecom-ingest-resources", daemon=True)

    def start(self) -> "ResourceSampler":
        self._tree.sample()  # prime the CPU counters
        if self._pg:
            self._pg.sample()
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop sampling; the samples not yet handed to ``on_full`` (all of them without it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval_s * 5)
        if self._pg:
            self._pg.close()
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.take())
            if self._on_full is not None and len(self.samples) >= self._keep:
                full, self.samples = self.samples, []
                self._on_full(full)

    def take(self) -> Sample:
        cpu, rss, jvm, workers = self._tree.sample()
        tasks = None
        if self._active_tasks:
            try:
                tasks = self._active_tasks()
            except Exception:
                tasks = None
        pg = self._pg.sample() if self._pg else (None, None, None, None)
        return Sample(dt.datetime.now(dt.timezone.utc), cpu, rss, jvm, workers, tasks, *pg)


def spark_active_tasks(spark) -> Callable[[], int]:
    """Tasks of the active stages not finished yet (running, or waiting for a core).

    ``numActiveTasks`` of the status tracker stays 0 here (Spark 4.3, local mode), while
    the task totals are kept up to date, so the count is derived from those.
    """
    tracker = spark.sparkContext.statusTracker()

    def count() -> int:
        total = 0
        for stage_id in tracker.getActiveStageIds():
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                total += max(info.numTasks - info.numCompletedTasks - info.numFailedTasks, 0)
        return total

    return count


class SampleTally:
    """Average and peak of each resource figure, folded in as samples come (objects or mappings)."""

    def __init__(self):
        self._sum = dict.fromkeys(FIELDS, 0.0)
        self._count = dict.fromkeys(FIELDS, 0)
        self._peak: dict[str, float | None] = dict.fromkeys(FIELDS)

    def add(self, samples: Iterable) -> "SampleTally":
        for sample in samples:
            row = sample if isinstance(sample, dict) else dataclasses.asdict(sample)
            for field in FIELDS:
                if row.get(field) is None:
                    continue
                value = float(row[field])
                self._sum[field] += value
                self._count[field] += 1
                self._peak[field] = value if self._peak[field] is None else max(self._peak[field], value)
        return self

    def summary(self) -> dict[str, dict[str, float | None]]:
        return {
            field: {
                "avg": round(self._sum[field] / self._count[field], 3) if self._count[field] else None,
                "peak": round(self._peak[field], 3) if self._peak[field] is not None else None,
            }
            for field in FIELDS
        }


def summarize_samples(samples: Iterable) -> dict[str, dict[str, float | None]]:
    """Average and peak of each resource figure (samples as objects or mappings)."""
    return SampleTally().add(samples).summary()


def delete_samples(conn, schema: str, before: dt.datetime) -> int:
    """Delete the resource samples taken before ``before``; returns how many."""
    from psycopg import sql

    from ecom_ingest_dagster.pipeline.database import table

    return conn.execute(sql.SQL("DELETE FROM {} WHERE sampled_at < %s").format(table(schema, "resource_samples")),
                        (before,)).rowcount


def store_samples(conn, schema: str, run_id: str, samples: Sequence[Sample]) -> None:
    from psycopg import sql

    from ecom_ingest_dagster.pipeline.database import table

    if not samples:
        return
    columns = ["run_id", "sampled_at", *FIELDS]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        table(schema, "resource_samples"), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for s in samples:
            copy.write_row([run_id, s.sampled_at, *(getattr(s, f) for f in FIELDS)])


@dataclasses.dataclass
class SampledRun:
    """Filled in when sampling ends: average and peak of each figure (``summarize_samples``)."""

    summary: dict = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def sampled(spark, database_url: str, schema: str, run_id: str, interval_s: float) -> Iterator[SampledRun]:
    """Sample this process tree, Spark and PostgreSQL while the block runs; keep the samples with the run.

    They are stored a minute's worth at a time (and the rest at the end), so a run that
    never ends holds no more than that in memory; the summary is a running tally.
    """
    from ecom_ingest_dagster.pipeline.database import connect

    tally = SampleTally()

    def store(samples: list[Sample]) -> None:
        tally.add(samples)
        try:
            with connect(database_url) as conn:
                store_samples(conn, schema, run_id, samples)
        except Exception as exc:  # resource figures are worth a warning, never a failed run
            log.warning("could not store %d resource samples: %s", len(samples), exc)

    sampler = ResourceSampler(
        root_pid=os.getpid(), connect=lambda: connect(database_url),
        active_tasks=spark_active_tasks(spark) if spark is not None else None, interval_s=interval_s,
        on_full=store, keep=max(1, round(60 / interval_s)),
    ).start()
    run = SampledRun()
    try:
        yield run
    finally:
        store(sampler.stop())
        run.summary = tally.summary()
