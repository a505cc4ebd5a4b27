"""The one way in: open the pipeline once, then ingest, stream, report, evaluate.

The CLI and the Dagster assets are thin callers of ``Pipeline``: the database is made
ready (embedded server started if no URL is set, schema migrated) once per pipeline, the
Spark session is started once, on first use, and stopped on ``close`` when the pipeline
started it. Nothing here knows Dagster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ecom_ingest_dagster.pipeline import checks, landing, ledger, sampling
from ecom_ingest_dagster.pipeline.checkpoint import (
    LOCK_GRACE_SECONDS, IngestBusy, busy_message, checkpoint_path, has_batch_to_replay, locked_elsewhere,
)
from ecom_ingest_dagster.pipeline.database import connection, ready_database
from ecom_ingest_dagster.pipeline.ledger import FileTask, Status
from ecom_ingest_dagster.pipeline.measure import MetricsLog
from ecom_ingest_dagster.pipeline.batch_plan import DRIVER_SINGLE_TASK_MAX_BYTES
from ecom_ingest_dagster.pipeline.query import ALWAYS_ON_RESTART_S, IngestQuery, RunSummary
from ecom_ingest_dagster.settings import Settings

log = logging.getLogger(__name__)


class LandingMissing(FileNotFoundError):
    """The landing directory is not there (or not a directory): nothing to ingest from."""


@dataclasses.dataclass(frozen=True)
class LandingLook:
    """What a run finds before it starts: the start-up sweep, the drops not in the ledger,
    and whether the checkpoint has a micro-batch to replay (then nothing was looked at)."""

    sweep: landing.Sweep | None
    pending: list[landing.LandedDrop]
    replay: bool
    took_s: float = 0.0

    @property
    def idle(self) -> bool:
        return not self.replay and not self.pending

    def summary(self) -> RunSummary:
        """A run's summary when there is nothing to do."""
        return RunSummary(files_replaced=self.sweep.replaced if self.sweep else [],
                          files_empty=len(self.sweep.empty) if self.sweep else 0, elapsed_s=self.took_s)


@dataclasses.dataclass(frozen=True)
class RetentionOutcome:
    samples_deleted: int
    log_lines_deleted: int
    archived_drops_deleted: int


