"""Many small files in one transaction, against a real PostgreSQL: one commit, and still
every file once, every row accounted for, and a file that cannot go with the rest alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline import load_batch
from ecom_ingest_dagster.pipeline.load import FileTask, LoadOptions, ingest_file
from ecom_ingest_dagster.pipeline.load_batch import load_group, plan_groups

from ecom_ingest_dagster_tests.helpers import assert_accounting, csv_text, drop, event_id, ledger, row


def _options(db_schema: str, tmp_path: Path, **changes) -> LoadOptions:
    return LoadOptions(schema=db_schema, stream_id="group", batch_id=4, rejected_dir=tmp_path / "rejected", **changes)


def _task(path: Path) -> FileTask:
    return FileTask(str(path), path.stat().st_size)


def _small_drops(landing: Path, count: int, *, start: int = 0) -> list[Path]:
    """``count`` drops of three rows: two valid, one with a bad price, plus one record of the wrong width."""
    paths = []
    for i in range(count):
        n = start + 10 * i
        text = csv_text([row(n), row(n + 1, price="-1"), row(n + 2)]) + "just,three,fields\n"
        paths.append(drop(landing, f"small_{i:03d}.csv", text))
    return paths


def _transactions(db, names) -> int:
    """How many transactions wrote the ledger rows of ``names`` (xmin: the writing transaction)."""
    return db.execute("SELECT count(DISTINCT xmin::text) FROM ingest_files WHERE file_name = ANY(%s)",
                      (list(names),)).fetchone()[0]


def test_plan_groups_keeps_small_files_together_and_big_ones_alone():
    tasks = [FileTask(f"/l/{name}", size) for name, size in
             [("a", 10), ("b", 10), ("big", 100), ("c", 30), ("d", 30), ("e", 1)]]
    groups = plan_groups(tasks, 50)
    assert [[t.file_name for t in g] for g in groups] == [["big"], ["a", "b", "c"], ["d", "e"]]
    assert [len(g) for g in plan_groups(tasks, 0)] == [1] * len(tasks)  # 0: one transaction per file


def test_a_group_commits_once_with_every_file_accounted_for(db, db_schema, tmp_path):
    paths = _small_drops(tmp_path / "landing", 40)
    outcomes = load_group(db, [_task(p) for p in paths], _options(db_schema, tmp_path))

    names = [p.name for p in paths]
    assert [o.file_name for o in outcomes] == names
    assert _transactions(db, names) == 1  # one commit for forty files
    counts = db.execute("SELECT file_name, rows_total, rows_loaded, rows_rejected, reason_counts FROM ingest_files").fetchall()
    assert len(counts) == 40
    for _, total, loaded, rejected, reasons in counts:
        assert (total, loaded, rejected) == (4, 2, 2)
        assert reasons == {c.NEGATIVE_PRICE: 1, c.MALFORMED_ROW: 1}
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 80
    # Each rejected row keeps its own file and record number, as when loaded alone.
    rejected = db.execute(
        "SELECT source_file, record_number, reasons FROM rejected_events WHERE source_file = 'small_007.csv'"
        " ORDER BY record_number NULLS LAST"
    ).fetchall()
    assert rejected == [("small_007.csv", 2, [c.NEGATIVE_PRICE]), ("small_007.csv", 4, [c.MALFORMED_ROW])]
    loaded = db.execute("SELECT source_file FROM user_events WHERE event_id = %s", (event_id(72),)).fetchone()
    assert loaded == ("small_007.csv",)
    assert_accounting(db)


def test_a_group_loads_what_one_file_at_a_time_would(db, db_schema, tmp_path):
    together = _small_drops(tmp_path / "together", 12)
    load_group(db, [_task(p) for p in together], _options(db_schema, tmp_path))
    by_group = db.execute(
        "SELECT event_id::text, user_id, event_type, product_id, product_name, price::text, quantity, event_timestamp,"
        " session_id FROM user_events ORDER BY event_id"
    ).fetchall()
    rejected_by_group = db.execute(
        "SELECT record_number, reasons, details, raw_line FROM rejected_events ORDER BY source_file, record_number"
    ).fetchall()
    db.execute("TRUNCATE user_events, rejected_events, ingest_files")

    alone = _small_drops(tmp_path / "alone", 12)
    for path in alone:
        ingest_file(db, _task(path), _options(db_schema, tmp_path))
    assert db.execute(
        "SELECT event_id::text, user_id, event_type, product_id, product_name, price::text, quantity, event_timestamp,"
        " session_id FROM user_events ORDER BY event_id"
    ).fetchall() == by_group
    assert db.execute(
        "SELECT record_number, reasons, details, raw_line FROM rejected_events ORDER BY source_file, record_number"
    ).fetchall() == rejected_by_group


def test_a_file_rejected_whole_goes_alone_and_the_rest_still_commit_together(db, db_schema, tmp_path):
    landing = tmp_path / "landing"
    paths = _small_drops(landing, 6)
    bad = drop(landing, "small_bad.csv", "not,the,header\n1,2,3\n")
    empty = drop(landing, "small_empty.csv", b"")
    tasks = [_task(p) for p in [*paths[:3], bad, empty, *paths[3:]]]
    outcomes = load_group(db, tasks, _options(db_schema, tmp_path))

    by_name = {o.file_name: o for o in outcomes}
    assert by_name["small_bad.csv"].status == "rejected"
    assert by_name["small_bad.csv"].reason == c.FILE_NO_HEADER
    assert (tmp_path / "rejected" / "small_bad.csv").exists() and not bad.exists()
    assert by_name["small_empty.csv"].status == "ingested" and by_name["small_empty.csv"].rows_total == 0
    assert _transactions(db, [p.name for p in paths]) == 1
    assert_accounting(db)


def test_a_duplicate_event_id_sends_the_group_one_file_at_a_time(db, db_schema, tmp_path):
    landing = tmp_path / "landing"
    first = drop(landing, "dup_a.csv", csv_text([row(1), row(2)]))
    second = drop(landing, "dup_b.csv", csv_text([row(2), row(3)]))  # event 2 again
    third = drop(landing, "dup_c.csv", csv_text([row(4)]))
    load_group(db, [_task(p) for p in (first, second, third)], _options(db_schema, tmp_path))

    files = ledger(db)
    assert sum(f["rows_duplicate"] for f in files.values()) == 1
    assert sum(f["rows_loaded"] for f in files.values()) == 4
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 4
    assert _transactions(db, ["dup_a.csv", "dup_b.csv", "dup_c.csv"]) == 3  # each in its own
    assert_accounting(db)


def test_files_already_in_the_ledger_are_not_loaded_again(db, db_schema, tmp_path):
    paths = _small_drops(tmp_path / "landing", 5)
    ingest_file(db, _task(paths[2]), _options(db_schema, tmp_path))
    outcomes = load_group(db, [_task(p) for p in paths], _options(db_schema, tmp_path))

    assert [o.already_done for o in outcomes if o.file_name == paths[2].name] == [True]
    assert sum(not o.already_done for o in outcomes) == 4
    assert db.execute("SELECT count(*) FROM user_events").fetchone()[0] == 10
    assert_accounting(db)


def test_a_file_that_changes_while_the_group_is_read_rolls_back_alone(db, db_schema, tmp_path):
    paths = _small_drops(tmp_path / "landing", 4)
    tasks = [_task(p) for p in paths]
    options = _options(db_schema, tmp_path)
    read, alone = load_batch._read_files(tasks, options)
    assert alone == []
    with open(paths[1], "a") as grows:  # a producer still writing after the file was read
        grows.write(csv_text([row(999)]).split("\n", 1)[1])
    with pytest.raises(load_batch._NotTogether, match="small_001.csv changed"):
        load_batch._load_together(db, read, options)
    assert db.execute("SELECT count(*) FROM ingest_files").fetchone()[0] == 0  # the group rolled back

    outcomes = {o.file_name: o for o in load_group(db, tasks, options)}
    assert outcomes["small_001.csv"].status == "rejected" and outcomes["small_001.csv"].reason == c.FILE_CHANGED
    assert all(outcomes[p.name].status == "ingested" for p in paths if p != paths[1])
    assert _transactions(db, [p.name for p in paths if p != paths[1]]) == 1
    assert_accounting(db)


def test_a_group_archives_its_files_after_the_commit(db, db_schema, tmp_path):
    paths = _small_drops(tmp_path / "landing", 3)
    archive = tmp_path / "archive"
    load_group(db, [_task(p) for p in paths], _options(db_schema, tmp_path, after_commit="archive", archive_dir=archive))
    assert not any(p.exists() for p in paths)
    assert sorted(p.name for p in archive.glob("*/*.csv")) == [p.name for p in paths]
