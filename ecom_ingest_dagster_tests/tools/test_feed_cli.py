"""A second feed end to end through the CLI as a user runs it: its own directories, schema,
tables and ledger, beside user_events, each exactly once."""

from __future__ import annotations

import json

import psycopg

from ecom_ingest_dagster.feeds import shipped_feed
from ecom_ingest_dagster_tests.helpers import run_cli as run


def test_orders_and_user_events_each_ingest_into_their_own_tables_exactly_once(tmp_path, database_url, db_schema):
    home = tmp_path / "home"
    env = {"ECOM_INGEST_HOME": str(home), "ECOM_INGEST_DATABASE_URL": database_url, "ECOM_INGEST_DB_SCHEMA": db_schema}
    orders_schema = f"{db_schema}_orders"
    try:
        for args in (["generate", "--feed", "orders", "--batches", "3", "--events", "40", "--invalid-rate", "0.2", "--seed", "4"],
                     ["generate", "--feed", "orders", "--batches", "1", "--events", "30", "--gzip", "--seed", "5"],
                     ["generate", "--feed", "orders", "--batches", "1", "--events", "20", "--zstd", "--seed", "7"],
                     ["generate", "--batches", "1", "--events", "25", "--seed", "6"]):
            made = run(args, env, tmp_path)
            assert made.returncode == 0, made.stderr
        assert len(list((home / "orders" / "landing").iterdir())) == 5 and len(list((home / "landing").iterdir())) == 1
        # each feed's drops named after it (user_events' as always)
        assert all(p.name.startswith("orders_") for p in (home / "orders" / "landing").iterdir())
        assert all(p.name.startswith("events_") for p in (home / "landing").iterdir())

        for _ in range(2):  # the second time: nothing new, nothing twice
            for args in (["ingest", "--feed", "orders"], ["ingest"]):
                done = run(args, env, tmp_path)
                assert done.returncode == 0, done.stderr

        with psycopg.connect(database_url) as conn:
            files = conn.execute(f'SELECT count(*), sum(rows_total), sum(rows_loaded), sum(rows_rejected),'
                                 f' min(contract_version) FROM "{orders_schema}".ingest_files').fetchone()
            assert files[:2] == (5, 170) and files[2] + files[3] == 170 and 10 < files[3] < 50 and files[4] == 1
            loaded = conn.execute(f'SELECT count(*), count(DISTINCT order_id) FROM "{orders_schema}".orders').fetchone()
            assert loaded == (files[2], files[2])
            assert conn.execute(f'SELECT count(*) FROM "{orders_schema}".orders_rejected').fetchone()[0] == files[3]
            assert conn.execute(f'SELECT count(*) FROM "{db_schema}".user_events').fetchone()[0] > 0
            assert conn.execute(f'SELECT count(*) FROM "{db_schema}".ingest_files').fetchone()[0] == 1
        archived = sorted(p.name for p in (home / "orders" / "archive").rglob("*") if p.is_file())
        assert len(archived) == 5 and [sum(name.endswith(f".csv.{s}") for name in archived) for s in ("gz", "zst")] == [1, 1]

        status = run(["status", "--feed", "orders", "--json"], env, tmp_path)
        assert status.returncode == 0, status.stderr
        told = json.loads(status.stdout)
        assert told["schema"] == orders_schema and told["rows_rejected"] == files[3]
        assert set(told["reasons"]) <= set(shipped_feed("orders").reasons) and sum(told["reasons"].values()) >= files[3]

        # every feed in use at once; the shipped feeds never used are named, not given a schema
        every = run(["status", "--feed", "all", "--json"], env, tmp_path)
        assert every.returncode == 0, every.stderr
        told_all = json.loads(every.stdout)
        assert set(told_all["feeds"]) == {"user_events", "orders"} and told_all["feeds"]["orders"] == told
        assert told_all["feeds"]["user_events"]["rows_total"] == 25 and told_all["not_in_use"] == []
        assert run(["ingest", "--feed", "all"], env, tmp_path).returncode == 2

        # replay works on the feed's own quarantine
        replayed = run(["replay-rejected", "--feed", "orders", "--reason", "invalid_currency"], env, tmp_path)
        assert replayed.returncode in (0, 1) and "replayed" in replayed.stdout, replayed.stderr
        assert "unknown reason" not in replayed.stderr

        # the report of one feed in its own terms, and of every feed, each in a directory of its own
        report = run(["report", "--feed", "orders"], env, tmp_path)
        assert report.returncode == 0, report.stderr
        text = (home / "orders" / "reports" / "performance_report.md").read_text()
        assert f"-- Result: {files[2]:,}" in text and "FROM orders GROUP BY 1" in text and "`user_events`" not in text
        both = run(["report", "--feed", "all", "--out", str(tmp_path / "reports")], env, tmp_path)
        assert both.returncode == 0, both.stderr
        assert both.stdout.count("report: ") == 2
        assert "E-Commerce Events" in (tmp_path / "reports" / "user_events" / "performance_report.md").read_text()
        assert "Feed orders" in (tmp_path / "reports" / "orders" / "performance_report.md").read_text()
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{orders_schema}" CASCADE')


