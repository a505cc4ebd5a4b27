"""Every feed besides user_events, from its contract file: its tables, its metric assets with
their checks and its performance report (keys prefixed by the feed), its ingest, stream and
report jobs, its landing sensor (warm runs, or always on as the deployment says) and daily
report schedule, in a landing pool of its own.

Adding a feed to a deployment is one file, no Python: ``ecom-ingest feed new NAME`` writes
``$ECOM_INGEST_FEEDS_DIR/NAME.yaml``; on its next load the code location has the feed's
definitions, its sensor and schedule on. The feeds shipped as examples (``orders``) are
there too, their sensors and schedules off until switched on in the UI. A contract file
with a mistake is left out and said in the code location's log (``ecom-ingest feed list``
says what is wrong), so one bad file does not take every feed's definitions down with it.
"""

from __future__ import annotations

import logging

import dagster as dg

from ecom_ingest_dagster.defs.ingest.assets import LANDING_POOL, build_ingest_asset
from ecom_ingest_dagster.defs.ingest.jobs import build_stream_job, concurrency_tags
from ecom_ingest_dagster.defs.ingest.sensors import build_landing_sensor
from ecom_ingest_dagster.defs.maintenance.schedules import build_report_schedule
from ecom_ingest_dagster.defs.metrics.assets import build_metric_assets
from ecom_ingest_dagster.defs.reporting.assets import build_report_asset
from ecom_ingest_dagster.feeds import FeedError, find_feed, known_feeds
from ecom_ingest_dagster.settings import DEFAULT_FEED, Settings

log = logging.getLogger(__name__)


def feed_names(settings: Settings) -> dict[str, bool]:
    """Every feed but user_events, and whether it is the user's own (a file in feeds_dir)
    rather than a shipped example."""
    own = {p.stem for p in settings.feeds_dir.glob("*.yaml")} if settings.feeds_dir.is_dir() else set()
    return {name: name in own for name in known_feeds(settings.feeds_dir) if name != DEFAULT_FEED}


def feed_definitions(name: str, *, own: bool) -> dg.Definitions:
    """One feed's assets, job and sensor."""
    settings = Settings.from_env().with_overrides(feed=name)
    feed = find_feed(name, settings.feeds_dir)
    pool = f"{LANDING_POOL}_{name}"
    asset = build_ingest_asset(feed, name=f"{name}_ingest", group=name, pool=pool)
    report = build_report_asset(feed, group=name)
    assets = [asset, *build_metric_assets(feed, group=name), report]
    job = dg.define_asset_job(
        f"{name}_ingest_job", selection=assets,
        description=f"Ingest every pending {name} drop once, then refresh its metric assets and its report.",
        tags=concurrency_tags(name), executor_def=dg.in_process_executor,
    )
    stream = build_stream_job(feed, name=f"{name}_stream_job", op_name=f"{name}_stream_landing", pool=pool)
    sensor = build_landing_sensor(
        job, name=f"{name}_landing_sensor", asset_name=f"{name}_ingest", feed=name, stream_job_name=stream.name,
        default_status=dg.DefaultSensorStatus.RUNNING if own else dg.DefaultSensorStatus.STOPPED,
    )
    report_job = dg.define_asset_job(f"{name}_report_job", selection=[report], executor_def=dg.in_process_executor,
                                     description=f"Render the {name} performance report (its daily schedule's job).")
    schedule = build_report_schedule(
        report_job, name=f"{name}_daily_performance_report", op_name=report.node_def.name, feed=name,
        default_status=dg.DefaultScheduleStatus.RUNNING if own else dg.DefaultScheduleStatus.STOPPED,
    )
    return dg.Definitions(assets=assets, jobs=[job, stream, report_job], sensors=[sensor], schedules=[schedule])


@dg.definitions
def feeds() -> dg.Definitions:
    parts = []
    for name, own in feed_names(Settings.from_env()).items():
        try:
            parts.append(feed_definitions(name, own=own))
        except (FeedError, dg.DagsterError) as exc:
            log.error("feed %s left out of the code location: %s", name, exc)
    return dg.Definitions.merge(*parts) if parts else dg.Definitions()
