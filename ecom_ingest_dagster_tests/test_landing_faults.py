"""What a real landing directory does to a file: unreadable, vanished, written non-atomically.

Each case ends with the file in the ledger with a reason, its lines (when they could be
read) kept as rejected rows, nothing half-loaded, and the accounting identity intact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import psycopg
import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.tools.generator import generate_events, write_drop
from ecom_ingest_dagster.pipeline.load import FileTask, LoadOptions, ingest_file

from .helpers import assert_accounting, copy_in_flight, csv_text, drop, ledger, row


def _load(db, db_schema, task: FileTask, tmp_path):
    return ingest_file(db, task, LoadOptions(schema=db_schema, stream_id="faults", batch_id=0, rejected_dir=tmp_path / "rejected"))


def test_a_file_that_vanished_before_it_was_read_is_recorded(db, db_schema, tmp_path):
    outcome = _load(db, db_schema, FileTask(str(tmp_path / "gone.csv"), 120), tmp_path)
    assert (outcome.status, outcome.reason, outcome.rows_total) == ("rejected", c.FILE_UNREADABLE, 0)
    entry = ledger(db)["gone.csv"]
    assert entry["status"] == "rejected" and entry["reason"] == c.FILE_UNREADABLE
    assert_accounting(db)


def test_a_file_longer_than_listed_is_quarantined_whole_with_every_line(db, db_schema, tmp_path):
    path = drop(tmp_path / "in", "growing.csv", csv_text([row(i) for i in range(5)]))
    listed = path.stat().st_size - 40  # Spark listed it mid-write: the rest came after
    outcome = _load(db, db_schema, FileTask(str(path), listed), tmp_path)
    assert (outcome.status, outcome.reason) == ("rejected", c.FILE_CHANGED)
    assert outcome.rows_total == outcome.rows_rejected == 5
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 0
    lines = [r[0] for r in db.execute("SELECT raw_line FROM rejected_events ORDER BY record_number")]
    assert len(lines) == 5 and lines[0].startswith(row(0)["event_id"])
    moved = tmp_path / "rejected" / "growing.csv"
    assert moved.exists() and not path.exists()
    assert "temporary name" in json.loads((tmp_path / "rejected" / "growing.csv.reason.json").read_text())["reason"]
    assert_accounting(db)


def test_a_file_appended_to_while_it_is_read_loads_nothing_and_keeps_every_line(db, db_schema, tmp_path, database_url):
    path = tmp_path / "in" / "slow_writer.csv"
    frame = generate_events(150_000, rng=np.random.default_rng(5))
    write_drop(frame, path.parent, path.name)
    task = FileTask(str(path), path.stat().st_size)
    tail = csv_text([row(900_000 + i) for i in range(3)]).split("\n", 1)[1]

    watcher = psycopg.connect(database_url, autocommit=True)

    def late_writer():  # a producer still writing: appends once the load has begun
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not copy_in_flight(watcher, db_schema):
            time.sleep(0.005)
        with open(path, "a") as handle:
            handle.write(tail)

    writer = threading.Thread(target=late_writer)
    writer.start()
    try:
        outcome = _load(db, db_schema, task, tmp_path)
    finally:
        writer.join()
        watcher.close()
    assert (outcome.status, outcome.reason) == ("rejected", c.FILE_CHANGED)
    assert outcome.rows_total == outcome.rows_rejected == 150_003  # what the file held when quarantined
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 0
    assert_accounting(db)


def _without_file_permission_bypass() -> list[str]:
    """A command prefix under which permission bits hold, even for root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all"]


def test_an_unreadable_drop_is_rejected_with_a_reason_and_the_others_load(tmp_path, database_url, db_schema, db):
    """Through the real pipeline (Spark, loader, PostgreSQL), as a user without read access."""
    landing = tmp_path / "landing"
    drop(landing, "good.csv", csv_text([row(1), row(2)]))
    locked = drop(landing, "locked.csv", csv_text([row(3)]))
    locked.chmod(0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")}
    env.update({
        "ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_LANDING_DIR": str(landing),
        "ECOM_INGEST_DATABASE_URL": database_url, "ECOM_INGEST_DB_SCHEMA": db_schema,
        "ECOM_INGEST_SPARK_MASTER": "local[1]",
    })
    result = subprocess.run(
        [*_without_file_permission_bypass(), sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = ledger(db)
    assert files["good.csv"]["status"] == "ingested" and files["good.csv"]["rows_loaded"] == 2
    assert files["locked.csv"]["status"] == "rejected" and files["locked.csv"]["reason"] == c.FILE_UNREADABLE
    # Moved aside with its reason, so the operator can fix it and drop it again.
    reason = json.loads((tmp_path / "home" / "rejected" / "locked.csv.reason.json").read_text())["reason"]
    assert "Permission denied" in reason
    assert_accounting(db)


def test_a_drop_replaced_under_an_ingested_name_is_reported_not_read_again(ingest, settings, db):
    landing = settings.landing_dir
    drop(landing, "orders.csv", csv_text([row(1), row(2)]))
    first = ingest()
    assert first.files_replaced == []
    time.sleep(0.01)
    drop(landing, "orders.csv", csv_text([row(1), row(2), row(3)]))  # same name, new content
    second = ingest()
    assert second.files_replaced == ["orders.csv"]
    assert second.totals["total_files"] == 0  # a name is ingested once
    loaded = {r[0] for r in db.execute("SELECT event_id::text FROM user_events")}
    assert loaded == {row(1)["event_id"], row(2)["event_id"]}
    assert_accounting(db)


def test_files_in_subdirectories_are_not_drops(ingest, settings, db):
    # Spark lists subdirectories too; the contract's drops are the directory's own files
    # (the sensor sees only those, and the ledger keys by base name).
    drop(settings.landing_dir, "top.csv", csv_text([row(1)]))
    drop(settings.landing_dir / "archive", "top.csv", csv_text([row(2)]))
    drop(settings.landing_dir / "archive", "old.csv", csv_text([row(3)]))
    summary = ingest()
    assert summary.totals["total_files"] == 1
    assert set(ledger(db)) == {"top.csv"}
    assert [r[0] for r in db.execute("SELECT event_id::text FROM user_events")] == [row(1)["event_id"]]
    assert (settings.landing_dir / "archive" / "old.csv").exists()
