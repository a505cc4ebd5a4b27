"""The schedules: evaluated by Dagster's schedule machinery, their jobs run for real."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from ecom_ingest_dagster.defs.maintenance.schedules import daily_performance_report, daily_retention
from ecom_ingest_dagster.defs.resources import build_resources
from ecom_ingest_dagster.pipeline.run import Pipeline
from ecom_ingest_dagster_tests.helpers import csv_text, drop, row


def _tick(schedule, instance):
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2026, 12, 1, 6, 0)) as context:
        return schedule.evaluate_tick(context)


def test_the_schedules_are_in_the_code_location_and_on_by_default(definitions):
    schedules = {s.name: s for s in definitions.schedules}
    # the shipped example feed's report schedule waits, as its sensor does, to be switched on
    assert set(schedules) == {"daily_performance_report", "daily_retention", "orders_daily_performance_report"}
    assert {name for name, s in schedules.items() if s.default_status == dg.DefaultScheduleStatus.RUNNING} == {
        "daily_performance_report", "daily_retention"}
    assert schedules["daily_performance_report"].job_name == "report_job"
    assert schedules["orders_daily_performance_report"].job_name == "orders_report_job"


def test_the_daily_report_schedule_renders_the_last_24_hours(definitions, dagster_resources, instance, settings, ingest):
    drop(settings.landing_dir, "a.csv", csv_text([row(i) for i in range(1, 21)]))
    ingest()
    (request,) = _tick(daily_performance_report, instance).run_requests
    result = definitions.resolve_job_def("report_job").execute_in_process(
        run_config=request.run_config, resources=dagster_resources, instance=instance, tags=request.tags
    )
    assert result.success
    (mat,) = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    assert mat.asset_key.to_user_string() == "performance_report"
    assert mat.metadata["batches"].value == 1
    assert (settings.home / "reports" / "performance_report.md").exists()


def test_retention_deletes_only_what_is_past_its_age(definitions, instance, settings, db):
    now = dt.datetime.now(dt.timezone.utc)
    old, recent = now - dt.timedelta(days=40), now - dt.timedelta(days=1)
    for moment in (old, recent):
        db.execute("INSERT INTO resource_samples (run_id, sampled_at, cpu_pct) VALUES ('r', %s, 1)", (moment,))
    logs = settings.logs_dir
    logs.mkdir(parents=True)
    (logs / "performance_metrics.json").write_text(
        "".join(json.dumps({"batch_id": i, "timestamp": t.isoformat()}) + "\n" for i, t in enumerate((old, recent)))
    )
    old_day = settings.archive_dir / (now - dt.timedelta(days=10)).strftime("%Y-%m-%d")
    new_day = settings.archive_dir / now.strftime("%Y-%m-%d")
    for day in (old_day, new_day):
        drop(day, "x.csv", "event_id\n")
    (settings.archive_dir / "notes").mkdir()  # not a day folder: never touched
    # A second feed in use: its samples and archive age alike, in its own schema and directories.
    orders = settings.with_overrides(feed="orders")
    with Pipeline(orders) as pipeline, pipeline.connect() as conn:
        conn.execute(f'INSERT INTO "{orders.db_schema}".resource_samples (run_id, sampled_at, cpu_pct) VALUES (%s, %s, 1)',
                     ("o", old))
    orders_old_day = orders.archive_dir / old_day.name
    drop(orders_old_day, "o.csv", "order_id\n")

    try:
        (request,) = _tick(daily_retention, instance).run_requests
        resources = build_resources(settings, stop_spark_after_run=False, archive_retention_days=7)
        result = definitions.resolve_job_def("retention_job").execute_in_process(
            run_config=request.run_config, resources=resources, instance=instance
        )
        assert result.success
        assert [r[0].date() for r in db.execute("SELECT sampled_at FROM resource_samples")] == [recent.date()]
        assert [json.loads(line)["batch_id"] for line in (logs / "performance_metrics.json").read_text().splitlines()] == [1]
        assert not old_day.exists() and (new_day / "x.csv").exists() and (settings.archive_dir / "notes").exists()
        assert not orders_old_day.exists()
        (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        metadata = output.event_specific_data.metadata
        deleted = (metadata["samples_deleted"].value, metadata["log_lines_deleted"].value,
                   metadata["archived_drops_deleted"].value)
        assert deleted == (2, 1, 2) and metadata["feeds"].value == "user_events, orders"
    finally:
        db.execute(f'DROP SCHEMA IF EXISTS "{orders.db_schema}" CASCADE')


def test_without_an_archive_retention_archived_drops_are_kept(definitions, dagster_resources, instance, settings, db):
    day = settings.archive_dir / "2020-01-01"
    drop(day, "x.csv", "event_id\n")
    result = definitions.resolve_job_def("retention_job").execute_in_process(resources=dagster_resources, instance=instance)
    assert result.success and (day / "x.csv").exists()