class Pipeline:
    """The platform's data path for one set of settings.

    ``interactive`` pipelines (a command typed by a person) fail at once when PostgreSQL
    does not answer; the others wait ``settings.db_retry_seconds`` for it, as a run does
    mid-way. ``spark`` hands in a session to share (the caller keeps ownership).
    """

    def __init__(self, settings: Settings, *, interactive: bool = False, spark=None,
                 on_spark_ready: Callable[[float], None] | None = None, jvm_log: Path | None = None):
        self.settings = settings
        self.interactive = interactive
        self._url: str | None = None
        self._spark = spark
        self._owns_spark = spark is None
        self._on_spark_ready = on_spark_ready
        self._jvm_log = jvm_log  # where Spark's console output goes (None: this process's stderr)
        self._spark_starting: threading.Thread | None = None

    # -- opening -------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        """A database that answers, migrated (once per pipeline)."""
        if self._url is None:
            self._url = ready_database(self.settings, retry_s=0.0 if self.interactive else self.settings.db_retry_seconds)
        return self._url

    @property
    def spark(self):
        if self._spark is None:
            from ecom_ingest_dagster.pipeline.spark import build_spark_session

            started = time.perf_counter()
            self._spark = build_spark_session(self.settings, jvm_log=self._jvm_log)
            if self._on_spark_ready:
                self._on_spark_ready(time.perf_counter() - started)
        return self._spark

    @contextlib.contextmanager
    def connect(self) -> Iterator:
        with connection(self.database_url, retry_s=0.0 if self.interactive else self.settings.db_retry_seconds) as conn:
            yield conn

    def close(self) -> None:
        if self._spark_starting is not None:
            while self._spark_starting.is_alive():  # a session being started is stopped below, not left behind
                self._spark_starting.join(0.2)
            self._spark_starting = None
        if self._spark is not None and self._owns_spark:
            self._spark.stop()
        self._spark = None

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the data path -------------------------------------------------------------------
    def _check_landing(self) -> None:
        landing = self.settings.landing_dir
        if landing.exists() and not landing.is_dir():
            raise LandingMissing(f"landing directory {landing} is not a directory")
        if not landing.exists():
            raise LandingMissing(f"landing directory {landing} does not exist")

    def query(self, *, run_id: str | None = None, on_batch: Callable[[dict], None] | None = None) -> IngestQuery:
        self._check_landing()
        url = self.database_url  # before Spark: a dead database fails in a second, not after a JVM
        if self.held_elsewhere(grace_s=LOCK_GRACE_SECONDS):
            # Refused before a JVM is started for nothing; the query's own lock
            # (IngestQuery.exclusive) still decides when two start at once.
            raise IngestBusy(busy_message(self.settings.landing_dir))
        return IngestQuery(self.spark, self.settings, url, run_id=run_id, on_batch=on_batch)

    def ingest(self, *, run_id: str | None = None, on_batch: Callable[[dict], None] | None = None,
               idle_seconds: float = 0.0, on_progress: Callable[[RunSummary], None] | None = None) -> RunSummary:
        """Every drop that has landed, once, in bounded micro-batches; then stop (or stay warm).

        With ``idle_seconds`` the run stays warm: it goes on taking drops as they land
        (every ``settings.warm_trigger_seconds``) until none has come for that long
        (``math.inf``: always on, until stopped).

        With nothing to do (every drop here already in the ledger, no micro-batch of the
        checkpoint left to replay) no Spark session is started: a run with nothing new
        costs a directory listing and a query, not a JVM.
        """
        if math.isinf(idle_seconds):
            # Always on: a service that waits for its first drop, as right after a deployment.
            self.settings.landing_dir.mkdir(parents=True, exist_ok=True)
        self._check_landing()
        look = self.look()
        if look.idle and not math.isinf(idle_seconds):  # always on: wait for drops all the same
            log.info("nothing to ingest in %s: no Spark session started", self.settings.landing_dir)
            return look.summary()
        trickle = None if look.replay else self._trickle(look.pending)
        if trickle is None:
            query = self.query(run_id=run_id, on_batch=on_batch)
        else:
            # A few small drops, nothing to replay: loaded at once, with no Spark session
            # (a warm run starts one meanwhile, for the drops still to come).
            if self.held_elsewhere(grace_s=LOCK_GRACE_SECONDS):
                raise IngestBusy(busy_message(self.settings.landing_dir))
            query = IngestQuery(None, self.settings, self.database_url, run_id=run_id, on_batch=on_batch)
        if look.sweep is not None:  # the landing is swept once per run
            query.count_sweep(look.sweep, at_start=True)
        if trickle is None:
            return self._run_query(query, idle_seconds, on_progress)
        log.info("%d drop(s) in %s: loaded without waiting for Spark", len(trickle), self.settings.landing_dir)
        if idle_seconds <= 0:
            return query.run_trickle(trickle, mode="available_now")
        with query.exclusive():  # held from the trickle into the warm run: the sensor sees one run throughout
            spark = self._spark_in_background()  # only once the lock is ours: a refused run starts no JVM
            progress = _Progress(on_progress, self.settings.warm_progress_seconds)
            query.run_trickle(trickle, mode="warm", last=False)
            progress.report(query.summary)
            while not spark.done():
                # Drops that land while the JVM starts are loaded as they come, not after it.
                time.sleep(self.settings.warm_trigger_seconds)
                more = self._waiting_trickle()
                if more:
                    query.run_trickle(more, mode="warm", last=False)
                    progress.report(query.summary)
            query.spark = spark.result()
            return self._run_query(query, idle_seconds, on_progress)

    def _run_query(self, query: IngestQuery, idle_seconds: float,
                   on_progress: Callable[[RunSummary], None] | None) -> RunSummary:
        if idle_seconds > 0:
            return query.run_warm(idle_seconds=idle_seconds, trigger_seconds=self.settings.warm_trigger_seconds,
                                  on_progress=on_progress, progress_every_s=self.settings.warm_progress_seconds,
                                  lifetime_s=ALWAYS_ON_RESTART_S if math.isinf(idle_seconds) else None)
        return query.run_available_now()

    def look(self) -> LandingLook:
        """Sweep the landing directory and find the drops not yet in the ledger (not when the
        checkpoint has a batch to replay: the query's own start-up sweeps then, as after any crash)."""
        if has_batch_to_replay(checkpoint_path(self.settings, self.database_url)):
            return LandingLook(None, [], replay=True)
        started = time.perf_counter()
        with self.connect() as conn:
            sweep = landing.sweep(conn, self.settings)
            pending = self._not_in_ledger(conn, landing.list_drops(self.settings.landing_dir))
        return LandingLook(sweep, pending, replay=False, took_s=time.perf_counter() - started)

    def idle_summary(self) -> RunSummary | None:
        """The run's summary when there is nothing to ingest (after the landing sweep), else None."""
        look = self.look()
        return look.summary() if look.idle else None

    def _not_in_ledger(self, conn, drops: list[landing.LandedDrop]) -> list[landing.LandedDrop]:
        taken = ledger.entries_for(conn, self.settings.db_schema, [d.name for d in drops]) if drops else {}
        return [d for d in drops if d.name not in taken]

    def _waiting_trickle(self) -> list[FileTask] | None:
        """Drops that have landed since and are not in the ledger, when the driver takes them (``_trickle``)."""
        drops = landing.list_drops(self.settings.landing_dir)
        if not drops:
            return None
        with self.connect() as conn:
            return self._trickle(self._not_in_ledger(conn, drops))

    def _trickle(self, pending: list[landing.LandedDrop]) -> list[FileTask] | None:
        """``pending`` as file tasks when the driver would load them anyway: a small batch
        (``driver_batch_max_bytes``), or in local mode a single drop (one task, which the
        query gives the driver too); None when Spark is needed."""
        limit = self.settings.driver_batch_max_bytes
        if not pending or not limit:
            return None
        single_local = (len(pending) == 1 and pending[0].size <= DRIVER_SINGLE_TASK_MAX_BYTES
                        and self.settings.spark_master.startswith("local"))
        if sum(d.size for d in pending) > limit and not single_local:
            return None
        where = self.settings.landing_dir
        # The time in whole milliseconds, as Spark lists it: the landing sweep compares the
        # ledger's time with the file's at that precision to tell a replaced file.
        return [FileTask(str(where / d.name), d.size, landed_at=dt.datetime.fromtimestamp(d.mtime_ms / 1000, dt.timezone.utc))
                for d in pending]

    def _spark_in_background(self) -> "_SparkStart":
        """Start the Spark session on a thread of its own."""
        start = _SparkStart(lambda: self.spark)
        self._spark_starting = start.thread
        return start

    def held_elsewhere(self, *, grace_s: float = 0.0) -> bool:
        """True while another run holds this landing directory's checkpoint lock (a stream,
        a warm run, a CLI ingest): a new run would only be refused. A run about to start
        gives one that is ending ``grace_s`` seconds to let go (a sensor's look does not wait)."""
        with self.connect() as conn:
            return locked_elsewhere(conn, checkpoint_path(self.settings, self.database_url), grace_s=grace_s)

    def already_ingested(self, names: list[str]) -> set[str]:
        """The drop names among ``names`` that have a row in the file ledger (looked up by key)."""
        with self.connect() as conn:
            return set(ledger.entries_for(conn, self.settings.db_schema, names))

    def stream(self, *, run_id: str | None = None, on_batch: Callable[[dict], None] | None = None,
               stop_event: threading.Event | None = None, stop_after_s: float | None = None) -> RunSummary:
        """Drops as they land, every ``settings.trigger_seconds``, until ``stop_event`` (or a signal)."""
        stop = stop_event or threading.Event()
        timer = threading.Timer(stop_after_s, stop.set) if stop_after_s else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            return self.query(run_id=run_id, on_batch=on_batch).run_continuous(
                trigger_seconds=self.settings.trigger_seconds, stop_event=stop
            )
        finally:
            if timer:
                timer.cancel()

    # -- what is there ---------------------------------------------------------------------
    def status(self) -> Status:
        with self.connect() as conn:
            return ledger.status(conn, self.settings.db_schema, self.settings.contract)

    def table_rows(self) -> dict[str, int]:
        with self.connect() as conn:
            return ledger.table_rows(conn, self.settings.db_schema, self.settings.contract)

    def evaluate(self, run_id: str | None, *, fallback: bool = True, since: dt.datetime | None = None) -> checks.Evaluation:
        """The service targets and the accounting identity for ``run_id``'s batches (see ``checks.evaluate``)."""
        with self.connect() as conn:
            return checks.evaluate(conn, self.settings.db_schema, run_id, self.settings.targets, fallback=fallback,
                                   since=since, feed=self.settings.contract)

    def retain(self, *, now: dt.datetime | None = None) -> RetentionOutcome:
        """Delete what grows without bound and is past its retention (the retention schedule).

        Resource samples and metric log lines older than ``sample_retention_days``; archived
        drops older than ``archive_retention_days`` (by their archive day), when that is set.
        The ledgers and the loaded rows are never touched.
        """
        now = now or dt.datetime.now(dt.timezone.utc)
        cutoff = now - dt.timedelta(days=self.settings.sample_retention_days)
        with self.connect() as conn:
            samples = sampling.delete_samples(conn, self.settings.db_schema, cutoff)
        lines = MetricsLog(self.settings.logs_dir).trim(cutoff)
        drops = 0
        if self.settings.archive_retention_days is not None:
            oldest_kept = (now - dt.timedelta(days=self.settings.archive_retention_days)).date()
            drops = landing.delete_archive_days(self.settings.archive_dir, oldest_kept)
        log.info("retention: %d samples, %d log lines, %d archived drops deleted", samples, lines, drops)
        return RetentionOutcome(samples, lines, drops)

    def report_paths(self) -> dict[str, str]:
        """Where the report says the metrics live, for this installation."""
        logs = MetricsLog(self.settings.logs_dir)
        return {
            "metrics": str(logs.metrics_path), "summary": str(logs.summary_path),
            "errors_log": str(logs.errors_log_path), "errors_json": str(logs.errors_json_path),
            "checkpoints": str(self.settings.checkpoint_dir),
        }


