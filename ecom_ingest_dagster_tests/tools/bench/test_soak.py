"""The soak through the CLI, shortened: a real always-on `dagster dev` over a PostgreSQL of its
own, restarted mid-way, its run killed with SIGKILL, and every drop accounted for at the end.

Timings are never asserted; that the disruptions happened and nothing was lost or doubled is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_a_short_soak_rides_out_a_postgres_restart_and_a_killed_run_and_keeps_every_event_once(tmp_path, database_url):
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECOM_INGEST_", "DAGSTER_"))}
    env.update({"ECOM_INGEST_DATABASE_URL": database_url, "ECOM_INGEST_HOME": str(tmp_path / "home")})
    done = subprocess.run(
        [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "bench", "--rows", "0", "--latency-drops", "0",
         "--backlog", "0", "--rates", "0", "--soak-minutes", "1.5", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    soak = json.loads((run_dir / "results.json").read_text())["soak"]

    assert "PostgreSQL restarted" in done.stderr and "killed 1 run process(es)" in done.stderr
    assert [w["events"] for w in soak["windows"] if w["events"]] == [["postgres_restart"], ["run_killed"]]
    # The run was found and sampled before the kill; the tree was sampled throughout.
    assert all(w["tree_rss_mb"] for w in soak["windows"]) and soak["windows"][0]["run_rss_mb"] > 100
    # Drops kept being taken after each disruption, and every one of them exactly once.
    assert all(r["first_drop_after_s"] is not None for r in soak["recovery"].values())
    accounting = soak["accounting"]
    assert accounting["every_event_once"] and accounting["drops"] >= 80 and accounting["rejected_twice"] == 0
    assert accounting["rows_loaded"] + accounting["rows_rejected"] + accounting["rows_duplicate"] == accounting["rows_dropped"]
    assert soak["rss_growth"] is not None and soak["p95_drift"] is not None
    assert "### Soak: 1.5 minutes" in (run_dir / "results.md").read_text()


def test_the_windows_cover_the_whole_soak_and_the_last_holds_what_is_left():
    from ecom_ingest_dagster.tools.bench import soak

    # 65 minutes of one drop a second, 10-minute windows: six windows, the last 15 minutes long.
    dropped = {f"d{i}": 1000.0 + i for i in range(3901)}
    committed = {name: at + 0.5 for name, at in dropped.items()}
    samples = [(1000.0 + s, 100.0 + s / 100, 50.0) for s in range(0, 3901, 5)]
    result = soak._summary(dropped, committed, samples, {"run_killed": 1000.0 + 2000}, {"every_event_once": True},
                           600.0, 3900.0)
    windows = result["windows"]
    assert [w["drops"] for w in windows] == [600] * 5 + [901] and sum(w["drops"] for w in windows) == len(dropped)
    assert windows[-1]["to_min"] == 65 and [w["events"] for w in windows][3] == ["run_killed"]
    assert all(w["tree_rss_mb"] for w in windows) and result["p95_drift"] == 0
    assert result["rss_growth"] > 0 and result["rss_met"] is False  # 100 MB growing 1 MB a minute: +39 %
