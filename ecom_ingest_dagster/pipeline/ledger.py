"""The ledgers: what makes a replayed micro-batch or a second run harmless.

``ingest_files`` has one row per drop, written in the same transaction as the drop's
rows, so a file in it is never loaded again; ``ingest_batches`` has one row per
micro-batch with its metrics, written once after the batch's files committed. All SQL
on the two tables lives here; the loader, the query and the metric assets call it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline.database import table
from ecom_ingest_dagster.pipeline.measure import StageTimes


@dataclasses.dataclass(frozen=True)
class FileTask:
    """What a task needs to know about a drop: where it is and when it landed."""

    path: str
    size: int
    landed_at: dt.datetime | None = None

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path)


@dataclasses.dataclass
class FileOutcome:
    file_name: str
    status: str  # as in ingest_files: "ingested" or "rejected"
    rows_total: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    reason: str | None = None
    reason_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    extra_columns: list[str] = dataclasses.field(default_factory=list)
    times: StageTimes = dataclasses.field(default_factory=StageTimes)
    landed_at: dt.datetime | None = None
    committed_at: dt.datetime | None = None
    # True when the ledger already had the file (a replayed batch): nothing was written.
    already_done: bool = False


# -- the file ledger -------------------------------------------------------------------


def file_row(conn: psycopg.Connection, schema: str, file_name: str) -> FileOutcome | None:
    """The ledger's outcome for ``file_name``, or None when it was never committed."""
    return file_rows(conn, schema, [file_name]).get(file_name)


def file_rows(conn: psycopg.Connection, schema: str, names: list[str]) -> dict[str, FileOutcome]:
    """The ledger's outcomes of those of ``names`` that were committed (one look-up by key)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected, reason, "
            "reason_counts, extra_columns, landed_at, committed_at FROM {} WHERE file_name = ANY(%s)"
        ).format(table(schema, "ingest_files")),
        (names,),
    ).fetchall()
    return {
        name: FileOutcome(
            name, status, total, loaded, duplicate, rejected, reason, counts, list(extra),
            landed_at=landed_at, committed_at=committed_at, already_done=True,
        )
        for name, status, total, loaded, duplicate, rejected, reason, counts, extra, landed_at, committed_at in rows
    }


class LoadedMeanwhile(Exception):
    """Another task committed the file while this one waited for it (rolls back our transaction)."""

    def __init__(self, outcome: FileOutcome):
        super().__init__(outcome.file_name)
        self.outcome = outcome


def claim(conn: psycopg.Connection, schema: str, file_name: str) -> None:
    """Take the file for this transaction, or raise ``LoadedMeanwhile`` if it is done.

    Two runs over one landing directory (a CLI ingest beside a Dagster run, say) may hold
    the same file: the second waits here for the first to commit, then finds the ledger
    row instead of loading or recording the file again.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"ecom_ingest/{schema}/{file_name}",))
    if (done := file_row(conn, schema, file_name)) is not None:
        raise LoadedMeanwhile(done)


def record_file(conn, schema: str, outcome: FileOutcome, task: FileTask, stream_id: str, batch_id: int,
                started_at: dt.datetime, contract_version: int) -> None:
    """The file's ledger row (with the version of the contract it was held to): the last statement of its transaction."""
    times = outcome.times
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected,"
            " reason, reason_counts, extra_columns, file_size, stream_id, batch_id, landed_at, started_at,"
            " read_ms, validate_ms, frame_ms, write_ms, contract_version, committed_at)"
            # clock_timestamp(): the ledger row is the transaction's last statement, so this
            # is the commit to within milliseconds (now() would be the transaction's start).
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())"
            " RETURNING committed_at"
        ).format(table(schema, "ingest_files")),
        (
            outcome.file_name, outcome.status, outcome.rows_total, outcome.rows_loaded,
            outcome.rows_duplicate, outcome.rows_rejected, outcome.reason,
            json.dumps(outcome.reason_counts), outcome.extra_columns, task.size, stream_id, batch_id,
            task.landed_at, started_at, times.read_ms, times.validate_ms, times.frame_ms, times.write_ms,
            contract_version,
        ),
    ).fetchone()
    outcome.committed_at = row[0]


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """What the ledger recorded of a drop: enough to finish its move or see it was replaced."""

    status: str
    reason: str | None
    batch_id: int
    file_size: int | None
    landed_ms: int | None  # the modification time Spark listed, in milliseconds
    committed_at: dt.datetime


def entries_for(conn, schema: str, names: list[str]) -> dict[str, LedgerEntry]:
    """The ledger rows of ``names`` only: a look-up by key, whatever the history's size."""
    if not names:
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT file_name, status, reason, batch_id, file_size,"
            " (extract(epoch FROM landed_at) * 1000)::bigint, committed_at FROM {} WHERE file_name = ANY(%s)"
        ).format(table(schema, "ingest_files")),
        (names,),
    ).fetchall()
    return {r[0]: LedgerEntry(*r[1:]) for r in rows}