def feeds_in_use(settings: Settings, *, interactive: bool = True) -> tuple[list[Settings], list[str]]:
    """The settings of every feed in use (user_events, and each feed whose schema the database
    has), and a line for each feed that is not (never ingested, or a contract that cannot be
    used). A feed never ingested is left alone: looking at it would create its schema."""
    from ecom_ingest_dagster.feeds import FeedError, known_feeds
    from ecom_ingest_dagster.settings import DEFAULT_FEED

    default = settings.with_overrides(feed=DEFAULT_FEED)
    with Pipeline(default, interactive=interactive) as pipeline, pipeline.connect() as conn:
        schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
    in_use, others = [default], []
    for name in known_feeds(settings.feeds_dir):
        if name == DEFAULT_FEED:
            continue
        feed_settings = settings.with_overrides(feed=name)
        try:
            feed_settings.contract  # noqa: B018
        except FeedError as exc:
            others.append(f"{name}: cannot be used: {' '.join(str(exc).split())}")
            continue
        if feed_settings.db_schema in schemas:
            in_use.append(feed_settings)
        else:
            others.append(f"{name}: nothing ingested yet (no schema {feed_settings.db_schema})")
    return in_use, others


class _SparkStart:
    """A Spark session started on a thread of its own, while the caller goes on."""

    def __init__(self, start: Callable[[], object]):
        self._outcome: dict = {}

        def run() -> None:
            try:
                self._outcome["spark"] = start()
            except BaseException as exc:  # handed to whoever waits
                self._outcome["error"] = exc

        self.thread = threading.Thread(target=run, name="ecom-ingest-spark-start", daemon=True)
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self):
        while self.thread.is_alive():  # in slices: a Terminate (an interrupt of this thread) is not held up
            self.thread.join(0.2)
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["spark"]


class _Progress:
    """``on_progress`` for batches loaded before the query runs, at most every ``every_s``."""

    def __init__(self, on_progress: Callable[[RunSummary], None] | None, every_s: float):
        self._on_progress, self._every_s, self._last = on_progress, every_s, None

    def report(self, summary: RunSummary) -> None:
        now = time.monotonic()
        if self._on_progress is not None and (self._last is None or now - self._last >= self._every_s):
            self._on_progress(summary)
            self._last = now
