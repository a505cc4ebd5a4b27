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
from ecom_ingest_dagster.pipeline.database import table


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
DIRECT_SCHEMA = pa.schema(
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


def binary_frame(valid: pd.DataFrame, schema: pa.Schema, file_name: str | pa.Array, batch_id: int) -> pa.Table:
    """Valid rows as an Arrow table of exactly ``schema``'s columns and types (``file_name``:
    the rows' one source file, or each row's when a group of files is loaded together)."""
    n = len(valid)
    constants = {
        "source_file": pa.repeat(pa.scalar(file_name, pa.string()), n) if isinstance(file_name, str) else file_name,
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


class BinarySink:
    """One binary COPY per file: the header before the first rows, the trailer at the end."""

    arrow_schema: pa.Schema

    def _start(self) -> None:  # from statement(): one encoder per COPY
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder(self.arrow_schema)
        self._header: bytes | None = self._encoder.write_header()

    def encode(self, valid: pd.DataFrame, file_name: str | pa.Array, batch_id: int) -> bytes:
        return self.encode_table(in_key_order(binary_frame(valid, self.arrow_schema, file_name, batch_id)))

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
    """Valid rows COPY'd straight into ``user_events`` (no duplicates expected)."""

    columns = list(c.COLUMNS) + ["source_file", "batch_id"]
    arrow_schema = DIRECT_SCHEMA

    def __init__(self, schema: str):
        self.schema = schema

    def statement(self, conn) -> sql.Composed:
        self._start()
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            table(self.schema, "user_events"), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )

    def finish(self, conn, file_name: str, batch_id: int, valid_rows: int) -> int:
        return valid_rows


class StagedSink(BinarySink):
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


def text_frame(valid: pd.DataFrame, file_name: str, batch_id: int) -> pa.Table:
    """Valid rows shaped like ``user_events`` as text, the timestamp as canonical UTC text.

    The load sends binary (``binary_frame``); this text form is what the bench's
    ``psql \\copy`` of the same rows reads (``tools/bench/baselines.py`` ``shape_valid_rows``).
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
