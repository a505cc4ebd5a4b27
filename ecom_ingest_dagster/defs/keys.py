"""The asset keys more than one defs module names: one place, so the modules need not import each other.

user_events' keys are the plain names they always were; every other feed's carry the
feed as a prefix (``orders/orders``, ``orders/ingestion_throughput``), so two feeds'
assets of the same kind never collide and the UI lists each feed's under its name.
"""

import dagster as dg

from ecom_ingest_dagster.settings import DEFAULT_FEED

METRIC_ASSETS = ("ingestion_throughput", "ingestion_latency", "data_quality")
REPORT_ASSET = "performance_report"


def feed_key(feed: str, name: str) -> dg.AssetKey:
    """The key of the feed's asset ``name``."""
    return dg.AssetKey(name) if feed == DEFAULT_FEED else dg.AssetKey([feed, name])


def feed_node_name(feed: str, name: str) -> str:
    """An op's name for the feed's asset ``name``: op names are one flat namespace."""
    return name if feed == DEFAULT_FEED else f"{feed}_{name}"


def feed_keys(feed) -> tuple[dg.AssetKey, dg.AssetKey]:
    """The asset keys of a feed's table and quarantine table (``feed``: a ``FeedContract``)."""
    return feed_key(feed.feed, feed.table), feed_key(feed.feed, feed.rejected_table)
