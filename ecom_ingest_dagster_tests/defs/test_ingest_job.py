"""The ingest job executed by Dagster against real PostgreSQL and Spark."""

from __future__ import annotations

import dagster as dg

from ecom_ingest_dagster.defs.resources import build_resources
from ecom_ingest_dagster_tests.helpers import assert_accounting, csv_text, drop, row


def materializations(result, raw: bool = False) -> dict[str, dict]:
    """Each asset's latest metadata in the run: values, or (raw) the MetadataValue objects."""
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v if raw else v.value for k, v in mat.metadata.items()}
    return out


NUMERIC = (dg.IntMetadataValue, dg.FloatMetadataValue)  # what the UI draws a plot for


def checks(result) -> dict[str, bool]:
    return {
        ev.event_specific_data.check_name: ev.event_specific_data.passed
        for ev in result.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def check_evaluations(result) -> dict:
    return {
        ev.event_specific_data.check_name: ev.event_specific_data
        for ev in result.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def run_ingest(definitions, resources, instance):
    job = definitions.resolve_job_def("ingest_job")
    return job.execute_in_process(resources=resources, instance=instance)


def test_ingest_job_materializes_tables_and_metrics_with_passing_checks(definitions, instance, settings, db, spark):
    rows = [row(i) for i in range(1, 40)] + [row(100, price="-1"), row(101, event_type="nope")]
    drop(settings.landing_dir, "a.csv", csv_text(rows))
    drop(settings.landing_dir, "b.csv", csv_text([row(1), row(200)]))
    drop(settings.landing_dir, "c.csv.gz", b"not a gzip stream")  # rejected whole, no row to show why
    # More than the driver loads before Spark: the run goes through the streaming query.
    dagster_resources = build_resources(settings.with_overrides(driver_batch_max_bytes=1024), stop_spark_after_run=False)

    result = run_ingest(definitions, dagster_resources, instance)
    assert result.success
    # The run names its Spark application: on a cluster, the master's UI lists it by this id.
    spark_context = dagster_resources["pipeline"].pipeline().spark.sparkContext
    assert f"Spark application {spark_context.applicationId} on {spark_context.master}" in [
        entry.user_message for entry in instance.all_logs(result.run_id)
    ]
    mats = materializations(result)
    assert set(mats) == {
        "user_events", "rejected_events", "ingestion_throughput", "ingestion_latency", "data_quality", "performance_report",
    }
    assert mats["performance_report"]["requirements_met"] == 4
    report_md = mats["performance_report"]["report"]
    assert "## 9. Performance Benchmarks" in report_md
    # The plots travel inside the Markdown (the UI cannot load PNG files by relative name).
    assert report_md.count("](data:image/png;base64,") == 5 and ".png)" not in report_md
    assert mats["performance_report"]["plot/throughput"].startswith("![throughput](data:image/png;base64,")
    findings = {r.data["requirement"]: r.data["status"] for r in mats["performance_report"]["key_findings"].records}
    assert findings["Data Loss"] == "met" and len(findings) == 4
    assert mats["performance_report"]["requirements"] == "4 of 4 met"
    assert mats["user_events"]["rows_loaded"] == 40
    assert mats["user_events"]["rows_duplicate"] == 1
    assert mats["user_events"]["dagster/row_count"] == 40
    assert mats["rejected_events"]["rows_rejected"] == 2
    assert mats["rejected_events"]["reason/negative_price"] == 1
    assert mats["rejected_events"]["files_rejected_by_reason"] == {"file_unparseable_csv": 1}
    assert mats["ingestion_throughput"]["total_records"] == 43
    assert mats["ingestion_throughput"]["avg_records_per_second"] > 0
    assert mats["ingestion_latency"]["batch_latency_ms_p95"] > 0
    assert "stage_ms/validation" in mats["ingestion_latency"]
    assert abs(mats["data_quality"]["validation_success_rate_pct"] - 100 * 41 / 43) < 0.01
    # The accounting residue is 0 by construction: a sentence, not a plot flat at 0.
    assert mats["data_quality"]["accounting"] == "balanced: 43 rows in = 40 loaded + 1 duplicate + 2 rejected"
    raw = materializations(result, raw=True)
    assert not {"data_loss_pct", "files_breaking_accounting"} & set(raw["data_quality"])
    # Counts are ints (each reason too, 0 included); rates and latencies floats.
    for key in ("rows_in", "rows_loaded", "rows_duplicate", "rows_rejected", "files_rejected_whole",
                "reason/negative_price", "reason/file_not_utf8"):
        assert isinstance(raw["data_quality"][key], dg.IntMetadataValue), key
    assert mats["data_quality"]["reason/file_not_utf8"] == 0
    assert isinstance(raw["ingestion_throughput"]["total_records"], dg.IntMetadataValue)
    assert isinstance(raw["ingestion_throughput"]["batches"], dg.IntMetadataValue)
    assert isinstance(raw["ingestion_latency"]["batch_latency_ms_p95"], dg.FloatMetadataValue)
    assert isinstance(raw["performance_report"]["batches"], dg.IntMetadataValue)
    assert "requirements_total" not in raw["performance_report"]
    assert mats["data_quality"]["described_run_id"] == result.run_id
    outcome = checks(result)
    assert outcome["zero_data_loss"] is True
    assert outcome["validation_rate"] is True  # 41 of 43 valid: 95.3% > 95%
    evaluations = check_evaluations(result)
    # The accounting check's figures are text (0 by construction); the others' numbers plot.
    loss = evaluations["zero_data_loss"].metadata
    assert not [k for k, v in loss.items() if isinstance(v, NUMERIC)]
    assert loss["measured"].value == "0.0000 %" and loss["files_breaking_accounting"].value == "0"
    assert isinstance(evaluations["max_latency"].metadata["measured"], dg.FloatMetadataValue)
    assert_accounting(db)


def test_checks_fail_visibly_when_targets_are_out_of_reach(definitions, dagster_resources, instance, settings, db):
    drop(settings.landing_dir, "a.csv", csv_text([row(i) for i in range(1, 11)]))
    resources = build_resources(
        settings, stop_spark_after_run=False,
        target_min_throughput_rps=1e9, target_max_latency_ms=0.001, target_min_validation_rate_pct=100.0,
    )
    result = run_ingest(definitions, resources, instance)
    assert result.success  # WARN checks do not fail the run
    outcome = checks(result)
    assert outcome == {
        "min_throughput": False, "max_latency": False, "validation_rate": False, "zero_data_loss": True,
        "max_end_to_end_latency": True,  # its own target (30 s) was not moved
    }
    # Each verdict says what was measured against what, with the unit.
    (latency,) = [
        ev.event_specific_data for ev in result.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION" and ev.event_specific_data.check_name == "max_latency"
    ]
    assert latency.metadata["unit"].value == "ms" and latency.metadata["target"].value == 0.001
    assert latency.metadata["verdict"].value.endswith("ms against a target of 0.00 ms")


def test_second_run_with_nothing_new_changes_nothing(definitions, dagster_resources, instance, settings, db):
    # The original report's load: 20 events per file.
    drop(settings.landing_dir, "a.csv", csv_text([row(i) for i in range(1, 21)]))
    assert run_ingest(definitions, dagster_resources, instance).success
    second = run_ingest(definitions, dagster_resources, instance)
    assert second.success
    mats = materializations(second)
    raw = materializations(second, raw=True)
    assert mats["user_events"]["rows_loaded"] == 0 and mats["user_events"]["dagster/row_count"] == 20
    # Nothing new: the metric assets record no figures (a gap in the plots, not a copy of
    # the first run's), and the checks, with nothing to judge, are skipped, not passed.
    for asset in ("ingestion_throughput", "ingestion_latency", "data_quality"):
        assert mats[asset]["has_batches"] is False
        assert not [k for k, v in raw[asset].items() if isinstance(v, NUMERIC)], asset
    # Only the accounting identity has something to judge without a batch (the ledger).
    assert checks(second) == {"zero_data_loss": True}
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("ingestion_throughput"), "min_throughput"), limit=1)
    # Planned, never evaluated, in a run that succeeded: what Dagster's UI resolves to "Skipped".
    assert history[0].run_id == second.run_id and history[0].status.value == "PLANNED"
    run = instance.get_run_by_id(second.run_id)
    assert run.tags["ecom_ingest/files_loaded"] == "0" and run.tags["ecom_ingest/rows_loaded"] == "0"


