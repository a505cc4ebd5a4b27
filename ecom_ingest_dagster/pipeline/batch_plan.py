"""What a micro-batch will read, known on the driver before any job: its files and its tasks.

The driver loads a batch itself when it is small (or, in local mode, one task's worth): it
needs the batch's files, which Spark's plan holds before anything runs. And the executors'
loader needs each listed path as a local file directly in the landing directory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re

import pandas as pd

from ecom_ingest_dagster.pipeline.ledger import FileTask

log = logging.getLogger(__name__)

# The most a single-task batch (or a run's one waiting drop) may hold to be loaded by the
# driver in local mode (~1.2M rows, ~5 s): a stop cannot cut the driver's load short as it
# cancels an executor's task, so a bigger one goes to the executors.
DRIVER_SINGLE_TASK_MAX_BYTES = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    tasks: int  # the scan's partitions: one executor task each
    files: list[tuple[str, int, int | None]] | None  # (path, size, mtime µs); None: more than the driver takes


def planned_files(batch_df, max_bytes: int | None) -> BatchPlan:
    """What a micro-batch's scan will read, without a job: its task count and, while they
    total at most ``max_bytes`` (None: any), its files (path, size, mtime in µs).

    ``foreachBatch`` hands over a DataFrame whose plan wraps the file scan's RDD; its
    partitions (``FilePartition``s of ``PartitionedFile``s) are made on the driver when the
    plan is, so walking the RDD's lineage gives exactly what the executors would see (the
    listed size and time), where even a ``collect()`` of these three columns is a job. Each
    file costs a few calls into the JVM (~0.7 ms): the walk stops once the batch is too big
    for the driver, where only the task count matters (2,000 files took 1.5-2.4 s).
    """
    found: list[tuple[str, int, int | None]] | None = []
    tasks, total = 0, 0
    pending = [batch_df._jdf.queryExecution().toRdd()]
    while pending:
        rdd = pending.pop()
        if rdd.getClass().getSimpleName() == "FileScanRDD":
            partitions = rdd.filePartitions()
            tasks += partitions.size()
            for i in range(partitions.size()):
                for part in (partitions.apply(i).files() if found is not None else ()):
                    total += int(part.fileSize())
                    if max_bytes is not None and total > max_bytes:
                        found = None
                        break
                    mtime_ms = part.modificationTime()
                    found.append((part.toPath().toString(), int(part.fileSize()), mtime_ms * 1000 if mtime_ms > 0 else None))
        dependencies = rdd.dependencies()
        pending.extend(dependencies.apply(i).rdd() for i in range(dependencies.size()))
    return BatchPlan(tasks, found)


def file_tasks(listed, landing_dir: str) -> list[FileTask]:
    """The drops among listed (path, size, mtime µs) entries, once each."""
    tasks: dict[str, FileTask] = {}
    for listed_path, size, mtime_us in listed:
        path = _local_path(listed_path)
        if not _directly_in(path, landing_dir):
            # Spark lists subdirectories too; the contract's drops are the directory's own
            # files, and the ledger keys them by base name.
            log.warning("%s is not directly in the landing directory: not a drop, left alone", path)
            continue
        landed_at = dt.datetime.fromtimestamp(mtime_us / 1e6, dt.timezone.utc) if pd.notna(mtime_us) else None
        tasks.setdefault(path, FileTask(path=path, size=int(size), landed_at=landed_at))
    return list(tasks.values())


def _local_path(listed: str) -> str:
    """The local path of a file Spark listed.

    Spark's ``path`` column is Hadoop's ``Path`` as text: ``file:`` and the path as it is,
    not URL-encoded. Parsing it as a URL would decode ``%2E%2E%2F`` into ``../`` and cut
    names at ``#`` or ``?``, loading another file, or none, under another name.
    """
    for prefix in ("file://", "file:"):
        if listed.startswith(prefix):
            return listed[len(prefix):]
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", listed):
        raise ValueError(f"only local or mounted file systems are supported for the landing directory, got {listed}")
    return listed


def _directly_in(path: str, directory: str) -> bool:
    """True for a file right inside ``directory``: only those are drops."""
    name = os.path.basename(path)
    return name not in ("", ".", "..") and os.path.dirname(os.path.normpath(path)) == os.path.normpath(directory)
