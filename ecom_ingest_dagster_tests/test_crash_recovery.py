"""SIGKILL the whole ingest process tree mid-run, restart, and find every valid id exactly once.

The kill points are made deterministic with PostgreSQL's own locks: the test holds a
lock the pipeline needs next, waits until the pipeline is blocked on it, and kills.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import psycopg
import pytest

from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from .helpers import assert_accounting, copy_in_flight, kill_tree, waiting_on_lock

FILES = 3


def _cli_env(tmp_path: Path, landing: Path, database_url: str, db_schema: str, **extra: str) -> dict[str, str]:
    """The environment of an ``ecom-ingest`` run of these tests: none of the caller's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")}
    env.update({
        "ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_LANDING_DIR": str(landing),
        "ECOM_INGEST_DATABASE_URL": database_url, "ECOM_INGEST_DB_SCHEMA": db_schema,
        "ECOM_INGEST_SPARK_MASTER": "local[2]", **extra,
    })
    return env


def _drops(landing: Path, prefix: str, count: int, *, rows: int, invalid_rate: float, seed: int) -> set[str]:
    """``count`` generated drops named ``prefix_N.csv``; the event ids that must be loaded."""
    rng = np.random.default_rng(seed)
    frames = [generate_events(rows, rng=rng, invalid_rate=invalid_rate) for _ in range(count)]
    for i, frame in enumerate(frames):
        write_drop(frame, landing, f"{prefix}_{i:03d}.csv")
    return {eid for f in frames for eid in f.loc[f["expected_reason"] == "", "event_id"]}


def _files_committed(db) -> int:
    return db.execute("SELECT count(*) FROM ingest_files").fetchone()[0]


# kill point -> (command, environment, what to wait for before the kill)
SCENARIOS = {
    # Files are listed and the batch planned; nothing written yet (the driver waits on the batch ledger).
    "before_any_write": ("ingest", {}, "lock_batches_now"),
    # Rows of the first file are streaming into its open transaction.
    "during_copy": ("ingest", {}, "copying"),
    # One file committed, the next ones not (one file per micro-batch).
    "between_files": ("ingest", {"ECOM_INGEST_MAX_FILES_PER_TRIGGER": "1"}, "one_file"),
    # Every file of the (single) batch committed, the batch not yet in the ledger nor in Spark's commit log.
    "after_commit_before_batch_recorded": ("ingest", {}, "lock_batches_for_writes"),
    # The continuous mode, mid-COPY of a micro-batch.
    "stream_during_copy": ("stream", {"ECOM_INGEST_MAX_FILES_PER_TRIGGER": "1", "ECOM_INGEST_TRIGGER_SECONDS": "0.5"}, "copying"),
}


