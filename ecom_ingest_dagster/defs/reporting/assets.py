"""The performance report as an asset: the same renderer as ``ecom-ingest report``."""

import datetime as dt

import dagster as dg

from ecom_ingest_dagster.defs.resources import PipelineResource
from ecom_ingest_dagster.tools import report


class ReportConfig(dg.Config):
    since_hours: float = 24.0  # the window: batches committed in the last N hours


@dg.asset(
    deps=["ingestion_throughput", "ingestion_latency", "data_quality"],
    group_name="reporting",
    kinds={"markdown"},
)
def performance_report(context: dg.AssetExecutionContext, config: ReportConfig, pipeline: PipelineResource):
    """The original performance report with measured values and computed statuses, plus plots."""
    run = pipeline.pipeline()
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=config.since_hours)
    outcome = run.report(since=since)
    context.log.info(f"report written to {outcome.path}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(outcome.path.read_text(encoding="utf-8")),
            "path": dg.MetadataValue.path(str(outcome.path)),
            **{f"plot/{name}": dg.MetadataValue.path(str(outcome.path.parent / file)) for name, file in report.PLOTS.items()},
            "batches": outcome.batches,
            "requirements_met": sum(1 for r in outcome.requirements if r["passed"]),
            "requirements_total": len(outcome.requirements),
            **{f"requirement/{r['name']}": r["passed"] for r in outcome.requirements},
        }
    )
