"""The streaming query end to end: real Spark, real PostgreSQL, real files."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time

import numpy as np
import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.tools.generator import generate_events, write_drop
from ecom_ingest_dagster.pipeline import query as query_module, run_loop
from ecom_ingest_dagster.pipeline.query import IngestQuery

from ecom_ingest_dagster_tests.helpers import assert_accounting, csv_text, drop, ledger, row, wait_for


@pytest.mark.parametrize("loaded_in", ["driver", "executors"])
def test_mixed_landing_directory_end_to_end(ingest, settings, db, tmp_path, loaded_in):
    # The same drops through both ways a batch is loaded: by the driver (a small batch, no
    # Spark job) and by the executors' tasks (0 sends every batch there).
    settings = settings.with_overrides(driver_batch_max_bytes=0) if loaded_in == "executors" else settings
    landing = settings.landing_dir
    frame = generate_events(300, rng=np.random.default_rng(3), invalid_rate=0.1)
    write_drop(frame.iloc[:150], landing, "events_0001.csv")
    write_drop(frame.iloc[150:], landing, "events_0002.csv")
    # Cross-file duplicates: the first 20 rows of the first file again, columns reordered.
    dup_columns = list(reversed(c.COLUMNS))
    drop(landing, "events_0003.csv", csv_text(frame.iloc[:20].to_dict("records"), columns=dup_columns))
    drop(landing, "latin1.csv", "event_id,price\n".encode() + b"\xff\xfe,1\n")
    for ignored in (".hidden.csv", "_partial.csv", "notes.txt"):
        drop(landing, ignored, csv_text([row(99)]))

    summary = ingest(settings)

    assert {b["loaded_in"] for b in summary.batches} == {loaded_in}
    files = ledger(db)
    assert set(files) == {"events_0001.csv", "events_0002.csv", "events_0003.csv", "latin1.csv"}
    expected_invalid = int((frame["expected_reason"] != "").sum())
    first_20_valid = int((frame.iloc[:20]["expected_reason"] == "").sum())
    loaded = db.execute("SELECT count(*) FROM user_events").fetchone()[0]
    assert loaded == 300 - expected_invalid
    # Files of one batch may load concurrently: which copy wins is not fixed, the count is.
    assert sum(f["rows_duplicate"] for f in files.values()) == first_20_valid
    assert files["latin1.csv"]["status"] == "rejected"
    assert (settings.rejected_dir / "latin1.csv").exists()
    # Each file records the version of the contract file it was held to, rejected or not.
    versions = db.execute("SELECT DISTINCT contract_version FROM ingest_files").fetchall()
    assert versions == [(c.FEED.version,)]
    for ignored in (".hidden.csv", "_partial.csv", "notes.txt"):
        assert (landing / ignored).exists()
    # Every valid generated id is loaded, once.
    ids = {r[0] for r in db.execute("SELECT event_id::text FROM user_events")}
    assert ids == set(frame.loc[frame["expected_reason"] == "", "event_id"])
    assert_accounting(db)

    totals = summary.totals
    assert totals["total_records"] == 300 + 20 + 1
    assert totals["loaded_records"] == loaded
    reasons = db.execute("SELECT reason, count(*) FROM (SELECT unnest(reasons) reason FROM rejected_events) r GROUP BY 1")
    assert totals["reason_counts"] == dict(reasons.fetchall())

    logs = settings.logs_dir
    batches = [json.loads(line) for line in (logs / "performance_metrics.json").read_text().splitlines()]
    assert sum(b["total_records"] for b in batches) == 321
    for key in ("validation_time_ms", "db_write_time_ms", "read_parse_time_ms", "dataframe_creation_time_ms",
                "total_processing_time_ms", "records_per_second", "validation_success_rate"):
        assert key in batches[0]
    summary_file = json.loads((logs / "performance_summary.json").read_text())
    assert summary_file["total_records"] == 321 and summary_file["avg_records_per_second"] > 0
    error_lines = (logs / "validation_errors.log").read_text().splitlines()
    assert len(error_lines) == totals["rejected_records"]
    assert db.execute("SELECT count(*) FROM ingest_batches").fetchone()[0] == len(batches)


def test_rerun_processes_only_new_files(ingest, settings, db):
    drop(settings.landing_dir, "a.csv", csv_text([row(1), row(2)]))
    first = ingest()
    assert first.totals["loaded_records"] == 2
    again = ingest()
    assert again.totals["total_batches"] == 0
    drop(settings.landing_dir, "b.csv", csv_text([row(3), row(1)]))
    third = ingest()
    assert (third.totals["loaded_records"], third.totals["duplicate_records"]) == (1, 1)
    assert set(ledger(db)) == {"a.csv", "b.csv"}
    assert_accounting(db)


def test_replayed_batch_commits_nothing_twice(ingest, settings, db, spark):
    drop(settings.landing_dir, "a.csv", csv_text([row(1), row(2, price="-1")]))
    ingest()
    before = db.execute("SELECT count(*), (SELECT count(*) FROM rejected_events) FROM user_events").fetchone()
    query = IngestQuery(spark, settings, settings.database_url)
    # Spark replays a batch whose commit it did not record: remove the record.
    commits = query.checkpoint / "commits"
    for entry in commits.iterdir():
        entry.unlink()
    replay = query.run_available_now()
    assert replay.totals["total_batches"] == 0  # the batch ledger knew it
    after = db.execute("SELECT count(*), (SELECT count(*) FROM rejected_events) FROM user_events").fetchone()
    assert after == before
    assert db.execute("SELECT count(*) FROM ingest_batches").fetchone()[0] == 1

    # A lost checkpoint, and the drop copied back from the archive into a landing directory
    # that keeps its drops: a new stream sees the file again; the file ledger skips it.
    (archived,) = settings.archive_dir.glob("*/a.csv")
    shutil.copy2(archived, settings.landing_dir / "a.csv")
    shutil.rmtree(query.checkpoint)
    fresh = IngestQuery(spark, settings.with_overrides(after_commit="keep"), settings.database_url).run_available_now()
    assert fresh.files_skipped == 1 and fresh.totals["total_records"] == 0
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == before[0]
    assert_accounting(db)


@pytest.mark.parametrize("loaded_in", ["driver", "executors"])
def test_compressed_drops_are_listed_loaded_and_archived_as_they_came(ingest, settings, db, loaded_in):
    settings = settings.with_overrides(driver_batch_max_bytes=0) if loaded_in == "executors" else settings
    frame = generate_events(120, rng=np.random.default_rng(12), invalid_rate=0.1)
    write_drop(frame.iloc[:60], settings.landing_dir, "packed_1.csv.gz")
    write_drop(frame.iloc[60:], settings.landing_dir, "packed_2.csv.zst")
    drop(settings.landing_dir, "broken.csv.gz", b"\x1f\x8b but not really gzip")
    drop(settings.landing_dir, "broken.csv.zst", b"\x28\xb5\x2f\xfd but not really zstd")

    summary = ingest(settings)

    assert {b["loaded_in"] for b in summary.batches} == {loaded_in}
    files = ledger(db)
    assert set(files) == {"packed_1.csv.gz", "packed_2.csv.zst", "broken.csv.gz", "broken.csv.zst"}
    for broken in ("broken.csv.gz", "broken.csv.zst"):
        assert files[broken]["status"] == "rejected" and files[broken]["reason"] == c.FILE_UNPARSEABLE
        assert (settings.rejected_dir / broken).exists()
    ids = {r[0] for r in db.execute("SELECT event_id::text FROM user_events")}
    assert ids == set(frame.loc[frame["expected_reason"] == "", "event_id"])
    archived = sorted(p.name for p in settings.archive_dir.rglob("*") if p.is_file())
    assert archived == ["packed_1.csv.gz", "packed_2.csv.zst"]  # byte for byte, still compressed
    assert_accounting(db)


def test_max_files_per_trigger_bounds_batches(ingest, settings, db):
    for i in range(3):
        drop(settings.landing_dir, f"f{i}.csv", csv_text([row(10 + i)]))
    summary = ingest(settings.with_overrides(max_files_per_trigger=1))
    assert [b["files"] for b in summary.batches] == [1, 1, 1]
    assert sorted(r["batch_id"] for r in ledger(db).values()) == [0, 1, 2]


def test_continuous_mode_picks_up_new_drops_and_stops_between_batches(spark, settings, db):
    query = IngestQuery(spark, settings.with_overrides(max_files_per_trigger=1), settings.database_url)
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=query.run_continuous(trigger_seconds=0.5, stop_event=stop)))
    thread.start()
    try:
        for i in range(3):
            drop(settings.landing_dir, f"live{i}.csv", csv_text([row(100 + i)]))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if db.execute("SELECT count(*) FROM user_events").fetchone()[0] == i + 1:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"drop {i} was not loaded in time")
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive()
    summary = result["summary"]
    assert summary.totals["loaded_records"] == 3
    assert all(b["mode"] == "continuous" for b in summary.batches)
    assert_accounting(db)


def test_a_run_starts_on_a_fresh_checkpoint_and_a_long_query_is_replaced_by_a_fresh_one(
        spark, settings, db, monkeypatch, caplog):
    # What Spark's file source remembers grows with every file it lists; the file ledger
    # keeps each file once, so a query that has taken its share gives way to a fresh one.
    monkeypatch.setattr(query_module, "QUERY_MAX_FILES", 2)
    caplog.set_level(logging.INFO, logger=run_loop.__name__)
    drop(settings.landing_dir, "before.csv", csv_text([row(200)]))
    IngestQuery(spark, settings, settings.database_url).run_available_now()
    query = IngestQuery(spark, settings.with_overrides(max_files_per_trigger=1), settings.database_url)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: query.run_continuous(trigger_seconds=0.5, stop_event=stop))
    thread.start()

    def wait_until(done, what: str) -> None:
        def running_and(done=done):
            assert thread.is_alive(), f"the run ended before {what}"
            return done()
        wait_for(running_and, 120, what, interval=0.2)

    def files() -> int:
        return db.execute("SELECT count(*) FROM ingest_files").fetchone()[0]

    try:
        # The query takes its share (two files); idle after them, it is between batches for
        # as long as nothing lands, so it gives way however slow the machine is.
        for i in range(2):
            drop(settings.landing_dir, f"long{i}.csv", csv_text([row(210 + i), row(200)]))  # row 200: loaded already
        wait_until(lambda: files() == 3 and "a fresh one takes over" in caplog.text, "the query giving way")
        for i in range(2, 5):
            drop(settings.landing_dir, f"long{i}.csv", csv_text([row(210 + i), row(200)]))
        wait_until(lambda: files() == 6, "the fresh query's files")
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive()
    streams = [r[0] for r in db.execute("SELECT stream_id FROM ingest_batches ORDER BY committed_at")]
    # the first run's stream, then this run's on a fresh checkpoint, then the fresh query's
    assert len(set(streams)) >= 3 and streams[0] not in streams[1:], streams
    assert db.execute("SELECT count(*), count(DISTINCT event_id) FROM user_events").fetchone() == (6, 6)
    assert db.execute("SELECT sum(rows_duplicate) FROM ingest_files").fetchone()[0] == 5
    assert_accounting(db)


def test_a_second_run_on_the_same_checkpoint_is_refused_clearly(spark, settings, db, database_url):
    import psycopg

    from ecom_ingest_dagster.pipeline.checkpoint import IngestBusy
    from ecom_ingest_dagster.pipeline.query import IngestQuery

    drop(settings.landing_dir, "a.csv", csv_text([row(1)]))
    query = IngestQuery(spark, settings, settings.database_url)
    # Another process's run holds the checkpoint (its session lock).
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"ecom_ingest/checkpoint/{query.checkpoint.name}",))
        with pytest.raises(IngestBusy, match="another ingest or stream run"):
            query.run_available_now()
        assert db.execute("SELECT count(*) FROM ingest_files").fetchone()[0] == 0
    # Once that run is over, the same query proceeds (its session's end may lag its hang-up:
    # the lock's grace covers that, which this line once lost on a busy machine).
    assert IngestQuery(spark, settings, settings.database_url).run_available_now().totals["total_files"] == 1


def test_a_run_waits_a_moment_for_the_lock_of_a_run_that_is_ending(settings, database_url):
    import psycopg

    from ecom_ingest_dagster.pipeline.checkpoint import checkpoint_path, lock_key, try_lock

    checkpoint = checkpoint_path(settings, database_url)
    with psycopg.connect(database_url, autocommit=True) as mine, psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock_key(checkpoint),))
        assert not try_lock(mine, checkpoint, grace_s=0)  # held: one try, refused
        assert not try_lock(mine, checkpoint, grace_s=0.3)  # held throughout the grace: refused
        started = time.monotonic()
        ending = threading.Timer(0.5, other.close)
        ending.start()
        assert try_lock(mine, checkpoint)
        assert time.monotonic() - started >= 0.4  # it waited for the other run's end, and then took it
        ending.join()


def test_committed_drops_leave_the_landing_directory_byte_for_byte(ingest, settings, db):
    contents = {
        "good.csv": csv_text([row(1), row(2, price="-1")]).encode(),
        "latin1.csv": "event_id,price\n".encode() + b"\xff\xfe,1\n",  # rejected whole
        "empty.csv": b"",  # zero-byte: a valid drop with zero rows
        "blank.csv": b"\n\n",
    }
    for name, content in contents.items():
        drop(settings.landing_dir, name, content)
    summary = ingest()
    assert summary.files_empty == 1
    # Nothing ingested or rejected is left where drops land.
    assert sorted(p.name for p in settings.landing_dir.iterdir()) == []
    archived = {p.name: p.read_bytes() for p in settings.archive_dir.glob("*/*.csv")}
    assert archived == {name: contents[name] for name in ("good.csv", "empty.csv", "blank.csv")}
    assert (settings.rejected_dir / "latin1.csv").read_bytes() == contents["latin1.csv"]
    entries = ledger(db)
    assert entries["empty.csv"]["status"] == "ingested" and entries["empty.csv"]["rows_total"] == 0
    assert entries["blank.csv"]["rows_total"] == 0 and entries["latin1.csv"]["status"] == "rejected"
    assert_accounting(db)


def test_a_move_that_failed_after_commit_is_finished_by_the_next_run_without_a_second_load(ingest, settings, db):
    """The state a kill between a file's commit and its move leaves: committed, still landed.

    The move is made to fail for real (the archive path is a file, so its day folder cannot
    be created); the run still succeeds, the next one moves the file and loads nothing.
    """
    drop(settings.landing_dir, "a.csv", csv_text([row(1), row(2)]))
    settings.archive_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.archive_dir.write_text("in the way")
    first = ingest()
    assert first.totals["loaded_records"] == 2
    assert (settings.landing_dir / "a.csv").exists()  # committed, not moved
    settings.archive_dir.unlink()
    second = ingest()
    assert second.totals["total_records"] == 0 and second.files_replaced == []
    assert not (settings.landing_dir / "a.csv").exists()
    assert [p.name for p in settings.archive_dir.glob("*/*.csv")] == ["a.csv"]
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 2
    assert_accounting(db)


def test_keep_leaves_drops_and_delete_removes_them(ingest, settings, db):
    drop(settings.landing_dir, "kept.csv", csv_text([row(1)]))
    ingest(settings.with_overrides(after_commit="keep"))
    assert (settings.landing_dir / "kept.csv").exists()
    drop(settings.landing_dir, "deleted.csv", csv_text([row(2)]))
    ingest(settings.with_overrides(after_commit="delete"))
    assert sorted(p.name for p in settings.landing_dir.iterdir()) == []  # the kept one too: its outcome is committed
    assert not settings.archive_dir.exists()
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 2


def test_file_tasks_are_the_landing_directory_s_own_files_once_each(tmp_path):
    from ecom_ingest_dagster.pipeline.batch_plan import file_tasks

    landing = str(tmp_path / "landing")
    listed = [
        (f"file:{landing}/a b.csv", 10, 1_796_000_000_000_000),
        (f"file:{landing}/a b.csv", 10, 1_796_000_000_000_000),  # Spark listed it twice
        (f"file:{landing}/sub/c.csv", 5, None),  # a subdirectory's file is not a drop
        (f"{landing}/%2E%2E%2Fd.csv", 7, None),  # as listed, never URL-decoded
    ]
    tasks = file_tasks(listed, landing)
    assert [(t.path, t.size) for t in tasks] == [(f"{landing}/a b.csv", 10), (f"{landing}/%2E%2E%2Fd.csv", 7)]
    assert tasks[0].landed_at.year == 2026 and tasks[1].landed_at is None
