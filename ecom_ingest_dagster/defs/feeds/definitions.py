"""Every feed besides user_events, from its contract file: its tables as assets (keys
prefixed by the feed), its ingest job and its landing sensor, in a landing pool of its own.

Adding a feed to a deployment is one file, no Python: ``ecom-ingest feed new NAME`` writes
``$ECOM_INGEST_FEEDS_DIR/NAME.yaml``; on its next load the code location has the feed's
definitions, its sensor on. The feeds shipped as examples (``orders``) are there too,
their sensors off until switched on in the UI. A contract file with a mistake is left out
and said in the code location's log (``ecom-ingest feed list`` says what is wrong), so one
bad file does not take every feed's definitions down with it.

Not yet per feed: the metric assets and checks, always-on runs and the stream job
(user_events' alone); the README says so.
"""

from __future__ import annotations

import logging

import dagster as dg

from ecom_ingest_dagster.defs.ingest.assets import LANDING_POOL, build_ingest_asset
from ecom_ingest_dagster.defs.ingest.jobs import LANDING_TAG, landing_tag_value
from ecom_ingest_dagster.defs.ingest.sensors import build_landing_sensor
from ecom_ingest_dagster.feeds import SHIPPED_DIR, FeedError, find_feed
from ecom_ingest_dagster.settings import DEFAULT_FEED, Settings

log = logging.getLogger(__name__)


def feed_names(settings: Settings) -> dict[str, bool]:
    """Every feed but user_events, and whether it is the user's own (a file in feeds_dir)
    rather than a shipped example."""
    shipped = {p.stem for p in SHIPPED_DIR.glob("*.yaml")}
    own = {p.stem for p in settings.feeds_dir.glob("*.yaml")} if settings.feeds_dir.is_dir() else set()
    return {name: name in own for name in sorted(shipped | own) if name != DEFAULT_FEED}


def feed_definitions(name: str, *, own: bool) -> dg.Definitions:
    """One feed's asset, job and sensor."""
    settings = Settings.from_env().with_overrides(feed=name)
    feed = find_feed(name, settings.feeds_dir)
    asset = build_ingest_asset(feed, name=f"{name}_ingest", group=name, pool=f"{LANDING_POOL}_{name}")
    job = dg.define_asset_job(
        f"{name}_ingest_job", selection=[asset], description=f"Ingest every pending {name} drop once.",
        tags={LANDING_TAG: landing_tag_value(str(settings.landing_dir))}, executor_def=dg.in_process_executor,
    )
    sensor = build_landing_sensor(
        job, name=f"{name}_landing_sensor", asset_name=f"{name}_ingest", feed=name, always_on=False,
        default_status=dg.DefaultSensorStatus.RUNNING if own else dg.DefaultSensorStatus.STOPPED,
    )
    return dg.Definitions(assets=[asset], jobs=[job], sensors=[sensor])


@dg.definitions
def feeds() -> dg.Definitions:
    parts = []
    for name, own in feed_names(Settings.from_env()).items():
        try:
            parts.append(feed_definitions(name, own=own))
        except FeedError as exc:
            log.error("feed %s left out of the code location: %s", name, exc)
    return dg.Definitions.merge(*parts) if parts else dg.Definitions()
