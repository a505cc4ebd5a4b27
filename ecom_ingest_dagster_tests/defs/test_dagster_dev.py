"""End to end through the real `dagster dev`: webserver, daemon, sensor, run, and the UI in a browser.

The `dagster_dev` fixture (``conftest.py``) serves every module of this package.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from ..helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_dropped_files_lead_to_a_successful_sensor_launched_run(dagster_dev):
    since = time.time()  # the package's other modules share this dagster dev: only this test's runs
    frame = generate_events(60, rng=np.random.default_rng(11), invalid_rate=0.05)
    write_drop(frame.iloc[:30], dagster_dev["landing"], "e2e_0001.csv")
    write_drop(frame.iloc[30:], dagster_dev["landing"], "e2e_0002.csv")

    with dg.DagsterInstance.from_config(str(dagster_dev["home"])) as instance:

        def finished_sensor_run():
            records = instance.get_run_records(
                filters=dg.RunsFilter(job_name="ingest_job", tags={"dagster/sensor_name": "landing_sensor"})
            )
            done = [r.dagster_run for r in records if r.dagster_run.is_finished and r.create_timestamp.timestamp() >= since]
            return done[0] if done else None

        run = wait_for(finished_sensor_run, 240, "a sensor-launched ingest run to finish", interval=2)
        assert run.status == dg.DagsterRunStatus.SUCCESS, dagster_dev["log"].read_text()[-3000:]
        throughput = instance.get_latest_materialization_event(dg.AssetKey("ingestion_throughput"))
        assert throughput.run_id == run.run_id
        assert throughput.asset_materialization.metadata["total_records"].value == 60


@contextlib.contextmanager
def chromium_page():
    """A page in Debian's Chromium, driven by playwright (which downloads no browser of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # The UI's "Join the Dagster community" dialog (localhost only) would cover the
            # page a second after it loads: dismissed as its own Skip button records it.
            page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
            yield page
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_throughput_asset_page_shows_its_metadata_in_a_real_browser(dagster_dev):
    ARTIFACTS.mkdir(exist_ok=True)
    with dg.DagsterInstance.from_config(str(dagster_dev["home"])) as instance:
        wait_for(lambda: instance.get_latest_materialization_event(dg.AssetKey("ingestion_throughput")), 240,
                 "a materialization of ingestion_throughput", interval=2)
    with chromium_page() as page:
        page.goto(f"{dagster_dev['url']}/assets/ingestion_throughput", wait_until="domcontentloaded")
        page.get_by_text("avg_records_per_second").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ingestion_throughput_asset.png"), full_page=True)
        assert page.get_by_text("peak_records_per_second").count() >= 1


def test_stream_job_terminated_from_the_ui_stops_cleanly_and_records_metrics(dagster_dev):
    from dagster_graphql import DagsterGraphQLClient

    port = int(dagster_dev["url"].rsplit(":", 1)[1])
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution(
        "stream_job",
        run_config={"ops": {"stream_landing": {"config": {"trigger_seconds": 0.5, "max_files_per_trigger": 1}}}},
    )
    with dg.DagsterInstance.from_config(str(dagster_dev["home"])) as instance:
        wait_for(lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED, 120, "the stream run to start")
        frame = generate_events(20, rng=np.random.default_rng(12))
        write_drop(frame, dagster_dev["landing"], "stream_0001.csv")
        wait_for(
            lambda: any(
                e.event_log_entry.user_message and re.match(r"batch \d+: ", e.event_log_entry.user_message)
                for e in instance.get_records_for_run(run_id).records
            ),
            120, "a micro-batch of the stream run", interval=1,
        )
        client.terminate_run(run_id)  # what the UI's "Terminate" button sends
        run = wait_for(lambda: (r := instance.get_run_by_id(run_id)).is_finished and r, 120, "the run to finish")
        assert run.status == dg.DagsterRunStatus.CANCELED  # as asked, after a clean stop between batches
        materialized = {
            e.event_log_entry.dagster_event.event_specific_data.materialization.asset_key.to_user_string()
            for e in instance.get_records_for_run(run_id).records
            if e.event_log_entry.dagster_event and e.event_log_entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }
        assert {"user_events", "ingestion_throughput", "ingestion_latency", "data_quality"} <= materialized


