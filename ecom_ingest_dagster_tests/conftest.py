"""Shared fixtures: a real PostgreSQL, one real Spark session, per-test state.

PostgreSQL comes from ECOM_INGEST_TEST_DATABASE_URL, else the machine's server on
127.0.0.1:5432, else an embedded server (pgserver) started for the session. Every test
gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest

from ecom_ingest_dagster.pipeline import database
from ecom_ingest_dagster.settings import Settings

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# A test that asks for any of these talks to a real PostgreSQL or Spark (directly or
# through another fixture): it is marked ``integration`` here, by what it uses, so no
# test can be forgotten in the fast tier (``pytest -m "not integration"``).
INTEGRATION_FIXTURES = frozenset({"database_url", "spark", "private_postgres"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("ECOM_INGEST_TEST_DATABASE_URL")
    if url:
        return url
    if _reachable(LOCAL_URL):
        return LOCAL_URL
    return database.start_embedded_postgres(tmp_path_factory.mktemp("pg") / "pgdata")


@pytest.fixture
def db_schema(database_url) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def db(database_url, db_schema):
    """A connection with the test schema migrated and on the search path."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        database.migrate(conn, db_schema)
        conn.execute(f'SET search_path TO "{db_schema}"')
        yield conn


@pytest.fixture
def settings(tmp_path, database_url, db_schema) -> Settings:
    home = tmp_path / "home"
    landing = tmp_path / "landing"
    landing.mkdir(parents=True)
    return Settings(
        home=home,
        landing_dir=landing,
        database_url=database_url,
        db_schema=db_schema,
        spark_master="local[2]",
    )


@pytest.fixture(scope="session")
def spark():
    """One Spark session for the whole test run: JVM start-up is the slow part."""
    from ecom_ingest_dagster.pipeline.spark import build_spark_session

    session = build_spark_session(
        Settings(home=Path("/tmp"), landing_dir=Path("/tmp"), database_url=None, spark_master="local[2]"),
        app_name="ecom-ingest-tests",
        ui=False,
    )
    yield session
    session.stop()


@pytest.fixture
def ingest(spark, settings, db):
    """Run one availableNow pass of the real streaming query; returns its RunSummary."""
    from ecom_ingest_dagster.pipeline.query import IngestQuery

    def run(run_settings: Settings | None = None):
        return IngestQuery(spark, run_settings or settings, settings.database_url).run_available_now()

    return run
