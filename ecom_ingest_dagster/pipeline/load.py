"""Loading one dropped file into PostgreSQL, exactly once.

Each file is one transaction: its valid rows are COPY'd into ``user_events`` (through a
temporary stage and ``ON CONFLICT DO NOTHING`` when some are duplicates of earlier drops,
replays or of the file itself: those are skipped and counted), its rejected rows are
COPY'd into ``rejected_events``, and its ledger row goes into ``ingest_files`` with the
counts. A file that already has a ledger row is never loaded again, so re-running a
micro-batch (Spark's ``foreachBatch`` is at-least-once) has no second effect; two tasks
holding the same file take turns on an advisory lock. A file that changes while it is
read, or cannot be read, is recorded with its reason instead of being half-loaded.

This runs where Spark runs the task (an executor); it needs only the file's path and a
database URL, and knows nothing of Spark or Dagster.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import gc
import hashlib
import io
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.read import EMPTY, CsvDrop, FileRejected, count_lines
from ecom_ingest_dagster.pipeline.database import ReconnectingConnection, table
from ecom_ingest_dagster.pipeline.validate import validate

log = logging.getLogger(__name__)

_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_ATTEMPTS = 5
_VALID_COLUMNS = [col for col in c.COLUMNS if col != "event_timestamp"] + ["event_ts_us"]
_REJECTED_COLUMNS = list(c.COLUMNS) + ["raw_line", "record_number", "reasons", "details"]
_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")


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
    read_ms: float = 0.0
    validate_ms: float = 0.0
    frame_ms: float = 0.0
    write_ms: float = 0.0
    landed_at: dt.datetime | None = None
    committed_at: dt.datetime | None = None
    # True when the ledger already had the file (a replayed batch): nothing was written.
    already_done: bool = False

    def as_record(self) -> dict:
        record = dataclasses.asdict(self)
        record["reason_counts"] = json.dumps(self.reason_counts, sort_keys=True)
        return record


@dataclasses.dataclass
class _Timer:
    read_ms: float = 0.0
    validate_ms: float = 0.0
    frame_ms: float = 0.0
    write_ms: float = 0.0


def ingest_files(
    tasks: Iterable[FileTask],
    *,
    database_url: str,
    schema: str,
    stream_id: str,
    batch_id: int,
    rejected_dir: Path,
    block_bytes: int = 16 * 1024 * 1024,
    now: dt.datetime | None = None,
    db_retry_s: float = 0.0,
) -> list[FileOutcome]:
    """Load files one after another over one connection (one task's share of a batch).

    A connection lost mid-file takes that file's transaction with it; the file is loaded
    again on a new connection (``db_retry_s`` bounds the wait for the server).
    """
    outcomes = []
    with ReconnectingConnection(database_url, db_retry_s) as db:
        for task in tasks:
            outcomes.append(
                db.run(
                    lambda conn: ingest_file(
                        conn, task, schema=schema, stream_id=stream_id, batch_id=batch_id,
                        rejected_dir=rejected_dir, block_bytes=block_bytes, now=now,
                    )
                )
            )
            release_memory()
    return outcomes


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


def ingest_file(
    conn: psycopg.Connection,
    task: FileTask,
    *,
    schema: str,
    stream_id: str,
    batch_id: int,
    rejected_dir: Path,
    block_bytes: int = 16 * 1024 * 1024,
    now: dt.datetime | None = None,
) -> FileOutcome:
    """Load one file (or find it already loaded); the ledger row is written with the data."""
    now = now or dt.datetime.now(dt.timezone.utc)
    done = _ledger_row(conn, schema, task.file_name)
    conn.rollback()
    if done is None:
        try:
            return _load_with_retries(conn, task, schema, stream_id, batch_id, rejected_dir, block_bytes, now)
        except _LoadedMeanwhile as loaded:
            done = loaded.outcome
    if done.status == "rejected":
        _move_rejected(task, rejected_dir, done.reason or "", batch_id)
    return done


def _load_with_retries(conn, task, schema, stream_id, batch_id, rejected_dir, block_bytes, now) -> FileOutcome:
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _load(conn, task, schema, stream_id, batch_id, block_bytes, now)
        except FileRejected as rejection:
            conn.rollback()
            if rejection.reason == EMPTY:
                return _record_empty(conn, task, schema, stream_id, batch_id, now)
            outcome = _record_rejected_file(conn, task, schema, stream_id, batch_id, rejection, now)
            _move_rejected(task, rejected_dir, rejection.message, batch_id)
            return outcome
        except _TRANSIENT as exc:
            # Two files of one batch sharing event ids can deadlock on the unique
            # index; the whole file transaction is safe to repeat.
            conn.rollback()
            if attempt == _ATTEMPTS:
                raise
            log.warning("retrying %s after %s (attempt %d)", task.file_name, type(exc).__name__, attempt)
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _ledger_row(conn: psycopg.Connection, schema: str, file_name: str) -> FileOutcome | None:
    row = conn.execute(
        sql.SQL(
            "SELECT status, rows_total, rows_loaded, rows_duplicate, rows_rejected, reason, "
            "reason_counts, extra_columns, landed_at, committed_at FROM {} WHERE file_name = %s"
        ).format(table(schema, "ingest_files")),
        (file_name,),
    ).fetchone()
    if row is None:
        return None
    status, total, loaded, duplicate, rejected, reason, counts, extra, landed_at, committed_at = row
    return FileOutcome(
        file_name, status, total, loaded, duplicate, rejected, reason, counts, list(extra),
        landed_at=landed_at, committed_at=committed_at, already_done=True,
    )


def _claim(conn: psycopg.Connection, schema: str, file_name: str) -> None:
    """Take the file for this transaction, or raise ``_LoadedMeanwhile`` if it is done.

    Two runs over one landing directory (a CLI ingest beside a Dagster run, say) may hold
    the same file: the second waits here for the first to commit, then finds the ledger
    row instead of loading or recording the file again.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"ecom_ingest/{schema}/{file_name}",))
    if (done := _ledger_row(conn, schema, file_name)) is not None:
        raise _LoadedMeanwhile(done)


