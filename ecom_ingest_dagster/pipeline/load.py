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
import io
import logging
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pgpq
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.database import TRANSIENT_ERRORS, ReconnectingConnection, table, transient_retry
from ecom_ingest_dagster.pipeline.landing import move_rejected, retire_ingested
from ecom_ingest_dagster.pipeline.ledger import FileOutcome, FileTask, LoadedMeanwhile, claim, file_row, record_file
from ecom_ingest_dagster.pipeline.measure import StageTimes
from ecom_ingest_dagster.pipeline.read import EMPTY, CsvDrop, FileRejected, count_lines
from ecom_ingest_dagster.pipeline.validate import validate

log = logging.getLogger(__name__)

_REJECTED_COLUMNS = list(c.COLUMNS) + ["raw_line", "record_number", "reasons", "details"]
_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")

__all__ = ["FileOutcome", "FileTask", "ingest_file", "ingest_files", "release_memory"]


def ingest_files(
    tasks: Iterable[FileTask],
    *,
    database_url: str,
    schema: str,
    stream_id: str,
    batch_id: int,
    rejected_dir: Path,
    archive_dir: Path | None = None,
    after_commit: str = "keep",
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
                        rejected_dir=rejected_dir, archive_dir=archive_dir, after_commit=after_commit,
                        block_bytes=block_bytes, now=now,
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
    archive_dir: Path | None = None,
    after_commit: str = "keep",
    block_bytes: int = 16 * 1024 * 1024,
    now: dt.datetime | None = None,
) -> FileOutcome:
    """Load one file (or find it already loaded); the ledger row is written with the data.

    Once the outcome is committed the drop leaves the landing directory: to the rejected
    area when rejected whole, else as ``after_commit`` says (``archive`` under
    ``archive_dir``, ``keep``, ``delete``).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    outcome = file_row(conn, schema, task.file_name)
    conn.rollback()
    if outcome is None:
        try:
            outcome = _load_with_retries(conn, task, schema, stream_id, batch_id, rejected_dir, block_bytes, now)
        except LoadedMeanwhile as loaded:
            outcome = loaded.outcome
    if outcome.status == "rejected":
        move_rejected(task, rejected_dir, outcome.reason or "", batch_id)  # a no-op when moved already
    elif not outcome.already_done:
        # A drop found already in the ledger is left to the landing sweep, which first
        # makes sure the file here is the one that was ingested (not a replacement).
        retire_ingested(Path(task.path), policy=after_commit, archive_dir=archive_dir, committed_at=outcome.committed_at)
    return outcome


def _load_with_retries(conn, task, schema, stream_id, batch_id, rejected_dir, block_bytes, now) -> FileOutcome:
    # Two files of one batch sharing event ids can deadlock on the unique index; the
    # whole file transaction is safe to repeat.
    for attempt in transient_retry(f"loading {task.file_name}"):
        with attempt:
            try:
                return _load(conn, task, schema, stream_id, batch_id, block_bytes, now)
            except FileRejected as rejection:
                conn.rollback()
                if rejection.reason == EMPTY:
                    return _record_empty(conn, task, schema, stream_id, batch_id)
                outcome = _record_rejected_file(conn, task, schema, stream_id, batch_id, rejection)
                move_rejected(task, rejected_dir, rejection.message, batch_id)
                return outcome
            except TRANSIENT_ERRORS:
                conn.rollback()
                raise
    raise AssertionError("unreachable")


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
        claim(conn, schema, task.file_name)
        try:
            with conn.transaction():  # a savepoint: a duplicate undoes only the fast path
                outcome = _copy_file(conn, task, schema, batch_id, block_bytes, now, _DirectSink(schema))
        except psycopg.errors.UniqueViolation:
            outcome = _copy_file(conn, task, schema, batch_id, block_bytes, now, _StagedSink(schema))
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
        record_file(conn, schema, outcome, task, stream_id, batch_id, started_at)
    return outcome


@dataclasses.dataclass
class ValidatedBlock:
    """One block of a file after validation: what both COPY paths consume."""

    valid: pd.DataFrame  # ValidationResult.valid: cleaned contract columns and event_ts_us
    rejected: pd.DataFrame  # rejected_events columns (bad rows and malformed records)


def validated_blocks(drop: CsvDrop, now: dt.datetime, times: StageTimes) -> Iterator[ValidatedBlock]:
    """Read, validate and shape a drop block by block, timing each stage."""
    chunks = iter(drop)
    while True:
        with times.stage("read"):
            chunk = next(chunks, None)
        if chunk is None:
            return
        with times.stage("validate"):
            result = validate(chunk.rows, now=now)
        with times.stage("frame"):
            rejected = _rejected_frame(result.rejected, chunk.malformed)
        yield ValidatedBlock(result.valid, rejected)


# Valid rows go as binary COPY: PostgreSQL takes each value in its own binary form and
# parses no text (uuid, numeric and timestamptz input were most of a text COPY's cost).
# Binary COPY has no coercion: each Arrow type must be the column's binary form exactly.
# pgpq has no uuid type; a uuid's binary form is its 16 bytes, which pgpq sends as a
# 16-byte field (as for bytea) and the uuid column reads as they are.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "uuid": pa.binary(16),
    "text": pa.string(),
    "numeric(12,2)": pa.decimal128(12, 2),
    "integer": pa.int32(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "bigint": pa.int64(),
}
_DIRECT_SCHEMA = pa.schema(
    [(col, _ARROW_TYPES[c.SQL_TYPES[col]]) for col in c.COLUMNS]
    + [("source_file", pa.string()), ("batch_id", pa.int64())]
)
_STAGE_SCHEMA = pa.schema(
    [(col, _ARROW_TYPES[c.SQL_TYPES[col]]) for col in c.STAGE_COLUMNS[:-1]] + [("event_ts_us", pa.int64())]
)
_UUID_HEX = [(0, 8), (9, 13), (14, 18), (19, 23), (24, 36)]  # the hex digits between the dashes
# The byte a pair of hex digits stands for, looked up by the pair read as one little-endian uint16.
_HEX_DIGITS = np.frombuffer(b"0123456789abcdefABCDEF", np.uint8).astype(np.uint16)
_HEX_VALUES = np.array([*range(16), *range(10, 16)], dtype=np.uint8)
_HEX_PAIR = np.zeros(1 << 16, dtype=np.uint8)
_HEX_PAIR[_HEX_DIGITS[:, None] | (_HEX_DIGITS[None, :] << 8)] = (_HEX_VALUES[:, None] << 4) | _HEX_VALUES[None, :]
_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _arrow_text(values: pd.Series) -> pa.StringArray:
    array = pa.array(values.array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.string())


def _uuid_bytes(text: pa.StringArray) -> pa.Array:
    """Validated uuid text (``8-4-4-4-12`` hex, either case) as 16 bytes each; nulls stay null.

    Vectorised over the Arrow buffer: the rows are 36 bytes each, the hex digits are
    gathered (dashes dropped) and each pair looked up as one uint16. Only text that
    passed ``UUID_PATTERN`` may come here: the digits themselves are not checked again.
    """
    n = len(text)
    filled = pc.fill_null(text, _NIL_UUID) if text.null_count else text
    offsets = np.frombuffer(filled.buffers()[1], np.int32, count=n + 1, offset=filled.offset * 4)
    if n and not (np.diff(offsets) == 36).all():
        raise ValueError("a uuid that is not 36 characters reached the binary COPY")
    chars = np.frombuffer(filled.buffers()[2], np.uint8, count=36 * n, offset=int(offsets[0])).reshape(n, 36)
    digits = np.concatenate([chars[:, start:end] for start, end in _UUID_HEX], axis=1)  # (n, 32), contiguous
    packed = _HEX_PAIR[digits.view("<u2")]  # (n, 16)
    validity = None
    if text.null_count:
        validity = pa.py_buffer(np.packbits(text.is_valid().to_numpy(zero_copy_only=False), bitorder="little"))
    return pa.Array.from_buffers(pa.binary(16), n, [validity, pa.py_buffer(packed)], null_count=text.null_count)


def _binary_column(valid: pd.DataFrame, name: str, type_: pa.DataType) -> pa.Array:
    if name in ("event_timestamp", "event_ts_us"):
        return pa.array(valid["event_ts_us"].to_numpy(dtype=np.int64), type=type_)
    text = _arrow_text(valid[name])
    if type_ == pa.binary(16):
        return _uuid_bytes(text)
    if pa.types.is_integer(type_):  # the contract allows a leading "+", Arrow's cast does not
        text = pc.utf8_ltrim(text, characters="+")
    return pc.cast(text, type_)  # validated forms only: every cast succeeds ("19.9", ".5" as decimals)


def _binary_frame(valid: pd.DataFrame, schema: pa.Schema, file_name: str, batch_id: int) -> pa.Table:
    """Valid rows as an Arrow table of exactly ``schema``'s columns and types."""
    n = len(valid)
    constants = {
        "source_file": pa.repeat(pa.scalar(file_name, pa.string()), n),
        "batch_id": pa.array(np.full(n, batch_id, dtype=np.int64)),
    }
    columns = [constants[f.name] if f.name in constants else _binary_column(valid, f.name, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def in_key_order(frame: pa.Table) -> pa.Table:
    """The rows sorted by ``event_id``; rows of one id keep their order (the first one wins a conflict).

    Most of a COPY's server time goes into the primary key's btree: one descent per row.
    Rows in key order descend to neighbouring leaves, which stay in the CPU's caches (and
    in shared buffers once the index outgrows them): the server time of a 1M-row COPY fell
    by about 30 % for some 0.25 s of sorting here. A uuid's 16 bytes sort as PostgreSQL
    compares them (memcmp).
    """
    if frame.num_rows < 2:
        return frame
    return frame.take(pc.sort_indices(frame, [("event_id", "ascending")]))  # a stable sort


class _BinarySink:
    """One binary COPY per file: the header before the first rows, the trailer at the end."""

    arrow_schema: pa.Schema

    def _start(self) -> None:  # from statement(): one encoder per COPY
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder(self.arrow_schema)
        self._header: bytes | None = self._encoder.write_header()

    def encode(self, valid: pd.DataFrame, file_name: str, batch_id: int) -> bytes:
        return self.encode_table(in_key_order(_binary_frame(valid, self.arrow_schema, file_name, batch_id)))

    def encode_table(self, frame: pa.Table) -> bytes:
        """An Arrow table of exactly ``arrow_schema`` as COPY data: public so the bench's
        binary-COPY ceiling sends its prepared tables through this very encoder."""
        parts = [self._encoder.write_batch(batch) for batch in frame.to_batches()]
        if self._header is not None:
            parts.insert(0, self._header)
            self._header = None
        return b"".join(parts)

    def close(self) -> bytes:
        """What ends the COPY: the trailer (after the header, if no block was encoded)."""
        header, self._header = self._header or b"", None
        return header + self._encoder.finish()


class _DirectSink(_BinarySink):
    """Valid rows COPY'd straight into ``user_events`` (no duplicates expected)."""

    columns = list(c.COLUMNS) + ["source_file", "batch_id"]
    arrow_schema = _DIRECT_SCHEMA

    def __init__(self, schema: str):
        self.schema = schema

    def statement(self, conn) -> sql.Composed:
        self._start()
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            table(self.schema, "user_events"), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )

    def finish(self, conn, file_name: str, batch_id: int, valid_rows: int) -> int:
        return valid_rows


class _StagedSink(_BinarySink):
    """Valid rows COPY'd into a temporary stage, then inserted with ``ON CONFLICT DO NOTHING``."""

    columns = c.STAGE_COLUMNS
    arrow_schema = _STAGE_SCHEMA

    def __init__(self, schema: str):
        self.schema = schema

    def statement(self, conn) -> sql.Composed:
        self._start()
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS ecom_ingest_stage ({c.stage_ddl()}) ON COMMIT DROP")
        return sql.SQL("COPY ecom_ingest_stage ({}) FROM STDIN (FORMAT binary)").format(
            sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )

    def finish(self, conn, file_name: str, batch_id: int, valid_rows: int) -> int:
        columns = sql.SQL(", ").join(map(sql.Identifier, c.STAGE_COLUMNS[:-1]))
        return conn.execute(
            sql.SQL(
                "INSERT INTO {target} ({columns}, event_timestamp, source_file, batch_id) "
                "SELECT {columns}, timestamptz 'epoch' + event_ts_us * interval '1 microsecond', %s, %s "
                "FROM ecom_ingest_stage ON CONFLICT (event_id) DO NOTHING"
            ).format(target=table(self.schema, "user_events"), columns=columns),
            (file_name, batch_id),
        ).rowcount


def _copy_file(conn, task: FileTask, schema: str, batch_id: int, block_bytes: int, now, sink) -> FileOutcome:
    times = StageTimes()
    drop = CsvDrop(Path(task.path), block_bytes=block_bytes)
    valid_rows = rejected_rows = 0
    reason_counts: dict[str, int] = {}
    statement = sink.statement(conn)
    # Rejected rows wait on disk past a few MB: one COPY at a time per connection, and a
    # file of nothing but bad rows must not grow memory with its size.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as rejected_spool:
        with conn.cursor() as cur, cur.copy(statement) as copy, _CopyPump(copy) as pump:
            # The pump sends from a thread: the next block is parsed and validated while
            # PostgreSQL takes in this one.
            for block in validated_blocks(drop, now, times):
                with times.stage("frame"):
                    payload = sink.encode(block.valid, task.file_name, batch_id)
                    if len(block.rejected):
                        rejected_spool.write(_to_csv(_with_source(block.rejected, task.file_name, batch_id)))
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
                statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                    table(schema, "rejected_events"),
                    sql.SQL(", ").join(map(sql.Identifier, _REJECTED_COLUMNS + ["source_file", "batch_id"])),
                )
                with conn.cursor() as cur, cur.copy(statement) as copy:
                    while block := rejected_spool.read(1024 * 1024):
                        copy.write(block)
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
    """Valid rows shaped like ``user_events`` as text, the timestamp as canonical UTC text.

    The load sends binary (``_binary_frame``); this text form is what the bench's
    ``psql \\copy`` of the same rows reads (``tools/bench.py`` ``shape_valid_rows``).
    """
    # Formatting a zone-aware timestamp is 4x slower in Arrow than a naive one; the
    # values are UTC, so format them naive and say so with a "Z".
    naive = pc.cast(pa.array(valid["event_ts_us"].to_numpy(), type=pa.timestamp("us")), pa.string())
    stamps = pc.binary_join_element_wise(naive, "Z", "")
    columns = {col: pa.array(valid[col].array) if col != "event_timestamp" else stamps for col in c.COLUMNS}
    n = len(valid)
    columns["source_file"] = pa.array([file_name] * n, pa.string()) if n else pa.array([], pa.string())
    columns["batch_id"] = pa.array(np.full(n, batch_id, dtype=np.int64))
    return pa.table(columns)


def _record_empty(conn, task, schema, stream_id, batch_id) -> FileOutcome:
    outcome = FileOutcome(task.file_name, "ingested", landed_at=task.landed_at)
    with conn.transaction():
        claim(conn, schema, task.file_name)
        record_file(conn, schema, outcome, task, stream_id, batch_id, dt.datetime.now(dt.timezone.utc))
    return outcome


def _record_rejected_file(conn, task, schema, stream_id, batch_id, rejection: FileRejected) -> FileOutcome:
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
    with conn.transaction():
        claim(conn, schema, task.file_name)
        if lines:
            with times.stage("write"):
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
        record_file(conn, schema, outcome, task, stream_id, batch_id, started_at)
    return outcome


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


def _ms_since(tick: float) -> float:
    return (time.perf_counter() - tick) * 1000.0
