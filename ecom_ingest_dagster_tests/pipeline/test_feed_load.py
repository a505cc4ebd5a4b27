"""Another feed's drops through both load paths (one file alone, a group together) against a
real PostgreSQL: its own tables, every reason, and the values of columns its contract does
not name kept per row (``extra_columns: rescue``) or the file refused (``reject``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import psycopg
import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import FeedContract, shipped_feed
from ecom_ingest_dagster.pipeline import database
from ecom_ingest_dagster.pipeline.load import FileTask, LoadOptions, ingest_file
from ecom_ingest_dagster.pipeline.load_batch import load_group
from ecom_ingest_dagster.tools.feed_generator import generate_rows
from ecom_ingest_dagster.tools.generator import write_drop

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def orders_db(database_url, db_schema):
    with psycopg.connect(database_url, autocommit=True) as conn:
        database.migrate(conn, db_schema, shipped_feed("orders"))
        conn.execute(f'SET search_path TO "{db_schema}"')
        yield conn


def _drop(tmp_path: Path, name: str, seed: int, *, extra: bool, feed: FeedContract | None = None,
          rows: int = 30) -> tuple[Path, object]:
    feed = feed or shipped_feed("orders")
    frame = generate_rows(feed, rows, rng=np.random.default_rng(seed), invalid_rate=0.2, now=NOW)
    columns = list(feed.column_names)
    if extra:
        frame["coupon_code"] = [f"C{i}" if i % 3 else "" for i in range(len(frame))]
        frame["channel"] = "web"
        columns += ["coupon_code", "channel"]
    return write_drop(frame, tmp_path / "landing", name, columns), frame


def _options(db_schema, tmp_path, feed=None, **changes) -> LoadOptions:
    return LoadOptions(schema=db_schema, stream_id="feeds", batch_id=1, rejected_dir=tmp_path / "rejected",
                       now=NOW, feed=feed or shipped_feed("orders"), **changes)


def _rescued(conn, table: str, key: str, frame) -> None:
    """Every row of first.csv, loaded or rejected, kept the drop's unnamed columns' values; a blank one is left out."""
    # rows whose key was the broken value have no key to find them by
    got = dict(conn.execute(f"SELECT {key}::text, rescued FROM {table} WHERE {key}::text ~ '^[0-9a-f]{{8}}-'"
                            " AND source_file = 'first.csv'").fetchall())
    assert got
    for index, values in frame.set_index(key).loc[list(got)].iterrows():
        assert got[index] == ({"coupon_code": values["coupon_code"], "channel": "web"} if values["coupon_code"]
                              else {"channel": "web"})


@pytest.mark.parametrize("path_taken", ["alone", "together", "staged"])
def test_a_feeds_rows_go_to_its_tables_with_every_reason_and_their_rescued_values(orders_db, db_schema, tmp_path, path_taken):
    options = _options(db_schema, tmp_path)
    first, frame = _drop(tmp_path, "first.csv", 1, extra=True)
    if path_taken == "alone":
        outcomes = [ingest_file(orders_db, FileTask(str(first), first.stat().st_size), options)]
    else:
        second, frame2 = _drop(tmp_path, "second.csv.gz", 2, extra=False)
        if path_taken == "staged":  # a duplicate key sends the file through the stage
            frame2 = frame2.copy()
            frame2.loc[0, "order_id"] = frame.loc[frame["expected_reason"] == "", "order_id"].iloc[0]
            second = write_drop(frame2, tmp_path / "landing", "second.csv", list(shipped_feed("orders").column_names))
        tasks = [FileTask(str(p), p.stat().st_size) for p in (first, second)]
        outcomes = load_group(orders_db, tasks, options) if path_taken == "together" else [
            ingest_file(orders_db, t, options) for t in tasks]
    meant_bad = int((frame["expected_reason"] != "").sum())
    assert outcomes[0].rows_rejected == meant_bad and outcomes[0].extra_columns == ["coupon_code", "channel"]
    assert orders_db.execute("SELECT count(*) FROM orders WHERE source_file = 'first.csv'").fetchone()[0] == 30 - meant_bad
    rejected = orders_db.execute("SELECT reasons FROM orders_rejected WHERE source_file = 'first.csv'").fetchall()
    assert sorted(r[0][0] in frame["expected_reason"].tolist() for r in rejected) == [True] * meant_bad
    _rescued(orders_db, "orders", "order_id", frame)
    _rescued(orders_db, "orders_rejected", "order_id", frame[frame["expected_reason"] != ""])
    if path_taken != "alone":  # the drop without unnamed columns: none rescued
        assert orders_db.execute("SELECT count(*) FROM orders WHERE source_file LIKE 'second%' AND rescued IS NOT NULL"
                                 ).fetchone()[0] == 0
    if path_taken == "staged":
        assert outcomes[1].rows_duplicate == 1


def test_a_feed_that_rejects_unnamed_columns_rejects_the_file_whole(orders_db, db_schema, tmp_path):
    strict = FeedContract.model_validate({**shipped_feed("orders").model_dump(), "extra_columns": "reject"})
    path, _ = _drop(tmp_path, "extra.csv", 3, extra=True, feed=strict)
    outcome = ingest_file(orders_db, FileTask(str(path), path.stat().st_size), _options(db_schema, tmp_path, strict))
    assert (outcome.status, outcome.reason, outcome.rows_rejected) == ("rejected", c.FILE_EXTRA_COLUMNS, 30)
    assert (tmp_path / "rejected" / "extra.csv").exists()
    assert orders_db.execute("SELECT count(*) FROM orders").fetchone()[0] == 0


def test_replayed_rows_of_a_feed_keep_their_rescued_values(orders_db, db_schema, tmp_path):
    from ecom_ingest_dagster.tools.replay import replay_rejected

    orders = shipped_feed("orders")
    path, frame = _drop(tmp_path, "first.csv", 4, extra=True, rows=400)
    ingest_file(orders_db, FileTask(str(path), path.stat().st_size), _options(db_schema, tmp_path))
    # The contract is loosened: an unknown currency is fine now; those rows replay into the table.
    columns = [c.model_dump() for c in orders.columns]
    next(c for c in columns if c["name"] == "currency")["rules"] = ()
    loose = FeedContract.model_validate({**orders.model_dump(), "version": 2, "columns": tuple(columns)})
    outcome = replay_rejected(orders_db, db_schema, reason="invalid_currency", now=NOW, feed=loose)
    meant = frame[frame["expected_reason"] == "invalid_currency"]
    assert outcome.examined == len(meant) > 0 and outcome.loaded == len(meant)
    _rescued(orders_db, "orders", "order_id", frame)  # the replayed rows among them, rescued values kept
    assert orders_db.execute("SELECT count(*) FROM orders WHERE currency = 'none_of_these' AND rescued ? 'channel'"
                             ).fetchone()[0] == len(meant)
