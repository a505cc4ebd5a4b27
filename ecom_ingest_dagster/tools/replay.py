"""Replaying quarantined rows after the contract or the producer was fixed.

Rejected rows keep the values as sent, so they can be validated again. Rows that now
pass are loaded into the feed's table (under their original file and batch, duplicates
skipped and counted), marked ``replayed_at`` / ``replay_outcome`` in its quarantine table,
and their file's ledger counts move from rejected to loaded or duplicate, all in one
transaction: rows in = loaded + duplicate + rejected still holds for every file. Lines of
malformed rows and of files rejected whole have no columns to validate and are left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pandas as pd
from psycopg import sql
from psycopg.rows import dict_row

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import RESCUED, FeedContract
from ecom_ingest_dagster.pipeline.database import table
from ecom_ingest_dagster.pipeline.encode import stage_columns, stage_ddl
from ecom_ingest_dagster.pipeline.validate import validate


@dataclasses.dataclass
class ReplayOutcome:
    examined: int = 0
    loaded: int = 0
    duplicate: int = 0
    still_rejected: int = 0
    per_file: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


def replay_rejected(conn, schema: str, *, file_name: str | None = None, reason: str | None = None,
                    now: dt.datetime | None = None, feed: FeedContract | None = None) -> ReplayOutcome:
    """Validate the quarantined rows again (those of ``file_name`` / ``reason``), load those that
    pass, mark every replayed row and correct its file's ledger counts, in one transaction."""
    feed = feed or c.FEED
    if reason is not None and reason not in feed.reasons:
        raise ValueError(f"unknown reason {reason!r}; one of: {', '.join(feed.reasons)}")
    outcome = ReplayOutcome()
    with conn.transaction():
        frame = _quarantined(conn, schema, file_name, reason, feed)
        outcome.examined = len(frame)
        if frame.empty:
            return outcome
        result = validate(frame[stage_columns(feed)], now=now, feed=feed)
        outcome.still_rejected = len(result.rejected)
        if len(result.valid) == 0:
            return outcome
        _stage(conn, result.valid.join(frame[["source_file", "batch_id"]]), feed)
        marked = _mark_replayed(conn, schema, _insert_staged(conn, schema, feed), feed)
        for source_file, result_kind in marked:
            counts = outcome.per_file.setdefault(source_file, {"loaded": 0, "duplicate": 0})
            counts[result_kind] += 1
        _correct_ledger(conn, schema, outcome.per_file)
        outcome.loaded = sum(v["loaded"] for v in outcome.per_file.values())
        outcome.duplicate = sum(v["duplicate"] for v in outcome.per_file.values())
    return outcome


def _quarantined(conn, schema: str, file_name: str | None, reason: str | None, feed: FeedContract) -> pd.DataFrame:
    """The rows to replay, locked (``FOR UPDATE``): rows with their columns, not raw lines."""
    columns = sql.SQL(", ").join(map(sql.Identifier, stage_columns(feed)))
    rows = conn.cursor(row_factory=dict_row).execute(
        sql.SQL(
            "SELECT id, {columns}, source_file, batch_id FROM {rejected}"
            " WHERE replayed_at IS NULL AND raw_line IS NULL"
            " AND (%(file)s::text IS NULL OR source_file = %(file)s)"
            " AND (%(reason)s::text IS NULL OR %(reason)s = ANY(reasons))"
            " ORDER BY id FOR UPDATE"
        ).format(columns=columns, rejected=table(schema, feed.rejected_table)),
        {"file": file_name, "reason": reason},
    ).fetchall()
    return pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame()


def _stage(conn, valid: pd.DataFrame, feed: FeedContract) -> None:
    """The rows that pass now, typed, into a temporary stage (dropped at commit)."""
    conn.execute(f"CREATE TEMP TABLE ecom_ingest_replay ({stage_ddl(feed, extra={'id': 'bigint'})},"
                 " source_file text, batch_id bigint) ON COMMIT DROP")
    rows = valid.reset_index()
    if RESCUED in rows.columns:  # jsonb comes back as Python values: sent again as JSON text
        rows[RESCUED] = [None if v is None or v is pd.NA else json.dumps(v, ensure_ascii=False) for v in rows[RESCUED]]
    for column in feed.columns:
        if column.type == "timestamptz":  # the validator's microseconds, as text COPY reads a timestamptz
            rows[column.name] = pd.to_datetime(rows[column.name], unit="us", utc=True).map(lambda t: t.isoformat())
    staged = ["id", *stage_columns(feed), "source_file", "batch_id"]
    with conn.cursor().copy(
        sql.SQL("COPY ecom_ingest_replay ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, staged)))
    ) as copy:
        for record in rows[staged].itertuples(index=False):
            copy.write_row([None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in record])


def _insert_staged(conn, schema: str, feed: FeedContract) -> set[str]:
    """The staged rows into the feed's table (a key already there is skipped); the keys loaded."""
    columns = sql.SQL(", ").join(map(sql.Identifier, stage_columns(feed)))
    key = sql.Identifier(feed.unique_key)
    return {
        r[0] for r in conn.execute(
            sql.SQL(
                "INSERT INTO {target} ({columns}, source_file, batch_id) SELECT {columns}, source_file, batch_id"
                " FROM ecom_ingest_replay ORDER BY id ON CONFLICT ({key}) DO NOTHING RETURNING {key}::text"
            ).format(target=table(schema, feed.table), columns=columns, key=key)
        )
    }


def _mark_replayed(conn, schema: str, loaded_keys: set[str], feed: FeedContract) -> list[tuple[str, str]]:
    """Each replayed row marked 'loaded' (the first of each loaded key) or 'duplicate'."""
    return conn.execute(
        sql.SQL(
            "WITH ranked AS (SELECT id, source_file, {key}::text AS key,"
            " row_number() OVER (PARTITION BY {key} ORDER BY id) AS nth FROM ecom_ingest_replay)"
            " UPDATE {rejected} r SET replayed_at = now(),"
            " replay_outcome = CASE WHEN ranked.nth = 1 AND ranked.key = ANY(%s) THEN 'loaded' ELSE 'duplicate' END"
            " FROM ranked WHERE r.id = ranked.id RETURNING r.source_file, r.replay_outcome"
        ).format(rejected=table(schema, feed.rejected_table), key=sql.Identifier(feed.unique_key)),
        (list(loaded_keys),),
    ).fetchall()


def _correct_ledger(conn, schema: str, per_file: dict[str, dict[str, int]]) -> None:
    """Each file's ledger counts follow its replayed rows: fewer rejected, more loaded or duplicate."""
    for source_file, counts in per_file.items():
        conn.execute(
            sql.SQL(
                "UPDATE {} SET rows_loaded = rows_loaded + %s, rows_duplicate = rows_duplicate + %s,"
                " rows_rejected = rows_rejected - %s WHERE file_name = %s"
            ).format(table(schema, "ingest_files")),
            (counts["loaded"], counts["duplicate"], counts["loaded"] + counts["duplicate"], source_file),
        )