# Zero-byte drops are never listed by Spark's file source: the landing sweep records them
# under this stream id, outside any micro-batch (they have no rows to measure).
SWEEP_STREAM_ID = "landing-sweep"
SWEEP_BATCH_ID = -1


def record_empty_drop(conn, schema: str, task: FileTask, contract_version: int) -> FileOutcome:
    """A zero-byte drop: a valid drop with zero rows, recorded once (claim, then the ledger row)."""
    outcome = FileOutcome(task.file_name, "ingested", landed_at=task.landed_at)
    try:
        with conn.transaction():
            claim(conn, schema, task.file_name)
            record_file(conn, schema, outcome, task, SWEEP_STREAM_ID, SWEEP_BATCH_ID, dt.datetime.now(dt.timezone.utc),
                        contract_version)
    except LoadedMeanwhile as done:
        return done.outcome
    return outcome


# -- the batch ledger ------------------------------------------------------------------


def batch_committed(conn, schema: str, stream_id: str, batch_id: int) -> bool:
    row = conn.execute(
        sql.SQL("SELECT 1 FROM {} WHERE stream_id = %s AND batch_id = %s").format(table(schema, "ingest_batches")),
        (stream_id, batch_id),
    ).fetchone()
    return row is not None


def batch_files(conn, schema: str, stream_id: str, batch_id: int) -> list[dict]:
    """The ledger rows of the files a micro-batch committed: what its metrics are made of."""
    return conn.cursor(row_factory=dict_row).execute(
        sql.SQL(
            "SELECT status, rows_total, rows_loaded, rows_duplicate, rows_rejected, reason, reason_counts,"
            " read_ms, validate_ms, frame_ms, write_ms, landed_at, committed_at"
            " FROM {} WHERE stream_id = %s AND batch_id = %s"
        ).format(table(schema, "ingest_files")),
        (stream_id, batch_id),
    ).fetchall()


def record_batch(conn, schema: str, metrics: dict, started_at: dt.datetime) -> bool:
    """The batch's row (once: a replayed batch inserts nothing); True when it was new."""
    with conn.transaction():
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {} (stream_id, batch_id, started_at, files, rows_total, rows_loaded,"
                " rows_duplicate, rows_rejected, metrics, run_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT DO NOTHING"
            ).format(table(schema, "ingest_batches")),
            (
                metrics["stream_id"], metrics["batch_id"], started_at, metrics["files"], metrics["total_records"],
                metrics["loaded_records"], metrics["duplicate_records"], metrics["rejected_records"],
                json.dumps(metrics), metrics["run_id"],
            ),
        ).rowcount
    return bool(inserted)


def batch_rejections(conn, schema: str, stream_id: str, batch_id: int, feed: FeedContract | None = None) -> Iterator[dict]:
    """The rejected rows of a batch's files, streamed (a batch may hold millions); the feed's
    key column comes as ``key``."""
    feed = feed or c.FEED
    query = sql.SQL(
        "SELECT r.source_file, r.record_number, r.batch_id, r.{key} AS key, r.reasons, r.details,"
        " r.raw_line, r.rejected_at FROM {rejected} r JOIN {files} f ON f.file_name = r.source_file"
        " WHERE f.stream_id = %s AND f.batch_id = %s ORDER BY r.id"
    ).format(rejected=table(schema, feed.rejected_table), files=table(schema, "ingest_files"),
             key=sql.Identifier(feed.unique_key))
    with conn.cursor(name="batch_rejections", row_factory=dict_row) as cur:
        cur.execute(query, (stream_id, batch_id))
        yield from cur


def run_batches(conn, schema: str, *, run_id: str | None = None, fallback: bool = True,
                since: dt.datetime | None = None) -> tuple[str | None, list[dict]]:
    """Batch metrics of ``run_id`` (committed from ``since`` on, if given); without batches
    there (and ``fallback``), those of the latest run that had any.

    Returns the run the figures describe and its batches in commit order.
    """
    batches_table = table(schema, "ingest_batches")
    if run_id is not None:
        rows = conn.execute(
            sql.SQL("SELECT metrics FROM {} WHERE run_id = %s AND (%s::timestamptz IS NULL OR committed_at >= %s)"
                    " ORDER BY committed_at, batch_id").format(batches_table),
            (run_id, since, since),
        ).fetchall()
        if rows or not fallback:
            return (run_id if rows else None), [r[0] for r in rows]
    latest = conn.execute(
        sql.SQL("SELECT run_id FROM {} WHERE run_id IS NOT NULL ORDER BY committed_at DESC LIMIT 1").format(batches_table)
    ).fetchone()
    if latest is None:
        return None, []
    rows = conn.execute(
        sql.SQL("SELECT metrics FROM {} WHERE run_id = %s ORDER BY committed_at, batch_id").format(batches_table),
        (latest[0],),
    ).fetchall()
    return latest[0], [r[0] for r in rows]


