"""Fixtures for the Dagster layer: the real definitions with test resources bound."""

from __future__ import annotations

import dagster as dg
import pytest

from ecom_ingest_dagster.defs.resources import build_resources


@pytest.fixture(scope="session")
def definitions():
    from ecom_ingest_dagster.definitions import defs

    return defs() if callable(defs) else defs


@pytest.fixture
def dagster_resources(settings, spark):
    """The resources the code location builds, pointed at the test's state and schema."""
    # The suite shares one Spark session; a run must not stop it.
    return build_resources(settings, stop_spark_after_run=False)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