class _LoadedMeanwhile(Exception):
    """Another task committed the file while this one waited for it (rolls back our transaction)."""

    def __init__(self, outcome: FileOutcome):
        super().__init__(outcome.file_name)
        self.outcome = outcome


def _file_state(task: FileTask) -> tuple[int, int, int]:
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


def _load(conn, task: FileTask, schema: str, stream_id: str, batch_id: int, block_bytes: int, now) -> FileOutcome:
    """Load a file in one transaction with its ledger row.

    The fast path COPYs valid rows straight into ``user_events``. If one of its event ids
    is already there (or comes twice in the file), the unique index stops that COPY; the
    file is then read again through a temporary stage and ``INSERT ... ON CONFLICT DO
    NOTHING``, which skips and counts the duplicates.
    """
    started_at = dt.datetime.now(dt.timezone.utc)
    before = _file_state(task)
    with conn.transaction():
        _claim(conn, schema, task.file_name)
        try:
            with conn.transaction():  # a savepoint: a duplicate undoes only the fast path
                outcome, timer = _copy_file(conn, task, schema, batch_id, block_bytes, now, direct=True)
        except psycopg.errors.UniqueViolation:
            outcome, timer = _copy_file(conn, task, schema, batch_id, block_bytes, now, direct=False)
        # A file written to or replaced while it was read may have given half its rows:
        # undo them all (the exception rolls the transaction back) and quarantine it whole.
        try:
            changed = _file_state(task) != before
        except FileRejected:  # gone or unreadable now
            changed = True
        if changed:
            raise FileRejected(
                c.FILE_CHANGED,
                "the file changed while it was read (size or time moved, or it was replaced): "
                "drops must be written under a temporary name and renamed into place",
            )
        _write_ledger(conn, schema, outcome, task, stream_id, batch_id, started_at, timer)
    return outcome


_DIRECT_COLUMNS = list(c.COLUMNS) + ["source_file", "batch_id"]


