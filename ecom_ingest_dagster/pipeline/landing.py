"""Noticing new drops in the landing directory, with a cursor that misses none.

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
    """The drops that arrived after ``cursor``: ``*.csv`` files not starting with . or _.

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


def replaced_after_ingest(landing: Path, ledger: dict[str, tuple[int | None, int | None]]) -> list[str]:
    """Drops whose file differs from what was ingested under their name, sorted.

    ``ledger`` maps an ingested name to the size and modification time (milliseconds,
    the precision Spark lists) recorded when it was loaded. A name is ingested once:
    Spark's checkpoint will not hand the new file out, and its rows could repeat or
    contradict the old ones, so the caller reports these for the producer to re-send
    under a new name.
    """
    replaced = []
    for name, (size, mtime_ms) in ledger.items():
        try:
            stat = (landing / name).stat()
        except OSError:  # gone (moved, cleaned up): nothing was replaced
            continue
        if (size is not None and stat.st_size != size) or (
            mtime_ms is not None and stat.st_mtime_ns // 1_000_000 != mtime_ms
        ):
            replaced.append(name)
    return sorted(replaced)


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
