"""Valid rows as PostgreSQL binary COPY data: the loader's fast path.

Each Arrow type is the column's binary form exactly (binary COPY has no coercion), the
rows go in key order, and a thread feeds the COPY while the next block is validated.
Knows nothing of files, Spark or Dagster.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pandas as pd
import pgpq
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import RESCUED, FeedContract, types
from ecom_ingest_dagster.pipeline.database import table


# Valid rows go as binary COPY: PostgreSQL takes each value in its own binary form and
# parses no text (uuid, numeric and timestamptz input were most of a text COPY's cost).
# Binary COPY has no coercion: each Arrow type must be the column's binary form exactly
# (``feeds.types.arrow_type``).
# jsonb's binary form is a version byte (1) and the JSON text; pgpq sends Arrow binary as it is.
_JSONB = pa.binary()


def _rescued(feed: FeedContract) -> list[tuple[str, pa.DataType]]:
    return [(RESCUED, _JSONB)] if feed.rescues else []


def direct_schema(feed: FeedContract) -> pa.Schema:
    """The Arrow form of a feed's rows COPY'd straight into its table."""
    return pa.schema([(col.name, types.arrow_type(col.type)) for col in feed.columns] + _rescued(feed)
                     + [("source_file", pa.string()), ("batch_id", pa.int64())])


def stage_schema(feed: FeedContract) -> pa.Schema:
    """The Arrow form of a feed's rows COPY'd into a stage (the file and batch are added by the INSERT)."""
    return pa.schema([(col.name, types.arrow_type(col.type)) for col in feed.columns] + _rescued(feed))


def stage_columns(feed: FeedContract) -> list[str]:
    """The columns a stage holds for a feed's validated rows (the rescued values included)."""
    return list(feed.carried_columns)


def stage_ddl(feed: FeedContract, *, extra: dict[str, str] | None = None) -> str:
    """Column definitions of a stage table for a feed's validated rows (``extra`` columns first)."""
    typed = {**(extra or {}), **feed.sql_types, **({RESCUED: "jsonb"} if feed.rescues else {})}
    return ", ".join(f"{name} {sql_type}" for name, sql_type in typed.items())


DIRECT_SCHEMA = direct_schema(c.FEED)
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
    matched ``types.UUID_FORM`` may come here: the digits themselves are not checked again.
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


def _jsonb(valid: pd.DataFrame) -> pa.Array:
    """The rescued JSON text as jsonb's binary form; null where a row has none (or no column)."""
    if RESCUED not in valid.columns:
        return pa.nulls(len(valid), _JSONB)
    text = _arrow_text(valid[RESCUED])
    return pc.binary_join_element_wise(pa.scalar(b"\x01", pa.binary()), text.cast(pa.binary()), pa.scalar(b"", pa.binary()))


def _binary_column(valid: pd.DataFrame, name: str, sql_type: str) -> pa.Array:
    if sql_type == "timestamptz":  # parsed by the validator: int64 microseconds
        return pa.array(valid[name].to_numpy(dtype=np.int64), type=types.arrow_type(sql_type))
    text = _arrow_text(valid[name])
    if sql_type == "uuid":
        return _uuid_bytes(text)
    return types.binary_values(text, sql_type)  # validated forms only: every cast succeeds


