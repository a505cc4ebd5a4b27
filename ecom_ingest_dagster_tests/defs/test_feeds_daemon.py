"""Two feeds side by side through the real `dagster dev` (webserver, daemon, sensors): a
feed added as one contract file, written from the docs alone, gets its own sensor-launched
runs, which do not wait for user_events' (a landing pool each), and both load exactly once."""

from __future__ import annotations

import collections
import os
import textwrap

import dagster as dg
import numpy as np
import psycopg

from ecom_ingest_dagster.feeds import load_feed
from ecom_ingest_dagster.tools.feed_generator import generate_rows
from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from ..helpers import files_held_at_commit, wait_for
from .conftest import running_dagster_dev

# A product catalogue, written from docs/data-contract.md's tables (not from the code, not
# from the template): every type but uuid, every kind of rule, a text unique key.
PRODUCTS = textwrap.dedent("""\
    feed: products
    version: 1
    description: a shop's product catalogue, one row per SKU
    table: products
    unique_key: sku
    missing_reason: missing_value
    malformed_reason: broken_line
    reasons: [bad_sku, missing_value, bad_ean, bad_title, bad_price, bad_in_stock, bad_stock,
              bad_category, bad_launch_date, bad_updated_at, broken_line]
    columns:
      - name: sku
        type: text
        required: true
        rules:
          - {pattern: '^SKU-[0-9]{6}$', reason: bad_sku}
      - name: ean
        type: bigint
        invalid_reason: bad_ean
        rules:
          - {min: 0, max: 9999999999999, reason: bad_ean}
      - name: title
        type: text
        required: true
        rules:
          - {max_length: 80, reason: bad_title}
        generate: {faker: catch_phrase}
      - name: price
        type: numeric(10,2)
        required: true
        invalid_reason: bad_price
        rules:
          - {min: 0, reason: bad_price}
      - name: in_stock
        type: boolean
        invalid_reason: bad_in_stock
      - name: stock
        type: integer
        invalid_reason: bad_stock
        rules:
          - {min: 0, reason: bad_stock}
      - name: category
        type: text
        rules:
          - {one_of: [toys, books, garden, kitchen], reason: bad_category}
      - name: launch_date
        type: date
        invalid_reason: bad_launch_date
        rules:
          - {not_after_now_seconds: 0, reason: bad_launch_date}
      - name: updated_at
        type: timestamptz
        required: true
        invalid_reason: bad_updated_at
        rules:
          - {not_after_now_seconds: 300, reason: bad_updated_at}
    """)


def test_a_feed_written_from_the_docs_runs_beside_user_events_each_exactly_once(tmp_path, database_url):
    feeds_dir = tmp_path / "feeds"
    feeds_dir.mkdir()
    (feeds_dir / "products.yaml").write_text(PRODUCTS)  # the user's own feed: its sensor is on
    products = load_feed(feeds_dir / "products.yaml")
    (tmp_path / "dev").mkdir()
    with running_dagster_dev(tmp_path / "dev", database_url, ECOM_INGEST_FEEDS_DIR=str(feeds_dir)) as dev:
        schema = f"{dev['schema']}_products"
        landing = dev["landing"].parent / "products" / "landing"
        try:
            frame = generate_rows(products, 240, rng=np.random.default_rng(21), invalid_rate=0.5)
            frame["supplier"] = "north"  # a column the contract does not name: rescued, row by row
            with dg.DagsterInstance.from_config(str(dev["home"])) as instance:
                def finished(job: str):
                    def look():
                        runs = [r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job))]
                        return runs[0] if runs and runs[0].is_finished else None
                    return look

                # user_events' run is held at its commit (a state that lasts, whatever the
                # machine's speed), and the products drops land only then: the whole products
                # run falls inside the hold, which it can end only if it does not wait for
                # user_events' run (a landing pool each). Neither loses a row to the other.
                with files_held_at_commit(database_url, dev["schema"]) as events_waiting:
                    write_drop(generate_events(50, rng=np.random.default_rng(22)), dev["landing"], "events_1.csv")
                    wait_for(events_waiting, 300, "user_events' sensor run to reach its commit", interval=1)
                    # The plain drop, with one line that is not a row, is made aside and moved in whole.
                    staged = write_drop(frame.iloc[:80], tmp_path, "products_1.csv", [*products.column_names, "supplier"])
                    with open(staged, "a") as handle:
                        handle.write("SKU-999999,only three,fields\n")
                    landing.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, landing / staged.name)
                    write_drop(frame.iloc[80:160], landing, "products_2.csv.gz", products.column_names)
                    write_drop(frame.iloc[160:], landing, "products_3.csv.zst", products.column_names)
                    products_run = wait_for(finished("products_ingest_job"), 300, "the products sensor run", interval=2)
                    assert finished("ingest_job")() is None  # still held: the products run ended first
                events_run = wait_for(finished("ingest_job"), 300, "user_events' sensor run", interval=2)
                assert events_run.status == products_run.status == dg.DagsterRunStatus.SUCCESS, dev["log"].read_text()[-3000:]
                assert products_run.tags["dagster/sensor_name"] == "products_landing_sensor"
                # the feed's own assets, its metric assets judged on its own ledger, its report
                for name in ("products", "data_quality", "performance_report"):
                    mat = instance.get_latest_materialization_event(dg.AssetKey(["products", name]))
                    assert mat.run_id == products_run.run_id, name
                check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                    [dg.AssetCheckKey(dg.AssetKey(["products", "data_quality"]), "zero_data_loss")])
                assert next(iter(check.values())).run_id == products_run.run_id
            expected = collections.Counter(frame.loc[frame["expected_reason"] != "", "expected_reason"])
            expected["broken_line"] += 1
            bad = sum(expected.values())
            # every reason the contract names is given, each as often as a row was broken so
            assert set(expected) == set(products.reasons)
            with psycopg.connect(database_url) as conn:
                loaded = conn.execute(f'SELECT count(*), count(DISTINCT sku) FROM "{schema}".products').fetchone()
                assert loaded == (241 - bad, 241 - bad)
                given = collections.Counter(dict(conn.execute(
                    f'SELECT unnest(reasons), count(*) FROM "{schema}".products_rejected GROUP BY 1').fetchall()))
                assert given == expected
                rescued = conn.execute(f"""SELECT count(*) FILTER (WHERE source_file = 'products_1.csv'),
                                                  count(*) FILTER (WHERE rescued = '{{"supplier": "north"}}'), count(rescued)
                                           FROM "{schema}".products""").fetchone()
                assert rescued[0] == rescued[1] == rescued[2] > 20  # every row of the drop that has the column, only those
                files = dict(conn.execute(f'SELECT file_name, rows_total FROM "{schema}".ingest_files').fetchall())
                assert files == {"products_1.csv": 81, "products_2.csv.gz": 80, "products_3.csv.zst": 80}
                assert conn.execute(f'SELECT count(*) FROM "{dev["schema"]}".user_events').fetchone()[0] == 50
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
