"""The landing scanner's cursor: ties, bursts, ignored names, moved-in files."""

from __future__ import annotations

import os
import time

from ecom_ingest_dagster.landing import LandingCursor, scan_new_drops


def touch(path, ctime_hint=None):
    path.write_text("event_id\n")
    return path


def test_first_scan_sees_every_drop_and_ignores_the_rest(tmp_path):
    for name in ("b.csv", "a.csv", ".tmp.csv", "_partial.csv", "notes.txt", "x.CSV"):
        touch(tmp_path / name)
    (tmp_path / "sub.csv").mkdir()
    new = scan_new_drops(tmp_path, LandingCursor())
    assert sorted(new.names) == ["a.csv", "b.csv"]
    assert new.scanned == 7 and not new.more


def test_nothing_new_keeps_the_cursor(tmp_path):
    touch(tmp_path / "a.csv")
    first = scan_new_drops(tmp_path, LandingCursor())
    again = scan_new_drops(tmp_path, first.cursor)
    assert again.names == [] and again.cursor == first.cursor


def test_equal_timestamps_are_neither_skipped_nor_repeated(tmp_path):
    a, b = touch(tmp_path / "a.csv"), touch(tmp_path / "b.csv")
    stamp = a.stat().st_ctime_ns
    # Two drops with the same ctime, seen one at a time.
    cursor = LandingCursor(stamp, ("a.csv",))
    c = touch(tmp_path / "c.csv")
    ctimes = {p.name: p.stat().st_ctime_ns for p in (a, b, c)}
    new = scan_new_drops(tmp_path, cursor)
    expected = sorted(n for n, t in ctimes.items() if t > stamp or (t == stamp and n != "a.csv"))
    assert sorted(new.names) == expected
    assert "a.csv" not in new.names
    # The cursor carries every name at its timestamp, old and new.
    if new.cursor.ctime_ns == stamp:
        assert set(new.cursor.names_at_ctime) >= {"a.csv", *new.names}


def test_limit_hands_out_a_burst_in_bounded_slices_without_loss(tmp_path):
    for i in range(250):
        touch(tmp_path / f"f{i:04d}.csv")
    cursor, seen = LandingCursor(), []
    while True:
        new = scan_new_drops(tmp_path, cursor, limit=100)
        if not new.names:
            break
        seen += new.names
        cursor = new.cursor
    assert sorted(seen) == [f"f{i:04d}.csv" for i in range(250)]
    assert len(seen) == len(set(seen))


def test_file_moved_in_with_an_old_mtime_is_still_new(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    landing.mkdir(), outside.mkdir()
    touch(landing / "a.csv")
    cursor = scan_new_drops(landing, LandingCursor()).cursor
    old = touch(outside / "old.csv")
    os.utime(old, (time.time() - 30 * 86400, time.time() - 30 * 86400))
    time.sleep(0.01)
    os.rename(old, landing / "old.csv")  # rename keeps mtime, sets ctime
    assert scan_new_drops(landing, cursor).names == ["old.csv"]


def test_missing_directory_has_no_drops(tmp_path):
    new = scan_new_drops(tmp_path / "absent", LandingCursor())
    assert new.names == [] and new.scanned == 0


def test_cursor_round_trips_as_json():
    cursor = LandingCursor(123, ("a.csv", "b.csv"))
    assert LandingCursor.from_json(cursor.to_json()) == cursor
    assert LandingCursor.from_json(None) == LandingCursor()