def binary_frame(valid: pd.DataFrame, schema: pa.Schema, file_name: str | pa.Array, batch_id: int,
                 feed: FeedContract | None = None) -> pa.Table:
    """Valid rows as an Arrow table of exactly ``schema``'s columns and types (``file_name``:
    the rows' one source file, or each row's when a group of files is loaded together)."""
    n = len(valid)
    constants = {
        "source_file": pa.repeat(pa.scalar(file_name, pa.string()), n) if isinstance(file_name, str) else file_name,
        "batch_id": pa.array(np.full(n, batch_id, dtype=np.int64)),
    }
    sql_types = (feed or c.FEED).sql_types
    columns = [constants[f.name] if f.name in constants else _jsonb(valid) if f.name == RESCUED
               else _binary_column(valid, f.name, sql_types[f.name]) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def in_key_order(frame: pa.Table, key: str) -> pa.Table:
    """The rows sorted by the ``key`` column; rows of one key keep their order (the first one wins a conflict).

    Most of a COPY's server time goes into the primary key's btree: one descent per row.
    Rows in key order descend to neighbouring leaves, which stay in the CPU's caches (and
    in shared buffers once the index outgrows them): the server time of a 1M-row COPY fell
    by about 30 % for some 0.25 s of sorting here. A uuid's 16 bytes sort as PostgreSQL
    compares them (memcmp).
    """
    if frame.num_rows < 2:
        return frame
    return frame.take(pc.sort_indices(frame, [(key, "ascending")]))  # a stable sort


class BinarySink:
    """One binary COPY per file: the header before the first rows, the trailer at the end."""

    arrow_schema: pa.Schema
    feed: FeedContract

    def _start(self) -> None:  # from statement(): one encoder per COPY
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder(self.arrow_schema)
        self._header: bytes | None = self._encoder.write_header()

    def encode(self, valid: pd.DataFrame, file_name: str | pa.Array, batch_id: int) -> bytes:
        return self.encode_table(in_key_order(binary_frame(valid, self.arrow_schema, file_name, batch_id, self.feed),
                                              self.feed.unique_key))

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


class DirectSink(BinarySink):
    """Valid rows COPY'd straight into the feed's table (no duplicates expected)."""

    def __init__(self, schema: str, feed: FeedContract | None = None):
        self.schema, self.feed = schema, feed or c.FEED
        self.arrow_schema = direct_schema(self.feed)
        self.columns = [*stage_columns(self.feed), "source_file", "batch_id"]

    def statement(self, conn) -> sql.Composed:
        self._start()
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            table(self.schema, self.feed.table), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )

    def finish(self, conn, file_name: str, batch_id: int, valid_rows: int) -> int:
        return valid_rows


class StagedSink(BinarySink):
    """Valid rows COPY'd into a temporary stage, then inserted with ``ON CONFLICT DO NOTHING``."""

    def __init__(self, schema: str, feed: FeedContract | None = None):
        self.schema, self.feed = schema, feed or c.FEED
        self.arrow_schema = stage_schema(self.feed)
        self.columns = stage_columns(self.feed)
        self._stage = sql.Identifier(f"ecom_ingest_stage_{self.feed.feed}")

    def statement(self, conn) -> sql.Composed:
        self._start()
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DROP").format(
            self._stage, sql.SQL(stage_ddl(self.feed))))
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            self._stage, sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )

    def finish(self, conn, file_name: str, batch_id: int, valid_rows: int) -> int:
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        return conn.execute(
            sql.SQL(
                "INSERT INTO {target} ({columns}, source_file, batch_id) "
                "SELECT {columns}, %s, %s FROM {stage} ON CONFLICT ({key}) DO NOTHING"
            ).format(target=table(self.schema, self.feed.table), columns=columns, stage=self._stage,
                     key=sql.Identifier(self.feed.unique_key)),
            (file_name, batch_id),
        ).rowcount


class CopyPump:
    """Feeds a COPY from a thread, with at most ``depth`` payloads waiting.

    psycopg's own QueuedLibpqWriter queues up to 1,024 buffers (~128 MB) when the server
    is slower than the producer; a short queue keeps the overlap and bounds the memory.
    """

    def __init__(self, copy, depth: int = 2):
        self._copy = copy
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ecom-ingest-copy", daemon=True)

    def __enter__(self) -> "CopyPump":
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


def text_frame(valid: pd.DataFrame, file_name: str, batch_id: int, feed: FeedContract | None = None) -> pa.Table:
    """Valid rows shaped like the feed's table as text, timestamps as canonical UTC text.

    The load sends binary (``binary_frame``); this text form is what the bench's
    ``psql \\copy`` of the same rows reads (``tools/bench/baselines.py`` ``shape_valid_rows``).
    """
    feed = feed or c.FEED
    columns = {}
    for col in feed.columns:
        if col.type == "timestamptz":
            # Formatting a zone-aware timestamp is 4x slower in Arrow than a naive one; the
            # values are UTC, so format them naive and say so with a "Z".
            naive = pc.cast(pa.array(valid[col.name].to_numpy(), type=pa.timestamp("us")), pa.string())
            columns[col.name] = pc.binary_join_element_wise(naive, "Z", "")
        else:
            columns[col.name] = pa.array(valid[col.name].array)
    n = len(valid)
    columns["source_file"] = pa.array([file_name] * n, pa.string()) if n else pa.array([], pa.string())
    columns["batch_id"] = pa.array(np.full(n, batch_id, dtype=np.int64))
    return pa.table(columns)
