"""Jobs: the sensor-driven ingest job and the long-running stream job.

Both carry the landing directory's concurrency tag; the instance's run queue
(``infra/dagster.yaml``, ``infra/dagster_home/dagster.yaml``) allows one run per tag
value, because both use the same streaming checkpoint.
"""


import dataclasses
import hashlib
import threading
from typing import Optional

import dagster as dg

from ecom_ingest_dagster.defs.ingest.assets import INGEST_RETRY_POLICY, table_materializations
from ecom_ingest_dagster.defs.metrics.assets import latency_metadata, quality_metadata, throughput_metadata
from ecom_ingest_dagster.defs.resources import LandingResource, PostgresResource, SparkResource
from ecom_ingest_dagster.settings import Settings
from ecom_ingest_dagster.pipeline.query import IngestQuery

LANDING_TAG = "ecom_ingest/landing"


def landing_tag_value(landing_dir: str) -> str:
    # Tag values are short labels; the hash names the directory without its full path.
    return "landing-" + hashlib.sha1(landing_dir.encode()).hexdigest()[:12]


def concurrency_tags() -> dict[str, str]:
    return {LANDING_TAG: landing_tag_value(str(Settings.from_env().landing_dir))}


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest", "metrics", "reporting"),
    description="Ingest every pending drop once (Spark availableNow), then refresh the metric assets and the report.",
    tags=concurrency_tags(),
    # One process per run: the Spark session and an embedded PostgreSQL are started
    # once, and the metric steps (milliseconds each) skip a process start-up apiece.
    executor_def=dg.in_process_executor,
)


class StreamConfig(dg.Config):
    trigger_seconds: float = 10.0
    max_files_per_trigger: int = 1
    stop_after_seconds: Optional[float] = None  # None: stream until the run is terminated


@dg.op(
    description="Stream drops continuously until the run is terminated; stops between micro-batches.",
    # A stream that lost its database past the retry window starts again; a terminated
    # one returns normally and is not retried.
    retry_policy=INGEST_RETRY_POLICY,
)
def stream_landing(
    context: dg.OpExecutionContext,
    config: StreamConfig,
    landing: LandingResource,
    postgres: PostgresResource,
    spark: SparkResource,
):
    settings = dataclasses.replace(
        landing.settings(postgres, spark),
        max_files_per_trigger=config.max_files_per_trigger,
        max_bytes_per_trigger=None,
        trigger_seconds=config.trigger_seconds,
    )
    stop = threading.Event()
    timer = threading.Timer(config.stop_after_seconds, stop.set) if config.stop_after_seconds else None
    if timer:
        timer.daemon = True
        timer.start()
    query = IngestQuery(
        spark.session(settings), settings, postgres.url(), run_id=context.run_id,
        on_batch=lambda m: context.log.info(
            f"batch {m['batch_id']}: {m['total_records']} rows in {m['total_processing_time_ms']:.0f} ms"
        ),
    )
    try:
        summary = query.run_continuous(trigger_seconds=config.trigger_seconds, stop_event=stop)
    finally:
        if timer:
            timer.cancel()
    yield from table_materializations(summary, postgres, result_type=dg.AssetMaterialization)
    totals = summary.totals
    for key, metadata in (
        ("ingestion_throughput", throughput_metadata(totals)),
        ("ingestion_latency", latency_metadata(totals)),
        ("data_quality", quality_metadata(totals)),
    ):
        yield dg.AssetMaterialization(asset_key=key, metadata={**metadata, "described_run_id": context.run_id})
    yield dg.Output(totals["total_records"])


@dg.job(
    description="The original report's continuous mode: trigger interval and maxFilesPerTrigger, until terminated.",
    tags=concurrency_tags(),
    executor_def=dg.in_process_executor,
)
def stream_job():
    stream_landing()
