"""The ``ecom-ingest`` command as a user runs it: a real process, real exit codes."""

from __future__ import annotations

import pytest

from ecom_ingest_dagster_tests.helpers import csv_text, drop, row
from ecom_ingest_dagster_tests.helpers import run_cli as run


def _ingest_into_a_closed_port(tmp_path, retry_seconds: str):
    (tmp_path / "landing").mkdir()
    result = run(
        ["ingest", "--landing", str(tmp_path / "landing")],
        {"ECOM_INGEST_DATABASE_URL": "postgresql://ingest:s3cret@127.0.0.1:1/nowhere",
         "ECOM_INGEST_DB_RETRY_SECONDS": retry_seconds},
        tmp_path,
    )
    assert result.returncode == 1
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()


def test_unreachable_database_is_one_clear_line(tmp_path):
    lines = _ingest_into_a_closed_port(tmp_path, "0")
    assert len(lines) == 1 and lines[0].startswith("ecom-ingest: error: cannot connect to PostgreSQL")


def test_a_run_waits_for_the_database_within_its_retry_window_and_says_so(tmp_path):
    lines = _ingest_into_a_closed_port(tmp_path, "2")
    assert any("retrying in" in line for line in lines[:-1])  # progress while it waits
    assert lines[-1].startswith("ecom-ingest: error: cannot connect to PostgreSQL")
    assert "ECOM_INGEST_DB_RETRY_SECONDS" in lines[-1]