def accounting_violations(
    conn, schema: str, *, run_id: str | None = None,
    since: dt.datetime | None = None, until: dt.datetime | None = None, feed: FeedContract | None = None,
) -> list[dict]:
    """Files committed by ``run_id`` (or in a time window) whose counts break rows in =
    loaded + duplicate + rejected, or disagree with the rows in the feed's table / quarantine table."""
    feed = feed or c.FEED
    query = sql.SQL(
        """
        SELECT f.file_name, f.rows_total, f.rows_loaded, f.rows_duplicate, f.rows_rejected,
               (SELECT count(*) FROM {events} u WHERE u.source_file = f.file_name) AS in_events,
               (SELECT count(*) FROM {rejected} r WHERE r.source_file = f.file_name AND r.replayed_at IS NULL) AS in_rejected
        FROM {files} f
        LEFT JOIN {batches} b ON b.stream_id = f.stream_id AND b.batch_id = f.batch_id
        WHERE (%(run_id)s::text IS NULL OR b.run_id = %(run_id)s)
          AND (%(since)s::timestamptz IS NULL OR f.committed_at >= %(since)s)
          AND (%(until)s::timestamptz IS NULL OR f.committed_at < %(until)s)
        """
    ).format(
        events=table(schema, feed.table),
        rejected=table(schema, feed.rejected_table),
        files=table(schema, "ingest_files"),
        batches=table(schema, "ingest_batches"),
    )
    problems = []
    params = {"run_id": run_id, "since": since, "until": until}
    for name, total, loaded, duplicate, rejected, in_events, in_rejected in conn.execute(query, params):
        if total != loaded + duplicate + rejected or loaded != in_events or rejected != in_rejected:
            problems.append(
                {"file_name": name, "rows_total": total, "rows_loaded": loaded, "rows_duplicate": duplicate,
                 "rows_rejected": rejected, "rows_in_table": in_events, "rows_in_quarantine": in_rejected}
            )
    return problems


@dataclasses.dataclass(frozen=True)
class Status:
    """What the database holds, over every run."""

    files_ingested: int
    files_rejected: int
    rows_total: int
    rows_loaded: int
    rows_duplicate: int
    rows_rejected: int
    reasons: list[tuple[str, int]]  # rejected rows by reason, most frequent first (rows replayed since left out)
    # files rejected whole by their reason, most frequent first: a file of no rows (a damaged
    # .gz) has a reason but no rejected row to show it
    files_rejected_by_reason: list[tuple[str, int]] = dataclasses.field(default_factory=list)


def status(conn, schema: str, feed: FeedContract | None = None) -> Status:
    files = dict(conn.execute(sql.SQL("SELECT status, count(*) FROM {} GROUP BY 1").format(table(schema, "ingest_files"))))
    total, loaded, duplicate, rejected = conn.execute(
        sql.SQL("SELECT coalesce(sum(rows_total),0), coalesce(sum(rows_loaded),0), coalesce(sum(rows_duplicate),0),"
                " coalesce(sum(rows_rejected),0) FROM {}").format(table(schema, "ingest_files"))
    ).fetchone()
    reasons = conn.execute(
        sql.SQL("SELECT reason, count(*) FROM (SELECT unnest(reasons) AS reason FROM {} WHERE replayed_at IS NULL) r"
                " GROUP BY 1 ORDER BY 2 DESC, 1").format(table(schema, (feed or c.FEED).rejected_table))
    ).fetchall()
    files_by_reason = conn.execute(
        sql.SQL("SELECT coalesce(reason, '?'), count(*) FROM {} WHERE status = 'rejected' GROUP BY 1 ORDER BY 2 DESC, 1")
        .format(table(schema, "ingest_files"))
    ).fetchall()
    # sum(bigint) is numeric in PostgreSQL: counts are ints here.
    return Status(files.get("ingested", 0), files.get("rejected", 0), int(total), int(loaded), int(duplicate),
                  int(rejected), [(r, n) for r, n in reasons], [(r, n) for r, n in files_by_reason])


def table_rows(conn, schema: str, feed: FeedContract | None = None) -> dict[str, int]:
    """Rows in the feed's table and its quarantine, over every run (keyed by table name)."""
    feed = feed or c.FEED
    return {name: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, name))).fetchone()[0]
            for name in (feed.table, feed.rejected_table)}
