"""Warm sensor runs through the real daemon: `dagster dev` (conftest's `dagster_dev`), its sensor,
its run queue and run processes, the real PostgreSQL and Spark.

A sensor-launched run keeps its query going until no drop has come for
``WARM_IDLE_SECONDS``: drops that land meanwhile are its own, the metric assets are
recorded while it works, and stopping it (Terminate, or ``kill -9`` of its process) loses
nothing.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import time
from pathlib import Path

import dagster as dg
import numpy as np
import psutil
import psycopg
import pytest

from ecom_ingest_dagster.pipeline.run import Pipeline
from ecom_ingest_dagster.settings import Settings
from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from ..helpers import assert_accounting, copy_in_flight, files_held_at_commit, start_cli, wait_for
from .conftest import ROOT, WARM_IDLE_SECONDS

# The daemon's sensor loop runs at most every 5 s (dagster/_daemon/sensor.py); two loops
# are enough for a sensor that would launch a run to have done so.
SENSOR_LOOPS_S = 12
# What the JVM prints: its own warnings, log4j's lines (yy/MM/dd HH:mm:ss LEVEL), stack frames.
JVM_LINE = re.compile(
    r"Using incubator modules|log4j|NativeCodeLoader|setLogLevel\(|^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (WARN|ERROR|INFO) "
    r"|^\s+at (org|java|scala|io)\.", re.M)


def _ingest_runs(instance, since: float) -> list[dg.DagsterRun]:
    records = instance.get_run_records(filters=dg.RunsFilter(job_name="ingest_job"))
    return [r.dagster_run for r in records if r.create_timestamp.timestamp() >= since]


def _quiet(instance) -> None:
    """No ingest run in progress: a warm run of an earlier test would take this test's drops."""
    wait_for(lambda: not instance.get_run_records(filters=dg.RunsFilter(
        job_name="ingest_job", statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
                                         dg.DagsterRunStatus.STARTED])), 180, "earlier runs to end", interval=0.5)


def _committed(db, schema: str, name: str) -> dt.datetime | None:
    row = db.execute(f'SELECT committed_at FROM "{schema}".ingest_files WHERE file_name = %s', (name,)).fetchone()
    return row[0] if row else None


def _loading_run(db, schema: str, name: str) -> str:
    """The run whose micro-batch committed ``name``."""
    return db.execute(
        f'SELECT b.run_id FROM "{schema}".ingest_files f JOIN "{schema}".ingest_batches b USING (stream_id, batch_id)'
        " WHERE f.file_name = %s", (name,),
    ).fetchone()[0]


def _drop(landing, name: str, rows: int, seed: int):
    frame = generate_events(rows, rng=np.random.default_rng(seed), invalid_rate=0.05)
    write_drop(frame, landing, name)
    return frame


def _valid_ids(frames) -> set[str]:
    return {eid for f in frames for eid in f.loc[f["expected_reason"] == "", "event_id"]}


def _materializations(instance, run_id: str, asset: str) -> list:
    return [
        r.event_log_entry for r in instance.get_records_for_run(run_id).records
        if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        and r.event_log_entry.dagster_event.event_specific_data.materialization.asset_key == dg.AssetKey(asset)
    ]


@pytest.fixture
def world(dagster_dev, database_url):
    with dg.DagsterInstance.from_config(str(dagster_dev["home"])) as instance, \
            psycopg.connect(database_url, autocommit=True) as db:
        _quiet(instance)
        yield instance, db, dagster_dev["schema"], dagster_dev["landing"]


