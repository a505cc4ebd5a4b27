"""What a report shows, read from PostgreSQL for a window of committed batches."""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
from typing import Mapping

from psycopg import sql
from psycopg.rows import dict_row

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline.database import table
from ecom_ingest_dagster.pipeline.ledger import accounting_violations
from ecom_ingest_dagster.pipeline.measure import summarize
from ecom_ingest_dagster.pipeline.sampling import summarize_samples


@dataclasses.dataclass
class ReportData:
    generated_at: dt.datetime
    since: dt.datetime | None
    until: dt.datetime
    batches: list[dict]
    files: list[dict]
    samples: list[dict]
    categories: list[tuple[str, int]]  # rows per value of the feed's category column, loaded in the window
    per_minute: list[tuple[dt.datetime, int]]
    table_total: int
    violations: list[dict]
    environment: dict[str, str]
    paths: dict[str, str]
    feed: FeedContract = c.FEED

    @property
    def summary(self) -> dict:
        return summarize(self.batches)

    @property
    def resources(self) -> dict:
        return summarize_samples(self.samples)



def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``30m``, ``24h``, ``7d`` before now, or an ISO-8601 moment (UTC when it has no offset)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - dt.timedelta(seconds=float(text[:-1]) * units[text[-1]])
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since takes 30m, 24h, 7d or an ISO-8601 time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)



def category_column(feed: FeedContract) -> str | None:
    """The column whose values the report breaks rows down by: the feed's first with a
    ``one_of`` rule (user_events' ``event_type``), None when it has none."""
    return next((col.name for col in feed.columns if col.rule("one_of")), None)


def collect(conn, schema: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
            paths: Mapping[str, str] | None = None, feed: FeedContract = c.FEED) -> ReportData:
    """Everything the report shows of ``feed`` (its tables in ``schema``), for batches committed in [since, until)."""
    window = _Window(schema, {"since": since, "until": until or dt.datetime.now(dt.timezone.utc)})
    category = category_column(feed)
    # A cursor of its own: the caller's connection keeps its row factory.
    with conn.cursor(row_factory=dict_row) as cur:
        batches = [{**r["metrics"], "started_at": r["started_at"], "committed_at": r["committed_at"]}
                   for r in window.rows(cur, "SELECT metrics, started_at, committed_at FROM {table} WHERE {window}"
                                        " ORDER BY committed_at, batch_id", "ingest_batches", "committed_at")]
        files = window.rows(cur, "SELECT file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected, reason,"
                                 " file_size, landed_at, committed_at FROM {table} WHERE {window} ORDER BY committed_at",
                            "ingest_files", "committed_at")
        samples = window.rows(cur, "SELECT * FROM {table} WHERE {window} ORDER BY sampled_at", "resource_samples", "sampled_at")
        categories = [(r["value"], r["n"]) for r in window.rows(
            # As text: the contract's one_of values are text whatever the column's type.
            cur, "SELECT coalesce({category}::text, '(none)') AS value, count(*) AS n FROM {table} WHERE {window}"
                 " GROUP BY 1 ORDER BY 2 DESC",
            feed.table, "created_at", category=category)] if category else []
        per_minute = [(r["minute"], r["n"]) for r in window.rows(
            cur, "SELECT date_trunc('minute', created_at) AS minute, count(*) AS n FROM {table} WHERE {window}"
                 " GROUP BY 1 ORDER BY 1", feed.table, "created_at")]
        total = cur.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(table(schema, feed.table))).fetchone()["n"]
        pg_version = cur.execute("SHOW server_version").fetchone()["server_version"]
    return ReportData(
        generated_at=dt.datetime.now(dt.timezone.utc), since=since, until=window.params["until"],
        batches=batches, files=files, samples=samples, categories=categories, per_minute=per_minute,
        table_total=total, violations=accounting_violations(conn, schema, since=since, until=window.params["until"], feed=feed),
        environment=_environment(pg_version), paths=dict(paths or {}), feed=feed,
    )


@dataclasses.dataclass(frozen=True)
class _Window:
    """The report's window as SQL: rows of one table whose ``column`` is in [since, until)."""

    schema: str
    params: dict

    def rows(self, cur, query: str, table_name: str, column: str, **columns: str) -> list[dict]:
        """``query``'s rows; its ``{table}``, ``{window}`` and ``{<name>}`` for each of ``columns`` (a column name) filled in."""
        where = sql.SQL("(%(since)s::timestamptz IS NULL OR {col} >= %(since)s) AND {col} < %(until)s").format(
            col=sql.Identifier(column))
        names = {key: sql.Identifier(name) for key, name in columns.items()}
        return cur.execute(sql.SQL(query).format(table=table(self.schema, table_name), window=where, **names),
                           self.params).fetchall()


def _environment(pg_version: str) -> dict[str, str]:
    import os

    import pandera
    import pyspark

    return {
        "spark": pyspark.__version__,
        "postgresql": pg_version.split()[0],
        "python": platform.python_version(),
        "pandera": pandera.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
    }

