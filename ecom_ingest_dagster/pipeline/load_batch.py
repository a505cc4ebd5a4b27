"""Loading a micro-batch's files: small ones together, one transaction per group.

A 20-row drop's own work (read, validate, encode, COPY) is a millisecond or two. Loaded
on its own it also pays a transaction (its commit waits for the WAL on disk), a ledger
look-up, a claim, Pandera's fixed cost per call and two COPY statements: tens of
milliseconds, so a backlog of small drops drained at 20-27 files/s. Here the small files
of a batch are loaded in groups (up to ``LoadOptions.group_max_bytes`` each): read one by
one, validated as one frame (every row keeps its file and record number), their valid
rows sent in one binary COPY and their rejected rows in one, a ledger row written per
file, and the group committed once. Exactly-once holds as for a single file: the ledger
rows commit with the rows, and each file is claimed first (advisory locks, in name order,
so two runs holding the same files wait for each other instead of deadlocking).

A group is all or nothing, never half: whatever would make one file's load differ from
the rest (a file rejected whole, a duplicate event id, a file changed while it was read,
a file another run committed meanwhile) sends that file, or the whole group after a
rollback, down the one-file path (``load.ingest_file``), which settles it file by file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa

from ecom_ingest_dagster.pipeline.database import ReconnectingConnection
from ecom_ingest_dagster.pipeline.encode import DirectSink
from ecom_ingest_dagster.pipeline.ledger import FileOutcome, FileTask, LoadedMeanwhile, claim, file_rows, record_file
from ecom_ingest_dagster.pipeline.load import (
    LoadOptions,
    changed_since,
    file_state,
    finish_move,
    ingest_file,
    release_memory,
)
from ecom_ingest_dagster.pipeline.measure import StageTimes
from ecom_ingest_dagster.pipeline.quarantine import copy_rejected, rejected_frame, to_csv, with_source
from ecom_ingest_dagster.pipeline.read import Block, CsvDrop, FileRejected
from ecom_ingest_dagster.pipeline.validate import validate

log = logging.getLogger(__name__)


def ingest_files(tasks: Iterable[FileTask], options: LoadOptions, *, database_url: str,
                 db_retry_s: float = 0.0) -> list[FileOutcome]:
    """One task's share of a batch over a connection of its own (an executor's)."""
    with ReconnectingConnection(database_url, db_retry_s) as db:
        return ingest_over(db, tasks, options)


def ingest_over(db: ReconnectingConnection, tasks: Iterable[FileTask], options: LoadOptions) -> list[FileOutcome]:
    """Load ``tasks`` over ``db`` group by group; the outcomes in the tasks' order.

    A connection lost mid-group takes the group's transaction with it; the group is
    loaded again on a new connection (files it committed before are found in the ledger).
    """
    tasks = list(tasks)
    outcomes: dict[str, FileOutcome] = {}
    for group in plan_groups(tasks, options.group_max_bytes):
        for outcome in db.run(lambda conn, group=group: load_group(conn, group, options)):
            outcomes[outcome.file_name] = outcome
        if sum(task.size for task in group) >= options.block_bytes:
            release_memory()  # after a big file only: a collection costs more than a small file's load
    return [outcomes[task.file_name] for task in tasks]


def plan_groups(tasks: list[FileTask], group_max_bytes: int) -> list[list[FileTask]]:
    """Consecutive small files together, up to ``group_max_bytes`` a group; bigger files alone."""
    groups: list[list[FileTask]] = []
    current: list[FileTask] = []
    size = 0
    for task in tasks:
        if task.size > group_max_bytes:
            groups.append([task])
            continue
        if current and size + task.size > group_max_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(task)
        size += task.size
    if current:
        groups.append(current)
    return groups


def load_group(conn: psycopg.Connection, group: list[FileTask], options: LoadOptions) -> list[FileOutcome]:
    """Load a group's files in one transaction, or file by file where they cannot go together."""
    if len(group) == 1:
        return [ingest_file(conn, group[0], options)]
    done = file_rows(conn, options.schema, [task.file_name for task in group])
    conn.rollback()
    outcomes = list(done.values())  # replays: nothing to write, their moves are the landing sweep's
    read, alone = _read_files([task for task in group if task.file_name not in done], options)
    if len(read) > 1:
        try:
            together = _load_together(conn, read, options)
        except _NotTogether as why:
            log.info("%d files loaded one by one, not together: %s", len(read), why)
            alone = [f.task for f in read] + alone
        else:
            for f, outcome in zip(read, together):
                finish_move(f.task, outcome, options)
            outcomes.extend(together)
    else:
        alone = [f.task for f in read] + alone
    outcomes.extend(ingest_file(conn, task, options) for task in alone)
    return outcomes


class _NotTogether(Exception):
    """The group cannot commit as one; its transaction is rolled back."""


@dataclasses.dataclass
class _ReadFile:
    task: FileTask
    state: tuple[int, int, int]  # file_state before it was read
    drop: CsvDrop
    blocks: list[Block]
    read_ms: float