def test_ingest_run_terminated_mid_load_then_relaunched_loads_every_valid_id_once(dagster_dev, database_url):
    """The crash campaign's Dagster case: a sensor-launched run terminated from the instance."""
    import psycopg
    from dagster_graphql import DagsterGraphQLClient

    from ..helpers import assert_accounting, files_held_at_commit

    port = int(dagster_dev["url"].rsplit(":", 1)[1])
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    schema = dagster_dev["schema"]

    with dg.DagsterInstance.from_config(str(dagster_dev["home"])) as instance, \
            psycopg.connect(database_url, autocommit=True) as db:

        def started_run():
            records = instance.get_run_records(
                filters=dg.RunsFilter(job_name="ingest_job", statuses=[dg.DagsterRunStatus.STARTED])
            )
            return records[0].dagster_run.run_id if records else None

        # Terminated while drops' rows wait in their open transactions (however long the
        # termination takes to reach the run), the run commits none of them.
        with files_held_at_commit(database_url, schema) as held:
            rng = np.random.default_rng(13)
            frames = [generate_events(80_000, rng=rng, invalid_rate=0.02) for _ in range(3)]
            for i, frame in enumerate(frames):
                write_drop(frame, dagster_dev["landing"], f"terminated_{i}.csv")
            valid_ids = {eid for f in frames for eid in f.loc[f["expected_reason"] == "", "event_id"]}
            run_id = wait_for(started_run, 180, "a sensor-launched run of the new drops", interval=0.5)
            wait_for(held, 180, "a drop's rows copied, its transaction open", interval=0.1)
            client.terminate_run(run_id)
            run = wait_for(lambda: (r := instance.get_run_by_id(run_id)).is_finished and r, 120, "the run to stop")
        assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
        files = lambda: db.execute(  # noqa: E731
            f'SELECT count(*) FROM "{schema}".ingest_files WHERE file_name LIKE %s', ("terminated_%",)
        ).fetchone()[0]
        assert files() < 3, "the run was not cut short"

        # The operator launches the job again (the UI's "Materialize" / dg launch does the same).
        rerun_id = client.submit_job_execution("ingest_job")
        rerun = wait_for(lambda: (r := instance.get_run_by_id(rerun_id)).is_finished and r, 300, "the new run")
        assert rerun.status == dg.DagsterRunStatus.SUCCESS, dagster_dev["log"].read_text()[-3000:]

        db.execute(f'SET search_path TO "{schema}"')
        loaded = {r[0] for r in db.execute(
            "SELECT event_id::text FROM user_events WHERE source_file LIKE 'terminated_%'"
        )}
        assert loaded == valid_ids
        assert files() == 3
        assert_accounting(db)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_asset_page_renders_the_reports_plots_in_a_real_browser(dagster_dev):
    from dagster_graphql import DagsterGraphQLClient

    ARTIFACTS.mkdir(exist_ok=True)
    client = DagsterGraphQLClient("127.0.0.1", port_number=int(dagster_dev["url"].rsplit(":", 1)[1]))
    with dg.DagsterInstance.from_config(str(dagster_dev["home"])) as instance:
        if instance.get_latest_materialization_event(dg.AssetKey("ingestion_throughput")) is None:
            # Run alone (-k): no earlier test loaded anything, so the report would have no batches.
            write_drop(generate_events(40, rng=np.random.default_rng(14), invalid_rate=0.05), dagster_dev["landing"],
                       "report_0001.csv")
            wait_for(lambda: instance.get_latest_materialization_event(dg.AssetKey("ingestion_throughput")), 240,
                     "a sensor run to load the drop", interval=2)
        run_id = client.submit_job_execution("report_job")
        run = wait_for(lambda: (r := instance.get_run_by_id(run_id)).is_finished and r, 180, "report_job to finish")
        assert run.status == dg.DagsterRunStatus.SUCCESS, dagster_dev["log"].read_text()[-3000:]
        report = instance.get_latest_materialization_event(dg.AssetKey("performance_report"))
        assert report.run_id == run_id and report.asset_materialization.metadata["batches"].value > 0

    with chromium_page() as page:
        page.goto(f"{dagster_dev['url']}/assets/performance_report", wait_until="domcontentloaded")
        # The key findings are a table on the page itself: visible before anything is clicked.
        findings = page.locator("table", has=page.get_by_text("Min Throughput", exact=True))
        findings.first.wait_for(state="visible", timeout=60_000)
        for requirement in ("Min Throughput", "Max Latency", "Validation Rate", "Data Loss"):
            assert findings.first.get_by_text(requirement, exact=True).is_visible(), requirement
        # The report itself is too long for the page: the UI opens it in a dialog, where its
        # plots must be pictures the browser decoded (data URIs), not broken file names.
        page.locator("tr", has=page.get_by_text("report", exact=True)).get_by_text("[Show Markdown]").first.click()
        page.get_by_role("dialog").get_by_text("Throughput Over Time").first.wait_for(timeout=30_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('img')].filter(i => i.src.startsWith('data:image/png')).every(i => i.complete)"
        )
        images = page.evaluate(
            "() => [...document.querySelectorAll('img')].filter(i => i.src.startsWith('data:image/png'))"
            ".map(i => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight}))"
        )
        page.get_by_role("dialog").get_by_text("Throughput Over Time").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "performance_report_asset.png"))
        assert {i["alt"] for i in images} >= {"Throughput per batch", "Latency distribution", "Stage breakdown",
                                             "Rejections by reason", "Resource usage"}, images
        assert all(i["width"] > 300 and i["height"] > 200 for i in images), images
