"""The continuous stream job: picks drops up while running, stops cleanly, records metrics."""

from __future__ import annotations

import threading
import time

import dagster as dg

from ecom_ingest_dagster_tests.helpers import assert_accounting, csv_text, drop, row


def test_stream_job_ingests_live_drops_and_records_metric_materializations(
    definitions, dagster_resources, instance, settings, db
):
    job = definitions.resolve_job_def("stream_job")
    config = {"ops": {"stream_landing": {"config": {"trigger_seconds": 0.5, "max_files_per_trigger": 1, "stop_after_seconds": 25}}}}
    result_box = {}
    runner = threading.Thread(
        target=lambda: result_box.update(result=job.execute_in_process(run_config=config, resources=dagster_resources, instance=instance))
    )
    runner.start()
    try:
        for i in range(3):
            drop(settings.landing_dir, f"live{i}.csv", csv_text([row(10 * i + k) for k in range(1, 6)]))
            time.sleep(1.0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and db.execute("SELECT count(*) FROM user_events").fetchone()[0] < 15:
            time.sleep(0.3)
        assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 15
    finally:
        runner.join(120)
    result = result_box["result"]
    assert result.success
    # It said what it does before the seconds of Spark's start and its first trigger.
    assert (f"streaming {settings.landing_dir}: a micro-batch every 0.5 s (at most 1 file(s)), for 25 s"
            in [entry.user_message for entry in instance.all_logs(result.run_id)])
    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert set(mats) == {"user_events", "rejected_events", "ingestion_throughput", "ingestion_latency", "data_quality"}
    assert mats["user_events"]["rows_loaded"].value == 15
    assert mats["ingestion_throughput"]["total_records"].value == 15
    assert mats["ingestion_throughput"]["batches"].value == 3  # one file per trigger
    # The same checks as ingest_job's assets, evaluated on the stream's own batches.
    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert set(evaluations) == {"min_throughput", "max_latency", "max_end_to_end_latency", "validation_rate", "zero_data_loss"}
    # Five-row drops make for a low rows/s figure, so min_throughput may warn; no row is lost.
    assert evaluations["zero_data_loss"].passed and evaluations["validation_rate"].passed
    assert all("unit" in e.metadata for e in evaluations.values())
    assert evaluations["zero_data_loss"].asset_key.to_user_string() == "data_quality"
    assert evaluations["max_latency"].metadata["unit"].value == "ms"
    stored = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("data_quality"), "zero_data_loss")]
    )
    assert stored[dg.AssetCheckKey(dg.AssetKey("data_quality"), "zero_data_loss")].run_id == result.run_id
    assert_accounting(db)


def test_the_launchpad_scaffolds_the_stream_s_trigger_settings_with_the_deployment_s_values(definitions):
    """What the launchpad's Scaffold button fills in: GraphQL's rootDefaultYaml, computed the same way."""
    import yaml
    from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

    from ecom_ingest_dagster.settings import Settings

    snap = definitions.get_job_def("stream_job").get_job_snapshot()
    schema = snap.config_schema_snapshot
    root = schema.get_config_snap(snap.mode_def_snaps[0].root_config_key)
    scaffold = yaml.safe_load(default_values_yaml_from_type_snap(schema, root))
    config = scaffold["ops"]["stream_landing"]["config"]
    in_force = Settings.from_env()
    assert config == {"trigger_seconds": in_force.trigger_seconds,
                      "max_files_per_trigger": in_force.max_files_per_trigger or 0, "stop_after_seconds": 0.0}
