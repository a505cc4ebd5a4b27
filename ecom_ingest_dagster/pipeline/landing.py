"""The landing directory: noticing new drops (a cursor that misses none), and moving
drops out once their outcome is committed (archive, rejected area), so the directory
holds only what is still to be ingested and no cost grows with the history.

Files are ordered by their inode change time (``st_ctime_ns``), then name. The change
time is set when a file is renamed into the directory, so a drop moved in with an old
modification time (``mv`` keeps it) still sorts after everything seen before. The
cursor keeps the newest time seen and the names seen at exactly that time, so files
that share a timestamp are neither skipped nor reported twice.

A file created while the directory is being read may or may not be listed, so a scan
could see a later arrival and miss an earlier one, and the cursor would then step past
the missed file for good. A scan therefore only takes files whose change time is older
than its own start by ``settle_ns``: anything younger waits for the next scan. The
margin covers the kernel's coarse file-time clock (a tick behind the wall clock) and
file systems that keep whole seconds; it also keeps a file that is still being written
in place (each write moves its change time) out of the scan until it has been quiet.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ecom_ingest_dagster.contract import is_drop_name

if TYPE_CHECKING:
    from ecom_ingest_dagster.pipeline.ledger import FileTask

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LandingCursor:
    ctime_ns: int = -1
    names_at_ctime: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"ctime_ns": self.ctime_ns, "names": list(self.names_at_ctime)})

    @classmethod
    def from_json(cls, text: str | None) -> "LandingCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data["ctime_ns"]), tuple(data["names"]))


@dataclasses.dataclass(frozen=True)
class NewDrops:
    names: list[str]  # in arrival order, at most ``limit``
    cursor: LandingCursor  # advanced past exactly ``names``
    more: bool  # more new drops are waiting beyond ``limit``
    scanned: int  # directory entries looked at
    settling: int = 0  # drops too recent to take yet: the next scan takes them


# Two seconds: one for file systems that store whole seconds, one of slack for clocks.
SETTLE_NS = 2_000_000_000


def scan_new_drops(
    landing: Path, cursor: LandingCursor, *, limit: int = 5000, settle_ns: int = SETTLE_NS, now_ns: int | None = None
) -> NewDrops:
    """The drops that arrived after ``cursor``: ``*.csv`` / ``*.csv.gz`` / ``*.csv.zst`` files not starting with . or _.

    A missing landing directory has no drops (it may be created later). The directory is
    read with one ``scandir`` pass (one ``stat`` per candidate): 10,000 entries take
    milliseconds. ``limit`` bounds what one evaluation hands out; the rest wait for the
    next evaluation with nothing lost. ``now_ns`` (the scan's start, wall clock) is for
    tests.
    """
    horizon = (time.time_ns() if now_ns is None else now_ns) - settle_ns
    found: list[tuple[int, str]] = []
    scanned = settling = 0
    try:
        entries = os.scandir(landing)
    except FileNotFoundError:
        return NewDrops([], cursor, False, 0)
    with entries:
        for entry in entries:
            scanned += 1
            if not is_drop_name(entry.name):
                continue
            try:
                if not entry.is_file():
                    continue
                ctime = entry.stat().st_ctime_ns
            except OSError:  # vanished between listing and stat: not there, not a drop
                continue
            if ctime > cursor.ctime_ns or (ctime == cursor.ctime_ns and entry.name not in cursor.names_at_ctime):
                if ctime >= horizon:
                    settling += 1
                    continue
                found.append((ctime, entry.name))
    found.sort()
    taken = found[:limit]
    if not taken:
        return NewDrops([], cursor, False, scanned, settling)
    newest = taken[-1][0]
    at_newest = tuple(sorted(name for ctime, name in taken if ctime == newest))
    if newest == cursor.ctime_ns:
        at_newest = tuple(sorted(set(cursor.names_at_ctime) | set(at_newest)))
    return NewDrops(
        [name for _, name in taken], LandingCursor(newest, at_newest), len(found) > limit, scanned, settling
    )


def move_rejected(task: "FileTask", rejected_dir: Path, message: str, batch_id: int) -> None:
    """Move a file rejected whole out of the landing directory, with its reason beside it."""
    source = Path(task.path)
    if not source.exists():
        return  # moved by an earlier attempt
    rejected_dir.mkdir(parents=True, exist_ok=True)
    # Only the base name is used, so a crafted name cannot leave the rejected area.
    target = rejected_dir / task.file_name
    try:
        shutil.move(str(source), target)
    except OSError as exc:  # the ledger already has the reason; the file stays where it is
        log.warning("could not move rejected file %s to %s: %s", task.file_name, rejected_dir, exc)
        return
    (rejected_dir / _reason_file_name(task.file_name)).write_text(
        json.dumps(
            {"file_name": task.file_name, "reason": message, "batch_id": batch_id,
             "rejected_at": dt.datetime.now(dt.timezone.utc).isoformat()},
            indent=2,
        )
    )


def _reason_file_name(file_name: str) -> str:
    """``NAME.reason.json``, or a shortened name with a digest when that is too long for the file system."""
    full = file_name + ".reason.json"
    if len(os.fsencode(full)) <= 255:
        return full
    digest = hashlib.sha1(os.fsencode(file_name)).hexdigest()[:16]
    head = os.fsencode(file_name)[:200].decode("utf-8", errors="ignore")
    return f"{head}-{digest}.reason.json"  # the JSON inside names the file in full


# -- after commit ------------------------------------------------------------------------


def archive_path(archive_dir: Path, file_name: str, committed_at: dt.datetime | None) -> Path:
    """``archive_dir/YYYY-MM-DD/NAME``: by the (UTC) day the drop's rows were committed."""
    day = (committed_at or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime("%Y-%m-%d")
    return archive_dir / day / os.path.basename(file_name)


def delete_archive_days(archive_dir: Path, before: dt.date) -> int:
    """Delete the archive's day folders (``archive_path``) older than ``before``; returns the
    drops deleted. Anything else in the archive directory is not ours to delete."""
    drops = 0
    for day in sorted(archive_dir.iterdir()) if archive_dir.is_dir() else []:
        try:
            old = dt.date.fromisoformat(day.name) < before
        except ValueError:
            continue
        if day.is_dir() and old:
            drops += sum(1 for p in day.iterdir() if p.is_file())
            shutil.rmtree(day)
    return drops


def retire_ingested(path: Path, *, policy: str, archive_dir: Path | None, committed_at: dt.datetime | None) -> Path | None:
    """Take an ingested drop out of the landing directory, as ``policy`` says; the archived path.

    Called only after the drop's transaction committed: a crash before the move leaves the
    file where it was, and the next run's sweep (its ledger row is there) finishes the move
    without loading it again. On one file system the move is a rename: the archive holds
    the file byte for byte or not at all.
    """
    if policy == "keep":
        return None
    try:
        if policy == "delete":
            path.unlink()
            return None
        target = archive_path(archive_dir, path.name, committed_at)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
        return target
    except FileNotFoundError:
        return None  # moved already (a replayed batch, the sweep): nothing left to do
    except OSError as exc:  # the ledger has the outcome; the next sweep tries again
        log.warning("could not %s ingested drop %s: %s", policy, path.name, exc)
        return None


@dataclasses.dataclass(frozen=True)
class LandedDrop:
    name: str
    size: int
    mtime_ms: int
    mtime: dt.datetime


def list_drops(landing: Path) -> list[LandedDrop]:
    """The drops in the landing directory now (one ``scandir`` pass; small once archiving runs)."""
    drops = []
    try:
        entries = os.scandir(landing)
    except FileNotFoundError:
        return []
    with entries:
        for entry in entries:
            if not is_drop_name(entry.name):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError:
                continue
            drops.append(LandedDrop(entry.name, stat.st_size, stat.st_mtime_ns // 1_000_000,
                                    dt.datetime.fromtimestamp(stat.st_mtime_ns / 1e9, dt.timezone.utc)))
    return sorted(drops, key=lambda d: d.name)


def is_replaced(drop: LandedDrop, size: int | None, mtime_ms: int | None) -> bool:
    """True when the file under an ingested name is not the one that was ingested.

    ``size`` and ``mtime_ms`` (the precision Spark lists) are what the ledger recorded. A
    name is ingested once: Spark's checkpoint will not hand the new file out, and its rows
    could repeat or contradict the old ones, so the caller reports these for the producer
    to re-send under a new name.
    """
    return (size is not None and drop.size != size) or (mtime_ms is not None and drop.mtime_ms != mtime_ms)


@dataclasses.dataclass
class Sweep:
    """What a sweep of the landing directory did."""

    finished: list[str] = dataclasses.field(default_factory=list)  # committed before, moved out now
    empty: list[str] = dataclasses.field(default_factory=list)  # zero-byte drops recorded (0 rows)
    replaced: list[str] = dataclasses.field(default_factory=list)  # changed after ingestion: left, reported


def sweep(conn, settings, *, zero_byte_only: bool = False) -> Sweep:
    """Bring the landing directory in line with the ledger, looking up only the drops present.

    - a drop whose outcome is committed but which is still here (a crash between commit
      and move, or a policy change) is moved now, without being loaded again;
    - a zero-byte drop, which Spark's file source never lists, is recorded as ingested
      with zero rows and moved like the rest;
    - a drop under an ingested name that is not the ingested file is left and reported.

    ``zero_byte_only`` is the cheap form a continuous run repeats between batches (moves
    of committed files are its tasks' own business meanwhile).
    """
    from ecom_ingest_dagster.pipeline import ledger

    done = Sweep()
    drops = [d for d in list_drops(settings.landing_dir) if not zero_byte_only or d.size == 0]
    entries = ledger.entries_for(conn, settings.db_schema, [d.name for d in drops])
    for drop in drops:
        path = settings.landing_dir / drop.name
        entry = entries.get(drop.name)
        if entry is None:
            if drop.size == 0:
                task = ledger.FileTask(str(path), 0, landed_at=drop.mtime)
                outcome = ledger.record_empty_drop(conn, settings.db_schema, task, settings.contract.version)
                conn.commit()
                done.empty.append(drop.name)
                retire_ingested(path, policy=settings.after_commit, archive_dir=settings.archive_dir,
                                committed_at=outcome.committed_at)
            continue  # still to be ingested: Spark hands it out
        if entry.status == "rejected":
            move_rejected(ledger.FileTask(str(path), drop.size), settings.rejected_dir, entry.reason or "", entry.batch_id)
            done.finished.append(drop.name)
        elif is_replaced(drop, entry.file_size, entry.landed_ms):
            done.replaced.append(drop.name)
        elif settings.after_commit != "keep":
            retire_ingested(path, policy=settings.after_commit, archive_dir=settings.archive_dir,
                            committed_at=entry.committed_at)
            done.finished.append(drop.name)
    if done.replaced:
        log.warning(
            "%d drop(s) changed after they were ingested and will not be read again (a name is ingested "
            "once; re-send the new content under a new name): %s%s",
            len(done.replaced), ", ".join(done.replaced[:10]), " ..." if len(done.replaced) > 10 else "",
        )
    if done.finished:
        log.info("moved %d drop(s) committed earlier out of the landing directory", len(done.finished))
    return done
