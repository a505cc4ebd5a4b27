"""Jobs: the sensor-driven ingest job and the long-running stream job.

Both carry the landing directory's concurrency tag; the instance's run queue
(``infra/dagster.yaml``, ``infra/dagster_home/dagster.yaml``) allows one run per tag
value, because both use the same streaming checkpoint.
"""

import hashlib

import dagster as dg
from pydantic import Field

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.defs.ingest.assets import (
    INGEST_RETRY_POLICY,
    LANDING_POOL,
    stopped_by_user,
    table_materializations,
    terminate_requested,
)
from ecom_ingest_dagster.defs.metrics.assets import metric_events
from ecom_ingest_dagster.defs.resources import PipelineResource
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline.measure import format_batch
from ecom_ingest_dagster.settings import DEFAULT_FEED, Settings

LANDING_TAG = "ecom_ingest/landing"


def landing_tag_value(landing_dir: str) -> str:
    # Tag values are short labels; the hash names the directory without its full path.
    return "landing-" + hashlib.sha1(landing_dir.encode()).hexdigest()[:12]


def concurrency_tags(feed: str = DEFAULT_FEED) -> dict[str, str]:
    """The run tag of the feed's landing directory, as the code location's settings place it."""
    return {LANDING_TAG: landing_tag_value(str(Settings.from_env().with_overrides(feed=feed).landing_dir))}


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest", "metrics", "reporting"),
    description="Ingest every pending drop once (Spark availableNow), then refresh the metric assets and the report.",
    tags=concurrency_tags(),
    # One process per run: the Spark session and an embedded PostgreSQL are started
    # once, and the metric steps (milliseconds each) skip a process start-up apiece.
    executor_def=dg.in_process_executor,
)


_IN_FORCE = Settings.from_env()  # the code location's settings: the launchpad shows (and scaffolds) them as defaults


class StreamConfig(dg.Config):
    """This run's trigger settings; the defaults are the deployment's (ECOM_INGEST_*)."""

    # Real defaults, not None: the launchpad's "Scaffold" fills in only fields that have one.
    trigger_seconds: float = Field(
        _IN_FORCE.trigger_seconds, ge=0, description="seconds between micro-batches (ECOM_INGEST_TRIGGER_SECONDS); "
        "a drop waits up to this long, 0: one batch right after another")
    max_files_per_trigger: int = Field(
        _IN_FORCE.max_files_per_trigger or 0, ge=0,
        description="files per micro-batch at most; 0: as the deployment (ECOM_INGEST_MAX_FILES_PER_TRIGGER, else bounded by bytes)")
    stop_after_seconds: float = Field(0.0, ge=0, description="end the stream after this long; 0: until the run is terminated")


def build_stream_job(feed: FeedContract, *, name: str, op_name: str, pool: str) -> dg.JobDefinition:
    """The feed's continuous mode: one op that streams its landing directory until terminated."""

    @dg.op(
        name=op_name,
        description=f"Stream {feed.feed} drops continuously until the run is terminated; stops between micro-batches.",
        # A stream that lost its database past the retry window starts again; a terminated
        # one returns normally and is not retried.
        retry_policy=INGEST_RETRY_POLICY,
        pool=pool,
    )
    def stream_landing(context: dg.OpExecutionContext, config: StreamConfig, pipeline: PipelineResource):
        yield from _stream(context, config, pipeline, feed)

    @dg.job(
        name=name,
        description=f"The original report's continuous mode for the {feed.feed} feed: trigger interval and"
                    " maxFilesPerTrigger, until terminated.",
        tags=concurrency_tags(feed.feed),
        executor_def=dg.in_process_executor,
    )
    def stream():
        stream_landing()

    return stream


def _stream(context: dg.OpExecutionContext, config: StreamConfig, pipeline: PipelineResource, feed: FeedContract):
    from ecom_ingest_dagster.pipeline.run import Pipeline

    base = pipeline.pipeline(feed=feed.feed)
    # A value left at its default is the deployment's: the resource's settings stay in force
    # (a resource configured in code keeps its own), a value changed in the launchpad wins.
    settings = base.settings.with_overrides(
        trigger_seconds=None if config.trigger_seconds == _IN_FORCE.trigger_seconds else config.trigger_seconds,
        max_files_per_trigger=config.max_files_per_trigger or None,
    )
    # Said before Spark's start and the first trigger, which take seconds of silence.
    until = f"for {config.stop_after_seconds:g} s" if config.stop_after_seconds else "until the run is terminated"
    context.log.info(
        f"streaming {settings.landing_dir}: a micro-batch every {settings.trigger_seconds:g} s"
        f" (at most {settings.max_files_per_trigger or 'any number of'} file(s)), {until}"
    )
    try:
        # Inside the try: a Terminate while Spark starts is the user's stop too, not a
        # pre-emption to retry (retried, the stream went on as if nobody had asked).
        run = Pipeline(settings, spark=base.spark)  # the run's session, these trigger settings
        summary = run.stream(
            run_id=context.run_id, on_batch=lambda m: context.log.info(format_batch(m)),
            stop_after_s=config.stop_after_seconds,
        )
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as stopped:
        stopped_by_user(context, stopped)
        raise
    yield from table_materializations(summary, run.table_rows(), result_type=dg.AssetMaterialization, feed=feed)
    yield from metric_events(run.evaluate(context.run_id), feed)
    if terminate_requested(context):
        # Terminate stops the stream between micro-batches, cleanly, and the run then ends
        # Canceled as the user asked (not Success, and not retried).
        raise dg.Failure(description="terminated on request: stopped between micro-batches", allow_retries=False)
    yield dg.Output(summary.totals["total_records"])


stream_job = build_stream_job(c.FEED, name="stream_job", op_name="stream_landing", pool=LANDING_POOL)
