"""Feeds in the code location: each contract file becomes its own asset, job and sensor,
keys prefixed by the feed, run by Dagster's own machinery against real Spark and PostgreSQL."""

from __future__ import annotations

import dagster as dg
import numpy as np
import psycopg

from ecom_ingest_dagster.defs.feeds.definitions import feed_definitions, feeds
from ecom_ingest_dagster.defs.resources import build_resources
from ecom_ingest_dagster.feeds import new_contract, shipped_feed
from ecom_ingest_dagster.tools.feed_generator import generate_rows
from ecom_ingest_dagster.tools.generator import write_drop

from ecom_ingest_dagster_tests.defs.test_ingest_job import materializations


def test_every_feed_is_an_asset_job_and_sensor_of_its_own_and_a_broken_contract_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOM_INGEST_HOME", str(tmp_path))
    new_contract("refunds", tmp_path / "feeds")
    (tmp_path / "feeds" / "broken.yaml").write_text("feed: broken\nversion: one\n")
    defs = feeds()
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}
    assert keys == {"orders/orders", "orders/orders_rejected", "refunds/refunds", "refunds/refunds_rejected"}
    sensors = {s.name: s.default_status for s in defs.sensors}
    # the user's own feed is on; the shipped example waits to be switched on
    assert sensors == {"orders_landing_sensor": dg.DefaultSensorStatus.STOPPED,
                       "refunds_landing_sensor": dg.DefaultSensorStatus.RUNNING}
    assert {j.name for j in defs.jobs} == {"orders_ingest_job", "refunds_ingest_job"}


def test_a_feeds_sensor_sees_its_own_landing_directory_and_its_job_loads_its_tables(settings, spark, instance):
    orders = shipped_feed("orders")
    # settle 0: the drop is written just before the tick, which would otherwise leave it for the next
    resources = build_resources(settings.with_overrides(settle_seconds=0), stop_spark_after_run=False)
    feed_settings = resources["pipeline"].settings(feed="orders")
    assert feed_settings.landing_dir == settings.landing_dir.parent / "orders" / "landing"
    assert feed_settings.db_schema == f"{settings.db_schema}_orders"
    frame = generate_rows(orders, 60, rng=np.random.default_rng(9), invalid_rate=0.1)
    write_drop(frame, feed_settings.landing_dir, "orders_1.csv", orders.column_names)
    (settings.landing_dir / "events.csv").write_text("a user_events drop: not the orders sensor's\n")
    try:
        defs = feed_definitions("orders", own=False)
        sensor = next(iter(defs.sensors))
        with dg.build_sensor_context(instance=instance, resources={"pipeline": resources["pipeline"]}) as context:
            tick = sensor.evaluate_tick(context)
        assert len(tick.run_requests) == 1 and tick.run_requests[0].tags["ecom_ingest/new_files"] == "1"
        assert "orders_ingest" in tick.run_requests[0].run_config["ops"]

        job = dg.Definitions.merge(defs, dg.Definitions(resources=resources)).resolve_job_def("orders_ingest_job")
        result = job.execute_in_process(instance=instance, run_config={"ops": {"orders_ingest": {"config": {"idle_seconds": 0}}}})
        assert result.success
        mats = materializations(result)
        bad = int((frame["expected_reason"] != "").sum())
        assert mats["orders/orders"]["rows_loaded"] == 60 - bad and mats["orders/orders_rejected"]["rows_rejected"] == bad
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{feed_settings.db_schema}".orders').fetchone()[0] == 60 - bad
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{feed_settings.db_schema}" CASCADE')
