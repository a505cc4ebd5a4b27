"""Metric assets for throughput, latency and data quality, with the service targets as checks.

Each feed has the three (``build_metric_assets``): user_events' keyed as they always were,
another feed's prefixed by it (``orders/ingestion_throughput``). Each asset describes the
batches of its own run (or, materialized alone, of the latest run of the feed that had
any), as judged by ``Pipeline.evaluate``: the same summary the CLI prints and the JSON logs
hold, and the same verdicts the report states. ``metric_events`` gives the stream job and
a warm run's progress the same materializations and check evaluations.
"""

from typing import Iterator

import dagster as dg

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.defs.keys import METRIC_ASSETS, feed_key, feed_keys, feed_node_name, ingested_tag
from ecom_ingest_dagster.defs.resources import PipelineResource
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline.checks import CHECKS, CheckOutcome, Evaluation
from ecom_ingest_dagster.settings import DEFAULT_FEED

METRICS_GROUP = "metrics"


def _count(value) -> dg.IntMetadataValue:
    # Counts are ints in the UI's tables and tooltips (never "43.0"); the plots' ticks are
    # Chart.js's own whatever the type (Dagster 1.13's AssetValueGraph sets no tick step).
    return dg.MetadataValue.int(int(value))


def reason_metadata(counts: dict[str, int], feed: FeedContract = c.FEED) -> dict[str, dg.IntMetadataValue]:
    reasons = [*feed.reasons, *c.FILE_REJECTION_REASONS]
    return {f"reason/{reason}": _count(counts.get(reason, 0)) for reason in [*reasons, *sorted(set(counts) - set(reasons))]}


def _figures(values: dict) -> dict:
    """Measured figures as floats; one that was not measured (None) is left out, so the UI's
    plot has a gap there rather than a 0 that was never observed."""
    return {key: dg.MetadataValue.float(float(value)) for key, value in values.items() if value is not None}


def throughput_metadata(summary: dict) -> dict:
    return {
        **_figures({
            "avg_records_per_second": summary["avg_records_per_second"],
            "peak_records_per_second": summary["peak_records_per_second"],
            "avg_records_per_batch": summary["avg_records_per_batch"],
        }),
        "total_records": _count(summary["total_records"]),
        "batches": _count(summary["total_batches"]),
    }


def latency_metadata(summary: dict) -> dict:
    batch = summary["batch_latency_ms"]
    e2e = summary["end_to_end_latency_ms"]
    return {
        **_figures({
            **{f"batch_latency_ms_{key}": batch[key] for key in ("avg", "p50", "p95", "p99", "max")},
            # None when no file of the run has a landing time: not measured, not 0 ms.
            **{f"end_to_end_latency_ms_{key}": e2e[key] for key in ("p50", "p95", "max")},
            **{f"stage_ms/{stage}": ms for stage, ms in summary["stage_avg_ms"].items()},
        }),
        "batches": _count(summary["total_batches"]),
    }


def accounting_text(evaluation: Evaluation) -> str:
    """The accounting identity of the run's files, as a sentence.

    Rows in = loaded + duplicate + rejected holds by construction (a file's rows and its
    ledger row commit in one transaction), so its residue (lost rows, files breaking it) is
    0 in every healthy run: as numbers they would be plots flat at 0 forever. They are
    stated here as text, and judged by the blocking ``zero_data_loss`` check.
    """
    s = evaluation.summary
    if not evaluation.violations:
        return (f"balanced: {s['total_records']:,} rows in = {s['loaded_records']:,} loaded + "
                f"{s['duplicate_records']:,} duplicate + {s['rejected_records']:,} rejected")
    return (f"BROKEN: {len(evaluation.violations)} file(s) do not account for their rows "
            f"({evaluation.loss_pct:.4f}% of rows without an outcome; see the zero_data_loss check)")


def quality_metadata(evaluation: Evaluation, feed: FeedContract = c.FEED) -> dict:
    summary = evaluation.summary
    return {
        **_figures({"validation_success_rate_pct": summary["validation_success_rate"]}),
        "rows_in": _count(summary["total_records"]),
        "rows_loaded": _count(summary["loaded_records"]),
        "rows_duplicate": _count(summary["duplicate_records"]),
        "rows_rejected": _count(summary["rejected_records"]),
        "files_rejected_whole": _count(summary["files_rejected"]),
        # Every reason, 0 included: a real count that was 0 this run, a point on its plot.
        **reason_metadata(summary["reason_counts"], feed),
        "accounting": accounting_text(evaluation),
    }


def _run_reference(run_id: str | None):
    if run_id is None:
        return "none"
    # A Dagster run is a link in the UI; a CLI run (cli-...) is only a name.
    return run_id if run_id.startswith("cli-") else dg.MetadataValue.dagster_run(run_id)


def asset_metadata(evaluation: Evaluation, feed: FeedContract = c.FEED) -> dict[str, dict]:
    """Each metric asset's metadata (by its name, unprefixed) for an evaluated run of ``feed``.

    A run without batches records no figures at all, so the UI's plots show a gap where
    nothing was ingested rather than an earlier run's figures again.
    """
    has_batches = bool(evaluation.summary["total_batches"])
    described = {"described_run_id": _run_reference(evaluation.run_id), "has_batches": has_batches}
    if not has_batches:
        return {asset: dict(described) for asset in METRIC_ASSETS}
    return {
        "ingestion_throughput": {**throughput_metadata(evaluation.summary), **described},
        "ingestion_latency": {**latency_metadata(evaluation.summary), **described},
        "data_quality": {**quality_metadata(evaluation, feed), **described},
    }


