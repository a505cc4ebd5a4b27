"""Feeds in the code location: each contract file becomes its own asset, job and sensor,
keys prefixed by the feed, run by Dagster's own machinery against real Spark and PostgreSQL."""

from __future__ import annotations

import dagster as dg
import numpy as np
import psycopg

from ecom_ingest_dagster.defs.feeds.definitions import feed_definitions, feeds
from ecom_ingest_dagster.defs.metrics.assets import data_quality
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
    metrics = ("ingestion_throughput", "ingestion_latency", "data_quality")
    assert keys == {f"{feed}/{name}" for feed in ("orders", "refunds")
                    for name in (feed, f"{feed}_rejected", *metrics, "performance_report")}
    checks = {(k.asset_key.to_user_string(), k.name) for a in defs.assets for k in a.check_keys}
    assert ("refunds/data_quality", "zero_data_loss") in checks and ("orders/ingestion_throughput", "min_throughput") in checks
    assert len(checks) == 2 * 5
    sensors = {s.name: s.default_status for s in defs.sensors}
    # the user's own feed is on; the shipped example waits to be switched on
    assert sensors == {"orders_landing_sensor": dg.DefaultSensorStatus.STOPPED,
                       "refunds_landing_sensor": dg.DefaultSensorStatus.RUNNING}
    assert {j.name for j in defs.jobs} == {f"{feed}_{kind}_job" for feed in ("orders", "refunds")
                                          for kind in ("ingest", "stream", "report")}
    schedules = {s.name: s.default_status for s in defs.schedules}
    assert schedules == {"orders_daily_performance_report": dg.DefaultScheduleStatus.STOPPED,
                         "refunds_daily_performance_report": dg.DefaultScheduleStatus.RUNNING}


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
        # The run says what it loaded of its feed (a tag per feed: one UI run may hold two feeds' steps).
        assert instance.get_run_by_id(result.run_id).tags["ecom_ingest/files_loaded_orders"] == "1"
        # The feed's own metric assets, judged on its own ledger, its own reasons counted.
        quality = mats["orders/data_quality"]
        assert quality["rows_in"] == 60 and quality["rows_rejected"] == bad
        expected = frame["expected_reason"][frame["expected_reason"] != ""].value_counts()
        assert {r: quality[f"reason/{r}"] for r in expected.index} == expected.to_dict()
        assert "reason/invalid_order_id" in quality and "reason/invalid_event_type" not in quality
        assert mats["orders/ingestion_throughput"]["total_records"] == 60
        checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
        assert checks[("orders/data_quality", "zero_data_loss")] is True
        assert {key for key, _ in checks} == {"orders/ingestion_throughput", "orders/ingestion_latency", "orders/data_quality"}
        # Its report, in its own words: its tables, its reasons, no user_events section.
        text = (feed_settings.reports_dir / "performance_report.md").read_text()
        assert mats["orders/performance_report"]["path"] == str(feed_settings.reports_dir / "performance_report.md")
        assert "Feed orders" in text and "`orders_rejected`" in text and "(`invalid_order_id`)" in text
        assert "event_type" not in text and "`user_events`" not in text

        # One run over two feeds' metric assets (the UI's Materialize on a selection): each
        # step judges its own feed's ledger, not the first step's.
        orders_quality = next(a for a in defs.assets if dg.AssetKey(["orders", "data_quality"]) in a.keys)
        both = dg.materialize([data_quality, orders_quality], resources={"pipeline": resources["pipeline"]},
                              instance=instance)
        described = {key: m["described_run_id"] for key, m in materializations(both).items()}
        assert described["orders/data_quality"] == result.run_id and described["data_quality"] != result.run_id
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{feed_settings.db_schema}".orders').fetchone()[0] == 60 - bad
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{feed_settings.db_schema}" CASCADE')


def test_a_feeds_stream_job_and_always_on_sensor_are_its_own(settings, spark, instance):
    orders = shipped_feed("orders")
    resources = build_resources(settings.with_overrides(settle_seconds=0, always_on=True), stop_spark_after_run=False)
    feed_settings = resources["pipeline"].settings(feed="orders")
    frame = generate_rows(orders, 30, rng=np.random.default_rng(11), invalid_rate=0.2)
    write_drop(frame, feed_settings.landing_dir, "orders_live.csv", orders.column_names)
    try:
        defs = dg.Definitions.merge(feed_definitions("orders", own=True), dg.Definitions(resources=resources))
        # Always on: the feed's sensor keeps a run of the feed's own job alive, as user_events' does.
        with dg.build_sensor_context(instance=instance, resources={"pipeline": resources["pipeline"]}) as context:
            (request,) = next(iter(defs.sensors)).evaluate_tick(context).run_requests
        assert request.run_config == {"ops": {"orders_ingest": {"config": {"always_on": True}}}}

        job = defs.resolve_job_def("orders_stream_job")
        config = {"ops": {"orders_stream_landing": {"config": {"trigger_seconds": 0.5, "stop_after_seconds": 8}}}}
        result = job.execute_in_process(run_config=config, instance=instance)
        assert result.success
        mats = materializations(result)
        bad = int((frame["expected_reason"] != "").sum())
        assert set(mats) == {f"orders/{name}" for name in ("orders", "orders_rejected", "ingestion_throughput",
                                                           "ingestion_latency", "data_quality")}
        assert mats["orders/orders"]["rows_loaded"] == 30 - bad and mats["orders/data_quality"]["rows_rejected"] == bad
        checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
        assert checks[("orders/data_quality", "zero_data_loss")] is True
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{feed_settings.db_schema}" CASCADE')
