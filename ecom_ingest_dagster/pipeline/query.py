"""The Spark Structured Streaming job over the landing directory.

Spark's file source does what it is best at: it lists the landing directory, decides
which files form each micro-batch (bounded by ``maxFilesPerTrigger`` or
``maxBytesPerTrigger``), records them in the checkpoint so each file is processed once,
and spreads the batch's files over the executors. The files' bytes are not pulled
through Spark: the source is ``binaryFile`` with only path, size and time selected, so
Spark never reads the content; each executor task parses, validates and loads its files
itself (``loader.ingest_files``), streaming them in bounded blocks. Only per-file
outcomes (a few numbers per file) come back to the driver, never rows.

A batch of a few small files (a trickle: ``driver_batch_max_bytes``) skips the Spark job:
the driver takes the batch's file list from the planned scan and loads the files itself
over the query's own connection. A Spark job costs 0.1-0.2 s before any file is touched,
several times a 20-row file's own work. In local mode so does a batch that Spark would
run as one task (one big drop): there it would only wait seconds for a Python worker.

Ways to run one query: ``run_available_now`` (process what has landed, then stop),
``run_warm`` (take drops as they land until idle, or for ever when always on) and
``run_continuous`` (the original report's trigger interval); ``run_trickle`` loads a few
small drops without Spark. How long a run lasts and how it stops is ``run_loop``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from ecom_ingest_dagster.pipeline import ledger
from ecom_ingest_dagster.pipeline.batch_plan import DRIVER_SINGLE_TASK_MAX_BYTES, BatchPlan, file_tasks, planned_files
from ecom_ingest_dagster.pipeline.checkpoint import IngestBusy, busy_message, checkpoint_path, has_batch_to_replay, try_lock
from ecom_ingest_dagster.pipeline.database import DatabaseUnavailable, ReconnectingConnection, connect, connection
from ecom_ingest_dagster.pipeline.landing import Sweep, sweep
from ecom_ingest_dagster.pipeline.ledger import FileOutcome, FileTask
from ecom_ingest_dagster.pipeline.load import LoadOptions
from ecom_ingest_dagster.pipeline.load_batch import ingest_files, ingest_over
from ecom_ingest_dagster.pipeline.measure import MetricsLog, batch_metrics, summarize
from ecom_ingest_dagster.pipeline.run_loop import Ending, RunPlan, install_stop_signals, stop, supervise
from ecom_ingest_dagster.pipeline.sampling import sampled
from ecom_ingest_dagster.settings import Settings

log = logging.getLogger(__name__)

_SOURCE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"
_OUTCOME_SCHEMA = (
    "file_name STRING, status STRING, rows_total LONG, rows_loaded LONG, rows_duplicate LONG, "
    "rows_rejected LONG, reason STRING, already_done BOOLEAN"
)


@dataclasses.dataclass
class RunSummary:
    """What one run of the query did, for the CLI's last lines and Dagster's metadata."""

    # The latest batches' metrics; a run that outlives KEPT_BATCHES (always on) reads the
    # rest back from the batch ledger at its end (``batch_count`` counts them all).
    batches: list[dict] = dataclasses.field(default_factory=list)
    batch_count: int = 0
    files_skipped: int = 0  # already in the ledger (replays, a reset checkpoint)
    files_replaced: list[str] = dataclasses.field(default_factory=list)  # changed after ingestion: not re-read
    files_empty: int = 0  # zero-byte drops the landing sweep recorded (Spark never lists them)
    elapsed_s: float = 0.0
    warm_up_s: float = 0.0  # executors' Python workers started and imports done, before the first batch that needed them
    resources: dict = dataclasses.field(default_factory=dict)  # average and peak of each sampled figure

    @property
    def totals(self) -> dict:
        return summarize(self.batches)

    def add_batch(self, metrics: dict) -> None:
        self.batches.append(metrics)
        self.batch_count += 1
        if len(self.batches) > 2 * KEPT_BATCHES:  # trimmed now and then, not on every batch
            del self.batches[:-KEPT_BATCHES]


KEPT_BATCHES = 1_000
# An always-on run ends after a day, between batches, and the sensor starts the next one:
# Spark's file source remembers every file it has listed (maxFileAge is unbounded, so it
# forgets none), which would otherwise grow the driver's memory for as long as the run lives.
ALWAYS_ON_RESTART_S = 24 * 3600.0
# The same memory in the checkpoint: the file source's log is compacted every
# ``FILE_SOURCE_COMPACT_INTERVAL`` batches (spark.py), each compaction rewriting every file
# name the query has listed. At 200 drops a second, with Spark's default of 10, the p95 of
# drop -> committed grew minute by minute (1.1, 1.4, 1.8, 1.9 s over 5 minutes; flat at
# 1.0-1.1 s without it, run 20261207T143842Z). So a query that has taken this many files is
# replaced, between batches and in the same Spark session, by one on a fresh checkpoint:
# the file ledger, not the checkpoint, is what keeps each file once, and the landing
# directory holds only what is pending (kept drops aside: ``after_commit=keep`` never rotates).
QUERY_MAX_FILES = 100_000


def _stream_id(checkpoint: Path) -> str:
    """The query's id, kept in its checkpoint: a new checkpoint is a new stream."""
    return json.loads((checkpoint / "metadata").read_text().splitlines()[0])["id"]


