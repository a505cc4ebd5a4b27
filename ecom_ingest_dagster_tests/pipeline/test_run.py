"""The run API: what the CLI and the Dagster layer both call."""

from __future__ import annotations

import threading
import time

import psycopg

from ecom_ingest_dagster.pipeline.checkpoint import LOCK_GRACE_SECONDS, checkpoint_path, lock_key
from ecom_ingest_dagster.pipeline.run import Pipeline
from ecom_ingest_dagster_tests.helpers import assert_accounting, csv_text, drop, row


def test_nothing_to_ingest_starts_no_spark(settings, db):
    drop(settings.landing_dir, "empty.csv", b"")  # recorded by the sweep, needs no Spark either
    pipeline = Pipeline(settings)
    summary = pipeline.ingest()
    assert pipeline._spark is None
    assert summary.files_empty == 1 and summary.totals["total_batches"] == 0
    assert db.execute("SELECT rows_total FROM ingest_files WHERE file_name = 'empty.csv'").fetchone() == (0,)


def test_a_pending_drop_or_a_batch_to_replay_is_work(settings, db, spark):
    drop(settings.landing_dir, "a.csv", csv_text([row(1)]))
    pipeline = Pipeline(settings.with_overrides(driver_batch_max_bytes=0), spark=spark)  # through Spark's checkpoint
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
        assert pipeline.held_elsewhere(grace_s=0.5)  # held all along: still held after the grace
        # A run about to start gives one that is ending a moment to let go: it waits, then sees it gone.
        started = time.monotonic()
        ending = threading.Timer(0.5, other.close)
        ending.start()
        assert not pipeline.held_elsewhere(grace_s=LOCK_GRACE_SECONDS)
        assert time.monotonic() - started >= 0.4
        ending.join()


def test_a_few_small_drops_are_loaded_without_spark(settings, db):
    for n in range(3):
        drop(settings.landing_dir, f"trickle_{n}.csv", csv_text([row(10 * n), row(10 * n + 1, price="-1")]))
    pipeline = Pipeline(settings)
    summary = pipeline.ingest()
    assert pipeline._spark is None  # no JVM for what the driver loads anyway
    assert (summary.totals["total_files"], summary.totals["loaded_records"], summary.totals["rejected_records"]) == (3, 3, 3)
    assert db.execute("SELECT metrics->>'loaded_in', files FROM ingest_batches").fetchall() == [("driver", 3)]
    assert_accounting(db)
    assert not list(settings.landing_dir.glob("*.csv"))  # archived after the commit, as by a query


def test_more_than_the_driver_takes_goes_through_spark(settings, db, spark):
    small = settings.with_overrides(driver_batch_max_bytes=100)  # one drop is more than this
    for n in range(2):  # a single drop, in local mode, would still be one task: the driver's
        drop(settings.landing_dir, f"big_enough_{n}.csv", csv_text([row(10 * n), row(10 * n + 1)]))
    summary = Pipeline(small, spark=spark).ingest()
    assert summary.totals["total_files"] == 2
    assert checkpoint_path(small, small.database_url).exists()


def test_one_big_drop_in_local_mode_is_loaded_without_spark(settings, db):
    small = settings.with_overrides(driver_batch_max_bytes=100)
    drop(settings.landing_dir, "one.csv", csv_text([row(n) for n in range(50)]))
    pipeline = Pipeline(small)
    summary = pipeline.ingest()
    assert pipeline._spark is None and summary.totals["loaded_records"] == 50
    assert not checkpoint_path(small, small.database_url).exists()


def test_a_warm_run_loads_the_waiting_drops_before_spark_and_never_twice(settings, db, spark):
    keep = settings.with_overrides(after_commit="keep")  # the drops stay, so Spark's first batch lists them again
    for n in range(2):
        drop(keep.landing_dir, f"early_{n}.csv", csv_text([row(10 * n), row(10 * n + 1)]))
    summary = Pipeline(keep, spark=spark).ingest(idle_seconds=1.0)
    assert summary.files_skipped == 2  # listed by the query, found in the ledger: not loaded again
    assert summary.totals["loaded_records"] == 4
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 4
    streams = db.execute("SELECT DISTINCT stream_id FROM ingest_files").fetchall()
    assert len(streams) == 1 and streams[0][0].startswith("driver-")  # the files' loads: before Spark's query
    assert_accounting(db)
