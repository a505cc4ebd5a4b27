"""Small helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg

from ecom_ingest_dagster import contract as c

GOOD_ROW = {
    "event_id": "8a3f0c2e-1b2d-4c5e-9f00-112233445566",
    "user_id": "user_42",
    "session_id": "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
    "event_type": "purchase",
    "product_id": "prod_7",
    "product_name": "Blue mug",
    "category": "Kitchen",
    "price": "19.99",
    "quantity": "2",
    "event_timestamp": "2026-11-28T10:15:30Z",
}


# The command as installed (the console script beside this interpreter), else the module.
_CONSOLE_SCRIPT = Path(sys.executable).with_name("ecom-ingest")
CLI = [str(_CONSOLE_SCRIPT)] if _CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "ecom_ingest_dagster.tools.cli"]


def _cli_env(env_extra: dict) -> dict:
    # No ECOM_INGEST_* of the test process leaks in: the command sees only what is given.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")}, **env_extra}


def run_cli(args, env_extra: dict, cwd: Path, timeout=300) -> subprocess.CompletedProcess:
    """``ecom-ingest ARGS`` in a real process, to its end."""
    return subprocess.run(CLI + args, env=_cli_env(env_extra), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def start_cli(args, env_extra: dict, cwd: Path) -> subprocess.Popen:
    """``ecom-ingest ARGS`` started in a real process; ``communicate()`` collects its output."""
    return subprocess.Popen(
        CLI + args, env=_cli_env(env_extra), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def event_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def row(n: int, **changes) -> dict:
    return {**GOOD_ROW, "event_id": event_id(n), **changes}


def csv_text(rows: list[dict], columns: list[str] | None = None, newline: str = "\n") -> str:
    columns = columns or list(c.COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def drop(landing: Path, name: str, content: str | bytes) -> Path:
    """Place a file atomically, as the contract asks of producers."""
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f".{name}.tmp"
    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    os.replace(tmp, landing / name)
    return landing / name


def ledger(conn) -> dict[str, dict]:
    cur = conn.execute(
        "SELECT file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected, reason, batch_id"
        " FROM ingest_files ORDER BY file_name"
    )
    names = [d.name for d in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def assert_accounting(conn) -> None:
    """The contract's identity per file, and the ledger agreeing with the two tables."""
    rows = conn.execute(
        """
        SELECT f.file_name, f.rows_total, f.rows_loaded, f.rows_duplicate, f.rows_rejected,
               (SELECT count(*) FROM user_events u WHERE u.source_file = f.file_name),
               (SELECT count(*) FROM rejected_events r WHERE r.source_file = f.file_name AND r.replayed_at IS NULL)
        FROM ingest_files f
        """
    ).fetchall()
    for name, total, loaded, duplicate, rejected, in_events, in_rejected in rows:
        assert total == loaded + duplicate + rejected, name
        assert loaded == in_events, name
        assert rejected == in_rejected, name
    batch_totals = conn.execute(
        "SELECT coalesce(sum(rows_total),0), coalesce(sum(rows_loaded + rows_duplicate + rows_rejected),0)"
        " FROM ingest_batches"
    ).fetchone()
    assert batch_totals[0] == batch_totals[1]


def copy_in_flight(conn, schema: str) -> bool:
    """True while some session COPYs rows into ``schema``'s user_events (a load is mid-file)."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE %s", (f'COPY "{schema}".%user_events%',)
    ).fetchone()[0] > 0


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    """``predicate()``'s first true value, asked every ``interval`` seconds for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def waiting_on_lock(conn, schema: str, table_name: str) -> bool:
    """True while some session waits for a lock on ``schema.table_name`` (the other test
    worker's schema has a table of that name too)."""
    return conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " WHERE NOT l.granted AND c.relname = %s AND c.relnamespace = %s::regnamespace",
        (table_name, f'"{schema}"'),
    ).fetchone()[0] > 0


@contextlib.contextmanager
def files_held_at_commit(database_url: str, schema: str):
    """Until the block ends, each drop's rows stay in its open transaction: the file ledger
    is locked against writes (reads pass), so a load COPYs its rows and then waits to
    record the file. Yields a callable: True once some load waits there. A kill or a stop
    at that point is a state that lasts, not a COPY of a few milliseconds a poll may miss."""
    with psycopg.connect(database_url) as locker:
        locker.execute(f'LOCK TABLE "{schema}".ingest_files IN EXCLUSIVE MODE')
        yield lambda: waiting_on_lock(locker, schema, "ingest_files")
        locker.rollback()


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started (the JVM, the Python workers): nothing
    gets to clean up, as in a power cut."""
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:  # already gone
        tree = []
    for proc in tree:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    process.wait(30)
