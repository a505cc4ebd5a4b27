"""The per-file loader against a real PostgreSQL: exactly-once, duplicates, rejections."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.load import FileTask, LoadOptions, ingest_file

from ecom_ingest_dagster_tests.helpers import assert_accounting, csv_text, drop, event_id, ledger, row


def load(db, db_schema, path: Path, tmp_path: Path, batch_id: int = 0):
    return ingest_file(
        db, FileTask(str(path), path.stat().st_size if path.exists() else 0),
        LoadOptions(schema=db_schema, stream_id="test-stream", batch_id=batch_id, rejected_dir=tmp_path / "rejected"),
    )


def test_loads_typed_rows_with_source_and_batch(db, db_schema, tmp_path):
    path = drop(tmp_path / "in", "a.csv", csv_text([row(1), row(2, session_id="", product_name="")]))
    outcome = load(db, db_schema, path, tmp_path, batch_id=7)
    assert (outcome.rows_total, outcome.rows_loaded, outcome.rows_duplicate, outcome.rows_rejected) == (2, 2, 0, 0)
    got = db.execute(
        "SELECT event_id::text, session_id, product_name, price::text, quantity, event_timestamp,"
        " source_file, batch_id FROM user_events ORDER BY event_id"
    ).fetchall()
    assert got[0][0] == event_id(1) and got[0][3] == "19.99" and got[0][4] == 2
    assert got[0][5].isoformat() == "2026-11-28T10:15:30+00:00"
    assert got[1][1] is None and got[1][2] is None  # empty optional text is missing
    assert {(g[6], g[7]) for g in got} == {("a.csv", 7)}


def test_second_load_of_a_file_changes_nothing(db, db_schema, tmp_path):
    path = drop(tmp_path / "in", "a.csv", csv_text([row(1), row(2, price="-1")]))
    first = load(db, db_schema, path, tmp_path)
    again = load(db, db_schema, path, tmp_path, batch_id=1)
    assert again.already_done and not first.already_done
    assert (again.rows_loaded, again.rows_rejected) == (1, 1)
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM rejected_events").fetchone()[0] == 1
    assert ledger(db)["a.csv"]["batch_id"] == 0
    assert_accounting(db)


def test_duplicates_in_file_across_files_and_by_uuid_case(db, db_schema, tmp_path):
    upper = event_id(1).upper()
    a = drop(tmp_path / "in", "a.csv", csv_text([row(1), row(2), {**row(0), "event_id": upper}]))
    b = drop(tmp_path / "in", "b.csv", csv_text([row(2), row(3), row(3)]))
    oa, ob = load(db, db_schema, a, tmp_path), load(db, db_schema, b, tmp_path)
    assert (oa.rows_loaded, oa.rows_duplicate) == (2, 1)
    assert (ob.rows_loaded, ob.rows_duplicate) == (1, 2)
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 3
    assert_accounting(db)


def test_rejected_rows_keep_raw_values_every_reason_and_record_number(db, db_schema, tmp_path):
    rows = [row(1), row(2, event_id="nope", price="-3", quantity=""), row(3)]
    text = csv_text(rows) + "too,few\n"
    path = drop(tmp_path / "in", "a.csv", text)
    outcome = load(db, db_schema, path, tmp_path)
    assert (outcome.rows_total, outcome.rows_loaded, outcome.rows_rejected) == (4, 2, 2)
    assert outcome.reason_counts == {
        c.INVALID_EVENT_ID: 1, c.NEGATIVE_PRICE: 1, c.MISSING_REQUIRED_FIELD: 1, c.MALFORMED_ROW: 1,
    }
    got = db.execute(
        "SELECT record_number, event_id, price, quantity, raw_line, reasons, details FROM rejected_events"
        " ORDER BY record_number"
    ).fetchall()
    assert got[0][:4] == (2, "nope", "-3", "")
    assert got[0][5] == [c.INVALID_EVENT_ID, c.MISSING_REQUIRED_FIELD, c.NEGATIVE_PRICE]
    assert "quantity: missing_required_field" in got[0][6]
    assert got[1][0] == 4 and got[1][4] == "too,few" and got[1][5] == [c.MALFORMED_ROW]
    assert_accounting(db)


def test_file_rejected_whole_is_moved_with_its_reason_and_rows_counted(db, db_schema, tmp_path):
    text = csv_text([row(1), row(2)], columns=[col for col in c.COLUMNS if col != "price"])
    path = drop(tmp_path / "in", "noprice.csv", text)
    outcome = load(db, db_schema, path, tmp_path)
    assert outcome.status == "rejected" and outcome.reason == c.FILE_MISSING_COLUMNS
    assert (outcome.rows_total, outcome.rows_rejected) == (2, 2)
    assert not path.exists()
    moved = tmp_path / "rejected" / "noprice.csv"
    assert moved.read_text() == text
    assert "price" in json.loads((tmp_path / "rejected" / "noprice.csv.reason.json").read_text())["reason"]
    reasons = db.execute("SELECT DISTINCT reasons FROM rejected_events").fetchall()
    assert reasons == [([c.FILE_MISSING_COLUMNS],)]
    assert_accounting(db)


def test_not_utf8_file_rejected_with_every_line_counted(db, db_schema, tmp_path):
    content = csv_text([row(1)]).encode() + "caf\u00e9,x\n".encode("latin-1") + b"\n\n" + b"last\n"
    path = drop(tmp_path / "in", "latin.csv", content)
    outcome = load(db, db_schema, path, tmp_path)
    assert outcome.reason == c.FILE_NOT_UTF8
    assert outcome.rows_rejected == 3  # blank lines are not rows
    lines = [r[0] for r in db.execute("SELECT raw_line FROM rejected_events ORDER BY record_number")]
    assert lines[1] == "caf\\xe9,x"
    assert_accounting(db)


def test_header_only_file_is_an_ingested_file_with_no_rows(db, db_schema, tmp_path):
    path = drop(tmp_path / "in", "empty.csv", ",".join(c.COLUMNS) + "\n")
    outcome = load(db, db_schema, path, tmp_path)
    assert (outcome.status, outcome.rows_total) == ("ingested", 0)
    assert path.exists()
    assert ledger(db)["empty.csv"]["status"] == "ingested"


def test_nul_and_odd_text_survive(db, db_schema, tmp_path):
    path = drop(tmp_path / "in", "odd.csv", csv_text([row(1, product_name="tea\x00pot \u2615 \"quoted\"\nline two")]))
    outcome = load(db, db_schema, path, tmp_path)
    assert outcome.rows_loaded == 1
    name = db.execute("SELECT product_name FROM user_events").fetchone()[0]
    assert name == "tea\ufffdpot \u2615 \"quoted\"\nline two"


def test_two_tasks_loading_one_file_at_once_load_it_once(db, db_schema, tmp_path, database_url):
    """Two runs over one landing directory (a CLI ingest beside a Dagster run) may both hold a file."""
    import threading

    import psycopg

    from ecom_ingest_dagster.tools.generator import generate_events, write_drop

    good = tmp_path / "in" / "shared.csv"
    write_drop(generate_events(50_000, rng=np.random.default_rng(3), invalid_rate=0.02), good.parent, good.name)
    bad = drop(tmp_path / "in", "shared_bad.csv", b"\xff\xfe not utf-8\n" * 100)
    outcomes, errors = [], []

    def worker():
        try:
            with psycopg.connect(database_url) as conn:
                for path in (good, bad):
                    outcomes.append(ingest_file(
                        conn, FileTask(str(path), path.stat().st_size if path.exists() else 0),
                        LoadOptions(schema=db_schema, stream_id="race", batch_id=0, rejected_dir=tmp_path / "rejected"),
                    ))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    by_file = {}
    for outcome in outcomes:
        by_file.setdefault(outcome.file_name, []).append(outcome.already_done)
    # Each file: one task did the work, the other found it done.
    assert sorted(by_file["shared.csv"]) == [False, True]
    assert len(by_file["shared_bad.csv"]) == 2 and False in by_file["shared_bad.csv"]
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 49_000
    assert ledger(db)["shared_bad.csv"]["reason"] == c.FILE_NOT_UTF8
    assert_accounting(db)


# The binary COPY's types at their edges, each read back from PostgreSQL. "staged" repeats
# the first row at the end of the file: its duplicate sends the file through the stage.
def load_edges(db, db_schema, tmp_path, rows, path_kind, name="edges.csv"):
    sent = rows + [rows[0]] if path_kind == "staged" else rows
    outcome = load(db, db_schema, drop(tmp_path / "in", name, csv_text(sent)), tmp_path)
    assert (outcome.rows_loaded, outcome.rows_duplicate, outcome.rows_rejected) == (
        len(rows), len(sent) - len(rows), 0,
    )
    assert_accounting(db)
    return outcome


PATHS = pytest.mark.parametrize("path_kind", ["direct", "staged"])


@PATHS
def test_binary_copy_keeps_missing_optional_fields_null(db, db_schema, tmp_path, path_kind):
    rows = [row(1, session_id="", product_name="", category=""), row(2, session_id="  ", category="Garden")]
    load_edges(db, db_schema, tmp_path, rows, path_kind)
    got = db.execute("SELECT session_id, product_name, category FROM user_events ORDER BY event_id").fetchall()
    assert got == [(None, None, None), (None, "Blue mug", "Garden")]


@PATHS
def test_binary_copy_prices_and_quantities_at_their_edges(db, db_schema, tmp_path, path_kind):
    prices = ["0", "0.00", "1000000.00", "1000000", "19.9", ".5", "5.", "+7.25", "-0", "0.01", "999999.99"]
    quantities = ["1", "1000", "+3", "007", "1", "2", "3", "4", "5", "6", "7"]
    rows = [row(n, price=p, quantity=q) for n, (p, q) in enumerate(zip(prices, quantities))]
    load_edges(db, db_schema, tmp_path, rows, path_kind)
    got = db.execute("SELECT price::text, quantity FROM user_events ORDER BY event_id").fetchall()
    assert [g[0] for g in got] == [
        "0.00", "0.00", "1000000.00", "1000000.00", "19.90", "0.50", "5.00", "7.25", "0.00", "0.01", "999999.99",
    ]
    assert [g[1] for g in got] == [1, 1000, 3, 7, 1, 2, 3, 4, 5, 6, 7]


@PATHS
def test_binary_copy_timestamps_with_offsets_and_far_past(db, db_schema, tmp_path, path_kind):
    utc = dt.timezone.utc
    cases = {
        "2026-11-28T10:15:30+05:30": dt.datetime(2026, 11, 28, 4, 45, 30, tzinfo=utc),
        "2026-11-28T10:15:30-08:00": dt.datetime(2026, 11, 28, 18, 15, 30, tzinfo=utc),
        "2026-11-28T10:15:30Z": dt.datetime(2026, 11, 28, 10, 15, 30, tzinfo=utc),
        "2026-11-28T10:15:30.123456Z": dt.datetime(2026, 11, 28, 10, 15, 30, 123456, tzinfo=utc),
        "1900-01-01T00:00:00Z": dt.datetime(1900, 1, 1, tzinfo=utc),
        "1970-01-01T00:00:00Z": dt.datetime(1970, 1, 1, tzinfo=utc),
        "1999-12-31T23:59:59.999999Z": dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=utc),
        "2000-01-01T00:00:00+01:00": dt.datetime(1999, 12, 31, 23, tzinfo=utc),
    }
    rows = [row(n, event_timestamp=text) for n, text in enumerate(cases)]
    load_edges(db, db_schema, tmp_path, rows, path_kind)
    db.execute("SET TIME ZONE 'UTC'")
    got = [r[0] for r in db.execute("SELECT event_timestamp FROM user_events ORDER BY event_id")]
    assert got == list(cases.values())


@PATHS
def test_binary_copy_stores_upper_case_uuids_lower(db, db_schema, tmp_path, path_kind):
    upper_event, upper_session = "ABCDEF01-2345-4789-ABCD-EF0123456789", "0B1C2D3E-4F50-4617-8293-A4B5C6D7E8F9"
    rows = [row(0, event_id=upper_event, session_id=upper_session), row(1, session_id="aBcDeF01-2345-4789-AbCd-ef0123456789")]
    load_edges(db, db_schema, tmp_path, rows, path_kind)
    got = db.execute("SELECT event_id::text, session_id::text FROM user_events ORDER BY event_id").fetchall()
    assert got == [
        (event_id(1), "abcdef01-2345-4789-abcd-ef0123456789"),
        (upper_event.lower(), upper_session.lower()),
    ]


GOOD_SESSION = row(0)["session_id"]
GOOD_STAMP = dt.datetime(2026, 11, 28, 10, 15, 30, tzinfo=dt.timezone.utc)


def test_binary_copy_duplicates_in_a_file_and_across_files_load_once(db, db_schema, tmp_path):
    a = drop(tmp_path / "in", "a.csv", csv_text([
        row(1, price=".5", session_id="", event_timestamp="1900-01-01T00:00:00Z"),
        row(2),
        row(1, price="3", product_name="later copy"),  # same event_id in the file: skipped
    ]))
    b = drop(tmp_path / "in", "b.csv", csv_text([
        row(2, price="1000000.00"),  # loaded from a.csv already: skipped
        {**row(0), "event_id": event_id(3).upper(), "price": "0", "category": ""},
        row(3),  # the same event as the line above, in lower case: skipped
    ]))
    oa, ob = load(db, db_schema, a, tmp_path, batch_id=1), load(db, db_schema, b, tmp_path, batch_id=2)
    assert (oa.rows_loaded, oa.rows_duplicate, ob.rows_loaded, ob.rows_duplicate) == (2, 1, 1, 2)
    db.execute("SET TIME ZONE 'UTC'")
    got = db.execute(
        "SELECT event_id::text, session_id::text, product_name, category, price::text, event_timestamp, source_file, batch_id"
        " FROM user_events ORDER BY event_id"
    ).fetchall()
    assert got == [
        (event_id(1), None, "Blue mug", "Kitchen", "0.50", dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc), "a.csv", 1),
        (event_id(2), GOOD_SESSION, "Blue mug", "Kitchen", "19.99", GOOD_STAMP, "a.csv", 1),
        (event_id(3), GOOD_SESSION, "Blue mug", None, "0.00", GOOD_STAMP, "b.csv", 2),
    ]
    assert ledger(db)["b.csv"]["rows_duplicate"] == 2
    assert_accounting(db)



def test_binary_copy_of_a_file_with_no_valid_rows(db, db_schema, tmp_path):
    path = drop(tmp_path / "in", "bad.csv", csv_text([row(1, price="-1"), row(2, user_id="nobody")]))
    outcome = load(db, db_schema, path, tmp_path)
    assert (outcome.rows_total, outcome.rows_loaded, outcome.rows_rejected) == (2, 0, 2)
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 0
    assert_accounting(db)


def test_the_first_copy_of_a_repeated_id_wins_whatever_the_key_order(db, db_schema, tmp_path):
    path = drop(tmp_path / "in", "a.csv", csv_text([
        row(9), row(5, product_name="first copy"), row(1), row(5, product_name="second copy"), row(3),
    ]))
    outcome = load(db, db_schema, path, tmp_path)
    assert (outcome.rows_loaded, outcome.rows_duplicate) == (4, 1)
    assert db.execute("SELECT product_name FROM user_events WHERE event_id = %s", (event_id(5),)).fetchone() == ("first copy",)
