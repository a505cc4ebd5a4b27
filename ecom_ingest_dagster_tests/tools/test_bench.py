"""Smoke test of the benchmark command on a tiny input: it runs and writes its files.

Timings are never asserted (see docs/benchmarks.md for figures): only that every
comparison ran, accounted for every row, and the results files exist.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest


def test_bench_runs_on_a_tiny_input_and_writes_results(tmp_path, database_url):
    out = tmp_path / "results"
    env_cmd = [
        sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "bench",
        "--rows", "3000", "--repeat", "1", "--latency-drops", "2", "--backlog", "30", "--rates", "5",
        "--rate-seconds", "2", "--no-jdbc", "--out", str(out),
    ]
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")}
    env.update({"ECOM_INGEST_DATABASE_URL": database_url, "ECOM_INGEST_HOME": str(tmp_path / "home")})
    done = subprocess.run(env_cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    bulk = results["bulk"]["summary"]
    assert bulk["rows"] == 3000 and bulk["pipeline_correct"]
    assert bulk["raw_copy_rows_per_s"] > 0 and bulk["pipeline_rows_per_s"] > 0
    assert bulk["pipeline_peak_rss_mb"] > 100  # the JVM alone is bigger than that
    assert bulk["spark_jdbc_note"] == "skipped"
    # the headline ratio and the ceiling ran on the same rows, one repetition each
    assert bulk["binary_copy_rows_per_s"] > 0 and bulk["typed_copy_rows_per_s"] > 0
    assert len(bulk["vs_psql_keyed"]["per_repetition"]) == len(bulk["of_ceiling"]["per_repetition"]) == 1
    assert bulk["vs_psql_keyed"]["median"] > 0 and bulk["of_ceiling"]["median"] > 0
    loaded = {run["rows"] for name in ("typed_copy", "binary_copy", "binary_copy_keyed", "adbc_copy")
              for run in results["bulk"]["runs"][name]}
    assert loaded == {results["bulk"]["runs"]["pipeline"][0]["loaded"]}  # every COPY took the rows we loaded
    assert (bulk["adbc_copy_rows_per_s"] or 0) > 0 or bulk["adbc_copy_note"]
    assert results["latency_continuous"]["drops"] == 2
    assert results["latency_continuous"]["p50_ms"] > 0
    # The executor baseline ran as well, with the setting that sends every batch there.
    baseline = results["latency_continuous_executors"]
    assert baseline["drops"] == 2 and baseline["driver_batch_max_bytes"] == 0
    assert baseline["batch_processing_ms"]["batches"] >= 1
    # What a user waits: wall against wall, for the 1M-row drop's stand-in and for one small drop.
    assert bulk["wall_vs_psql_keyed"] > 0
    cold = results["cold_small"]
    assert len(cold["ours_wall_s"]) == len(cold["psql_wall_s"]) == 1 and cold["ratio_median"] > 0
    backlog = results["backlog"]["summary"]
    assert backlog["files"] == 30 and backlog["correct"]
    assert backlog["together_files_per_s_wall"] > 0 and backlog["one_by_one_files_per_s_wall"] > 0
    sustained = results["sustained"]
    (rate,) = sustained["rates"]
    assert rate["rate_per_s"] == 5 and rate["committed"] == rate["drops"] > 0 and rate["p95_ms"] > 0
    assert sustained["bulk_into_running"]["rows"] == 3000 and sustained["bulk_into_running"]["queryable_s"] > 0
    text = (run_dir / "results.md").read_text()
    assert "Sustained drops of 20 rows" in text
    assert "One 20-row drop, cold" in text and "A backlog of 30 drops" in text
    assert "### Bulk load: 3,000 rows" in text and "vs raw COPY" in text and "binary COPY ceiling" in text
    assert "Continuous mode" in done.stdout


def test_history_bench_measures_every_case_and_cleans_up(tmp_path, database_url, monkeypatch):
    import psycopg

    from ecom_ingest_dagster.tools import bench

    monkeypatch.setattr(bench, "HISTORY_BUDGET_S", 0.02)  # a few calls per case: this checks shape, not speed

    work = tmp_path / "work"
    work.mkdir()
    config = bench.BenchConfig(database_url=database_url, out_dir=tmp_path / "out", history=200, log=lambda _: None)
    with psycopg.connect(database_url) as conn:
        before = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_hist%'")}
    result = bench.history(config, work)

    assert result["files"] == 200 and result["new_drops"] == 10 and result["repetitions"] >= 3
    cases = {"after": {"sensor_scan", "startup_sweep"}, "before": {"sensor_scan", "startup_sweep", "old_replaced_check"}}
    for layout, ops in cases.items():
        assert set(result[layout]) == ops
        for op in ops:
            figure = result[layout][op]
            assert figure["empty_ms"] > 0 and figure["history_ms"] > 0 and figure["ratio"] > 0
            assert len(figure["empty_samples_ms"]) == len(figure["history_samples_ms"]) == result["repetitions"]
    assert result["before_vs_after"]["sensor_scan"] > 0 and result["before_vs_after"]["startup"] > 0
    assert isinstance(result["flat"], bool)
    # the files and the schemas are gone
    assert not (work / "history").exists()
    with psycopg.connect(database_url) as conn:
        after = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_hist%'")}
    assert after <= before
    # and the results render
    text = bench.markdown({"started_at": "now", "machine": bench.machine(), "config": {}, "history": result})
    assert "### Landing history: 200 files" in text and "old whole-ledger replaced-file check" in text


def _runs(typed_s, binary_s, ours_s, rss_mb):
    """Synthetic bulk runs (three repetitions) in the shape ``bench.bulk`` collects them."""
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

    runs = _runs(typed_s=[3.0, 2.0, 4.0], binary_s=[2.0, 1.5, 2.4], ours_s=[2.0, 2.0, 2.0], rss_mb=[1400, 1600, 1450])
    s = bench.summarize_bulk(runs, 1000, {"adbc_copy": "skipped", "spark_jdbc": "skipped"})

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
    from ecom_ingest_dagster.tools import bench

    s = bench.summarize_bulk(_runs([1.0, 1.0, 1.0], [0.8, 0.8, 0.8], [1.2, 1.0, 1.1], [900, 900, 900]), 1000)
    assert s["vs_psql_keyed"]["met"] is False and s["of_ceiling"]["met"] is False and s["peak_rss"]["met"] is True
    assert s["of_ceiling"]["median"] == 0.8 / 1.1
