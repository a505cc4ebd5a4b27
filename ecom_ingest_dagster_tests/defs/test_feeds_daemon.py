"""Two feeds side by side through the real `dagster dev` (webserver, daemon, sensors): a
feed added as one contract file gets its own sensor-launched runs, which do not wait for
user_events' (a landing pool each), and both load exactly once."""

from __future__ import annotations

import dagster as dg
import numpy as np
import psycopg

from ecom_ingest_dagster.feeds import load_feed, new_contract
from ecom_ingest_dagster.tools.feed_generator import generate_rows
from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from .conftest import running_dagster_dev, wait_for


def test_a_feed_added_as_a_file_runs_beside_user_events_each_exactly_once(tmp_path, database_url):
    feeds_dir = tmp_path / "feeds"
    refunds = load_feed(new_contract("refunds", feeds_dir))  # the user's own feed: its sensor is on
    (tmp_path / "dev").mkdir()
    with running_dagster_dev(tmp_path / "dev", database_url, ECOM_INGEST_FEEDS_DIR=str(feeds_dir)) as dev:
        refunds_schema = f"{dev['schema']}_refunds"
        try:
            frame = generate_rows(refunds, 80, rng=np.random.default_rng(21), invalid_rate=0.1)
            frame["shop"] = "north"  # a column the contract does not name: rescued, row by row
            write_drop(frame.iloc[:40], dev["landing"].parent / "refunds" / "landing", "refunds_1.csv",
                       [*refunds.column_names, "shop"])
            write_drop(frame.iloc[40:], dev["landing"].parent / "refunds" / "landing", "refunds_2.csv.gz",
                       refunds.column_names)
            write_drop(generate_events(50, rng=np.random.default_rng(22)), dev["landing"], "events_1.csv")

            with dg.DagsterInstance.from_config(str(dev["home"])) as instance:
                def finished(job: str):
                    def look():
                        runs = [r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job))]
                        return runs[0] if runs and runs[0].is_finished else None
                    return look

                events_run = wait_for(finished("ingest_job"), 300, "user_events' sensor run", interval=2)
                refunds_run = wait_for(finished("refunds_ingest_job"), 300, "the refunds sensor run", interval=2)
                assert events_run.status == refunds_run.status == dg.DagsterRunStatus.SUCCESS, dev["log"].read_text()[-3000:]
                assert refunds_run.tags["dagster/sensor_name"] == "refunds_landing_sensor"
                stats = {run.run_id: instance.get_run_stats(run.run_id) for run in (events_run, refunds_run)}
                first, second = sorted(stats.values(), key=lambda s: s.start_time)
                # each in a pool of its own: the second started before the first had ended
                assert second.start_time < first.end_time, stats
                mat = instance.get_latest_materialization_event(dg.AssetKey(["refunds", "refunds"]))
                assert mat.run_id == refunds_run.run_id
            bad = int((frame["expected_reason"] != "").sum())
            with psycopg.connect(database_url) as conn:
                loaded = conn.execute(f'SELECT count(*), count(DISTINCT record_id) FROM "{refunds_schema}".refunds').fetchone()
                assert loaded == (80 - bad, 80 - bad)
                assert conn.execute(f'SELECT count(*) FROM "{refunds_schema}".refunds_rejected').fetchone()[0] == bad
                rescued = conn.execute(f"""SELECT count(*) FILTER (WHERE source_file = 'refunds_1.csv'),
                                                  count(*) FILTER (WHERE rescued = '{{"shop": "north"}}'), count(rescued)
                                           FROM "{refunds_schema}".refunds""").fetchone()
                assert rescued[0] == rescued[1] == rescued[2] > 30  # every row of the drop that has the column, only those
                assert conn.execute(f'SELECT count(*) FROM "{dev["schema"]}".user_events').fetchone()[0] == 50
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{refunds_schema}" CASCADE')
