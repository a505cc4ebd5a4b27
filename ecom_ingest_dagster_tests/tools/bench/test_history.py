"""The landing-history benchmark measures every case, cleans up, and renders."""

from __future__ import annotations


def test_history_bench_measures_every_case_and_cleans_up(tmp_path, database_url, monkeypatch):
    import psycopg

    from ecom_ingest_dagster.tools import bench
    from ecom_ingest_dagster.tools.bench import history

    monkeypatch.setattr(history, "HISTORY_BUDGET_S", 0.02)  # a few calls per case: this checks shape, not speed

    work = tmp_path / "work"
    work.mkdir()
    config = bench.BenchConfig(database_url=database_url, out_dir=tmp_path / "out", history=200, log=lambda _: None)
    with psycopg.connect(database_url) as conn:
        before = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_hist%'")}
    result = history.history(config, work)

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
