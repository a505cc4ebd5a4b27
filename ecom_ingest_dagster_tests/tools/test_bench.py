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
        "--rows", "3000", "--repeat", "1", "--latency-drops", "2", "--no-jdbc", "--out", str(out),
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
    assert results["latency_continuous"]["drops"] == 2
    assert results["latency_continuous"]["p50_ms"] > 0
    text = (run_dir / "results.md").read_text()
    assert "### Bulk load: 3,000 rows" in text and "vs raw COPY" in text
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
