"""The binary COPY encoding's pure parts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ecom_ingest_dagster.pipeline.encode import in_key_order


def test_rows_go_in_key_order_and_rows_of_one_id_keep_theirs():
    # Sorting is what makes the COPY cheap for the server; a stable sort is what keeps the
    # first copy of a repeated id the one that is loaded (ON CONFLICT keeps the first).
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 50, 2_000)  # many rows per id
    ids = pa.array([int(k).to_bytes(16, "big") for k in keys], pa.binary(16))
    frame = pa.table({"event_id": ids, "position": pa.array(np.arange(len(keys)))})
    ordered = in_key_order(frame, "event_id")
    got_keys = [int.from_bytes(v, "big") for v in ordered.column("event_id").to_pylist()]
    positions = ordered.column("position").to_numpy()
    assert got_keys == sorted(keys.tolist())
    for key in set(got_keys):
        mine = positions[np.array(got_keys) == key]
        assert (np.diff(mine) > 0).all(), f"rows of id {key} lost their order"