def _copy_file(conn, task: FileTask, schema: str, batch_id: int, block_bytes: int, now, *, direct: bool):
    timer = _Timer()
    drop = CsvDrop(Path(task.path), block_bytes=block_bytes)
    valid_rows = rejected_rows = 0
    reason_counts: dict[str, int] = {}
    if direct:
        target = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            table(schema, "user_events"), sql.SQL(", ").join(map(sql.Identifier, _DIRECT_COLUMNS))
        )
    else:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ecom_ingest_stage ("
            " event_id uuid, user_id text, session_id uuid, event_type text, product_id text,"
            " product_name text, category text, price numeric(12,2), quantity integer,"
            " event_ts_us bigint) ON COMMIT DROP"
        )
        target = sql.SQL("COPY ecom_ingest_stage ({}) FROM STDIN (FORMAT csv)").format(
            sql.SQL(", ").join(map(sql.Identifier, _VALID_COLUMNS))
        )
    # Rejected rows wait on disk past a few MB: one COPY at a time per connection, and a
    # file of nothing but bad rows must not grow memory with its size.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as rejected_spool:
        with conn.cursor() as cur, cur.copy(target) as copy, _CopyPump(copy) as pump:
            # The pump sends from a thread: the next block is parsed and validated while
            # PostgreSQL takes in this one.
            chunks = iter(drop)
            while True:
                tick = time.perf_counter()
                chunk = next(chunks, None)
                timer.read_ms += _ms_since(tick)
                if chunk is None:
                    break
                tick = time.perf_counter()
                result = validate(chunk.rows, now=now)
                timer.validate_ms += _ms_since(tick)

                tick = time.perf_counter()
                valid_csv = _to_csv(_direct_frame(result.valid, task.file_name, batch_id) if direct else result.valid[_VALID_COLUMNS])
                rejected = _rejected_frame(result.rejected, chunk.malformed)
                if len(rejected):
                    rejected_spool.write(_to_csv(_with_source(rejected, task.file_name, batch_id)))
                timer.frame_ms += _ms_since(tick)

                tick = time.perf_counter()
                if valid_csv:
                    pump.write(valid_csv)
                timer.write_ms += _ms_since(tick)
                valid_rows += len(result.valid)
                rejected_rows += len(rejected)
                for reasons in rejected["reasons"]:
                    for reason in reasons:
                        reason_counts[reason] = reason_counts.get(reason, 0) + 1
            tick = time.perf_counter()
        timer.write_ms += _ms_since(tick)  # the rest of the queue, sent when the COPY closes

        tick = time.perf_counter()
        if rejected_rows:
            rejected_spool.seek(0)
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                table(schema, "rejected_events"),
                sql.SQL(", ").join(map(sql.Identifier, _REJECTED_COLUMNS + ["source_file", "batch_id"])),
            )
            with conn.cursor() as cur, cur.copy(statement) as copy:
                while block := rejected_spool.read(1024 * 1024):
                    copy.write(block)
    if direct:
        inserted = valid_rows
    else:
        columns = [col for col in c.COLUMNS if col != "event_timestamp"]
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {target} ({columns}, event_timestamp, source_file, batch_id) "
                "SELECT {columns}, timestamptz 'epoch' + event_ts_us * interval '1 microsecond', %s, %s "
                "FROM ecom_ingest_stage ON CONFLICT (event_id) DO NOTHING"
            ).format(
                target=table(schema, "user_events"),
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            ),
            (task.file_name, batch_id),
        ).rowcount
    timer.write_ms += _ms_since(tick)
    outcome = FileOutcome(
        file_name=task.file_name,
        status="ingested",
        rows_total=drop.records,
        rows_loaded=inserted,
        rows_duplicate=valid_rows - inserted,
        rows_rejected=rejected_rows,
        reason_counts=reason_counts,
        extra_columns=drop.extra_columns,
        landed_at=task.landed_at,
    )
    return outcome, timer


