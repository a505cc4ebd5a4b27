"""SIGKILL the whole ingest process tree mid-run, restart, and find every valid id exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from ecom_ingest_dagster.generator import generate_events, write_drop

from .helpers import assert_accounting


def _kill_tree(process: subprocess.Popen) -> None:
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for proc in tree:  # the JVM and the Python workers too: nothing gets to clean up
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    process.wait(30)


@pytest.mark.parametrize("kill_when", ["before_any_commit", "after_first_file"])
def test_sigkill_then_restart_loads_every_valid_id_once(tmp_path, database_url, db_schema, db, kill_when):
    landing = tmp_path / "landing"
    rng = np.random.default_rng(99)
    frames = [generate_events(60_000, rng=rng, invalid_rate=0.02) for _ in range(3)]
    for i, frame in enumerate(frames):
        write_drop(frame, landing, f"crash_{i}.csv")
    valid_ids = {eid for f in frames for eid in f.loc[f["expected_reason"] == "", "event_id"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")}
    env.update({
        "ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_LANDING_DIR": str(landing),
        "ECOM_INGEST_DATABASE_URL": database_url, "ECOM_INGEST_DB_SCHEMA": db_schema,
        "ECOM_INGEST_SPARK_MASTER": "local[2]", "ECOM_INGEST_MAX_FILES_PER_TRIGGER": "1",
    })
    cmd = [sys.executable, "-m", "ecom_ingest_dagster.cli", "ingest"]

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        committed = db.execute("SELECT count(*) FROM ingest_files").fetchone()[0]
        # Rows arriving in the open transaction of the first file is "during COPY".
        copying = db.execute("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'COPY%%user_events%%'").fetchone()[0]
        if (kill_when == "before_any_commit" and copying) or (kill_when == "after_first_file" and committed >= 1):
            break
        time.sleep(0.05)
    assert first.poll() is None, "the run finished before it could be killed"
    _kill_tree(first)
    before = db.execute("SELECT count(*) FROM ingest_files").fetchone()[0]
    assert before < 3  # it really was cut short

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]

    loaded = [r[0] for r in db.execute("SELECT event_id::text FROM user_events")]
    assert len(loaded) == len(set(loaded)) == len(valid_ids)
    assert set(loaded) == valid_ids
    assert db.execute("SELECT count(*) FROM ingest_files").fetchone()[0] == 3
    assert_accounting(db)
    # The batch ledger agrees with the file ledger, batch by batch.
    mismatched = db.execute(
        "SELECT b.batch_id FROM ingest_batches b JOIN (SELECT stream_id, batch_id, sum(rows_total) t FROM ingest_files"
        " GROUP BY 1, 2) f USING (stream_id, batch_id) WHERE b.rows_total <> f.t"
    ).fetchall()
    assert mismatched == []
