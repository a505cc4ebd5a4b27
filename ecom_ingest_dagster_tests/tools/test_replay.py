"""Replaying quarantined rows once the rule they broke has been relaxed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.load import FileTask, LoadOptions, ingest_file
from ecom_ingest_dagster.tools.replay import replay_rejected

from ecom_ingest_dagster_tests.helpers import assert_accounting, csv_text, drop, event_id, ledger, row

FUTURE = "2026-12-01T10:00:00Z"  # more than 24 h after the first load's "now"


def load(db, db_schema, path: Path, tmp_path: Path, now: dt.datetime):
    return ingest_file(db, FileTask(str(path), path.stat().st_size),
                       LoadOptions(schema=db_schema, stream_id="s", batch_id=3, rejected_dir=tmp_path / "rejected", now=now))


def test_rows_that_now_pass_are_loaded_and_the_ledger_moves(db, db_schema, tmp_path):
    first_now = dt.datetime(2026, 11, 28, 12, tzinfo=dt.timezone.utc)
    rows = [row(1), row(2, event_timestamp=FUTURE), row(3, event_timestamp=FUTURE), row(1, event_timestamp=FUTURE),
            row(4, price="-1"), row(5, event_timestamp=FUTURE, quantity="0")]
    path = drop(tmp_path / "in", "a.csv", csv_text(rows) + "bad,line\n")
    outcome = load(db, db_schema, path, tmp_path, first_now)
    assert (outcome.rows_loaded, outcome.rows_rejected) == (1, 6)

    # Days later the "future" timestamps are in the past: they validate now.
    later = dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc)
    result = replay_rejected(db, db_schema, reason=c.INVALID_TIMESTAMP, now=later)
    assert result.examined == 4  # rows 2, 3, the second row 1 and row 5 (timestamp among its reasons)
    assert (result.loaded, result.duplicate, result.still_rejected) == (2, 1, 1)
    ids = {r[0] for r in db.execute("SELECT event_id::text FROM user_events")}
    assert ids == {event_id(1), event_id(2), event_id(3)}
    file = ledger(db)["a.csv"]
    assert (file["rows_loaded"], file["rows_duplicate"], file["rows_rejected"]) == (3, 1, 3)
    marked = dict(db.execute("SELECT replay_outcome, count(*) FROM rejected_events WHERE replayed_at IS NOT NULL GROUP BY 1"))
    assert marked == {"loaded": 2, "duplicate": 1}
    assert_accounting(db)

    again = replay_rejected(db, db_schema, now=later)
    assert (again.loaded, again.duplicate) == (0, 0)  # nothing left that passes


def test_unknown_reason_is_refused(db, db_schema):
    with pytest.raises(ValueError, match="unknown reason"):
        replay_rejected(db, db_schema, reason="nope")
