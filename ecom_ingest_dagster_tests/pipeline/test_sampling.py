"""The sampler's PostgreSQL statistics on every major version we ship or document.

The machine's server (15 in CI) and the embedded default a new user gets (18): each has
its own statistics views (15: no ``pg_stat_io``; 18: ``op_bytes`` gone, bytes per
operation), and a query one of them refuses would blank the report's database figures.
"""

from __future__ import annotations

import logging
import time

import psycopg
import pytest

from ecom_ingest_dagster.pipeline import database
from ecom_ingest_dagster.pipeline.sampling import PostgresStats


@pytest.fixture(scope="module")
def embedded_url(tmp_path_factory) -> str:
    """The embedded PostgreSQL of the zero-setup default, in a data directory of its own."""
    return database.start_embedded_postgres(tmp_path_factory.mktemp("embedded") / "pgdata")


@pytest.fixture(params=["machine", "embedded"])
def server_url(request, database_url) -> str:
    return database_url if request.param == "machine" else request.getfixturevalue("embedded_url")


def test_the_embedded_default_is_postgresql_18(embedded_url):
    with psycopg.connect(embedded_url) as conn:
        assert int(conn.execute("SHOW server_version_num").fetchone()[0]) >= 180000


def test_every_statistic_is_sampled_on_each_server(server_url, caplog):
    stats = PostgresStats(lambda: psycopg.connect(server_url))
    try:
        with caplog.at_level(logging.DEBUG, logger="ecom_ingest_dagster.pipeline.sampling"):
            first = stats.sample()
            with psycopg.connect(server_url, autocommit=True) as conn:  # something to count
                conn.execute("CREATE TEMP TABLE sampled AS SELECT g FROM generate_series(1, 20000) g")
                conn.execute("CHECKPOINT") if _superuser(conn) else None
            # The server publishes a backend's statistics when it flushes them (at most once
            # a second, and at its exit): read until the writes show, a few seconds at most.
            deadline = time.monotonic() + 5
            second = stats.sample()
            while not (second[3] or 0) > 0 and time.monotonic() < deadline:
                time.sleep(0.5)
                second = stats.sample()
    finally:
        stats.close()
    assert first[0] is not None and first[0] >= 1, first
    connections, transactions_per_s, read_mb_per_s, written_mb_per_s = second
    assert connections >= 1
    assert transactions_per_s is not None and transactions_per_s > 0
    assert read_mb_per_s is not None and read_mb_per_s >= 0
    assert written_mb_per_s is not None and written_mb_per_s > 0
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()], caplog.text


def test_a_query_the_server_refuses_is_a_warning_once(caplog):
    def refused():
        raise psycopg.OperationalError("column \"op_bytes\" does not exist")

    stats = PostgresStats(refused)
    with caplog.at_level(logging.DEBUG, logger="ecom_ingest_dagster.pipeline.sampling"):
        assert stats.sample() == (None, None, None, None)
        assert stats.sample() == (None, None, None, None)
    levels = [r.levelno for r in caplog.records if "unavailable" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG]


def _superuser(conn) -> bool:
    return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
