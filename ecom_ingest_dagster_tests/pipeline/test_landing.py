"""The landing scanner's cursor: ties, bursts, ignored names, moved-in files, races."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time

from ecom_ingest_dagster.pipeline import landing as landing_module
from ecom_ingest_dagster.pipeline.landing import LandingCursor

# Most tests look at files they have just made: no settling margin unless a test asks.
scan_new_drops = functools.partial(landing_module.scan_new_drops, settle_ns=0)


def touch(path, ctime_hint=None):
    path.parent.mkdir(parents=True, exist_ok=True)
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


def test_a_drop_younger_than_the_margin_waits_for_the_next_scan(tmp_path):
    early = touch(tmp_path / "early.csv")
    time.sleep(0.05)
    late = touch(tmp_path / "late.csv")
    assert early.stat().st_ctime_ns < late.stat().st_ctime_ns
    # A scan that started as "late" arrived: "late" may be half-listed, so it waits.
    new = scan_new_drops(tmp_path, LandingCursor(), now_ns=late.stat().st_ctime_ns)
    assert new.names == ["early.csv"] and new.settling == 1
    assert new.cursor.ctime_ns < late.stat().st_ctime_ns
    assert scan_new_drops(tmp_path, new.cursor).names == ["late.csv"]


def test_drops_arriving_while_scans_run_are_each_reported_once(tmp_path):
    """Another process drops files (atomically) while scans run back to back."""
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys\n"
        "for i in range(3000):\n"
        "    tmp = os.path.join(sys.argv[1], f'.live_{i:05d}.csv.tmp')\n"
        "    open(tmp, 'w').write('event_id\\n')\n"
        "    os.replace(tmp, os.path.join(sys.argv[1], f'live_{i:05d}.csv'))\n"
    ), str(tmp_path)])
    cursor, seen = LandingCursor(), []
    while writer.poll() is None:
        new = landing_module.scan_new_drops(tmp_path, cursor, settle_ns=50_000_000)
        seen += new.names
        cursor = new.cursor
    assert writer.returncode == 0
    time.sleep(0.06)
    seen += landing_module.scan_new_drops(tmp_path, cursor, settle_ns=50_000_000).names
    assert len(seen) == len(set(seen))
    assert sorted(seen) == [f"live_{i:05d}.csv" for i in range(3000)]


def test_landing_directory_removed_and_recreated(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    touch(landing / "a.csv")
    first = scan_new_drops(landing, LandingCursor())
    shutil.rmtree(landing)
    gone = scan_new_drops(landing, first.cursor)
    assert gone.names == [] and gone.cursor == first.cursor  # nothing forgotten while it is away
    time.sleep(0.01)
    landing.mkdir()
    touch(landing / "b.csv")
    assert scan_new_drops(landing, first.cursor).names == ["b.csv"]


def test_an_unreadable_drop_is_still_reported(tmp_path):
    # The scanner only stats; the loader reads, and gives an unreadable file its reason.
    path = touch(tmp_path / "locked.csv")
    path.chmod(0)
    try:
        assert scan_new_drops(tmp_path, LandingCursor()).names == ["locked.csv"]
    finally:
        path.chmod(0o644)


def test_replaced_after_ingest_compares_size_and_millisecond_mtime(tmp_path):
    same, grown, touched = (touch(tmp_path / n) for n in ("same.csv", "grown.csv", "touched.csv"))
    record = {p.name: (p.stat().st_size, p.stat().st_mtime_ns // 1_000_000) for p in (same, grown, touched)}
    grown.write_text("event_id\nmore\n")
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 5_000_000))
    touch(tmp_path / "unknown_time.csv")
    record["unknown_time.csv"] = (None, None)
    drops = landing_module.list_drops(tmp_path)
    assert [d.name for d in drops if landing_module.is_replaced(d, *record[d.name])] == ["grown.csv", "touched.csv"]


def test_an_ingested_drop_is_archived_by_commit_day_byte_for_byte(tmp_path):
    import datetime as dt

    path = touch(tmp_path / "landing" / "a.csv")
    content = path.read_bytes()
    day = dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-2)))  # 01:59 UTC, Dec 1
    target = landing_module.retire_ingested(path, policy="archive", archive_dir=tmp_path / "archive", committed_at=day)
    assert target == tmp_path / "archive" / "2026-12-01" / "a.csv"
    assert target.read_bytes() == content and not path.exists()
    # A second call (a replayed batch, the sweep) finds nothing to do.
    assert landing_module.retire_ingested(path, policy="archive", archive_dir=tmp_path / "archive", committed_at=day) is None
    kept = touch(tmp_path / "landing" / "b.csv")
    assert landing_module.retire_ingested(kept, policy="keep", archive_dir=None, committed_at=day) is None and kept.exists()
    assert landing_module.retire_ingested(kept, policy="delete", archive_dir=None, committed_at=day) is None
    assert not kept.exists()
