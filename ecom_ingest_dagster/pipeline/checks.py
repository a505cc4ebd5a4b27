"""The service targets and the accounting identity, judged in one place.

``judge`` decides each target on a summary of batches; ``evaluate`` reads a run's batches
and files from the ledgers and returns every check's outcome with its measured value,
target and unit. The Dagster asset checks (``ingest_job`` and ``stream_job``), the CLI
and the performance report all read these verdicts, so they can never disagree.
"""

from __future__ import annotations

import datetime as dt

import dataclasses
from typing import Mapping

from ecom_ingest_dagster.pipeline import ledger
from ecom_ingest_dagster.pipeline.measure import summarize, unaccounted_rows
from ecom_ingest_dagster.settings import Targets


@dataclasses.dataclass(frozen=True)
class CheckSpec:
    name: str
    asset: str  # the metric asset the check belongs to
    description: str
    unit: str
    blocking: bool = False  # an ERROR check that stops downstream assets when it fails


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("min_throughput", "ingestion_throughput", "average records/s >= target", "records/s"),
    CheckSpec("max_latency", "ingestion_latency", "slowest batch <= target ms", "ms"),
    # A batch can be quick while its file waited long to be picked up: this is what a user feels.
    CheckSpec("max_end_to_end_latency", "ingestion_latency", "slowest file, landed to committed, <= target ms", "ms"),
    CheckSpec("validation_rate", "data_quality", "valid rows / rows in > target %", "%"),
    CheckSpec(
        "zero_data_loss", "data_quality",
        "every file of the run: rows in = loaded + duplicate + rejected, matching the tables", "%", blocking=True,
    ),
)


def judge(summary: Mapping, targets: Targets, loss_pct: float) -> dict[str, dict]:
    """The requirements judged on a summary: the one place a status is decided.

    ``passed`` is None when there is nothing to judge (no batch: no throughput, no latency).
    """
    has = bool(summary["total_batches"])
    throughput = summary["avg_records_per_second"]
    latency = summary["batch_latency_ms"]["max"]
    rate = summary["validation_success_rate"]
    e2e = summary["end_to_end_latency_ms"]["max"] if has else None
    return {
        "min_throughput": {"measured": throughput, "target": targets.min_throughput_rps,
                           "passed": throughput >= targets.min_throughput_rps if has else None},
        "max_latency": {"measured": latency, "target": targets.max_latency_ms,
                        "passed": latency <= targets.max_latency_ms if has else None},
        "max_end_to_end_latency": {"measured": e2e, "target": targets.max_end_to_end_latency_ms,
                                   "passed": e2e <= targets.max_end_to_end_latency_ms if e2e is not None else None},
        "validation_rate": {"measured": rate, "target": targets.min_validation_rate_pct,
                            "passed": rate > targets.min_validation_rate_pct if has else None},
        "zero_data_loss": {"measured": loss_pct, "target": targets.max_data_loss_pct,
                           "passed": loss_pct <= targets.max_data_loss_pct},
    }


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    spec: CheckSpec
    passed: bool
    measured: float | None
    target: float
    judged: bool  # False: no batches, nothing to be slow at (passes)
    details: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What a run's batches show: their summary, the data loss and every check's outcome."""

    run_id: str | None  # the run described (the latest with batches when the asked one had none)
    summary: dict
    violations: list[dict]
    loss_pct: float
    checks: dict[str, CheckOutcome]


def evaluate(conn, schema: str, run_id: str | None, targets: Targets, *, fallback: bool = True,
             since: dt.datetime | None = None, feed=None) -> Evaluation:
    """Judge ``run_id``'s batches (committed from ``since`` on, if given) against ``targets``;
    without batches there, with ``fallback`` those of the latest run that had any, else
    nothing (a run that ingested nothing has no figures)."""
    described, batches = ledger.run_batches(conn, schema, run_id=run_id, fallback=fallback, since=since)
    summary = summarize(batches)
    violations = ledger.accounting_violations(conn, schema, run_id=described, since=since, feed=feed) if described else []
    lost = unaccounted_rows(violations)
    loss_pct = 100.0 * lost / summary["total_records"] if summary["total_records"] else 0.0
    verdicts = judge(summary, targets, loss_pct)
    outcomes = {}
    for spec in CHECKS:
        verdict = verdicts[spec.name]
        details = {}
        consistent = True
        if spec.name == "zero_data_loss":
            # A row without an outcome is the one failure we never accept.
            consistent = not violations
            details = {"files_breaking_accounting": len(violations), "examples": violations[:10]}
        outcomes[spec.name] = CheckOutcome(
            spec=spec,
            passed=verdict["passed"] is not False and consistent,
            measured=None if verdict["measured"] is None else float(verdict["measured"]),
            target=float(verdict["target"]),
            judged=verdict["passed"] is not None,
            details=details,
        )
    return Evaluation(described, summary, violations, loss_pct, outcomes)
