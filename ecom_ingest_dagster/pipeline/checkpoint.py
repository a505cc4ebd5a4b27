"""A landing directory's streaming checkpoint: where it is, whether a batch waits to be
replayed, and the lock that lets one run at a time use it.

The lock is a PostgreSQL session-level advisory lock, released when the process dies
however it dies; every place that takes or looks for it is here, so the key and its
encoding in ``pg_locks`` cannot drift apart.
"""

from __future__ import annotations

import hashlib
import time
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


# How long a run waits for the checkpoint's lock before it is refused. A run that has just
# ended lets go of the lock when its server session ends, which PostgreSQL does a moment
# after the client hangs up (tens of milliseconds; more on a busy machine): a run started
# right behind it would otherwise be refused as "busy" by a run that is already over.
LOCK_GRACE_SECONDS = 3.0


def try_lock(conn, checkpoint: Path, *, grace_s: float = LOCK_GRACE_SECONDS) -> bool:
    """Take the checkpoint's lock for ``conn``'s session; False when another session still
    holds it after ``grace_s`` seconds (0: one try).

    Asked again every 50 ms rather than waited for under ``lock_timeout``: each statement
    returns at once, so a stop that arrives meanwhile (Dagster's Terminate, which psycopg
    does not cancel a running statement for) leaves the connection usable, and no session
    setting needs putting back.
    """
    return _asked_until(
        lambda: conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_key(checkpoint),)).fetchone()[0],
        bool, grace_s)


def locked_elsewhere(conn, checkpoint: Path, *, grace_s: float = 0.0) -> bool:
    """True while some session holds the checkpoint's lock (looked up, not taken); with
    ``grace_s``, only if it still holds it that long after (a run that has just ended).

    ``pg_locks`` shows a bigint advisory key as two 32-bit halves: the high one in
    ``classid``, the low one in ``objid`` (``objsubid`` 1 for a single-key lock).
    """
    (value,) = conn.execute("SELECT hashtextextended(%s, 0)", (lock_key(checkpoint),)).fetchone()
    unsigned = value & 0xFFFFFFFFFFFFFFFF
    key = (unsigned >> 32, unsigned & 0xFFFFFFFF)

    def held() -> bool:
        locks = conn.execute(
            "SELECT classid::bigint, objid::bigint FROM pg_locks"
            " WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        return key in {(c, o) for c, o in locks}

    return _asked_until(held, lambda holding: not holding, grace_s)


def _asked_until(question, settled, grace_s: float):
    """``question()``'s answer once ``settled(answer)``, else its last answer after ``grace_s``
    seconds (asked every 50 ms; at least once)."""
    deadline = time.monotonic() + grace_s
    while True:
        answer = question()
        if settled(answer) or time.monotonic() >= deadline:
            return answer
        time.sleep(0.05)