def test_a_warm_run_takes_drops_that_land_while_it_runs_and_shows_metrics_meanwhile(
    definitions, dagster_resources, instance, settings, db
):
    import threading
    import time

    drop(settings.landing_dir, "first.csv", csv_text([row(i) for i in range(1, 21)]))
    job = definitions.resolve_job_def("ingest_job")
    config = {"ops": {"ingest_landing": {"config": {"idle_seconds": 8.0}}}}
    resources = build_resources(settings, stop_spark_after_run=False, warm_progress_seconds=0.5)
    box = {}
    runner = threading.Thread(target=lambda: box.update(
        result=job.execute_in_process(run_config=config, resources=resources, instance=instance)
    ))
    started = time.monotonic()
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and db.execute("SELECT count(*) FROM user_events").fetchone()[0] < 20:
            time.sleep(0.2)
        # The run's first progress record, then a drop that lands mid-run.
        while time.monotonic() < deadline and instance.get_latest_materialization_event(
                dg.AssetKey("ingestion_throughput")) is None:
            time.sleep(0.1)
        drop(settings.landing_dir, "later.csv", csv_text([row(i) for i in range(100, 110)]))
        while time.monotonic() < deadline and db.execute("SELECT count(*) FROM user_events").fetchone()[0] < 30:
            time.sleep(0.1)
        assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 30  # the same run took it
    finally:
        runner.join(180)
    result = box["result"]
    assert result.success and time.monotonic() - started >= 8  # it waited out its idle period, then ended
    mats = materializations(result)
    assert mats["user_events"]["rows_loaded"] == 30
    assert mats["ingestion_throughput"]["total_records"] == 30
    assert checks(result)["zero_data_loss"] is True
    # While it ran, the metric assets were recorded as the data flowed (the first file's
    # figures before the second landed), and their checks with them.
    during = [
        e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.to_user_string() == "ingestion_throughput"
        and e.step_key == "ingest_landing"
    ]
    assert during and during[0]["total_records"].value == 20
    assert any(e.event_type_value == "ASSET_CHECK_EVALUATION" and e.step_key == "ingest_landing" for e in result.all_events)
    assert_accounting(db)
