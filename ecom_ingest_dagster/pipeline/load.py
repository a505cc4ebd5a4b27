"""Loading one dropped file into PostgreSQL, exactly once.

A file loaded alone is one transaction (small ones go together, one transaction per
group: ``load_batch``): its valid rows are COPY'd into ``user_events`` (through a
temporary stage and ``ON CONFLICT DO NOTHING`` when some are duplicates of earlier drops,
replays or of the file itself: those are skipped and counted), its rejected rows are
COPY'd into ``rejected_events``, and its ledger row goes into ``ingest_files`` with the
counts. A file that already has a ledger row is never loaded again, so re-running a
micro-batch (Spark's ``foreachBatch`` is at-least-once) has no second effect; two tasks
holding the same file take turns on an advisory lock. A file that changes while it is
read, or cannot be read, is recorded with its reason instead of being half-loaded.

This runs where the batch is loaded (an executor's task, or the driver for a small
batch); it needs only the file's path and a database connection, and knows nothing of
Spark or Dagster.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import gc
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import psycopg
import pyarrow as pa

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline.database import TRANSIENT_ERRORS, transient_retry
from ecom_ingest_dagster.pipeline.landing import move_rejected, retire_ingested
from ecom_ingest_dagster.pipeline.ledger import FileOutcome, FileTask, LoadedMeanwhile, claim, file_row, record_file
from ecom_ingest_dagster.pipeline.encode import CopyPump, DirectSink, StagedSink
from ecom_ingest_dagster.pipeline.measure import StageTimes
from ecom_ingest_dagster.pipeline.quarantine import copy_rejected, pg_array, rejected_frame, to_csv, with_source
from ecom_ingest_dagster.pipeline.read import EMPTY, CsvDrop, FileRejected, count_lines
from ecom_ingest_dagster.pipeline.validate import validate

log = logging.getLogger(__name__)


__all__ = ["FileOutcome", "FileTask", "LoadOptions", "ingest_file", "release_memory"]


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How a micro-batch's files are loaded: one object for the driver's path and the
    executors' alike (plain values, so it travels to an executor pickled)."""

    schema: str
    stream_id: str
    batch_id: int
    rejected_dir: Path
    archive_dir: Path | None = None
    after_commit: str = "keep"  # what becomes of an ingested drop: keep, archive, delete
    block_bytes: int = 16 * 1024 * 1024  # Arrow CSV block read at a time
    # Files are loaded together, one transaction per group of up to this many bytes
    # (``load_batch``); 0: one transaction per file.
    group_max_bytes: int = 4 * 1024 * 1024
    now: dt.datetime | None = None  # the validation's "now" (None: the clock, per file)
    feed: FeedContract = dataclasses.field(default_factory=lambda: c.FEED)  # the contract the files are held to

    def at(self) -> dt.datetime:
        return self.now or dt.datetime.now(dt.timezone.utc)


def release_memory() -> None:
    """Hand a big file's working memory back to the system.

    Spark keeps Python workers alive between tasks; without this an idle worker holds on
    to the peak of the last big file it loaded (Arrow's pool and glibc's heap keep freed
    memory), and two such workers doubled the process tree's footprint at 10M rows.
    """
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def ingest_file(conn: psycopg.Connection, task: FileTask, options: LoadOptions) -> FileOutcome:
    """Load one file (or find it already loaded); the ledger row is written with the data.

    Once the outcome is committed the drop leaves the landing directory: to the rejected
    area when rejected whole, else as ``after_commit`` says (``archive`` under
    ``archive_dir``, ``keep``, ``delete``).
    """
    outcome = file_row(conn, options.schema, task.file_name)
    conn.rollback()
    if outcome is None:
        try:
            outcome = _load_with_retries(conn, task, options)
        except LoadedMeanwhile as loaded:
            outcome = loaded.outcome
    finish_move(task, outcome, options)
    return outcome


def finish_move(task: FileTask, outcome: FileOutcome, options: LoadOptions) -> None:
    """After the file's outcome committed: the drop leaves the landing directory."""
    if outcome.status == "rejected":
        move_rejected(task, options.rejected_dir, outcome.reason or "", options.batch_id)  # a no-op when moved already
    elif not outcome.already_done:
        # A drop found already in the ledger is left to the landing sweep, which first
        # makes sure the file here is the one that was ingested (not a replacement).
        retire_ingested(Path(task.path), policy=options.after_commit, archive_dir=options.archive_dir,
                        committed_at=outcome.committed_at)


