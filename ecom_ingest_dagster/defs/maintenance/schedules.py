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


@dg.op(description="Delete resource samples, metric log lines and archived drops past their retention.")
def apply_retention(context: dg.OpExecutionContext, pipeline: PipelineResource) -> dg.Output:
    outcome = pipeline.pipeline().retain()
    context.log.info(
        f"deleted {outcome.samples_deleted} resource samples, {outcome.log_lines_deleted} metric log lines, "
        f"{outcome.archived_drops_deleted} archived drops"
    )
    return dg.Output(
        None,
        metadata={
            "samples_deleted": outcome.samples_deleted,
            "log_lines_deleted": outcome.log_lines_deleted,
            "archived_drops_deleted": outcome.archived_drops_deleted,
        },
    )


@dg.job(description="Retention of what grows without bound (ECOM_INGEST_*_RETENTION_DAYS).",
        executor_def=dg.in_process_executor)
def retention_job():
    apply_retention()


daily_performance_report = dg.ScheduleDefinition(
    name="daily_performance_report",
    job=report_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    run_config={"ops": {"performance_report": {"config": {"since_hours": 24.0}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The performance report over the last 24 hours, every morning at 06:00 UTC.",
)

daily_retention = dg.ScheduleDefinition(
    name="daily_retention",
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retention of resource samples, metric log lines and archived drops, every night at 03:30 UTC.",
)
