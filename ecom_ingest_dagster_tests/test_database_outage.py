"""PostgreSQL goes away mid-run: a restart is ridden out, a long outage fails clearly,
and after recovery every valid id is loaded exactly once.

Each test gets a private PostgreSQL server (pgserver's binaries, a cluster in tmp_path)
that it can stop and start without disturbing the rest of the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from .helpers import assert_accounting, kill_tree
from ecom_ingest_dagster.tools.bench.private_postgres import PrivatePostgres


@pytest.fixture
def private_postgres():
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot control pgserver's server")
    # Not under pytest's base temp: another pytest session makes that 0700, and the
    # server's own user must be able to reach its data directory.
    pgdata = Path(tempfile.mkdtemp(prefix="ecom-ingest-outage-")) / "pgdata"
    server = PrivatePostgres(pgdata)
    yield server
    try:
        server.stop()
    except subprocess.CalledProcessError:
        pass  # already down
    shutil.rmtree(pgdata.parent, ignore_errors=True)


def _drops(landing: Path, files: int, rows: int) -> set[str]:
    rng = np.random.default_rng(2026)
    frames = [generate_events(rows, rng=rng, invalid_rate=0.02) for _ in range(files)]
    for i, frame in enumerate(frames):
        write_drop(frame, landing, f"outage_{i}.csv")
    return {eid for f in frames for eid in f.loc[f["expected_reason"] == "", "event_id"]}


def _ingest(tmp_path: Path, url: str, retry_seconds: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")}
    env.update({
        "ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_LANDING_DIR": str(tmp_path / "landing"),
        "ECOM_INGEST_DATABASE_URL": url, "ECOM_INGEST_SPARK_MASTER": "local[2]",
        "ECOM_INGEST_MAX_FILES_PER_TRIGGER": "1", "ECOM_INGEST_DB_RETRY_SECONDS": str(retry_seconds),
    })
    return subprocess.Popen(
        [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_first_commit(server: PrivatePostgres, run: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and run.poll() is None:
        if (server.count("SELECT count(*) FROM to_regclass('public.ingest_files') t WHERE t IS NOT NULL") or 0) and (
            server.count("SELECT count(*) FROM ingest_files") or 0
        ) >= 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"no file committed before the outage: {run.communicate(timeout=60)[1][-2000:]}")


def _assert_exactly_once(server: PrivatePostgres, valid_ids: set[str], files: int) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        loaded = [r[0] for r in conn.execute("SELECT event_id::text FROM user_events")]
        assert len(loaded) == len(set(loaded))
        assert set(loaded) == valid_ids
        assert conn.execute("SELECT count(*) FROM ingest_files").fetchone()[0] == files
        assert_accounting(conn)


def test_a_postgres_restart_mid_run_is_ridden_out(tmp_path, private_postgres):
    valid_ids = _drops(tmp_path / "landing", files=4, rows=40_000)
    run = _ingest(tmp_path, private_postgres.url, retry_seconds=60)
    _wait_for_first_commit(private_postgres, run)
    private_postgres.stop()
    time.sleep(2)  # long enough for the run to notice and back off
    private_postgres.start()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    assert "PostgreSQL" in err and "retrying" in err  # the user saw what happened
    _assert_exactly_once(private_postgres, valid_ids, files=4)


def test_an_outage_longer_than_the_retry_window_fails_clearly_and_a_rerun_completes(tmp_path, private_postgres):
    valid_ids = _drops(tmp_path / "landing", files=4, rows=40_000)
    run = _ingest(tmp_path, private_postgres.url, retry_seconds=3)
    _wait_for_first_commit(private_postgres, run)
    private_postgres.stop()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1
    last = err.strip().splitlines()[-1]
    # One line that names the database and the cause, no Java stack as the last word.
    assert last.startswith("ecom-ingest: error:") and "PostgreSQL" in last, err[-3000:]
    assert "ECOM_INGEST_DB_RETRY_SECONDS" in last  # and what to change
    assert "Exception" not in last and "Traceback" not in last
    assert private_postgres.url.split("?")[0] in last or "postgresql://" in last

    private_postgres.start()
    rerun = _ingest(tmp_path, private_postgres.url, retry_seconds=3)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    _assert_exactly_once(private_postgres, valid_ids, files=4)


def test_a_run_started_while_postgres_is_down_waits_for_it(tmp_path, private_postgres):
    valid_ids = _drops(tmp_path / "landing", files=2, rows=10_000)
    private_postgres.stop()
    run = _ingest(tmp_path, private_postgres.url, retry_seconds=60)
    err_lines: list[str] = []

    def read_stderr() -> None:
        for line in run.stderr:
            err_lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # The server comes back only once the run has found it down (not before its first try).
        deadline = time.monotonic() + 120
        while not any("PostgreSQL unavailable" in line for line in err_lines):
            assert time.monotonic() < deadline and run.poll() is None, "".join(err_lines)[-3000:]
            time.sleep(0.1)
        private_postgres.start()
        run.wait(300)
    finally:
        kill_tree(run)  # a no-op once it has ended
    reader.join(30)
    run.stdout.close()
    assert run.returncode == 0, "".join(err_lines)[-3000:]
    _assert_exactly_once(private_postgres, valid_ids, files=2)