def test_a_warm_run_takes_the_drops_that_land_while_it_runs_and_ends_when_idle(world, dagster_dev):
    instance, db, schema, landing = world
    since = time.time()
    frames = [_drop(landing, "warm_a.csv", 20, 21)]
    wait_for(lambda: _committed(db, schema, "warm_a.csv"), 180, "the first drop to be committed", interval=0.2)
    # Two more while the run is warm: the second after the first progress record is due.
    frames.append(_drop(landing, "warm_b.csv", 20, 22))
    time.sleep(WARM_IDLE_SECONDS / 2)
    frames.append(_drop(landing, "warm_c.csv", 20, 23))
    last = wait_for(lambda: _committed(db, schema, "warm_c.csv"), 60, "the last drop", interval=0.2)

    (run_id,) = {_loading_run(db, schema, f"warm_{x}.csv") for x in "abc"}  # one run took all three
    run = wait_for(lambda: (r := instance.get_run_by_id(run_id)).is_finished and r, 120, "the warm run to end")
    assert run.status == dg.DagsterRunStatus.SUCCESS, dagster_dev["log"].read_text()[-3000:]
    assert run.tags["dagster/sensor_name"] == "landing_sensor"
    assert (run.tags["ecom_ingest/files_loaded"], run.tags["ecom_ingest/rows_loaded"]) == (
        "3", str(len(_valid_ids(frames))))
    ended = instance.get_run_record_by_id(run_id).end_time
    assert ended - last.timestamp() >= WARM_IDLE_SECONDS - 0.5, "the run ended before it was idle"

    # The metric assets while the run worked, not only at its end.
    throughput = _materializations(instance, run_id, "ingestion_throughput")
    assert len(throughput) >= 2
    assert throughput[0].timestamp < last.timestamp(), "no metrics were recorded before the run's last drop"

    # No run for drops already taken: the sensor requested one run for these three.
    time.sleep(SENSOR_LOOPS_S)
    assert [r.run_id for r in _ingest_runs(instance, since)] == [run_id]
    loaded = {r[0] for r in db.execute(f"SELECT event_id::text FROM \"{schema}\".user_events WHERE source_file LIKE 'warm_%'")}
    assert loaded == _valid_ids(frames)

    # The run said what it waited for, and what its start cost.
    messages = [entry.user_message for entry in instance.all_logs(run_id)]
    assert any(m.startswith("warm: taking drops from ") and f"none has come for {WARM_IDLE_SECONDS:g} s" in m
               for m in messages), messages
    summary = next(m for m in messages if "; before the first batch: Spark " in m)
    assert re.search(r"before the first batch: Spark (\d+\.\d) s", summary).group(1) != "0.0", summary

    # The terminal shows Dagster's lines, not the JVM's: Spark's console output is in its log.
    terminal = dagster_dev["log"].read_text(errors="replace")
    jvm_lines = [line for line in terminal.splitlines() if JVM_LINE.search(line)]
    assert not jvm_lines, jvm_lines[:10]
    # Nor the daemon's two lines per sensor tick (every 2 s here), which buried the runs' own.
    assert "Checking for new runs for sensor" not in terminal and "No run requests returned" not in terminal
    assert "ecom-ingest: the Dagster UI at http://127.0.0.1:" in terminal
    spark_log = Path(dagster_dev["env"]["ECOM_INGEST_HOME"]) / "logs" / "spark.log"
    assert JVM_LINE.search(spark_log.read_text(errors="replace"))


def test_terminating_a_warm_run_between_drops_loses_nothing_and_the_next_drop_gets_a_run(world, dagster_dev):
    from dagster_graphql import DagsterGraphQLClient

    instance, db, schema, landing = world
    client = DagsterGraphQLClient("127.0.0.1", port_number=int(dagster_dev["url"].rsplit(":", 1)[1]))
    first = _drop(landing, "halt_a.csv", 20, 31)
    wait_for(lambda: _committed(db, schema, "halt_a.csv"), 180, "the first drop", interval=0.2)
    run_id = _loading_run(db, schema, "halt_a.csv")
    client.terminate_run(run_id)  # the UI's Terminate, while the run waits for drops
    run = wait_for(lambda: (r := instance.get_run_by_id(run_id)).is_finished and r, 120, "the run to stop")
    assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)

    second = _drop(landing, "halt_b.csv", 20, 32)
    wait_for(lambda: _committed(db, schema, "halt_b.csv"), 180, "the next drop, by a new run", interval=0.5)
    assert _loading_run(db, schema, "halt_b.csv") != run_id
    loaded = {r[0] for r in db.execute(f"SELECT event_id::text FROM \"{schema}\".user_events WHERE source_file LIKE 'halt_%'")}
    assert loaded == _valid_ids([first, second])
    assert_accounting_in(db, schema)


def _run_worker_pid(instance, run_id: str) -> int:
    for record in instance.get_records_for_run(run_id).records:
        entry = record.event_log_entry
        text = (entry.dagster_event.message if entry.dagster_event else None) or entry.user_message or ""
        found = re.search(r"Started process for run \(pid: (\d+)\)", text)
        if found:
            return int(found.group(1))
    return 0


