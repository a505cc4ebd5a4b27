"""Always on, through the real daemon (`dagster dev` with ECOM_INGEST_ALWAYS_ON): the sensor
keeps one ingest run alive for the landing directory.

It starts one with no drop at all (as when the deployment starts), a drop that lands after
a quiet spell is taken by that run (no new run, no JVM to start), and when the run ends
(Terminate here) the sensor starts another.
"""

from __future__ import annotations

import time

import dagster as dg
import numpy as np
import psycopg
import pytest

from ecom_ingest_dagster.pipeline.run import Pipeline
from ecom_ingest_dagster.settings import Settings
from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from ..helpers import assert_accounting, wait_for
from .conftest import running_dagster_dev

_LIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@pytest.fixture(scope="module")
def always_on(tmp_path_factory, database_url):
    base = tmp_path_factory.mktemp("always_on")
    with running_dagster_dev(base, database_url, ECOM_INGEST_ALWAYS_ON="true") as dev, \
            dg.DagsterInstance.from_config(str(dev["home"])) as instance, \
            psycopg.connect(database_url, autocommit=True) as db:
        settings = Settings(home=base / "state", landing_dir=dev["landing"], database_url=database_url,
                            db_schema=dev["schema"])
        yield dev, instance, db, settings


def _live_runs(instance) -> list[dg.DagsterRun]:
    return [r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(job_name="ingest_job", statuses=_LIVE))]


def _taking_drops(settings: Settings) -> bool:
    """The run's query holds the landing directory: Spark is up and the stream waits for drops."""
    return Pipeline(settings, interactive=True).held_elsewhere()


def _committed_by(db, schema: str, name: str) -> str | None:
    row = db.execute(
        f'SELECT b.run_id FROM "{schema}".ingest_files f JOIN "{schema}".ingest_batches b USING (stream_id, batch_id)'
        " WHERE f.file_name = %s", (name,),
    ).fetchone()
    return row[0] if row else None


def _drop(landing, name: str, seed: int):
    frame = generate_events(20, rng=np.random.default_rng(seed), invalid_rate=0.1)
    write_drop(frame, landing, name)
    return frame


def test_the_sensor_keeps_one_run_alive_that_takes_drops_after_a_quiet_spell_and_replaces_it_when_it_ends(always_on):
    from dagster_graphql import DagsterGraphQLClient

    dev, instance, db, settings = always_on
    schema, landing = dev["schema"], dev["landing"]
    # No drop yet: the sensor starts the run by itself, and only one.
    (run,) = wait_for(lambda: _live_runs(instance), 120, "the always-on run to be launched")
    assert run.tags["ecom_ingest/always_on"] == "true"
    wait_for(lambda: _taking_drops(settings), 180, "the always-on run's query to start", interval=0.5)
    time.sleep(6)  # a quiet spell longer than the default warm-up of sensor runs in these tests (4 s)
    assert [r.run_id for r in _live_runs(instance)] == [run.run_id]

    first = _drop(landing, "on_a.csv", 51)
    wait_for(lambda: _committed_by(db, schema, "on_a.csv"), 60, "the drop to be committed", interval=0.2)
    assert _committed_by(db, schema, "on_a.csv") == run.run_id  # taken warm, by the live run
    assert [r.run_id for r in _live_runs(instance)] == [run.run_id]  # and it goes on

    client = DagsterGraphQLClient("127.0.0.1", port_number=int(dev["url"].rsplit(":", 1)[1]))
    client.terminate_run(run.run_id)
    ended = wait_for(lambda: (r := instance.get_run_by_id(run.run_id)).is_finished and r, 120, "the run to stop")
    assert ended.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
    replacement = wait_for(lambda: [r for r in _live_runs(instance) if r.run_id != run.run_id], 120,
                           "the sensor to start another run")[0]
    wait_for(lambda: _taking_drops(settings), 180, "the new run's query to start", interval=0.5)

    second = _drop(landing, "on_b.csv", 52)
    wait_for(lambda: _committed_by(db, schema, "on_b.csv"), 60, "the next drop", interval=0.2)
    assert _committed_by(db, schema, "on_b.csv") == replacement.run_id
    loaded = {r[0] for r in db.execute(f"SELECT event_id::text FROM \"{schema}\".user_events")}
    assert loaded == {eid for f in (first, second) for eid in f.loc[f["expected_reason"] == "", "event_id"]}
    db.execute(f'SET search_path TO "{schema}"')
    assert_accounting(db)
