"""The shipped instance configurations, loaded by Dagster itself; PostgreSQL storage for real."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import psycopg
import pytest

from ecom_ingest_dagster.defs.ingest.jobs import LANDING_TAG

INFRA = Path(__file__).resolve().parents[2] / "infra"


def instance_from(config_file: Path, home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(config_file, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def landing_limit(instance) -> list[dict]:
    return [
        limit for limit in instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        if limit["key"] == LANDING_TAG
    ]


def test_local_instance_queues_one_ingest_run_per_landing(tmp_path):
    instance = instance_from(INFRA / "dagster_home" / "dagster.yaml", tmp_path / "home")
    assert landing_limit(instance) == [{"key": LANDING_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    # Every sensor-launched run waits for the queue's next pass (Dagster's default: 5 s).
    assert instance.run_coordinator.dequeue_interval_seconds == 1
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 5
    assert_dead_runs_are_failed(instance)


def assert_dead_runs_are_failed(instance) -> None:
    """Run monitoring can tell a run whose code server lost it, within a minute."""
    from ecom_ingest_dagster.run_launcher import MonitoredRunLauncher

    assert type(instance.run_launcher) is MonitoredRunLauncher
    assert instance.run_launcher.supports_check_run_worker_health
    assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds <= 15


@pytest.fixture
def dagster_storage_url(database_url):
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(database_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_instance_stores_a_real_ingest_run(
    tmp_path, monkeypatch, dagster_storage_url, definitions, dagster_resources, settings, db
):
    from ecom_ingest_dagster_tests.helpers import csv_text, drop, row

    monkeypatch.setenv("ECOM_INGEST_DAGSTER_PG_URL", dagster_storage_url)
    instance = instance_from(INFRA / "dagster.yaml", tmp_path / "pg_home")
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert landing_limit(instance)
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 5
        assert_dead_runs_are_failed(instance)
        drop(settings.landing_dir, "a.csv", csv_text([row(i) for i in range(1, 21)]))
        result = definitions.resolve_job_def("ingest_job").execute_in_process(resources=dagster_resources, instance=instance)
        assert result.success
        # What Dagster stored lives in the PostgreSQL database, not on local disk.
        with psycopg.connect(dagster_storage_url) as conn:
            stored = conn.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,)).fetchone()[0]
            events = conn.execute(
                "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                (result.run_id,),
            ).fetchone()[0]
        assert stored == 1 and events == 6  # two tables, three metrics, the report
        latest = instance.get_latest_materialization_event(dg.AssetKey("ingestion_throughput"))
        assert latest.asset_materialization.metadata["total_records"].value == 20
    finally:
        instance.dispose()


def test_materialize_from_the_ui_runs_in_one_process_under_the_landing_pool(tmp_path, definitions):
    """The UI's Materialize buttons run the implicit asset job: it must behave like ingest_job."""
    from ecom_ingest_dagster.defs.ingest.assets import LANDING_POOL

    implicit = definitions.resolve_implicit_global_asset_job_def()
    assert implicit.executor_def.name == "in_process"
    landing_steps = {
        key.to_user_string(): definitions.resolve_assets_def(key).op.pool for key in (dg.AssetKey("user_events"),)
    }
    assert landing_steps == {"user_events": LANDING_POOL}
    assert definitions.resolve_job_def("stream_job").graph.node_named("stream_landing").definition.pool == LANDING_POOL
    instance = instance_from(INFRA / "dagster_home" / "dagster.yaml", tmp_path / "home")
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
