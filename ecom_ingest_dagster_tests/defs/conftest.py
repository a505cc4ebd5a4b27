"""Fixtures for the Dagster layer: the real definitions with test resources bound."""

from __future__ import annotations

import dagster as dg
import pytest

from ecom_ingest_dagster.defs.resources import PostgresResource, SparkResource, build_resources


@pytest.fixture(scope="session")
def definitions():
    from ecom_ingest_dagster.definitions import defs

    return defs() if callable(defs) else defs


@pytest.fixture
def dagster_resources(settings, spark):
    """The resources the code location builds, pointed at the test's state and schema."""
    resources = build_resources(settings)
    resources["postgres"] = PostgresResource(
        database_url=settings.database_url, db_schema=settings.db_schema, home=str(settings.home)
    )
    # The suite shares one Spark session; a run must not stop it.
    resources["spark"] = SparkResource(master="local[2]", stop_after_run=False)
    return resources


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