def _load_with_retries(conn, task: FileTask, options: LoadOptions) -> FileOutcome:
    # Two files of one batch sharing event ids can deadlock on the unique index; the
    # whole file transaction is safe to repeat.
    for attempt in transient_retry(f"loading {task.file_name}"):
        with attempt:
            try:
                return _load(conn, task, options)
            except FileRejected as rejection:
                conn.rollback()
                if rejection.reason == EMPTY:
                    return _record_empty(conn, task, options)
                outcome = _record_rejected_file(conn, task, options, rejection)
                move_rejected(task, options.rejected_dir, rejection.message, options.batch_id)
                return outcome
            except TRANSIENT_ERRORS:
                conn.rollback()
                raise
    raise AssertionError("unreachable")


def file_state(task: FileTask) -> tuple[int, int, int]:
    """Inode, size and mtime of the file now: what must not change while it is read.

    Raises ``FileRejected(FILE_UNREADABLE)`` when the file cannot be opened for reading,
    and ``FileRejected(FILE_CHANGED)`` when it is no longer the size Spark listed.
    """
    try:
        with open(task.path, "rb") as probe:  # as root, permission bits alone do not tell
            probe.read(1)
            stat = os.fstat(probe.fileno())
    except FileNotFoundError:
        raise FileRejected(c.FILE_UNREADABLE, "the file vanished before it could be read") from None
    except OSError as exc:
        raise FileRejected(c.FILE_UNREADABLE, f"the file cannot be read: {exc.strerror or exc}") from None
    if stat.st_size != task.size:
        raise FileRejected(
            c.FILE_CHANGED,
            f"the file is {stat.st_size} bytes, not the {task.size} listed: it was still being written or was "
            "replaced (drops must be written under a temporary name and renamed into place)",
        )
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _load(conn, task: FileTask, options: LoadOptions) -> FileOutcome:
    """Load a file in one transaction with its ledger row.

    The fast path COPYs valid rows straight into ``user_events``. If one of its event ids
    is already there (or comes twice in the file), the unique index stops that COPY; the
    file is then read again through a temporary stage and ``INSERT ... ON CONFLICT DO
    NOTHING``, which skips and counts the duplicates.
    """
    started_at = dt.datetime.now(dt.timezone.utc)
    schema, now = options.schema, options.at()
    before = file_state(task)
    with conn.transaction():
        claim(conn, schema, task.file_name)
        try:
            with conn.transaction():  # a savepoint: a duplicate undoes only the fast path
                outcome = _copy_file(conn, task, options, now, DirectSink(schema, options.feed))
        except psycopg.errors.UniqueViolation:
            outcome = _copy_file(conn, task, options, now, StagedSink(schema, options.feed))
        # A file written to or replaced while it was read may have given half its rows:
        # undo them all (the exception rolls the transaction back) and quarantine it whole.
        if changed_since(task, before):
            raise FileRejected(
                c.FILE_CHANGED,
                "the file changed while it was read (size or time moved, or it was replaced): "
                "drops must be written under a temporary name and renamed into place",
            )
        record_file(conn, schema, outcome, task, options.stream_id, options.batch_id, started_at, options.feed.version)
    return outcome


def changed_since(task: FileTask, before: tuple[int, int, int]) -> bool:
    """True when the file is not the one ``file_state`` saw: written to, replaced, gone."""
    try:
        return file_state(task) != before
    except FileRejected:  # gone or unreadable now
        return True


@dataclasses.dataclass
class ValidatedBlock:
    """One block of a file after validation: what both COPY paths consume."""

    valid: pd.DataFrame  # ValidationResult.valid: cleaned contract columns, timestamps parsed
    rejected: pd.DataFrame  # the quarantine table's columns (bad rows and malformed records)


def validated_blocks(drop: CsvDrop, now: dt.datetime, times: StageTimes, feed: FeedContract) -> Iterator[ValidatedBlock]:
    """Read, validate and shape a drop block by block, timing each stage."""
    chunks = iter(drop)
    while True:
        with times.stage("read"):
            chunk = next(chunks, None)
        if chunk is None:
            return
        with times.stage("validate"):
            result = validate(chunk.rows, now=now, feed=feed)
        with times.stage("frame"):
            rejected = rejected_frame(result.rejected, chunk.malformed, feed)
        yield ValidatedBlock(result.valid, rejected)


