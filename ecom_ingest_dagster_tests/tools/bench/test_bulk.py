"""The bulk summary: ratios within a repetition, then the median; targets judged as they are."""

from __future__ import annotations

import statistics

import pytest


def _runs(typed_s, binary_s, ours_s, rss_mb):
    """Synthetic bulk runs (three repetitions) in the shape ``bulk.bulk`` collects them."""
    rows = 1000

    def loader(seconds, **extra):
        return [{"seconds": t, "rows": rows, "rows_per_s": rows / t, **extra} for t in seconds]

    return {
        "raw_copy": loader([1.0, 1.0, 1.0], tool="psql \\copy"),
        "typed_copy": loader(typed_s),
        "binary_copy": loader(binary_s, encode_s=0.1),
        "binary_copy_keyed": loader([t * 0.8 for t in binary_s]),
        "adbc_copy": [],
        "spark_jdbc": [],
        "pipeline": [
            {"rows": rows, "loaded": rows, "rejected": 0, "correct": True, "steady_s": t, "wall_s": t + 10,
             "startup_s": 10, "rows_per_s": rows / t, "peak_rss_mb": m, "batch_rows_per_s": [rows / t, rows / t / 2],
             "stage_ms": {"read_parse": 1, "validation": 2, "dataframe_creation": 3, "db_write_wait": 4}}
            for t, m in zip(ours_s, rss_mb)
        ],
    }


def test_bulk_summary_takes_each_repetitions_ratio_then_the_median_and_the_markdown_shows_them():
    from ecom_ingest_dagster.tools import bench
    from ecom_ingest_dagster.tools.bench.bulk import summarize_bulk

    runs = _runs(typed_s=[3.0, 2.0, 4.0], binary_s=[2.0, 1.5, 2.4], ours_s=[2.0, 2.0, 2.0], rss_mb=[1400, 1600, 1450])
    s = summarize_bulk(runs, 1000, {"adbc_copy": "skipped", "spark_jdbc": "skipped"})

    # psql keyed seconds / our processing seconds, per repetition, then the median
    assert s["vs_psql_keyed"]["per_repetition"] == [1.5, 1.0, 2.0]
    assert s["vs_psql_keyed"]["median"] == 1.5 and s["vs_psql_keyed"]["met"] is True
    assert s["of_ceiling"]["per_repetition"] == [1.0, 0.75, 1.2] and s["of_ceiling"]["met"] is True
    assert s["binary_copy_vs_psql"] == statistics.median([1.5, 2.0 / 1.5, 4.0 / 2.4])
    # memory is judged on its worst repetition
    assert s["peak_rss"]["median_mb"] == 1450 and s["peak_rss"]["max_mb"] == 1600 and s["peak_rss"]["met"] is False
    assert s["adbc_copy_vs_psql"] is None and s["adbc_copy_note"] == "skipped"
    assert [r["rep"] for r in s["repetitions"]] == [1, 2, 3] and "adbc_copy_s" not in s["repetitions"][0]
    assert s["repetitions"][1]["typed_copy_s"] == 2.0 and s["repetitions"][1]["vs_psql_keyed"] == 1.0
    assert s["pipeline_batch_rows_per_s"] == [500.0, 250.0]
    assert s["order"] == ["raw_copy", "typed_copy", "binary_copy", "binary_copy_keyed", "pipeline"]
    # the key-ordered ceiling: its own seconds over ours, per repetition, then the median
    assert s["of_keyed_ceiling"] == pytest.approx(0.8) and s["repetitions"][1]["of_keyed_ceiling"] == pytest.approx(0.6)

    text = bench.markdown({"started_at": "now", "machine": bench.machine(), "config": {"invalid_rate": 0.02},
                           "bulk": {"summary": s, "runs": runs}})
    assert "### Bulk load: 1,000 rows, 2% invalid, medians of 3 repetitions" in text
    assert "psql `\\copy` keyed / our processing: 1.50×** median (per repetition 1.50, 1.00, 2.00)" in text
    assert "target ≥ 1.30×: met" in text and "target ≤ 1,500 MB: **not met**" in text
    assert "| 2 | 1.00 | 2.00 | 1.50 | 1.20 | n/a | n/a | 2.00 | 12.00 | 1.00 | 0.75 | 0.60 | 1,600 |" in text
    assert "last/first 0.50" in text


def test_bulk_summary_reports_a_missed_target_as_missed():
    from ecom_ingest_dagster.tools.bench.bulk import summarize_bulk

    s = summarize_bulk(_runs([1.0, 1.0, 1.0], [0.8, 0.8, 0.8], [1.2, 1.0, 1.1], [900, 900, 900]), 1000)
    assert s["vs_psql_keyed"]["met"] is False and s["of_ceiling"]["met"] is False and s["peak_rss"]["met"] is True
    assert s["of_ceiling"]["median"] == 0.8 / 1.1