class _CopyPump:
    """Feeds a COPY from a thread, with at most ``depth`` payloads waiting.

    psycopg's own QueuedLibpqWriter queues up to 1,024 buffers (~128 MB) when the server
    is slower than the producer; a short queue keeps the overlap and bounds the memory.
    """

    def __init__(self, copy, depth: int = 2):
        self._copy = copy
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ecom-ingest-copy", daemon=True)

    def __enter__(self) -> "_CopyPump":
        self._thread.start()
        return self

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._copy.write(payload)
                except BaseException as exc:  # handed to the producer on its next call
                    self._error = exc

    def write(self, payload: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(payload)

    def __exit__(self, *exc_info) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error


def _direct_frame(valid: pd.DataFrame, file_name: str, batch_id: int) -> pa.Table:
    """Valid rows shaped like ``user_events``: the timestamp as canonical UTC text."""
    # Formatting a zone-aware timestamp is 4x slower in Arrow than a naive one; the
    # values are UTC, so format them naive and say so with a "Z".
    naive = pc.cast(pa.array(valid["event_ts_us"].to_numpy(), type=pa.timestamp("us")), pa.string())
    stamps = pc.binary_join_element_wise(naive, "Z", "")
    columns = {col: pa.array(valid[col].array) if col != "event_timestamp" else stamps for col in c.COLUMNS}
    n = len(valid)
    columns["source_file"] = pa.array([file_name] * n, pa.string()) if n else pa.array([], pa.string())
    columns["batch_id"] = pa.array(np.full(n, batch_id, dtype=np.int64))
    return pa.table(columns)


def _record_empty(conn, task, schema, stream_id, batch_id, now) -> FileOutcome:
    outcome = FileOutcome(task.file_name, "ingested", landed_at=task.landed_at)
    with conn.transaction():
        _claim(conn, schema, task.file_name)
        _write_ledger(conn, schema, outcome, task, stream_id, batch_id, dt.datetime.now(dt.timezone.utc), _Timer())
    return outcome


def _record_rejected_file(conn, task, schema, stream_id, batch_id, rejection: FileRejected, now) -> FileOutcome:
    """Every line of a file rejected whole becomes a rejected row carrying the file's reason."""
    started_at = dt.datetime.now(dt.timezone.utc)
    timer = _Timer()
    tick = time.perf_counter()
    try:
        lines = count_lines(Path(task.path), skip_header=not rejection.header_is_data)
    except OSError:  # unreadable or gone: there are no lines to keep, the ledger says why
        lines = []
    timer.read_ms = _ms_since(tick)
    outcome = FileOutcome(
        file_name=task.file_name,
        status="rejected",
        rows_total=len(lines),
        rows_rejected=len(lines),
        reason=rejection.reason,
        reason_counts={rejection.reason: len(lines)} if lines else {},
        landed_at=task.landed_at,
    )
    with conn.transaction():
        _claim(conn, schema, task.file_name)
        if lines:
            tick = time.perf_counter()
            frame = pd.DataFrame(
                {
                    **{col: pd.Series([None] * len(lines), dtype=object) for col in c.COLUMNS},
                    "raw_line": [text for _, text in lines],
                    "record_number": [number for number, _ in lines],
                    "reasons": _pg_array([rejection.reason]),
                    "details": _pg_array([f"file: {rejection.message}"]),
                }
            )
            _copy(
                conn,
                "COPY " + _table_sql(conn, schema, "rejected_events") + " ({}) FROM STDIN (FORMAT csv)",
                _REJECTED_COLUMNS + ["source_file", "batch_id"],
                _to_csv(_with_source(frame, task.file_name, batch_id)),
            )
            timer.write_ms = _ms_since(tick)
        _write_ledger(conn, schema, outcome, task, stream_id, batch_id, started_at, timer)
    return outcome


def _write_ledger(conn, schema, outcome: FileOutcome, task: FileTask, stream_id, batch_id, started_at, timer: _Timer):
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected,"
            " reason, reason_counts, extra_columns, file_size, stream_id, batch_id, landed_at, started_at,"
            " read_ms, validate_ms, frame_ms, write_ms, committed_at)"
            # clock_timestamp(): the ledger row is the transaction's last statement, so this
            # is the commit to within milliseconds (now() would be the transaction's start).
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())"
            " RETURNING committed_at"
        ).format(table(schema, "ingest_files")),
        (
            outcome.file_name, outcome.status, outcome.rows_total, outcome.rows_loaded,
            outcome.rows_duplicate, outcome.rows_rejected, outcome.reason,
            json.dumps(outcome.reason_counts), outcome.extra_columns, task.size, stream_id, batch_id,
            task.landed_at, started_at, timer.read_ms, timer.validate_ms, timer.frame_ms, timer.write_ms,
        ),
    ).fetchone()
    outcome.committed_at = row[0]
    outcome.read_ms, outcome.validate_ms = timer.read_ms, timer.validate_ms
    outcome.frame_ms, outcome.write_ms = timer.frame_ms, timer.write_ms