def _read_files(tasks: list[FileTask], options: LoadOptions) -> tuple[list[_ReadFile], list[FileTask]]:
    """The files read whole into memory (each is at most a group's bytes), and those that
    go the one-file way: rejected whole, unreadable, or with no records."""
    read, alone = [], []
    for task in tasks:
        started = time.perf_counter()
        try:
            state = file_state(task)
            drop = CsvDrop(Path(task.path), block_bytes=options.block_bytes, feed=options.feed)
            blocks = list(drop.blocks())
        except (FileRejected, OSError):
            alone.append(task)  # the one-file path records why
            continue
        if drop.records == 0:
            alone.append(task)
            continue
        read.append(_ReadFile(task, state, drop, blocks, (time.perf_counter() - started) * 1000.0))
    return read, alone


@dataclasses.dataclass
class _Rows:
    """The group's records as one frame, with where each came from."""

    frame: pd.DataFrame  # contract columns as text, indexed 0..n-1
    file_of: np.ndarray  # each record's file (an index into the group)
    record_of: np.ndarray  # each record's number in its file
    malformed: list[tuple[int, int, str]]  # (file, record number, line) of records of the wrong width


def _one_frame(files: list[_ReadFile], columns: tuple[str, ...]) -> _Rows:
    parts: dict[str, list[pa.Array]] = {column: [] for column in columns}
    file_of, record_of, malformed = [], [], []
    for i, f in enumerate(files):
        for block in f.blocks:
            n = len(block.numbers)
            for column in columns:
                # A column a producer left out is missing in every row, as normalize() takes it.
                parts[column].append(block.columns.get(column, pa.nulls(n, pa.string())))
            file_of.append(np.full(n, i, dtype=np.int64))
            record_of.append(block.numbers)
            malformed.extend((i, number, text) for number, text in block.malformed)
    frame = pd.DataFrame(
        {column: pd.arrays.ArrowExtensionArray(pa.chunked_array(values, pa.string())) for column, values in parts.items()}
    )
    return _Rows(frame, np.concatenate(file_of), np.concatenate(record_of), malformed)


def _load_together(conn: psycopg.Connection, files: list[_ReadFile], options: LoadOptions) -> list[FileOutcome]:
    """One transaction: the claims, one COPY of the valid rows, one of the rejected, a ledger row per file."""
    schema, batch_id = options.schema, options.batch_id
    started_at = dt.datetime.now(dt.timezone.utc)
    times = StageTimes()
    names = np.array([f.task.file_name for f in files], dtype=object)
    with times.stage("validate"):
        rows = _one_frame(files, options.feed.carried_columns)
        result = validate(rows.frame, now=options.at(), feed=options.feed)
    with times.stage("frame"):
        valid_file = rows.file_of[result.valid.index.to_numpy()]
        sink = DirectSink(schema, options.feed)
        statement = sink.statement(conn)
        payload = sink.encode(result.valid, pa.array(names[valid_file], pa.string()), batch_id) + sink.close()
        bad_index = result.rejected.index.to_numpy()
        bad = rejected_frame(
            result.rejected.set_axis(pd.Index(rows.record_of[bad_index], name="record_number")),
            [(number, text) for _, number, text in rows.malformed], options.feed,
        )
        bad_file = np.concatenate([rows.file_of[bad_index], np.array([i for i, _, _ in rows.malformed], dtype=np.int64)])
        bad_payload = to_csv(with_source(bad, list(names[bad_file]), batch_id, options.feed)) if len(bad) else b""
    try:
        with conn.transaction():
            for name in sorted(names):
                claim(conn, schema, name)
            with times.stage("write"):
                with conn.cursor() as cur, cur.copy(statement) as copy:
                    copy.write(payload)
                if bad_payload:
                    copy_rejected(conn, schema, bad_payload, options.feed)
            changed = [f.task.file_name for f in files if changed_since(f.task, f.state)]
            if changed:
                raise _NotTogether(f"{changed[0]} changed while it was read")
            outcomes = _outcomes(files, valid_file, bad_file, bad, times)
            for f, outcome in zip(files, outcomes):
                record_file(conn, schema, outcome, f.task, options.stream_id, batch_id, started_at, options.feed.version)
    except LoadedMeanwhile as loaded:
        raise _NotTogether(f"{loaded.outcome.file_name} was committed by another run meanwhile") from None
    except psycopg.errors.UniqueViolation:
        raise _NotTogether("an event id is loaded already or comes twice") from None
    except psycopg.errors.DeadlockDetected:
        raise _NotTogether("a deadlock with another run's files") from None
    return outcomes


def _outcomes(files: list[_ReadFile], valid_file: np.ndarray, bad_file: np.ndarray, bad: pd.DataFrame,
              times: StageTimes) -> list[FileOutcome]:
    """Each file's counts; the group's validate, frame and write time shared out by records."""
    loaded = np.bincount(valid_file, minlength=len(files))
    rejected = np.bincount(bad_file, minlength=len(files))
    reason_counts: list[dict[str, int]] = [{} for _ in files]
    for i, reasons in zip(bad_file, bad["reasons"]):
        counts = reason_counts[i]
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
    records = sum(f.drop.records for f in files) or 1
    outcomes = []
    for i, f in enumerate(files):
        share = f.drop.records / records
        outcomes.append(FileOutcome(
            file_name=f.task.file_name, status="ingested", rows_total=f.drop.records,
            rows_loaded=int(loaded[i]), rows_rejected=int(rejected[i]), reason_counts=reason_counts[i],
            extra_columns=f.drop.extra_columns, landed_at=f.task.landed_at,
            times=StageTimes(f.read_ms, times.validate_ms * share, times.frame_ms * share, times.write_ms * share),
        ))
    return outcomes
