"""Schedules the daemon runs: the daily performance report and the retention of what grows.

Both are plain jobs, so their runs show in the UI like any other and can be launched by
hand (`dagster job launch -j report_job`, `-j retention_job`).
"""

import dagster as dg

from ecom_ingest_dagster.defs.resources import PipelineResource

report_job = dg.define_asset_job(
    "report_job",
    selection=dg.AssetSelection.assets("performance_report"),
    description="Render the performance report over the last 24 hours (the daily schedule's job).",
    executor_def=dg.in_process_executor,
)


@dg.op(description="Delete resource samples, metric log lines and archived drops past their retention, of every feed in use.")
def apply_retention(context: dg.OpExecutionContext, pipeline: PipelineResource) -> dg.Output:
    from ecom_ingest_dagster.pipeline.run import feeds_in_use

    totals = {"samples_deleted": 0, "log_lines_deleted": 0, "archived_drops_deleted": 0}
    # Every feed's archive and samples grow alike; a feed never ingested has nothing to delete.
    in_use, others = feeds_in_use(pipeline.settings(), interactive=False)
    for line in others:
        context.log.info(f"left alone: {line}")
    for feed in (s.feed for s in in_use):
        outcome = pipeline.pipeline(feed=feed).retain()
        context.log.info(
            f"{feed}: deleted {outcome.samples_deleted} resource samples, {outcome.log_lines_deleted} metric log lines, "
            f"{outcome.archived_drops_deleted} archived drops"
        )
        for key in totals:
            totals[key] += getattr(outcome, key)
    return dg.Output(None, metadata={**totals, "feeds": ", ".join(s.feed for s in in_use)})


@dg.job(description="Retention of what grows without bound (ECOM_INGEST_*_RETENTION_DAYS).",
        executor_def=dg.in_process_executor)
def retention_job():
    apply_retention()


def build_report_schedule(job, *, name: str, op_name: str, feed: str,
                          default_status=dg.DefaultScheduleStatus.RUNNING) -> dg.ScheduleDefinition:
    """Every morning at 06:00 UTC, ``job`` renders the feed's report over the last 24 hours."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        run_config={"ops": {op_name: {"config": {"since_hours": 24.0}}}},
        default_status=default_status,
        description=f"The {feed} performance report over the last 24 hours, every morning at 06:00 UTC.",
    )


daily_performance_report = build_report_schedule(report_job, name="daily_performance_report",
                                                 op_name="performance_report", feed="user_events")

daily_retention = dg.ScheduleDefinition(
    name="daily_retention",
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retention of resource samples, metric log lines and archived drops, every night at 03:30 UTC.",
)
