"""The run API: what the CLI and the Dagster layer both call."""

from __future__ import annotations

import psycopg

from ecom_ingest_dagster.pipeline.query import checkpoint_path, lock_key
from ecom_ingest_dagster.pipeline.run import Pipeline
from ecom_ingest_dagster_tests.helpers import csv_text, drop, row


def test_nothing_to_ingest_starts_no_spark(settings, db):
    drop(settings.landing_dir, "empty.csv", b"")  # recorded by the sweep, needs no Spark either
    pipeline = Pipeline(settings)
    summary = pipeline.ingest()
    assert pipeline._spark is None
    assert summary.files_empty == 1 and summary.totals["total_batches"] == 0
    assert db.execute("SELECT rows_total FROM ingest_files WHERE file_name = 'empty.csv'").fetchone() == (0,)


def test_a_pending_drop_or_a_batch_to_replay_is_work(settings, db, spark):
    drop(settings.landing_dir, "a.csv", csv_text([row(1)]))
    pipeline = Pipeline(settings, spark=spark)
    assert pipeline.idle_summary() is None
    pipeline.ingest()
    assert pipeline.idle_summary() is not None  # ingested and archived: nothing left
    checkpoint = checkpoint_path(settings, settings.database_url)
    for commit in (checkpoint / "commits").iterdir():  # a crash before Spark recorded its commit
        commit.unlink()
    assert pipeline.idle_summary() is None


def test_held_elsewhere_sees_another_runs_checkpoint_lock(settings, db, database_url):
    pipeline = Pipeline(settings)
    assert not pipeline.held_elsewhere()
    key = lock_key(checkpoint_path(settings, settings.database_url))
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        assert pipeline.held_elsewhere()
    assert not pipeline.held_elsewhere()
