"""A landing directory's streaming checkpoint: where it is, whether a batch waits to be
replayed, and the lock that lets one run at a time use it.

The lock is a PostgreSQL session-level advisory lock, released when the process dies
however it dies; every place that takes or looks for it is here, so the key and its
encoding in ``pg_locks`` cannot drift apart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ecom_ingest_dagster.settings import Settings, redact_url


class IngestBusy(RuntimeError):
    """Another run holds the query's checkpoint (two queries on one checkpoint corrupt it)."""


def busy_message(landing_dir: Path) -> str:
    return (f"another ingest or stream run is processing {landing_dir} into this database;"
            " wait for it to finish (or stop it) and run again")


def checkpoint_path(settings: Settings, database_url: str) -> Path:
    """The query's checkpoint: one per (landing directory, database, schema), so pointing the
    same state directory at another database does not skip files that one never saw."""
    identity = f"{settings.landing_dir}|{redact_url(database_url)}|{settings.db_schema}"
    return settings.checkpoint_dir / f"ingest-{hashlib.sha1(identity.encode()).hexdigest()[:12]}"


def lock_key(checkpoint: Path) -> str:
    """The advisory lock a run holds on its checkpoint (``pg_try_advisory_lock(hashtextextended(key, 0))``)."""
    return f"ecom_ingest/checkpoint/{checkpoint.name}"


def has_batch_to_replay(checkpoint: Path) -> bool:
    """True when Spark planned a micro-batch (offsets/N) whose commit it has not recorded (commits/N)."""
    def last(folder: str) -> int:
        ids = [int(p.name) for p in (checkpoint / folder).glob("[0-9]*") if p.name.isdigit()]
        return max(ids, default=-1)

    return last("offsets") > last("commits")


def try_lock(conn, checkpoint: Path) -> bool:
    """Take the checkpoint's lock for ``conn``'s session; False when another session holds it."""
    return conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_key(checkpoint),)).fetchone()[0]


def locked_elsewhere(conn, checkpoint: Path) -> bool:
    """True while some session holds the checkpoint's lock (looked up, not taken).

    ``pg_locks`` shows a bigint advisory key as two 32-bit halves: the high one in
    ``classid``, the low one in ``objid`` (``objsubid`` 1 for a single-key lock).
    """
    (value,) = conn.execute("SELECT hashtextextended(%s, 0)", (lock_key(checkpoint),)).fetchone()
    locks = conn.execute(
        "SELECT classid::bigint, objid::bigint FROM pg_locks"
        " WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    unsigned = value & 0xFFFFFFFFFFFFFFFF
    return (unsigned >> 32, unsigned & 0xFFFFFFFF) in {(c, o) for c, o in locks}