def test_a_contract_change_that_breaks_is_refused_before_any_file_is_touched(tmp_path, database_url, db_schema):
    home = tmp_path / "home"
    env = {"ECOM_INGEST_HOME": str(home), "ECOM_INGEST_DATABASE_URL": database_url, "ECOM_INGEST_DB_SCHEMA": db_schema}
    schema = f"{db_schema}_refunds"
    try:
        assert run(["feed", "new", "refunds"], env, tmp_path).returncode == 0
        contract = home / "feeds" / "refunds.yaml"
        assert run(["generate", "--feed", "refunds", "--batches", "1", "--events", "10"], env, tmp_path).returncode == 0
        assert run(["ingest", "--feed", "refunds"], env, tmp_path).returncode == 0

        # version 2 adds an optional column: the table follows
        text = contract.read_text().replace("version: 1", "version: 2")
        contract.write_text(text + "  - name: reference\n    type: text\n")
        assert run(["generate", "--feed", "refunds", "--batches", "1", "--events", "10"], env, tmp_path).returncode == 0
        done = run(["ingest", "--feed", "refunds"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        with psycopg.connect(database_url) as conn:
            versions = conn.execute(f'SELECT contract_version, count(*) FROM "{schema}".ingest_files GROUP BY 1 ORDER BY 1').fetchall()
            assert versions == [(1, 1), (2, 1)]
            # rows of the first drop have no reference; the second drop's have theirs
            by_version = dict(conn.execute(
                f'SELECT f.contract_version, count(r.reference) FROM "{schema}".refunds r'
                f' JOIN "{schema}".ingest_files f ON f.file_name = r.source_file GROUP BY 1').fetchall())
            assert by_version[1] == 0 and by_version[2] > 0

        # version 3 changes a type: refused, in one sentence, the drop left where it is
        contract.write_text(contract.read_text().replace("version: 2", "version: 3").replace("numeric(12,2)", "numeric(14,2)"))
        assert run(["generate", "--feed", "refunds", "--batches", "1", "--events", "10"], env, tmp_path).returncode == 0
        refused = run(["ingest", "--feed", "refunds"], env, tmp_path)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "column amount is numeric(12,2)" in refused.stderr and "load into a new table" in refused.stderr
        assert len(list((home / "refunds" / "landing").iterdir())) == 1
        # its status still shows what is loaded, and why nothing more is
        status = run(["status", "--feed", "refunds"], env, tmp_path)
        assert status.returncode == 0, status.stderr
        assert "files: 2 ingested" in status.stdout and "contract: " in status.stdout
        assert "column amount is numeric(12,2)" in status.stdout
        # every feed's report: the one that cannot be made is told, the others still made
        every = run(["report", "--feed", "all", "--out", str(tmp_path / "every")], env, tmp_path)
        assert every.returncode == 1 and "== user_events" in every.stdout
        assert "error: refunds: " in every.stderr and "column amount is numeric(12,2)" in every.stderr
        assert (tmp_path / "every" / "user_events").is_dir() and not (tmp_path / "every" / "refunds").exists()
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_feed_list_names_each_feed_and_fails_when_one_cannot_be_used(tmp_path):
    feeds = tmp_path / "feeds"
    env = {"ECOM_INGEST_HOME": str(tmp_path / "home"), "ECOM_INGEST_FEEDS_DIR": str(feeds)}
    assert run(["feed", "new", "refunds"], env, tmp_path).returncode == 0
    listed = run(["feed", "list"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.split(":")[0] for line in listed.stdout.splitlines()] == ["orders", "refunds", "user_events"]
    (feeds / "refunds.yaml").write_text((feeds / "refunds.yaml").read_text().replace("type: text", "type: txt", 1))
    broken = run(["feed", "list"], env, tmp_path)
    assert broken.returncode == 2  # the code location leaves it out and loads; a script learns it here
    assert "refunds: cannot be used: " in broken.stdout and "unknown type 'txt'" in broken.stdout
    assert "orders: version 1" in broken.stdout and "user_events: version 1" in broken.stdout