def test_a_warm_run_killed_mid_load_loses_nothing_and_leaves_nothing_running(world, dagster_dev, database_url):
    instance, db, schema, landing = world
    with files_held_at_commit(database_url, schema) as held:
        # Big enough for the executors (not the driver's small-batch path).
        frames = [_drop(landing, f"killed_{i}.csv", 80_000, 40 + i) for i in range(3)]
        run_id = wait_for(lambda: next((r.run_id for r in _ingest_runs(instance, 0)
                                        if r.status == dg.DagsterRunStatus.STARTED), None),
                          180, "the sensor run", interval=0.2)
        wait_for(held, 180, "a drop's rows copied, its transaction open", interval=0.1)
        worker = psutil.Process(wait_for(lambda: _run_worker_pid(instance, run_id), 30, "the run worker's pid",
                                         interval=0.2))
        tree = worker.children(recursive=True)  # its Spark JVM and the JVM's Python workers
        worker.send_signal(signal.SIGKILL)
        # The JVM notices its parent's end (its stdin closes) and takes its Python workers
        # along; until they are gone the lock stays, so none of their loads can commit.
        _, alive = psutil.wait_procs(tree, timeout=60)
        assert not alive, f"left running after the run worker was killed: {[p.pid for p in alive]}"

    wait_for(lambda: not copy_in_flight(db, schema), 60, "the open COPY to be rolled back")
    files = lambda: db.execute(  # noqa: E731
        f'SELECT count(*) FROM "{schema}".ingest_files WHERE file_name LIKE %s', ("killed_%",)
    ).fetchone()[0]
    assert files() < 3, "the run finished before it was killed"

    # The code server that launched the run sees its process gone and fails the run; the
    # instance's run retries relaunch it, and the monitoring daemon frees its pool slot.
    killed = wait_for(lambda: (r := instance.get_run_by_id(run_id)).is_finished and r, 60, "the run to be failed")
    assert killed.status == dg.DagsterRunStatus.FAILURE
    retry = wait_for(lambda: next((r for r in _ingest_runs(instance, 0) if r.tags.get("dagster/parent_run_id") == run_id),
                                  None), 120, "the run's retry")
    retry = wait_for(lambda: (r := instance.get_run_by_id(retry.run_id)).is_finished and r, 300, "the retry to finish")
    assert retry.status == dg.DagsterRunStatus.SUCCESS, dagster_dev["log"].read_text()[-3000:]
    loaded = {r[0] for r in db.execute(f"SELECT event_id::text FROM \"{schema}\".user_events WHERE source_file LIKE 'killed_%'")}
    assert loaded == _valid_ids(frames)
    assert files() == 3
    assert_accounting_in(db, schema)


def test_the_sensor_stands_aside_for_a_cli_stream_and_no_run_fails(world, dagster_dev):
    instance, db, schema, landing = world
    since = time.time()
    env = {k: v for k, v in dagster_dev["env"].items() if k.startswith("ECOM_INGEST_")}
    stream = start_cli(["stream", "--trigger-seconds", "0.5"], env, ROOT)
    try:
        # The stream holds the landing directory (its checkpoint lock) before its query starts.
        holder = Pipeline(Settings.from_env({k: v for k, v in env.items()}), interactive=True)
        wait_for(lambda: stream.poll() is not None or holder.held_elsewhere(), 120, "the CLI stream to start", interval=0.5)
        assert stream.poll() is None, stream.communicate()[1][-2000:]
        frames = [_drop(landing, f"beside_{i}.csv", 20, 50 + i) for i in range(3)]
        for i in range(3):
            wait_for(lambda i=i: _committed(db, schema, f"beside_{i}.csv"), 60, "the stream to take the drops", interval=0.2)
        time.sleep(SENSOR_LOOPS_S)
        runs = _ingest_runs(instance, since)
        assert runs == [], f"the sensor launched {[(r.run_id, r.status) for r in runs]} beside the stream"
    finally:
        stream.send_signal(signal.SIGINT)
        _, err = stream.communicate(timeout=120)
    assert stream.returncode == 0, err[-2000:]
    assert {_loading_run(db, schema, f"beside_{i}.csv")[:4] for i in range(3)} == {"cli-"}
    loaded = {r[0] for r in db.execute(f"SELECT event_id::text FROM \"{schema}\".user_events WHERE source_file LIKE 'beside_%'")}
    assert loaded == _valid_ids(frames)


def assert_accounting_in(db, schema: str) -> None:
    db.execute(f'SET search_path TO "{schema}"')
    try:
        assert_accounting(db)
    finally:
        db.execute("RESET search_path")