@pytest.mark.parametrize("kill_when", list(SCENARIOS))
def test_sigkill_then_restart_loads_every_valid_id_once(tmp_path, database_url, db_schema, db, kill_when):
    command, extra_env, trigger = SCENARIOS[kill_when]
    landing = tmp_path / "landing"
    valid_ids = _drops(landing, "crash", FILES, rows=60_000, invalid_rate=0.02, seed=99)
    env = _cli_env(tmp_path, landing, database_url, db_schema, **extra_env)

    # The lock is held on a connection of its own, in the test's schema.
    locker = psycopg.connect(database_url)
    locker.execute(f'SET search_path TO "{db_schema}"')
    if trigger == "lock_batches_now":
        locker.execute("LOCK TABLE ingest_batches IN ACCESS EXCLUSIVE MODE")
    if trigger == "lock_batches_for_writes":  # reads pass, the batch's record waits
        locker.execute("LOCK TABLE ingest_batches IN EXCLUSIVE MODE")
    first = subprocess.Popen(
        [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", command],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and first.poll() is None:
            if trigger == "lock_batches_now" and waiting_on_lock(db, db_schema, "ingest_batches"):
                break
            if trigger == "copying" and copy_in_flight(db, db_schema):
                break
            if trigger == "one_file" and _files_committed(db) >= 1:
                break
            if trigger == "lock_batches_for_writes" and _files_committed(db) == FILES \
                    and waiting_on_lock(db, db_schema, "ingest_batches"):
                break
            time.sleep(0.02)
        else:
            kill_tree(first)
            pytest.fail(f"the kill point ({trigger}) was not reached")
        assert first.poll() is None, "the run finished before it could be killed"
        kill_tree(first)
    finally:
        locker.close()  # releases the lock

    committed = _files_committed(db)
    batches = db.execute("SELECT count(*) FROM ingest_batches").fetchone()[0]
    if kill_when == "before_any_write":
        assert (committed, batches) == (0, 0)
    elif kill_when == "after_commit_before_batch_recorded":
        assert (committed, batches) == (FILES, 0)
    else:
        assert committed < FILES  # it really was cut short

    # Recovery is the ordinary command: the availableNow pass finishes what is left.
    second = subprocess.run(
        [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"], env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-2000:]

    loaded = [r[0] for r in db.execute("SELECT event_id::text FROM user_events")]
    assert len(loaded) == len(set(loaded)) == len(valid_ids)
    assert set(loaded) == valid_ids
    assert _files_committed(db) == FILES
    assert_accounting(db)
    # The batch ledger agrees with the file ledger, batch by batch, and misses none.
    mismatched = db.execute(
        "SELECT f.batch_id FROM (SELECT stream_id, batch_id, sum(rows_total) t FROM ingest_files GROUP BY 1, 2) f"
        " LEFT JOIN ingest_batches b USING (stream_id, batch_id) WHERE b.rows_total IS DISTINCT FROM f.t"
    ).fetchall()
    assert mismatched == []


def test_sigkill_while_a_committed_drop_is_being_moved_then_restart_archives_it_once(tmp_path, database_url, db_schema, db):
    """What a kill -9 between a file's commit and the end of its move leaves, and the restart.

    The archive is put on another file system (tmpfs), so the move is a copy followed by
    a delete. The run may write no file larger than half the drop (``RLIMIT_FSIZE``), so
    its copy fails half written ("file too large": Python ignores SIGXFSZ) and the file
    stays where it was; the test then kills the run's tree. That is the state a kill
    mid-copy leaves, reached every time rather than when a poll happens to catch a copy
    of a few milliseconds: the file committed and still in the landing directory, a
    partial copy in the archive. The next ingest finishes the move, loads nothing again,
    and leaves the archive holding the file byte for byte.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system (tmpfs at /dev/shm) for a move that is a copy")
    archive = Path(tempfile.mkdtemp(prefix="ecom-ingest-archive-", dir=shm))
    landing = tmp_path / "landing"
    frame = generate_events(400_000, rng=np.random.default_rng(7), invalid_rate=0.0)
    write_drop(frame, landing, "big.csv")
    original = (landing / "big.csv").read_bytes()
    env = _cli_env(tmp_path, landing, database_url, db_schema, ECOM_INGEST_ARCHIVE_DIR=str(archive))
    _, hard = psutil.Process().rlimit(psutil.RLIMIT_FSIZE)
    try:
        first = subprocess.Popen([sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Set from here (no preexec_fn in a process with threads), long before the run starts
        # its JVM, which, and whose Python workers, inherit it.
        psutil.Process(first.pid).rlimit(psutil.RLIMIT_FSIZE, (len(original) // 2, hard))
        deadline = time.monotonic() + 240
        copying = lambda: any(0 < p.stat().st_size < len(original) for p in archive.glob("*/big.csv"))  # noqa: E731
        while time.monotonic() < deadline and first.poll() is None and not copying():
            time.sleep(0.01)
        assert copying(), "the run never started to archive the drop"
        kill_tree(first)
        assert _files_committed(db) == 1 and (landing / "big.csv").exists()  # committed, not yet moved

        second = subprocess.run([sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"],
                                env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        assert not (landing / "big.csv").exists()
        (archived,) = archive.glob("*/big.csv")
        assert archived.read_bytes() == original
        assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == len(frame)
        assert "0 loaded" in second.stdout or "rows: 0 in" in second.stdout  # nothing loaded twice
        assert_accounting(db)
    finally:
        shutil.rmtree(archive, ignore_errors=True)


@pytest.mark.parametrize("drops", [20, 200], ids=["before_spark", "on_the_executors"])
def test_sigkill_mid_group_of_small_files_commits_none_of_them_then_restart_loads_each_once(
        tmp_path, database_url, db_schema, db, drops):
    """Small drops share one transaction: a kill -9 before its commit leaves none of them
    committed (no file half-recorded), and the next run loads each of them once. Twenty
    drops are loaded before Spark starts (the run's waiting trickle), two hundred by a
    micro-batch on the executors."""
    landing = tmp_path / "landing"
    valid_ids = _drops(landing, "small", drops, rows=20, invalid_rate=0.2, seed=5)
    env = _cli_env(tmp_path, landing, database_url, db_schema)
    locker = psycopg.connect(database_url)
    locker.execute(f'SET search_path TO "{db_schema}"')
    # The group's valid rows are in its open transaction when its rejected rows wait here.
    locker.execute("LOCK TABLE rejected_events IN ACCESS EXCLUSIVE MODE")
    first = subprocess.Popen([sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and first.poll() is None and not waiting_on_lock(db, db_schema, "rejected_events"):
            time.sleep(0.02)
        assert first.poll() is None, "the run finished before it could be killed"
        assert copy_in_flight(db, db_schema) or waiting_on_lock(db, db_schema, "rejected_events")
        kill_tree(first)
    finally:
        locker.close()
    assert _files_committed(db) == 0
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 0

    second = subprocess.run([sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    loaded = [r[0] for r in db.execute("SELECT event_id::text FROM user_events")]
    assert len(loaded) == len(set(loaded)) == len(valid_ids)
    assert set(loaded) == valid_ids
    assert _files_committed(db) == drops
    # Loaded in a few transactions, not one per file.
    assert db.execute("SELECT count(DISTINCT xmin::text) FROM ingest_files").fetchone()[0] <= 10
    assert_accounting(db)