class IngestQuery:
    """The streaming query from ``settings.landing_dir`` into PostgreSQL."""

    def __init__(
        self,
        spark,
        settings: Settings,
        database_url: str,
        *,
        on_batch: Callable[[dict], None] | None = None,
        run_id: str | None = None,
    ):
        self.spark = spark
        self.settings = settings
        self.database_url = database_url
        self.on_batch = on_batch
        self.run_id = run_id or f"cli-{uuid.uuid4()}"
        # Twice a second: Spark tasks of small batches last tens of milliseconds.
        self.sample_interval_s = 0.5
        self.metrics_log = MetricsLog(settings.logs_dir)
        self.summary = RunSummary()
        self.plan = RunPlan.available_now()  # the run's (``_run``), recorded with each batch
        self._swept_at_start = False
        self._workers_warm = 0  # executors' Python workers started so far
        self._stream_id: str | None = None
        self._db: ReconnectingConnection | None = None  # the batches' ledger connection, for the query's life
        self._exclusive = False  # this query holds the landing directory's lock
        self._files_this_query = 0  # files the current Spark query has taken (QUERY_MAX_FILES)

    @property
    def checkpoint(self) -> Path:
        return checkpoint_path(self.settings, self.database_url)

    def _source(self):
        reader = self.spark.readStream.format("binaryFile").schema(_SOURCE_SCHEMA)
        # Drops are *.csv, *.csv.gz or *.csv.zst (contract.is_drop_name); Spark itself already skips
        # names starting with "." or "_", which is where atomic writers keep their half-written files.
        reader = reader.option("pathGlobFilter", "*.{csv,csv.gz,csv.zst}")
        # By default Spark ignores files whose mtime is a week older than the newest it
        # has seen: a drop moved in with an old mtime would be lost. Keep them all.
        reader = reader.option("maxFileAge", "36500d")
        # A drop moved out after its commit (archive, rejected area) may still be named by a
        # batch that is replayed after a crash; its outcome is in the ledger, so skip it.
        reader = reader.option("ignoreMissingFiles", "true")
        if self.settings.max_files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", self.settings.max_files_per_trigger)
        elif self.settings.max_bytes_per_trigger:
            reader = reader.option("maxBytesPerTrigger", self.settings.max_bytes_per_trigger)
        self.settings.landing_dir.mkdir(parents=True, exist_ok=True)
        from pyspark.sql import functions as F

        # The projection must be part of the streaming query: the DataFrame foreachBatch
        # receives is already planned, and selecting from it no longer stops the source
        # from reading every file's bytes (a 200 MB drop ran the driver out of heap).
        return reader.load(str(self.settings.landing_dir)).select(
            F.col("path"), F.col("length").alias("size"), F.unix_micros("modificationTime").alias("mtime_us")
        )

    def _writer(self):
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        return (
            self._source()
            .writeStream.foreachBatch(self._process_batch)
            .option("checkpointLocation", str(self.checkpoint))
            .queryName("ecom_ingest")
        )

    @contextlib.contextmanager
    def exclusive(self):
        """One run per checkpoint at a time, across processes and hosts.

        Two streaming queries on one checkpoint fail in Spark's metadata log with a
        rename error; a PostgreSQL session lock (released when the process dies, however
        it dies) turns that into a clear refusal before Spark starts.
        """
        if self._exclusive:  # already held by this query (a warm run after its trickle): not let go between
            yield
            return
        conn = connect(self.database_url, retry_s=self.settings.db_retry_seconds, autocommit=True)
        try:
            if not try_lock(conn, self.checkpoint):
                raise IngestBusy(busy_message(self.settings.landing_dir))
            self._exclusive = True
            yield
        finally:
            self._exclusive = False
            conn.close()

    def sweep(self, *, zero_byte_only: bool = False) -> Sweep:
        """Finish moves a crash interrupted, record zero-byte drops, report replaced ones."""
        with connection(self.database_url, retry_s=self.settings.db_retry_seconds) as conn:
            done = sweep(conn, self.settings, zero_byte_only=zero_byte_only)
        self.count_sweep(done)
        return done

    def count_sweep(self, done: Sweep, *, at_start: bool = False) -> None:
        """Take a sweep's findings into the summary; ``at_start``: the start-up sweep is done."""
        self.summary.files_replaced = sorted(set(self.summary.files_replaced) | set(done.replaced))
        self.summary.files_empty += len(done.empty)
        self._swept_at_start = self._swept_at_start or at_start

    def warm_up(self) -> None:
        """Sweep the landing directory and ready the driver's own loader before any batch.

        The executors' Python workers are started later, by the first batch that needs them
        (``_ensure_workers``): a trickle of small drops never does, and a run's first drop
        need not wait seconds for interpreters it will not use.
        """
        if not self._swept_at_start:  # Pipeline.ingest sweeps before it decides Spark is needed
            self.sweep()
        _warm_validation()  # Pandera's first validation costs more than a 20-row file's

    def _ensure_workers(self, tasks: int | None) -> bool:
        """Start as many executor Python workers as the batch can use (one per task, at most
        one per core) and import the loader there; True when it started any.

        Otherwise an executor batch carries seconds of interpreter start-up and imports
        (pandas, Pandera, Arrow), which is set-up cost, not batch latency. No more than the
        batch needs: an idle warmed worker holds ~200 MB (a 1M-row drop is one task).
        """
        slots = self.spark.sparkContext.defaultParallelism
        wanted = slots if tasks is None else max(1, min(slots, tasks))
        if wanted <= self._workers_warm:
            return False
        started = time.perf_counter()
        context = self.spark.sparkContext
        # Called inside a micro-batch: under its own name, not the batch's, in Spark's UI.
        batch_description = context.getLocalProperty("spark.job.description")
        context.setJobDescription("ecom_ingest: starting the executors' Python workers")
        try:
            self.spark.range(wanted, numPartitions=wanted).mapInPandas(_warm_worker, "id LONG").collect()
        finally:
            context.setLocalProperty("spark.job.description", batch_description)
        self.summary.warm_up_s += time.perf_counter() - started
        self._workers_warm = wanted
        return True

    def run_available_now(self) -> RunSummary:
        """Process every file that has landed, in bounded micro-batches, then stop.

        SIGINT/SIGTERM stop it at once, not between batches (one batch may hold every
        pending file): the open file transactions roll back, committed files stay.
        """
        return self._run(RunPlan.available_now())

    def run_continuous(self, *, trigger_seconds: float, stop_event: threading.Event | None = None) -> RunSummary:
        """Run until ``stop_event`` is set (or SIGINT/SIGTERM), then stop between batches."""
        return self._run(RunPlan("continuous", stop_mid_batch=False, trigger_seconds=trigger_seconds), stop_event)

    def run_warm(self, *, idle_seconds: float, trigger_seconds: float,
                 on_progress: Callable[[RunSummary], None] | None = None, progress_every_s: float = 30.0,
                 lifetime_s: float | None = None) -> RunSummary:
        """Take drops as they land until none has come for ``idle_seconds``, then stop.

        A sensor-launched run stays warm this way: the drops that land while it runs are
        loaded within a trigger interval instead of waiting for a new run's JVM. It stops
        between micro-batches when idle; SIGINT/SIGTERM (Terminate) stop it at once, as an
        availableNow pass. ``on_progress`` is called at most every ``progress_every_s``
        while batches commit, and once more at the end by the caller. With ``lifetime_s`` it
        also stops, between batches, once it has run that long.
        """
        return self._run(RunPlan(
            "warm", stop_mid_batch=True, trigger_seconds=trigger_seconds, idle_s=idle_seconds, lifetime_s=lifetime_s,
            on_progress=(lambda: on_progress(self.summary)) if on_progress else None, progress_every_s=progress_every_s,
        ))

    def run_trickle(self, tasks: list[FileTask], *, mode: str = "available_now", last: bool = True) -> RunSummary:
        """Load a few small drops here, without Spark, as one batch of their own.

        A trickle's files are loaded on the driver anyway (``driver_batch_max_bytes``); with
        nothing else in the landing directory and no micro-batch of the checkpoint left to
        replay, the JVM (5-8 s to start) would only list them. The file ledger keeps them
        exactly once: a later query that lists one (kept drops, ``after_commit=keep``)
        finds it done. The landing directory's lock is held meanwhile, as by a query.
        ``last``: nothing follows in this run (the metrics log's summary is written now).
        """
        self.plan = RunPlan.available_now(mode)  # the run's mode: the report counts the batch with the run's others
        stream_id = f"driver-{uuid.uuid4()}"  # a batch of no Spark stream: nothing to replay
        with self.exclusive(), ReconnectingConnection(self.database_url, self.settings.db_retry_seconds) as db:
            self._db = db
            try:
                self.warm_up()
                started = time.perf_counter()
                started_at = dt.datetime.now(dt.timezone.utc)
                outcomes = self._ingest_in_driver(tasks, stream_id, 0)
                self._finish_batch(stream_id, 0, started_at, "driver", outcomes)
            finally:
                self._db = None
        self.summary.elapsed_s += time.perf_counter() - started
        if last:  # a warm run writes it when it ends
            self._write_summary()
        return self.summary

    def _run(self, plan: RunPlan, stop_event: threading.Event | None = None) -> RunSummary:
        """Start the stream, let ``run_loop.supervise`` watch it, stop it as the plan says."""
        self.plan = plan
        stop_event = stop_event or threading.Event()
        restore = install_stop_signals(stop_event, plan.on_stop_request)
        try:
            with self.exclusive(), ReconnectingConnection(self.database_url, self.settings.db_retry_seconds) as db:
                self._db = db
                self.warm_up()
                started = time.perf_counter()
                rotates = self.settings.after_commit != "keep"
                if rotates:
                    self._fresh_checkpoint()
                plan = dataclasses.replace(plan, query_max_files=QUERY_MAX_FILES if rotates and plan.lasts else None)
                with sampled(self.spark, self.database_url, self.settings.db_schema, self.run_id,
                             self.sample_interval_s) as resources, _database_failures():
                    ending = Ending.FILES
                    while ending is Ending.FILES:
                        self._files_this_query = 0
                        query = self._writer().trigger(**plan.trigger).start()
                        ending = supervise(query, plan, stop_event, lambda: self.summary.batch_count,
                                           lambda: self.sweep(zero_byte_only=True), max(self.settings.trigger_seconds, 5.0),
                                           lambda: self._files_this_query)
                        stop(query, plan, ending)
                        if ending is Ending.FILES:
                            self._fresh_checkpoint()
            self.summary.resources = resources.summary
        finally:
            self._db = None
            restore()
        self.summary.elapsed_s += time.perf_counter() - started
        self._write_summary()
        return self.summary

    def _fresh_checkpoint(self) -> None:
        """Start the next query on an empty checkpoint, unless a micro-batch waits in it to be
        replayed (a crash's: Spark must replay exactly those files). Called with the landing
        directory's lock held, between queries."""
        if has_batch_to_replay(self.checkpoint):
            return
        if self.checkpoint.exists():
            shutil.rmtree(self.checkpoint)
        self._stream_id = None  # a new checkpoint is a new stream

    # -- one micro-batch ------------------------------------------------------------

    def _process_batch(self, batch_df, batch_id: int) -> None:
        started_at = dt.datetime.now(dt.timezone.utc)
        if self._stream_id is None:
            self._stream_id = _stream_id(self.checkpoint)
        stream_id, schema, db = self._stream_id, self.settings.db_schema, self._db
        if db.run(lambda conn: ledger.batch_committed(conn, schema, stream_id, batch_id)):
            log.info("batch %s of stream %s was committed before: skipped", batch_id, stream_id)
            return
        plan = self._planned(batch_df)
        small = self._small_batch(plan)
        if small is not None:
            loaded_in = "driver"
            outcomes = self._ingest_in_driver(small, stream_id, batch_id)
        else:
            loaded_in = "executors"
            if self._ensure_workers(plan.tasks if plan is not None else None):
                started_at = dt.datetime.now(dt.timezone.utc)  # set-up cost, not the batch's
            outcomes = self._ingest_on_executors(batch_df, stream_id, batch_id)
        self._finish_batch(stream_id, batch_id, started_at, loaded_in, outcomes)

    def _finish_batch(self, stream_id: str, batch_id: int, started_at: dt.datetime, loaded_in: str,
                      outcomes: list[dict]) -> None:
        """After a batch's files committed: its metrics into the batch ledger (once), the metrics log and the caller."""
        schema, db = self.settings.db_schema, self._db
        self.summary.files_skipped += sum(1 for o in outcomes if o["already_done"])
        self._files_this_query += len(outcomes)
        finished_at = dt.datetime.now(dt.timezone.utc)
        metrics, inserted = db.run(
            lambda conn: self._record_batch(conn, stream_id, batch_id, started_at, finished_at, loaded_in)
        )
        if inserted and metrics["rejected_records"]:
            db.run(lambda conn: self.metrics_log.append_rejections(
                ledger.batch_rejections(conn, schema, stream_id, batch_id, self.settings.contract)
            ))
        if inserted:
            self.metrics_log.append_batch(metrics)
            self.summary.add_batch(metrics)
            if self.on_batch:
                self.on_batch(metrics)

    def _record_batch(self, conn, stream_id: str, batch_id: int, started_at, finished_at,
                      loaded_in: str) -> tuple[dict, bool]:
        """The batch's metrics from its files' ledger rows, into the batch ledger (once)."""
        metrics = batch_metrics(
            batch_id=batch_id, stream_id=stream_id, mode=self.plan.mode, started_at=started_at, finished_at=finished_at,
            files=ledger.batch_files(conn, self.settings.db_schema, stream_id, batch_id),
        )
        metrics["run_id"] = self.run_id
        metrics["loaded_in"] = loaded_in  # "driver" (a small batch, no Spark job) or "executors"
        # The trigger settings in force, for the report's test configuration.
        metrics["trigger_seconds"] = self.plan.trigger_seconds
        metrics["max_files_per_trigger"] = self.settings.max_files_per_trigger
        metrics["max_bytes_per_trigger"] = self.settings.max_bytes_per_trigger
        return metrics, ledger.record_batch(conn, self.settings.db_schema, metrics, started_at)

    def _load_options(self, stream_id: str, batch_id: int) -> LoadOptions:
        """How this batch's files are loaded, on the driver or an executor."""
        return LoadOptions(
            schema=self.settings.db_schema, stream_id=stream_id, batch_id=batch_id,
            rejected_dir=self.settings.rejected_dir, archive_dir=self.settings.archive_dir,
            after_commit=self.settings.after_commit, block_bytes=self.settings.csv_block_bytes,
            group_max_bytes=self.settings.group_max_bytes, feed=self.settings.contract,
        )

    def _planned(self, batch_df) -> BatchPlan | None:
        """The batch's tasks and, when the driver takes them, its files; None when Spark's internals do not tell.

        The driver takes a small batch, and in local mode also a batch Spark would run as a
        single task (one big drop, say): on the executors it would be the same work in one
        Python worker, after seconds spent starting that worker.
        """
        limit = self.settings.driver_batch_max_bytes  # 0: every batch on the executors (the walk still counts its tasks)
        try:
            plan = planned_files(batch_df, limit)
            if limit and plan.files is None and plan.tasks == 1 and self.spark.sparkContext.master.startswith("local"):
                whole = planned_files(batch_df, DRIVER_SINGLE_TASK_MAX_BYTES)
                plan = whole if whole.files is not None else plan
            return plan
        except Exception as exc:  # Spark's internals moved: the executors' path always works
            log.debug("could not read the batch's file list from its plan (%s): loading on the executors", exc)
            return None

    def _small_batch(self, plan: BatchPlan | None) -> list[FileTask] | None:
        """The batch's files when the driver takes them (``_planned``), else None."""
        if plan is None or plan.files is None:
            return None
        # What ignoreMissingFiles does on the executors: a drop moved out after its commit
        # (a replayed batch) has its outcome in the ledger already.
        return [task for task in file_tasks(plan.files, str(self.settings.landing_dir)) if os.path.exists(task.path)]

    def _ingest_in_driver(self, tasks: list[FileTask], stream_id: str, batch_id: int) -> list[dict]:
        """Load the batch's files here, over the query's connection."""
        return [_outcome_row(o) for o in ingest_over(self._db, tasks, self._load_options(stream_id, batch_id))]

    def _ingest_on_executors(self, batch_df, stream_id: str, batch_id: int) -> list[dict]:
        """Each task loads the files of its partition; only their outcomes come back.

        The scan packs files into partitions by size, balanced over the cores (Spark's
        ``maxSplitBytes``): big files get a task each, small ones share one. The source
        selects no ``content`` (see ``_source``), so Spark never opens the files.
        """
        load = _partition_loader(
            database_url=self.database_url,
            db_retry_s=self.settings.db_retry_seconds,
            landing_dir=str(self.settings.landing_dir),
            options=self._load_options(stream_id, batch_id),
        )
        return [row.asDict() for row in batch_df.mapInPandas(load, _OUTCOME_SCHEMA).collect()]

    def _write_summary(self) -> None:
        if self.summary.batch_count > len(self.summary.batches):  # a long run: its totals from the ledger
            with connection(self.database_url, retry_s=self.settings.db_retry_seconds) as conn:
                self.summary.batches = ledger.run_batches(conn, self.settings.db_schema, run_id=self.run_id,
                                                          fallback=False)[1]
        # The metrics log's summary covers every batch in it, not only this run's.
        self.metrics_log.write_summary(summarize(self.metrics_log.read_batches()))


