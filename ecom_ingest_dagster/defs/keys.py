"""The asset keys more than one defs module names: one place, so the modules need not import each other."""

import dagster as dg

USER_EVENTS = dg.AssetKey("user_events")
REJECTED_EVENTS = dg.AssetKey("rejected_events")