def _severity(outcome: CheckOutcome) -> dg.AssetCheckSeverity:
    # Slow or bad input is worth a look (it is quarantined, not lost); a row without an
    # outcome is the one failure we never accept.
    return dg.AssetCheckSeverity.ERROR if outcome.spec.blocking else dg.AssetCheckSeverity.WARN


# Checks whose figures are 0 by construction in a healthy run (see ``accounting_text``):
# the check page would plot them flat at 0 forever, so they are text and the check's
# pass/fail history is the series to watch.
ZERO_BY_CONSTRUCTION_CHECKS = frozenset({"zero_data_loss"})


def _check_metadata(outcome: CheckOutcome) -> dict:
    unit = outcome.spec.unit
    as_text = outcome.spec.name in ZERO_BY_CONSTRUCTION_CHECKS

    def figure(value: float):
        return f"{value:,.4f} {unit}" if as_text else dg.MetadataValue.float(float(value))

    if outcome.judged:
        verdict = f"{outcome.measured:,.2f} {unit} against a target of {outcome.target:,.2f} {unit}"
        metadata = {"measured": figure(outcome.measured), "target": figure(outcome.target), "unit": unit}
    else:
        verdict = f"nothing to judge: no batches (target {outcome.target:,.2f} {unit})"
        metadata = {"target": figure(outcome.target), "unit": unit}
    metadata["verdict"] = verdict
    for key, value in outcome.details.items():
        if isinstance(value, (list, dict)):
            metadata[key] = dg.MetadataValue.json(value)
        else:
            metadata[key] = str(value) if as_text else value
    return metadata


def check_results(evaluation: Evaluation, asset: str, feed: str = DEFAULT_FEED) -> list[dg.AssetCheckResult]:
    # A check with nothing to judge (no batch) yields no result: Dagster shows it skipped,
    # not a green "passed" on nothing.
    return [
        dg.AssetCheckResult(asset_key=feed_key(feed, asset), check_name=o.spec.name, passed=o.passed,
                            severity=_severity(o), metadata=_check_metadata(o))
        for o in evaluation.checks.values() if o.spec.asset == asset and o.judged
    ]


def metric_events(evaluation: Evaluation, feed: FeedContract = c.FEED) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The feed's metric assets' materializations and check evaluations, for a job made of ops."""
    for asset, metadata in asset_metadata(evaluation, feed).items():
        yield dg.AssetMaterialization(asset_key=feed_key(feed.feed, asset), metadata=metadata)
    for outcome in (o for o in evaluation.checks.values() if o.judged):
        yield dg.AssetCheckEvaluation(
            asset_key=feed_key(feed.feed, outcome.spec.asset), check_name=outcome.spec.name, passed=outcome.passed,
            severity=_severity(outcome), metadata=_check_metadata(outcome), blocking=outcome.spec.blocking,
        )


def _evaluate(context: dg.AssetExecutionContext, pipeline: PipelineResource, feed: str) -> Evaluation:
    run = context.instance.get_run_by_id(context.run_id)
    ingested_here = run is not None and ingested_tag(feed) in run.tags
    # In a run that ingested, describe exactly that run (no batches: no figures); materialized
    # alone, describe the feed's latest run that had batches.
    evaluation = pipeline.pipeline(feed=feed).evaluate(context.run_id, fallback=not ingested_here)
    if evaluation.run_id != context.run_id:
        context.log.info(f"no batches in this run; {'no figures recorded' if ingested_here else f'describing run {evaluation.run_id}'}")
    return evaluation


def _check_specs(key: dg.AssetKey, asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(s.name, asset=key, description=s.description, blocking=s.blocking)
            for s in CHECKS if s.asset == asset]


DESCRIPTIONS = {
    "ingestion_throughput": "Records per second over the run's micro-batches: average (over processing time) and peak.",
    "ingestion_latency": "Batch latency percentiles, end-to-end latency (landed to committed), stage breakdown.",
    "data_quality": "Validation success rate, rejections by reason, and the accounting identity of the run's files.",
}


def _metric_asset(feed: FeedContract, name: str, group: str) -> dg.AssetsDefinition:
    key = feed_key(feed.feed, name)
    about = "" if feed.feed == DEFAULT_FEED else f"The {feed.feed} feed: "

    # A multi-asset of one that can be subset: its checks' results are then optional, and
    # a check with nothing to judge (no batch) is left out: Dagster shows it skipped,
    # not a green "passed" on nothing.
    @dg.multi_asset(
        name=feed_node_name(feed.feed, name),
        specs=[dg.AssetSpec(key, deps=list(feed_keys(feed)), group_name=group, kinds={"postgres"},
                            description=about + DESCRIPTIONS[name])],
        check_specs=_check_specs(key, name), can_subset=True,
    )
    def metric(context: dg.AssetExecutionContext, pipeline: PipelineResource):
        evaluation = _evaluate(context, pipeline, feed.feed)
        yield dg.MaterializeResult(asset_key=key, metadata=asset_metadata(evaluation, feed)[name])
        yield from check_results(evaluation, name, feed.feed)

    return metric


def build_metric_assets(feed: FeedContract, group: str) -> list[dg.AssetsDefinition]:
    """The feed's three metric assets (throughput, latency, quality) with the service targets as their checks."""
    return [_metric_asset(feed, name, group) for name in METRIC_ASSETS]


ingestion_throughput, ingestion_latency, data_quality = build_metric_assets(c.FEED, METRICS_GROUP)
