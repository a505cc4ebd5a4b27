"""The asset keys more than one defs module names: one place, so the modules need not import each other.

user_events' keys are the plain names they always were; every other feed's carry the
feed as a prefix (``orders/orders``, ``orders/ingestion_throughput``), so two feeds'
assets of the same kind never collide and the UI lists each feed's under its name.
"""

import dagster as dg

from ecom_ingest_dagster.feeds import METRIC_ASSETS, REPORT_ASSET
from ecom_ingest_dagster.settings import DEFAULT_FEED

__all__ = ["METRIC_ASSETS", "REPORT_ASSET", "feed_key", "feed_keys", "feed_node_name", "ingested_tag"]


def feed_key(feed: str, name: str) -> dg.AssetKey:
    """The key of the feed's asset ``name``."""
    return dg.AssetKey(name) if feed == DEFAULT_FEED else dg.AssetKey([feed, name])


def feed_node_name(feed: str, name: str) -> str:
    """An op's name for the feed's asset ``name``: op names are one flat namespace."""
    return name if feed == DEFAULT_FEED else f"{feed}_{name}"


# Set by a feed's ingest step: this run ingested the feed (maybe nothing), so its metric
# assets describe exactly this run. Per feed: one UI run may hold one feed's ingest and
# another's metric assets.
INGESTED_TAG = "ecom_ingest/files_loaded"


def ingested_tag(feed: str, name: str = INGESTED_TAG) -> str:
    """A run tag of the feed (``ecom_ingest/files_loaded``, ``ecom_ingest/files_loaded_orders``)."""
    return name if feed == DEFAULT_FEED else f"{name}_{feed}"


def feed_keys(feed) -> tuple[dg.AssetKey, dg.AssetKey]:
    """The asset keys of a feed's table and quarantine table (``feed``: a ``FeedContract``)."""
    return feed_key(feed.feed, feed.table), feed_key(feed.feed, feed.rejected_table)
