"""The ingest step: one availableNow pass of the streaming query (the CLI's ``ingest``)."""

import datetime as dt
import math

import dagster as dg

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import RESCUED, FeedContract
from ecom_ingest_dagster.defs.keys import feed_keys, ingested_tag
from ecom_ingest_dagster.defs.metrics.assets import metric_events, reason_metadata
from ecom_ingest_dagster.defs.resources import PipelineResource
from ecom_ingest_dagster.pipeline.measure import format_batch
from ecom_ingest_dagster.pipeline.checkpoint import IngestBusy
from ecom_ingest_dagster.pipeline.query import RunSummary
from ecom_ingest_dagster.pipeline.spark import SPARK_READY_MESSAGE
from ecom_ingest_dagster.pipeline.validate import build_schema

INGEST_GROUP = "ingest"
# The steps that work the landing directory share this pool (limit 1 in the instance's
# dagster.yaml): the UI's Materialize buttons run no job tags, so the run queue's tag
# limit alone would let one beside a sensor run.
LANDING_POOL = "ecom_ingest_landing"


# On the table and the quarantine table of a feed that keeps a drop's other columns.
_RESCUED_COLUMN = dg.TableColumn(RESCUED, "jsonb", description="the drop's columns the contract does not name")


def table_schema(feed: FeedContract = c.FEED) -> dg.TableSchema:
    """The loaded table's columns (types from the contract), with the Pandera rules as constraints."""
    pandera_columns = build_schema(dt.datetime.now(dt.timezone.utc), feed=feed).columns
    columns = [
        dg.TableColumn(
            name=col.name,
            type=col.type,
            description="required" if col.required else "optional",
            constraints=dg.TableColumnConstraints(
                nullable=pandera_columns[col.name].nullable,
                unique=col.name == feed.unique_key,
                other=[check.name for check in pandera_columns[col.name].checks],
            ),
        )
        for col in feed.columns
    ]
    if feed.rescues:
        columns.append(_RESCUED_COLUMN)
    columns += [
        dg.TableColumn("source_file", "text", description="base name of the drop"),
        dg.TableColumn("batch_id", "bigint", description="Spark micro-batch id"),
        dg.TableColumn("created_at", "timestamptz", description="commit time"),
    ]
    return dg.TableSchema(columns=columns)


def quarantine_schema(feed: FeedContract = c.FEED) -> dg.TableSchema:
    columns = [dg.TableColumn(name, "text", description="raw value as sent") for name in feed.column_names]
    if feed.rescues:
        columns.append(_RESCUED_COLUMN)
    columns += [
        dg.TableColumn("raw_line", "text", description="the line, for malformed rows and files rejected whole"),
        dg.TableColumn("record_number", "bigint"),
        dg.TableColumn("reasons", "text[]", description="every reason that applies: " + ", ".join(feed.reasons)),
        dg.TableColumn("details", "text[]", description="'column: reason' entries"),
        dg.TableColumn("source_file", "text"),
        dg.TableColumn("batch_id", "bigint"),
        dg.TableColumn("rejected_at", "timestamptz"),
    ]
    return dg.TableSchema(columns=columns)


def _table_specs(feed: FeedContract, group: str) -> list[dg.AssetSpec]:
    # Built in a function: module-level specs would be loaded as definitions of their own.
    table, quarantine = feed_keys(feed)
    about = f" ({feed.description})" if feed.description else ""
    return [
        dg.AssetSpec(
            table,
            group_name=group,
            description=f"Valid rows of the {feed.feed} feed{about}, one per {feed.unique_key} (duplicates skipped and counted).",
            kinds={"spark", "postgres"},
            metadata={"dagster/column_schema": table_schema(feed), "ecom_ingest/contract_version": feed.version},
        ),
        dg.AssetSpec(
            quarantine,
            group_name=group,
            description="Quarantined rows with their raw text and every rejection reason.",
            kinds={"spark", "postgres"},
            metadata={"dagster/column_schema": quarantine_schema(feed)},
        ),
    ]


# Transient failures (PostgreSQL restarting, a lost executor) are worth retrying: the
# load is idempotent per file, so a retry redoes only what did not commit.
INGEST_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def table_materializations(summary: RunSummary, table_rows: dict[str, int], *, result_type=dg.MaterializeResult,
                           feed: FeedContract = c.FEED):
    """What a pass of the query did to the feed's two tables, as metadata the UI can plot."""
    totals = summary.totals
    table, quarantine = feed_keys(feed)
    common = {
        "batches": totals["total_batches"],
        "files": totals["total_files"],
        "files_rejected_whole": totals["files_rejected"],
        "files_already_ingested": summary.files_skipped,
        # Changed after ingestion under the same name: not read again (see README, guarantees).
        "files_replaced_after_ingest": len(summary.files_replaced),
        "rows_in": totals["total_records"],
    }
    yield result_type(
        asset_key=table,
        metadata={
            **common,
            "rows_loaded": totals["loaded_records"],
            "rows_duplicate": totals["duplicate_records"],
            "dagster/row_count": table_rows[feed.table],
        },
    )
    yield result_type(
        asset_key=quarantine,
        metadata={
            **common,
            "rows_rejected": totals["rejected_records"],
            "dagster/row_count": table_rows[feed.rejected_table],
            **reason_metadata(totals["reason_counts"], feed),
            # a file rejected whole with no row (a damaged .gz) shows its reason only here
            "files_rejected_by_reason": dg.MetadataValue.json(totals["files_rejected_by_reason"]),
        },
    )