@pytest.mark.parametrize(
    "env, args, message",
    [
        ({"ECOM_INGEST_DB_SCHEMA": "drop table"}, ["ingest"], "ECOM_INGEST_DB_SCHEMA"),
        ({"ECOM_INGEST_DATABASE_URL": "mysql://x"}, ["ingest"], "ECOM_INGEST_DATABASE_URL"),
        ({"ECOM_INGEST_MAX_FILES_PER_TRIGGER": "-1"}, ["ingest"], "ECOM_INGEST_MAX_FILES_PER_TRIGGER"),
        ({}, ["ingest", "--landing", "/nonexistent/landing"], "does not exist"),
    ],
)
def test_bad_configuration_exits_2_with_the_culprit_named(tmp_path, env, args, message):
    result = run(args, {"ECOM_INGEST_HOME": str(tmp_path / "home"), **env}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_settings_says_what_an_unset_database_url_means(tmp_path):
    result = run(["settings"], {"ECOM_INGEST_HOME": str(tmp_path / "home")}, tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("ECOM_INGEST_DATABASE_URL="))
    assert "embedded PostgreSQL" in line and str(tmp_path / "home" / "pgdata") in line


@pytest.mark.parametrize(
    "args", [["generate", "--invalid-rate", "1.5"], ["generate", "--batches", "0"], ["stream", "--trigger-seconds", "-1"]]
)
def test_bad_arguments_are_usage_errors(tmp_path, args):
    result = run(args, {"ECOM_INGEST_HOME": str(tmp_path / "home")}, tmp_path)
    assert result.returncode == 2 and "error" in result.stderr


def test_generate_ingest_status_round_trip(tmp_path, database_url, db_schema):
    env = {
        "ECOM_INGEST_HOME": str(tmp_path / "home"),
        "ECOM_INGEST_DATABASE_URL": database_url,
        "ECOM_INGEST_DB_SCHEMA": db_schema,
        "ECOM_INGEST_SPARK_MASTER": "local[2]",
    }
    landing = tmp_path / "home" / "landing"
    generated = run(["generate", "--events", "50", "--batches", "3", "--invalid-rate", "0.1", "--seed", "5"], env, tmp_path)
    assert generated.returncode == 0, generated.stderr
    assert "generated 3 file(s), 150 events (15 invalid)" in generated.stdout
    # its progress, not to a terminal here: a line per file, no bar redrawn with carriage returns
    assert "\r" not in generated.stderr and generated.stderr.count("drop ") == 3, generated.stderr
    assert "drop 3/3: events_" in generated.stderr and "(50 rows, " in generated.stderr
    assert len(list(landing.glob("events_*.csv"))) == 3

    first = run(["ingest"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "rows: 150 in = 135 loaded + 0 duplicate + 15 rejected" in first.stdout
    assert "batch 0:" in first.stderr  # progress per micro-batch

    drop(landing, "late.csv", csv_text([row(1), row(2, price="-2")]))
    drop(landing, "damaged.csv.gz", b"not a gzip stream")  # rejected whole, with no row to carry its reason
    second = run(["ingest"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "rows: 2 in = 1 loaded + 0 duplicate + 1 rejected" in second.stdout
    assert "files rejected whole: file_unparseable_csv=1 (each file's reason: " in second.stdout

    status = run(["status"], env, tmp_path)
    assert status.returncode == 0, status.stderr
    assert "files: 4 ingested, 1 rejected whole\n  file_unparseable_csv: 1 file(s)\n" in status.stdout
    assert "rows: 152 in = 136 loaded + 0 duplicate + 16 rejected" in status.stdout
    assert "  rejected rows by reason (a row may have several" in status.stdout and "    negative_price: " in status.stdout


def test_a_busy_landing_directory_is_refused_before_spark_starts(tmp_path, database_url, db_schema):
    import psycopg

    from ecom_ingest_dagster.pipeline.checkpoint import checkpoint_path, lock_key
    from ecom_ingest_dagster.settings import Settings

    env = {"ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_DATABASE_URL": database_url,
           "ECOM_INGEST_DB_SCHEMA": db_schema}
    settings = Settings(home=tmp_path / "home", database_url=database_url, db_schema=db_schema)
    drop(settings.landing_dir, "a.csv", csv_text([row(1)]))
    # Another run holds the landing directory's checkpoint (its session lock).
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                      (lock_key(checkpoint_path(settings, database_url)),))
        busy = run(["ingest"], env, tmp_path)
    assert busy.returncode == 1
    assert "another ingest or stream run is processing" in busy.stderr
    assert "spark session ready" not in busy.stderr  # no JVM was started to be refused
    assert not settings.spark_log.exists()


@pytest.mark.parametrize("when", ["starting", "loading"])
def test_sigterm_stops_ingest_cleanly_with_exit_130(tmp_path, database_url, db_schema, db, when):
    import signal
    import time

    import numpy as np
    import psutil

    from ecom_ingest_dagster.tools.generator import generate_events, write_drop

    from ecom_ingest_dagster_tests.helpers import assert_accounting, files_held_at_commit, start_cli

    landing = tmp_path / "landing"
    for i in range(2):
        write_drop(generate_events(80_000, rng=np.random.default_rng(i)), landing, f"big_{i}.csv")
    # While loading: the drops' rows wait in their open transactions until the run has
    # ended, so the stop lands mid-load however slowly the signal is noticed.
    with files_held_at_commit(database_url, db_schema) as held:
        process = start_cli(
            ["ingest", "--landing", str(landing)],
            {"ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_DATABASE_URL": database_url,
             "ECOM_INGEST_DB_SCHEMA": db_schema, "ECOM_INGEST_SPARK_MASTER": "local[2]"},
            tmp_path,
        )

        def moment_reached() -> bool:
            if when == "starting":  # the Spark JVM is being launched: main() is running
                return bool(psutil.Process(process.pid).children())
            return held()

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not moment_reached():
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("ecom-ingest: error: interrupted")
    assert db.execute("SELECT count(*) FROM ingest_files").fetchone()[0] < 2  # it really stopped early
    assert_accounting(db)  # whatever committed is whole


def test_version_and_clear_messages_for_bad_values(tmp_path):
    version = run(["--version"], {}, tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("ecom-ingest ")
    word = run(["stream", "--trigger-seconds", "abc"], {"ECOM_INGEST_HOME": str(tmp_path / "home")}, tmp_path)
    assert word.returncode == 2 and "'abc' is not a number" in word.stderr and "_nonnegative_float" not in word.stderr
    window = run(["report", "--since", "2h", "--until", "3h"], {"ECOM_INGEST_HOME": str(tmp_path / "home")}, tmp_path)
    assert window.returncode == 2 and "must be before --until" in window.stderr
    assert not (tmp_path / "home" / "reports").exists()  # nothing overwritten with an empty report
    path = run(["status", "--feed", "../x"], {"ECOM_INGEST_HOME": str(tmp_path / "home")}, tmp_path)
    assert path.returncode == 2 and "--feed '../x': a feed's name is" in path.stderr and "ECOM_INGEST_FEED" not in path.stderr


def test_a_regular_file_as_landing_directory_is_named_as_such(tmp_path):
    (tmp_path / "landing.csv").write_text("not a directory\n")
    result = run(["ingest", "--landing", str(tmp_path / "landing.csv")], {"ECOM_INGEST_HOME": str(tmp_path / "home")}, tmp_path)
    assert result.returncode == 2 and "is not a directory" in result.stderr


def test_status_json_and_replay_of_nothing_exits_non_zero(tmp_path, database_url, db_schema, db):
    import json

    env = {"ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_DATABASE_URL": database_url,
           "ECOM_INGEST_DB_SCHEMA": db_schema}
    status = run(["status", "--json"], env, tmp_path)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["schema"] == db_schema and shown["files_ingested"] == 0 and shown["reasons"] == {}
    replay = run(["replay-rejected", "--file", "nonexistent.csv"], env, tmp_path)
    assert replay.returncode == 1 and "no quarantined rows match --file nonexistent.csv" in replay.stderr


def test_psql_opens_the_feeds_database_in_its_schema(tmp_path, database_url, db_schema, db):
    # What a contract that no longer fits its table asks of a user ("drop it from the table
    # yourself"), possible on the embedded server too: its tables by their bare names.
    db.execute("INSERT INTO ingest_files (file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected,"
               " stream_id, batch_id, started_at) VALUES ('seen.csv', 'ingested', 0, 0, 0, 0, 's', 0, now())")
    env = {"ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_DATABASE_URL": database_url,
           "ECOM_INGEST_DB_SCHEMA": db_schema}
    shown = run(["psql", "--", "-tAc", "SELECT file_name FROM ingest_files; SELECT count(*) FROM user_events"],
                env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["seen.csv", "0"]
    failed = run(["psql", "--", "-v", "ON_ERROR_STOP=1", "-c", "SELECT * FROM no_such_table"], env, tmp_path)
    assert failed.returncode != 0 and "no_such_table" in failed.stderr  # psql's own exit code and message
