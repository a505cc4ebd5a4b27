"""The run loop: plans, and a real warm query ended by its lifetime and reporting progress."""

from __future__ import annotations

import math
import threading
import time

from ecom_ingest_dagster.pipeline.query import IngestQuery
from ecom_ingest_dagster.pipeline.run_loop import RunPlan

from ecom_ingest_dagster_tests.helpers import csv_text, drop, row


def test_plans_say_their_trigger_and_whether_they_last():
    once = RunPlan.available_now()
    assert once.trigger == {"availableNow": True} and not once.lasts and once.stop_mid_batch
    assert RunPlan.available_now("warm").mode == "warm"
    continuous = RunPlan("continuous", stop_mid_batch=False, trigger_seconds=0.5)
    assert continuous.trigger == {"processingTime": "0.5 seconds"} and continuous.lasts
    assert "finishing the current micro-batch" in continuous.on_stop_request
    warm = RunPlan("warm", stop_mid_batch=True, trigger_seconds=1, idle_s=math.inf)
    assert warm.lasts and "stopping now" in warm.on_stop_request


def test_an_always_on_query_reports_progress_and_ends_between_batches_at_its_lifetime(spark, settings, db):
    query = IngestQuery(spark, settings, settings.database_url)
    progress: list[int] = []
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=query.run_warm(
        idle_seconds=math.inf, trigger_seconds=0.5, lifetime_s=12, progress_every_s=0.5,
        on_progress=lambda summary: progress.append(summary.batch_count))))
    started = time.monotonic()
    thread.start()
    try:
        for i in range(3):
            drop(settings.landing_dir, f"lifetime{i}.csv", csv_text([row(300 + i)]))
            time.sleep(1.5)
    finally:
        thread.join(120)
    assert not thread.is_alive()
    # Never idle (math.inf): the lifetime ended it, not before it was due.
    assert time.monotonic() - started >= 12
    summary = result["summary"]
    assert summary.totals["loaded_records"] == 3 and all(b["mode"] == "warm" for b in summary.batches)
    assert all(b["trigger_seconds"] == 0.5 for b in summary.batches)
    assert progress and progress == sorted(progress) and progress[-1] <= summary.batch_count
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 3