def terminate_requested(context: dg.OpExecutionContext) -> bool:
    run = context.instance.get_run_by_id(context.run_id)
    return run is not None and run.status == dg.DagsterRunStatus.CANCELING


def stopped_by_user(context: dg.OpExecutionContext, stopped: BaseException) -> None:
    """Dagster retries an interrupted step under its retry policy, which is right for a
    pre-empted worker but would undo a user's "Terminate": tell the two apart."""
    if terminate_requested(context):
        raise dg.Failure(description=f"terminated on request; {stopped}", allow_retries=False) from stopped


class IngestConfig(dg.Config):
    """``idle_seconds`` > 0 keeps the run warm (the sensor sets ECOM_INGEST_WARM_IDLE_SECONDS);
    0, the default for a run launched by hand, is one availableNow pass."""

    idle_seconds: float = 0.0
    always_on: bool = False  # never idle out (ECOM_INGEST_ALWAYS_ON): the sensor keeps one such run alive




def _log_spark_ready(context: dg.AssetExecutionContext, run, seconds: float, spark_start: list[float]) -> None:
    spark_start.append(seconds)
    context.log.info(SPARK_READY_MESSAGE.format(seconds=seconds))
    # Where the run's Spark work goes: on a cluster, the master's UI lists the application
    # by this id, with its executors and their logs.
    spark_context = run.spark.sparkContext
    context.log.info(f"Spark application {spark_context.applicationId} on {spark_context.master}")


# While a run goes on, its metric assets judge its batches of this last stretch: the same
# as the whole run for a warm run of minutes, and a bounded query for one that is always on.
PROGRESS_WINDOW = dt.timedelta(minutes=10)


def _log_progress(context: dg.AssetExecutionContext, run, feed: FeedContract) -> None:
    """The feed's metric assets and their checks as they stand, while a warm run goes on."""
    since = dt.datetime.now(dt.timezone.utc) - PROGRESS_WINDOW
    for event in metric_events(run.evaluate(context.run_id, fallback=False, since=since), feed):
        context.log_event(event)


def build_ingest_asset(feed: FeedContract, *, name: str, group: str, pool: str) -> dg.AssetsDefinition:
    """The ingest step of one feed: its two tables, in its own landing pool (one run at a time per landing directory)."""

    @dg.multi_asset(
        specs=_table_specs(feed, group),
        name=name,
        retry_policy=INGEST_RETRY_POLICY,
        pool=pool,
        description=f"Process every {feed.feed} drop that has landed (availableNow, or warm when the sensor says so);"
                    " validate; COPY.",
    )
    def ingest(context: dg.AssetExecutionContext, config: IngestConfig, pipeline: PipelineResource):
        yield from _ingest(context, config, pipeline, feed)

    return ingest


def _ingest(context: dg.AssetExecutionContext, config: IngestConfig, pipeline: PipelineResource, feed: FeedContract):
    spark_start: list[float] = []
    run = pipeline.pipeline(on_spark_ready=lambda s: _log_spark_ready(context, run, s, spark_start), feed=feed.feed)
    idle_seconds = math.inf if config.always_on else config.idle_seconds
    if config.always_on:
        context.log.info(
            f"always on: taking drops from {run.settings.landing_dir} as they land (every "
            f"{run.settings.warm_trigger_seconds:g} s) until the run is stopped; the sensor starts another if it ends"
        )
    elif idle_seconds > 0:
        # A warm run shows Started for as long as drops keep coming: say what it waits for.
        context.log.info(
            f"warm: taking drops from {run.settings.landing_dir} as they land (every "
            f"{run.settings.warm_trigger_seconds:g} s) until none has come for {config.idle_seconds:g} s"
        )
    try:
        summary = run.ingest(
            run_id=context.run_id, on_batch=lambda m: context.log.info(format_batch(m)),
            idle_seconds=idle_seconds, on_progress=lambda _: _log_progress(context, run, feed),
        )
    except IngestBusy as busy:
        # A stream, a warm run or a CLI ingest holds the landing directory and takes the
        # drops itself: this run has nothing to add, which is not a failure.
        context.log.warning(f"skipped: {busy}")
        summary = RunSummary()
    # IngestStopped, a stop while Spark was starting, or Dagster's own interrupt (a wait between the two)
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as stopped:
        stopped_by_user(context, stopped)
        raise
    totals = summary.totals
    context.log.info(
        f"{totals['total_files']} file(s), {totals['total_records']} rows in {summary.elapsed_s:.1f} s"
        + (f" (warm for {idle_seconds:g} s after the last drop)" if 0 < idle_seconds < math.inf else "")
        + (f"; before the first batch: Spark {spark_start[0]:.1f} s, executors' Python workers {summary.warm_up_s:.1f} s"
           if spark_start else "; no Spark session was needed")
    )
    # What the run did, where the run list shows it (the sensor's tags say what it saw).
    context.instance.add_run_tags(context.run_id, {
        ingested_tag(feed.feed): str(totals["total_files"]),
        ingested_tag(feed.feed, "ecom_ingest/rows_loaded"): str(totals["loaded_records"]),
    })
    yield from table_materializations(summary, run.table_rows(), feed=feed)


ingest_landing = build_ingest_asset(c.FEED, name="ingest_landing", group=INGEST_GROUP, pool=LANDING_POOL)