def _rejected_frame(rejected: pd.DataFrame, malformed: list[tuple[int, str]]) -> pd.DataFrame:
    frame = rejected.reindex(columns=list(c.COLUMNS)).astype(object)
    frame = frame.where(frame.notna(), None)
    frame["raw_line"] = None
    frame["record_number"] = rejected.index.to_numpy()
    frame["reasons"] = rejected["reasons"].to_numpy() if len(rejected) else []
    frame["details"] = rejected["details"].to_numpy() if len(rejected) else []
    if malformed:
        bad = pd.DataFrame(
            {
                **{col: [None] * len(malformed) for col in c.COLUMNS},
                "raw_line": [text for _, text in malformed],
                "record_number": [number if number >= 0 else None for number, _ in malformed],
                "reasons": [[c.MALFORMED_ROW]] * len(malformed),
                "details": [["record: field count differs from the header's"]] * len(malformed),
            }
        )
        frame = pd.concat([frame, bad], ignore_index=True) if len(frame) else bad
    return frame.reset_index(drop=True)


def _with_source(frame: pd.DataFrame, file_name: str, batch_id: int) -> pd.DataFrame:
    out = frame.copy()
    for col in ("reasons", "details"):
        if len(out) and not isinstance(out[col].iloc[0], str):
            out[col] = [_pg_array(values) for values in out[col]]
    out["record_number"] = pd.array(out["record_number"], dtype="Int64")
    out["source_file"] = file_name
    out["batch_id"] = batch_id
    return out[_REJECTED_COLUMNS + ["source_file", "batch_id"]]


def _pg_array(values: Iterable[str]) -> str:
    """A PostgreSQL text[] literal."""
    quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _to_csv(frame: pd.DataFrame | pa.Table) -> bytes:
    if len(frame) == 0:
        return b""
    buffer = io.BytesIO()
    table_ = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    pacsv.write_csv(table_, buffer, _CSV_OPTIONS)
    return buffer.getvalue()


def _copy(conn: psycopg.Connection, statement: str, columns: list[str], payload: bytes) -> None:
    query = sql.SQL(statement).format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.write(payload)


def _table_sql(conn: psycopg.Connection, schema: str, name: str) -> str:
    # COPY's statement is composed as text around {}: quote the identifiers here.
    return table(schema, name).as_string(conn).replace("{", "{{").replace("}", "}}")


def _move_rejected(task: FileTask, rejected_dir: Path, message: str, batch_id: int) -> None:
    """Move a file rejected whole out of the landing directory, with its reason beside it."""
    source = Path(task.path)
    if not source.exists():
        return  # moved by an earlier attempt
    rejected_dir.mkdir(parents=True, exist_ok=True)
    # Only the base name is used, so a crafted name cannot leave the rejected area.
    target = rejected_dir / task.file_name
    try:
        shutil.move(str(source), target)
    except OSError as exc:  # the ledger already has the reason; the file stays where it is
        log.warning("could not move rejected file %s to %s: %s", task.file_name, rejected_dir, exc)
        return
    (rejected_dir / _reason_file_name(task.file_name)).write_text(
        json.dumps(
            {"file_name": task.file_name, "reason": message, "batch_id": batch_id,
             "rejected_at": dt.datetime.now(dt.timezone.utc).isoformat()},
            indent=2,
        )
    )


def _reason_file_name(file_name: str) -> str:
    """``NAME.reason.json``, or a shortened name with a digest when that is too long for the file system."""
    full = file_name + ".reason.json"
    if len(os.fsencode(full)) <= 255:
        return full
    digest = hashlib.sha1(os.fsencode(file_name)).hexdigest()[:16]
    head = os.fsencode(file_name)[:200].decode("utf-8", errors="ignore")
    return f"{head}-{digest}.reason.json"  # the JSON inside names the file in full


def _ms_since(tick: float) -> float:
    return (time.perf_counter() - tick) * 1000.0
