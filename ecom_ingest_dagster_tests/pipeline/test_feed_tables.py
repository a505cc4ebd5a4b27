"""A feed's tables made from its contract, and kept in step with it: real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from ecom_ingest_dagster.feeds import FeedContract, shipped_feed
from ecom_ingest_dagster.pipeline import database
from ecom_ingest_dagster.pipeline.feed_tables import ContractBreaksTable, existing_columns


def _with(feed: FeedContract, **changes) -> FeedContract:
    return FeedContract.model_validate({**feed.model_dump(), **changes})


def _columns(feed: FeedContract, change) -> tuple:
    columns = [c.model_dump() for c in feed.columns]
    change(columns)
    return tuple(columns)


@pytest.fixture
def conn(database_url, db_schema):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def test_another_feeds_schema_has_the_platform_tables_and_its_own_from_the_contract(conn, db_schema):
    orders = shipped_feed("orders")
    database.migrate(conn, db_schema, orders)
    tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (db_schema,))}
    assert {"orders", "orders_rejected", "ingest_files", "ingest_batches", "resource_samples"} <= tables
    assert not {"user_events", "rejected_events"} & tables
    have = existing_columns(conn, db_schema, "orders")
    assert have["order_id"].type == "uuid" and have["order_id"].required
    assert have["subtotal"].type == "numeric(12,2)" and have["ordered_at"].type == "timestamp with time zone"
    assert have["gift"].type == "boolean" and not have["gift"].required and have["loyalty_points"].type == "bigint"
    assert have["rescued"].type == "jsonb"
    assert all(c.type == "text" for name, c in existing_columns(conn, db_schema, "orders_rejected").items()
               if name in orders.column_names)
    assert database.migrate(conn, db_schema, orders) == len(database.MIGRATIONS)  # again: nothing to do


def test_a_new_optional_column_is_added_and_a_column_made_optional_loses_not_null(conn, db_schema):
    orders = shipped_feed("orders")
    database.migrate(conn, db_schema, orders)

    def change(columns):
        columns.append({"name": "coupon", "type": "text", "required": False})
        next(c for c in columns if c["name"] == "status")["required"] = False

    database.migrate(conn, db_schema, _with(orders, version=2, columns=_columns(orders, change)))
    have = existing_columns(conn, db_schema, "orders")
    assert have["coupon"].type == "text" and not have["status"].required
    assert existing_columns(conn, db_schema, "orders_rejected")["coupon"].type == "text"


def test_a_change_under_the_version_files_were_loaded_with_is_refused(conn, db_schema):
    # Each file records the contract version it was held to: the version must move with the columns.
    orders = shipped_feed("orders")
    database.migrate(conn, db_schema, orders)
    conn.execute(f'INSERT INTO "{db_schema}".ingest_files (file_name, status, rows_total, rows_loaded, rows_duplicate,'
                 " rows_rejected, stream_id, batch_id, started_at, contract_version)"
                 " VALUES ('old.csv', 'ingested', 0, 0, 0, 0, 's', 0, now(), 1)")
    coupon = _columns(orders, lambda columns: columns.append({"name": "coupon", "type": "text"}))
    with pytest.raises(ContractBreaksTable) as refused:
        database.migrate(conn, db_schema, _with(orders, columns=coupon))
    assert ("its columns changed (coupon added) but its version is 1, and files were already loaded under"
            " version 1: bump version to 2") in str(refused.value)
    assert "coupon" not in existing_columns(conn, db_schema, "orders")
    database.migrate(conn, db_schema, _with(orders, version=2, columns=coupon))  # bumped: applied
    assert "coupon" in existing_columns(conn, db_schema, "orders")


def _drop_column(name):
    return lambda columns: columns.remove(next(c for c in columns if c["name"] == name))


def _retype(name, sql_type):
    return lambda columns: next(c for c in columns if c["name"] == name).update(type=sql_type)


def _require(name):
    return lambda columns: next(c for c in columns if c["name"] == name).update(required=True)


def _new_required(columns):
    columns.append({"name": "channel", "type": "text", "required": True})


@pytest.mark.parametrize(("change", "said"), [
    (_retype("subtotal", "numeric(14,4)"), "column subtotal is numeric(12,2) in"),
    (_drop_column("country"), "column(s) country of"),
    (_new_required, "column channel is new and required"),
    (_require("gift"), "column gift became required"),
])
def test_a_change_that_breaks_what_is_loaded_is_refused_with_what_to_do(conn, db_schema, change, said):
    orders = shipped_feed("orders")
    database.migrate(conn, db_schema, orders)
    before = existing_columns(conn, db_schema, "orders")
    with pytest.raises(ContractBreaksTable) as refused:
        database.migrate(conn, db_schema, _with(orders, version=2, columns=_columns(orders, change)))
    message = str(refused.value)
    assert said in message and f"cannot be applied to {db_schema}.orders" in message and "version 2" in message
    assert existing_columns(conn, db_schema, "orders") == before  # refused whole: nothing half applied