@contextlib.contextmanager
def _database_failures():
    """Spark wraps a lost database in pages of Java stack; hand on the one line that says so."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        found = re.search(r"DatabaseUnavailable: ([^\n]+)", str(exc))
        if found is None:
            raise
        raise DatabaseUnavailable(found.group(1).strip()) from exc


def _warm_validation() -> None:
    """One validation of nothing: imports done and Pandera's first-call costs paid."""
    from ecom_ingest_dagster.pipeline import validate as validation

    validation.validate(pd.DataFrame(columns=["event_id"]))


def _warm_worker(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    _warm_validation()
    yield from frames


def _outcome_row(o: FileOutcome) -> dict:
    return {
        "file_name": o.file_name, "status": o.status, "rows_total": o.rows_total, "rows_loaded": o.rows_loaded,
        "rows_duplicate": o.rows_duplicate, "rows_rejected": o.rows_rejected, "reason": o.reason,
        "already_done": o.already_done,
    }


def _partition_loader(*, database_url: str, db_retry_s: float, landing_dir: str, options: LoadOptions):
    """The function each executor task runs over its share of the batch's files."""

    def load(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        listed = [(row.path, row.size, row.mtime_us) for frame in frames for row in frame.itertuples(index=False)]
        tasks = file_tasks(listed, landing_dir)
        if tasks:
            outcomes = ingest_files(tasks, options, database_url=database_url, db_retry_s=db_retry_s)
            yield pd.DataFrame([_outcome_row(o) for o in outcomes])

    return load
