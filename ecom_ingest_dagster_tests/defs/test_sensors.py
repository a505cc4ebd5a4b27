"""The landing sensor, evaluated by Dagster's own sensor machinery."""

from __future__ import annotations

import json
import time

import dagster as dg

from ecom_ingest_dagster.defs.ingest.sensors import landing_sensor
from ecom_ingest_dagster.defs.resources import PipelineResource, build_resources
from ecom_ingest_dagster.settings import Settings


def evaluate(landing_dir, cursor=None, instance=None, settle_seconds=0.0):
    resources = {
        "pipeline": PipelineResource(landing_dir=str(landing_dir), home=str(landing_dir), settle_seconds=settle_seconds)
    }
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=resources) as context:
        result = landing_sensor.evaluate_tick(context)
        return result, context.cursor


def test_new_drops_make_one_run_request_and_advance_the_cursor(tmp_path, instance):
    for i in range(3):
        (tmp_path / f"e{i}.csv").write_text("x\n")
    (tmp_path / ".hidden.csv").write_text("x\n")
    result, cursor = evaluate(tmp_path, instance=instance)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags["ecom_ingest/new_files"] == "3"
    assert request.run_key.startswith("drops-")
    assert json.loads(cursor)["ctime_ns"] > 0

    again, same_cursor = evaluate(tmp_path, cursor, instance)
    assert again.run_requests == [] and "no new drops" in again.skip_message
    assert same_cursor == cursor

    (tmp_path / "e9.csv").write_text("x\n")
    third, third_cursor = evaluate(tmp_path, cursor, instance)
    assert len(third.run_requests) == 1 and third.run_requests[0].tags["ecom_ingest/new_files"] == "1"
    assert third.run_requests[0].run_key != request.run_key
    assert third_cursor != cursor


def test_a_burst_of_files_is_one_run_and_the_scan_is_quick(tmp_path, instance):
    for i in range(10_000):
        (tmp_path / f"burst_{i:05d}.csv").write_text("")
    started = time.perf_counter()
    result, cursor = evaluate(tmp_path, instance=instance)
    elapsed = time.perf_counter() - started
    print(f"sensor evaluation over 10,000 files: {elapsed * 1000:.0f} ms")
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags["ecom_ingest/new_files"] == "5000"  # bounded slice
    follow_up, _ = evaluate(tmp_path, cursor, instance)
    assert follow_up.run_requests[0].tags["ecom_ingest/new_files"] == "5000"


def test_missing_landing_directory_skips_quietly(tmp_path, instance):
    result, cursor = evaluate(tmp_path / "not-yet", instance=instance)
    assert result.run_requests == [] and cursor is None


def test_sensor_stands_aside_while_a_stream_run_is_active(tmp_path, instance, definitions):
    (tmp_path / "a.csv").write_text("x\n")
    stream = definitions.resolve_job_def("stream_job")
    instance.create_run_for_job(stream, run_config={}, status=dg.DagsterRunStatus.STARTED)
    result, cursor = evaluate(tmp_path, instance=instance)
    assert result.run_requests == [] and "stream run" in result.skip_message
    assert cursor is None  # the files stay new for when the stream stops


def test_a_drop_still_settling_is_requested_on_a_later_tick(tmp_path, instance):
    (tmp_path / "fresh.csv").write_text("x\n")
    result, cursor = evaluate(tmp_path, instance=instance, settle_seconds=1.0)
    assert result.run_requests == [] and "1 too recent" in result.skip_message
    assert cursor is None
    time.sleep(1.1)
    later, _ = evaluate(tmp_path, cursor, instance, settle_seconds=1.0)
    assert len(later.run_requests) == 1


def test_the_sensor_works_while_the_database_is_down(tmp_path, instance, monkeypatch):
    # The sensor reads the directory and the Dagster instance only: a dead warehouse
    # does not stop drops from being noticed (the run then fails and is retried).
    monkeypatch.setenv("ECOM_INGEST_DATABASE_URL", "postgresql://ingest:pw@127.0.0.1:1/none?connect_timeout=1")
    monkeypatch.setenv("ECOM_INGEST_LANDING_DIR", str(tmp_path))
    monkeypatch.setenv("ECOM_INGEST_HOME", str(tmp_path / "home"))
    resources = build_resources(Settings.from_env(), settle_seconds=0)  # everything the code location binds
    (tmp_path / "a.csv").write_text("x\n")
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = landing_sensor.evaluate_tick(context)
    assert len(result.run_requests) == 1


def test_drops_another_run_already_ingested_make_no_run(settings, db, ingest, instance):
    from ecom_ingest_dagster_tests.helpers import csv_text, drop, row

    # A CLI run took these and left them here (keep): a sensor run would find nothing to do.
    kept = settings.with_overrides(after_commit="keep")
    drop(settings.landing_dir, "taken.csv", csv_text([row(1)]))
    ingest(kept)
    resources = build_resources(kept, settle_seconds=0)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = landing_sensor.evaluate_tick(context)
        cursor = context.cursor
    assert result.run_requests == [] and "ingested already" in result.skip_message
    assert cursor is not None  # stepped past them: they are not looked at again

    drop(settings.landing_dir, "fresh.csv", csv_text([row(2)]))
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=resources) as context:
        later = landing_sensor.evaluate_tick(context)
    assert len(later.run_requests) == 1
    tags = later.run_requests[0].tags
    assert (tags["ecom_ingest/new_files"], tags["ecom_ingest/newest_file"]) == ("1", "fresh.csv")


def test_always_on_keeps_one_run_and_backs_off_after_a_failure(settings, db, instance):
    import uuid

    resources = build_resources(settings.with_overrides(always_on=True), settle_seconds=0)

    def tick():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return landing_sensor.evaluate_tick(context)

    (request,) = tick().run_requests  # no drop at all: started all the same, as at a deployment's start
    assert request.run_config == {"ops": {"ingest_landing": {"config": {"always_on": True}}}}
    assert request.tags["ecom_ingest/always_on"] == "true"

    live = dg.DagsterRun(job_name="ingest_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
    instance.add_run(live)
    busy = tick()
    assert busy.run_requests == [] and live.run_id in busy.skip_message

    instance.report_run_failed(live)  # it died right after it started: not relaunched at once
    failed = tick()
    assert failed.run_requests == [] and "failed" in failed.skip_message


def test_always_on_backs_off_only_after_a_run_that_failed_soon_after_it_started():
    import types

    from ecom_ingest_dagster.defs.ingest.sensors import ALWAYS_ON_RETRY_AFTER_S, _failed_soon_after_start

    def record(status, started, ended):
        return types.SimpleNamespace(dagster_run=types.SimpleNamespace(status=status), start_time=started, end_time=ended)

    failed = dg.DagsterRunStatus.FAILURE
    assert _failed_soon_after_start(record(failed, 100.0, 105.0))  # a crash loop: wait
    assert not _failed_soon_after_start(record(failed, 100.0, 100.0 + ALWAYS_ON_RETRY_AFTER_S + 3600))  # killed after an hour
    assert not _failed_soon_after_start(record(dg.DagsterRunStatus.CANCELED, 100.0, 105.0))  # the user's Terminate
