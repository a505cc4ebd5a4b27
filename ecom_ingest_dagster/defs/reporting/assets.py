"""The performance report as an asset: the same renderer as ``ecom-ingest report``."""

import datetime as dt
from pathlib import Path

import dagster as dg

from ecom_ingest_dagster.tools import report
from ecom_ingest_dagster.tools.cli import report_paths
from ecom_ingest_dagster.defs.resources import LandingResource, PostgresResource, ServiceTargetsResource, SparkResource


class ReportConfig(dg.Config):
    since_hours: float = 24.0  # the window: batches committed in the last N hours


@dg.asset(
    deps=["ingestion_throughput", "ingestion_latency", "data_quality"],
    group_name="reporting",
    kinds={"markdown"},
)
def performance_report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    landing: LandingResource,
    postgres: PostgresResource,
    spark: SparkResource,
    targets: ServiceTargetsResource,
) -> dg.MaterializeResult:
    """The original performance report with measured values and computed statuses, plus plots."""
    settings = landing.settings(postgres, spark)
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=config.since_hours)
    with postgres.connection() as conn:
        data = report.collect(conn, postgres.db_schema, since=since, paths=report_paths(settings))
    out_dir = Path(landing.home) / "reports"
    path = report.render(data, out_dir, targets.targets())
    requirements = report.requirements(data, targets.targets())
    context.log.info(f"report written to {path}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(path.read_text(encoding="utf-8")),
            "path": dg.MetadataValue.path(str(path)),
            **{f"plot/{name}": dg.MetadataValue.path(str(out_dir / file)) for name, file in report.PLOTS.items()},
            "batches": data.summary["total_batches"],
            "requirements_met": sum(1 for r in requirements if r["passed"]),
            "requirements_total": len(requirements),
            **{f"requirement/{r['name']}": r["passed"] for r in requirements},
        }
    )
