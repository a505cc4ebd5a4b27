"""The performance report as an asset: the same renderer as ``ecom-ingest report``."""

import datetime as dt

import dagster as dg

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.defs.keys import METRIC_ASSETS, REPORT_ASSET, feed_key, feed_node_name
from ecom_ingest_dagster.defs.resources import PipelineResource
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.tools import report


class ReportConfig(dg.Config):
    since_hours: float = 24.0  # the window: batches committed in the last N hours


def build_report_asset(feed: FeedContract, group: str) -> dg.AssetsDefinition:
    """The feed's performance report, after its metric assets."""

    key = feed_key(feed.feed, REPORT_ASSET)

    # A multi-asset of one, for its op's name (``orders_performance_report``, as the metric
    # assets' are): a plain asset's op is named after its whole key.
    @dg.multi_asset(
        name=feed_node_name(feed.feed, REPORT_ASSET),
        specs=[dg.AssetSpec(key, deps=[feed_key(feed.feed, name) for name in METRIC_ASSETS], group_name=group,
                            kinds={"markdown"},
                            description=f"The original performance report of the {feed.feed} feed, with measured"
                                        " values and computed statuses, plus plots.")],
    )
    def performance_report(context: dg.AssetExecutionContext, config: ReportConfig, pipeline: PipelineResource):
        return _report(context, config, pipeline.pipeline(feed=feed.feed), key)

    return performance_report


def _report(context: dg.AssetExecutionContext, config: ReportConfig, run, key: dg.AssetKey) -> dg.MaterializeResult:
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=config.since_hours)
    outcome = report.write_report(run, since=since)
    context.log.info(f"report written to {outcome.path}")
    out_dir = outcome.path.parent
    met = sum(1 for r in outcome.requirements if r["passed"])
    unjudged = sum(1 for r in outcome.requirements if r["passed"] is None)
    findings = dg.MetadataValue.table(
        records=[dg.TableRecord({"requirement": r["name"], "target": r["target"], "actual": r["actual"],
                                 "status": {True: "met", False: "NOT met", None: "nothing to judge"}[r["passed"]]})
                 for r in outcome.requirements],
        # The verdict beside the name: the UI clips a table wider than its column on the right.
        schema=dg.TableSchema(columns=[dg.TableColumn(n) for n in ("requirement", "status", "actual", "target")]),
    )
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            # The key findings first: a table shows in the UI without a click.
            "key_findings": findings,
            # The UI cannot load the PNGs beside the file by name: they travel inside.
            "report": dg.MetadataValue.md(report.with_embedded_plots(outcome.path.read_text(encoding="utf-8"), out_dir)),
            "path": dg.MetadataValue.path(str(outcome.path)),
            **{f"plot/{name}": dg.MetadataValue.md(report.with_embedded_plots(f"![{name}]({file})", out_dir))
               for name, file in report.PLOTS.items() if (out_dir / file).exists()},
            "batches": dg.MetadataValue.int(outcome.batches),
            "requirements_met": dg.MetadataValue.int(met),
            # The number of requirements is the template's (four), not a measurement: as a
            # number the UI would plot it flat forever. Text, with those not judged.
            "requirements": f"{met} of {len(outcome.requirements)} met"
            + (f", {unjudged} with nothing to judge" if unjudged else ""),
            **{f"requirement/{r['name']}": r["passed"] for r in outcome.requirements},
        }
    )


performance_report = build_report_asset(c.FEED, group="reporting")