def _copy_file(conn, task: FileTask, options: LoadOptions, now: dt.datetime, sink) -> FileOutcome:
    schema, batch_id = options.schema, options.batch_id
    times = StageTimes()
    drop = CsvDrop(Path(task.path), block_bytes=options.block_bytes, feed=options.feed)
    valid_rows = rejected_rows = 0
    reason_counts: dict[str, int] = {}
    statement = sink.statement(conn)
    # Rejected rows wait on disk past a few MB: one COPY at a time per connection, and a
    # file of nothing but bad rows must not grow memory with its size.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as rejected_spool:
        with conn.cursor() as cur, cur.copy(statement) as copy, CopyPump(copy) as pump:
            # The pump sends from a thread: the next block is parsed and validated while
            # PostgreSQL takes in this one.
            for block in validated_blocks(drop, now, times, options.feed):
                with times.stage("frame"):
                    payload = sink.encode(block.valid, task.file_name, batch_id)
                    if len(block.rejected):
                        rejected_spool.write(to_csv(with_source(block.rejected, task.file_name, batch_id, options.feed)))
                with times.stage("write"):
                    if payload:
                        pump.write(payload)
                valid_rows += len(block.valid)
                rejected_rows += len(block.rejected)
                for reasons in block.rejected["reasons"]:
                    for reason in reasons:
                        reason_counts[reason] = reason_counts.get(reason, 0) + 1
            pump.write(sink.close())  # the binary COPY's trailer (and its header, if no block came)
            tick = time.perf_counter()
        times.write_ms += _ms_since(tick)  # the rest of the queue, sent when the COPY closes

        with times.stage("write"):
            if rejected_rows:
                rejected_spool.seek(0)
                copy_rejected(conn, schema, rejected_spool, options.feed)
            inserted = sink.finish(conn, task.file_name, batch_id, valid_rows)
    return FileOutcome(
        file_name=task.file_name,
        status="ingested",
        rows_total=drop.records,
        rows_loaded=inserted,
        rows_duplicate=valid_rows - inserted,
        rows_rejected=rejected_rows,
        reason_counts=reason_counts,
        extra_columns=drop.extra_columns,
        times=times,
        landed_at=task.landed_at,
    )


def _record_empty(conn, task, options: LoadOptions) -> FileOutcome:
    outcome = FileOutcome(task.file_name, "ingested", landed_at=task.landed_at)
    with conn.transaction():
        claim(conn, options.schema, task.file_name)
        record_file(conn, options.schema, outcome, task, options.stream_id, options.batch_id,
                    dt.datetime.now(dt.timezone.utc), options.feed.version)
    return outcome


def _record_rejected_file(conn, task, options: LoadOptions, rejection: FileRejected) -> FileOutcome:
    """Every line of a file rejected whole becomes a rejected row carrying the file's reason."""
    started_at = dt.datetime.now(dt.timezone.utc)
    times = StageTimes()
    with times.stage("read"):
        try:
            lines = count_lines(Path(task.path), skip_header=not rejection.header_is_data)
        except OSError:  # unreadable or gone: there are no lines to keep, the ledger says why
            lines = []
    outcome = FileOutcome(
        file_name=task.file_name,
        status="rejected",
        rows_total=len(lines),
        rows_rejected=len(lines),
        reason=rejection.reason,
        reason_counts={rejection.reason: len(lines)} if lines else {},
        times=times,
        landed_at=task.landed_at,
    )
    schema, feed = options.schema, options.feed
    with conn.transaction():
        claim(conn, schema, task.file_name)
        if lines:
            with times.stage("write"):
                frame = pd.DataFrame(
                    {
                        **{col: pd.Series([None] * len(lines), dtype=object) for col in feed.carried_columns},
                        "raw_line": [text for _, text in lines],
                        "record_number": [number for number, _ in lines],
                        "reasons": pg_array([rejection.reason]),
                        "details": pg_array([f"file: {rejection.message}"]),
                    }
                )
                copy_rejected(conn, schema, to_csv(with_source(frame, task.file_name, options.batch_id, feed)), feed)
        record_file(conn, schema, outcome, task, options.stream_id, options.batch_id, started_at, feed.version)
    return outcome


def _ms_since(tick: float) -> float:
    return (time.perf_counter() - tick) * 1000.0
