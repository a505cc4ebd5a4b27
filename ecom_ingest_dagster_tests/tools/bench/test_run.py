"""Smoke test of the benchmark command on a tiny input: it runs and writes its files.

Timings are never asserted (see docs/benchmarks.md for figures): only that every
comparison ran, accounted for every row, and the results files exist.
"""

from __future__ import annotations

import json
import subprocess
import sys



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
