"""Metric assets for throughput, latency and data quality, with the service targets as checks.

Each asset describes the batches of its own run (or, materialized alone, of the latest
run that had any), computed by ``metrics.summarize`` from the batch ledger, so the UI
plots the same figures the CLI prints and the JSON logs hold.
"""


import dagster as dg

from ecom_ingest_dagster.defs.ingest.assets import REJECTED_EVENTS, USER_EVENTS
from ecom_ingest_dagster.defs.resources import PostgresResource, ServiceTargetsResource
from ecom_ingest_dagster.pipeline.measure import accounting_violations, fetch_batches, summarize, unaccounted_rows
from ecom_ingest_dagster.tools.report import judge

METRICS_GROUP = "metrics"
WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


def _number(value) -> float:
    return float(value) if value is not None else 0.0


def throughput_metadata(summary: dict) -> dict:
    return {
        "avg_records_per_second": _number(summary["avg_records_per_second"]),
        "peak_records_per_second": _number(summary["peak_records_per_second"]),
        "avg_records_per_batch": _number(summary["avg_records_per_batch"]),
        "total_records": summary["total_records"],
        "batches": summary["total_batches"],
    }


def latency_metadata(summary: dict) -> dict:
    batch = summary["batch_latency_ms"]
    e2e = summary["end_to_end_latency_ms"]
    return {
        "batch_latency_ms_avg": _number(batch["avg"]),
        "batch_latency_ms_p50": _number(batch["p50"]),
        "batch_latency_ms_p95": _number(batch["p95"]),
        "batch_latency_ms_p99": _number(batch["p99"]),
        "batch_latency_ms_max": _number(batch["max"]),
        "end_to_end_latency_ms_p50": _number(e2e["p50"]),
        "end_to_end_latency_ms_p95": _number(e2e["p95"]),
        "end_to_end_latency_ms_max": _number(e2e["max"]),
        **{f"stage_ms/{stage}": _number(ms) for stage, ms in summary["stage_avg_ms"].items()},
        "batches": summary["total_batches"],
    }


def quality_metadata(summary: dict) -> dict:
    return {
        "validation_success_rate_pct": _number(summary["validation_success_rate"]),
        "rows_in": summary["total_records"],
        "rows_loaded": summary["loaded_records"],
        "rows_duplicate": summary["duplicate_records"],
        "rows_rejected": summary["rejected_records"],
        "files_rejected_whole": summary["files_rejected"],
        **{f"reason/{reason}": count for reason, count in summary["reason_counts"].items()},
    }


def _run_summary(context: dg.AssetExecutionContext, postgres: PostgresResource) -> tuple[str | None, dict]:
    with postgres.connection() as conn:
        run_id, batches = fetch_batches(conn, postgres.db_schema, run_id=context.run_id)
    if run_id != context.run_id:
        context.log.info(f"no batches in this run; describing run {run_id}")
    return run_id, summarize(batches)


def _check_result(
    name: str, summary: dict, targets: ServiceTargetsResource, severity: dg.AssetCheckSeverity,
    loss_pct: float = 0.0, consistent: bool = True, **metadata,
) -> dg.AssetCheckResult:
    """A service target judged by report.judge, the same verdict the report prints."""
    verdict = judge(summary, targets.targets(), loss_pct)[name]
    return dg.AssetCheckResult(
        check_name=name,
        # No batches, nothing to be slow at: the targets speak of work done.
        passed=verdict["passed"] is not False and consistent,
        severity=severity,
        metadata={"measured": _number(verdict["measured"]), "target": float(verdict["target"]),
                  "judged": verdict["passed"] is not None, **metadata},
    )


def _described(run_id: str | None, summary: dict) -> dict:
    return {"described_run_id": run_id or "none", "has_batches": bool(summary["total_batches"])}


@dg.asset(
    deps=[USER_EVENTS, REJECTED_EVENTS],
    group_name=METRICS_GROUP,
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("min_throughput", asset="ingestion_throughput", description="average records/s >= target")],
)
def ingestion_throughput(
    context: dg.AssetExecutionContext, postgres: PostgresResource, targets: ServiceTargetsResource
) -> dg.MaterializeResult:
    """Records per second over the run's micro-batches: average (over processing time) and peak."""
    run_id, summary = _run_summary(context, postgres)
    return dg.MaterializeResult(
        metadata={**throughput_metadata(summary), **_described(run_id, summary)},
        # Slow is worth a look, but no data is wrong because of it.
        check_results=[_check_result("min_throughput", summary, targets, WARN)],
    )


@dg.asset(
    deps=[USER_EVENTS, REJECTED_EVENTS],
    group_name=METRICS_GROUP,
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("max_latency", asset="ingestion_latency", description="slowest batch <= target ms")],
)
def ingestion_latency(
    context: dg.AssetExecutionContext, postgres: PostgresResource, targets: ServiceTargetsResource
) -> dg.MaterializeResult:
    """Batch latency percentiles, end-to-end latency (landed to committed), stage breakdown."""
    run_id, summary = _run_summary(context, postgres)
    return dg.MaterializeResult(
        metadata={**latency_metadata(summary), **_described(run_id, summary)},
        check_results=[_check_result("max_latency", summary, targets, WARN)],
    )


@dg.asset(
    deps=[USER_EVENTS, REJECTED_EVENTS],
    group_name=METRICS_GROUP,
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec("validation_rate", asset="data_quality", description="valid rows / rows in > target %"),
        dg.AssetCheckSpec(
            "zero_data_loss", asset="data_quality", blocking=True,
            description="every file of the run: rows in = loaded + duplicate + rejected, matching the tables",
        ),
    ],
)
def data_quality(
    context: dg.AssetExecutionContext, postgres: PostgresResource, targets: ServiceTargetsResource
) -> dg.MaterializeResult:
    """Validation success rate, rejections by reason, and the accounting identity of the run's files."""
    run_id, summary = _run_summary(context, postgres)
    metadata = quality_metadata(summary)
    with postgres.connection() as conn:
        violations = accounting_violations(conn, postgres.db_schema, run_id=run_id) if run_id else []
    lost = unaccounted_rows(violations)
    loss_pct = 100.0 * lost / summary["total_records"] if summary["total_records"] else 0.0
    return dg.MaterializeResult(
        metadata={**metadata, "data_loss_pct": loss_pct, "files_breaking_accounting": len(violations),
                  **_described(run_id, summary)},
        check_results=[
            # Bad input is the producer's problem: it is quarantined, not lost.
            _check_result("validation_rate", summary, targets, WARN),
            # A row without an outcome is the one failure we never accept.
            _check_result(
                "zero_data_loss", summary, targets, ERROR, loss_pct, consistent=not violations,
                files_breaking_accounting=len(violations), examples=dg.MetadataValue.json(violations[:10]),
            ),
        ],
    )
