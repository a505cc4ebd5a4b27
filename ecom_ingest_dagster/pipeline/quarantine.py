"""Rejected rows as rows of the feed's quarantine table (``rejected_events`` for user_events):
every reason, the raw line, the source file.

Knows nothing of files, Spark or Dagster.
"""

from __future__ import annotations

import io
from typing import IO, Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline.database import table

_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def rejected_columns(feed: FeedContract) -> list[str]:
    """The quarantine table's columns a load writes, in the order of ``with_source``'s frame."""
    return [*feed.carried_columns, "raw_line", "record_number", "reasons", "details", "source_file", "batch_id"]


def rejected_frame(rejected: pd.DataFrame, malformed: list[tuple[int, str]], feed: FeedContract | None = None) -> pd.DataFrame:
    feed = feed or c.FEED
    columns = list(feed.carried_columns)
    frame = rejected.reindex(columns=columns).astype(object)
    frame = frame.where(frame.notna(), None)
    frame["raw_line"] = None
    frame["record_number"] = rejected.index.to_numpy()
    frame["reasons"] = rejected["reasons"].to_numpy() if len(rejected) else []
    frame["details"] = rejected["details"].to_numpy() if len(rejected) else []
    if malformed:
        bad = pd.DataFrame(
            {
                **{col: [None] * len(malformed) for col in columns},
                "raw_line": [text for _, text in malformed],
                "record_number": [number if number >= 0 else None for number, _ in malformed],
                "reasons": [[feed.malformed_reason]] * len(malformed),
                "details": [["record: field count differs from the header's"]] * len(malformed),
            }
        )
        frame = pd.concat([frame, bad], ignore_index=True) if len(frame) else bad
    return frame.reset_index(drop=True)


def with_source(frame: pd.DataFrame, file_name: str | Sequence[str], batch_id: int,
                feed: FeedContract | None = None) -> pd.DataFrame:
    out = frame.copy()
    for col in ("reasons", "details"):
        if len(out) and not isinstance(out[col].iloc[0], str):
            out[col] = [pg_array(values) for values in out[col]]
    out["record_number"] = pd.array(out["record_number"], dtype="Int64")
    out["source_file"] = file_name
    out["batch_id"] = batch_id
    return out[rejected_columns(feed or c.FEED)]


def pg_array(values: Iterable[str]) -> str:
    """A PostgreSQL text[] literal."""
    quoted = ('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def to_csv(frame: pd.DataFrame | pa.Table) -> bytes:
    if len(frame) == 0:
        return b""
    buffer = io.BytesIO()
    table_ = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    pacsv.write_csv(table_, buffer, _CSV_OPTIONS)
    return buffer.getvalue()


def copy_rejected(conn, schema: str, payload: bytes | IO[bytes], feed: FeedContract | None = None) -> None:
    """Rejected rows (``to_csv`` of a ``with_source`` frame, in memory or spooled) into the feed's quarantine table."""
    feed = feed or c.FEED
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        table(schema, feed.rejected_table), sql.SQL(", ").join(map(sql.Identifier, rejected_columns(feed))),
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        if isinstance(payload, bytes):
            copy.write(payload)
            return
        while block := payload.read(1024 * 1024):
            copy.write(block)
