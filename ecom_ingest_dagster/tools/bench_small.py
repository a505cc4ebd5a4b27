"""Benchmarks of what small drops cost a user, on the wall clock.

- ``cold_small``: ``ecom-ingest ingest`` of one 20-row drop, from the command to its exit,
  against ``psql \\copy`` of the same valid rows into a fresh keyed ``user_events`` (also
  a process started for one file): wall against wall, alternating, per repetition.
- ``backlog``: a backlog of N 20-row drops drained by one ``ecom-ingest ingest``, with the
  small files loaded together (the default) and, as the baseline measured in the same run,
  one transaction per file (``ECOM_INGEST_GROUP_MAX_BYTES=0``): files per second on the
  wall clock and over the batches' processing time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ecom_ingest_dagster.tools.generator import generate_events, write_drop

COLD_SMALL_TARGET_S = 3.0
BACKLOG_TARGET_FILES_PER_S = 500.0


def _drops(directory: Path, count: int, rows: int = 20, seed: int = 11) -> list[Path]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_drop(generate_events(rows, rng=rng, invalid_rate=0.02), directory, f"small_{i:05d}.csv")
            for i in range(count)]


def cold_small(config, work: Path) -> dict:
    """One 20-row drop: our wall clock against psql's, alternating, ``config.repeat`` times."""
    from ecom_ingest_dagster.tools import bench

    files = _drops(work / "cold_small" / "data", 1)
    shaped = bench.shape_valid_rows(files, work / "cold_small" / "typed")
    ours, psql = [], []
    for rep in range(1, config.repeat + 1):
        psql.append(bench.typed_copy(config.database_url, shaped.csv)["seconds"])
        ours.append(bench.pipeline(config.database_url, files, work / "cold_small" / f"run_{rep}")["wall_s"])
        config.log(f"[{rep}/{config.repeat}] one 20-row drop: ecom-ingest ingest {ours[-1]:.2f} s wall, "
                   f"psql \\copy {psql[-1]:.2f} s wall")
    ratios = [o / p for o, p in zip(ours, psql)]
    return {"ours_wall_s": ours, "psql_wall_s": psql, "ratio_per_repetition": ratios,
            "ours_median_s": bench._median(ours), "psql_median_s": bench._median(psql),
            "ratio_median": bench._median(ratios), "target_s": COLD_SMALL_TARGET_S,
            "met": bench._median(ours) <= COLD_SMALL_TARGET_S}


def backlog(config, work: Path) -> dict:
    """``config.backlog`` 20-row drops drained by one ingest: together against one by one, alternating."""
    from ecom_ingest_dagster.tools import bench

    files = _drops(work / "backlog" / "data", config.backlog)
    runs: dict[str, list[dict]] = {"together": [], "one_by_one": []}
    for rep in range(1, config.repeat + 1):
        for name, env in (("one_by_one", {"ECOM_INGEST_GROUP_MAX_BYTES": "0"}), ("together", {})):
            home = work / "backlog" / f"{name}_{rep}"
            result = bench.pipeline(config.database_url, files, home, extra_env=env)
            shutil.rmtree(home, ignore_errors=True)
            result["files_per_s_wall"] = len(files) / result["wall_s"]
            result["files_per_s_processing"] = len(files) / result["steady_s"]
            runs[name].append(result)
            config.log(f"[{rep}/{config.repeat}] backlog of {len(files):,} drops, {name.replace('_', ' ')}: "
                       f"{result['wall_s']:.1f} s wall ({result['files_per_s_wall']:,.0f} files/s), "
                       f"{result['steady_s']:.1f} s processing ({result['files_per_s_processing']:,.0f} files/s)")

    def median(name: str, key: str) -> float | None:
        return bench._median(r[key] for r in runs[name])

    speedup = [b["wall_s"] / t["wall_s"] for t, b in zip(runs["together"], runs["one_by_one"])]
    summary = {
        "files": len(files), "rows_per_file": 20,
        "together_wall_s": median("together", "wall_s"), "one_by_one_wall_s": median("one_by_one", "wall_s"),
        "together_files_per_s_wall": median("together", "files_per_s_wall"),
        "together_files_per_s_processing": median("together", "files_per_s_processing"),
        "one_by_one_files_per_s_wall": median("one_by_one", "files_per_s_wall"),
        "one_by_one_files_per_s_processing": median("one_by_one", "files_per_s_processing"),
        "wall_speedup_per_repetition": speedup, "wall_speedup_median": bench._median(speedup),
        "target_files_per_s": BACKLOG_TARGET_FILES_PER_S,
        "correct": all(r["correct"] for rs in runs.values() for r in rs),
    }
    summary["met_processing"] = summary["together_files_per_s_processing"] >= BACKLOG_TARGET_FILES_PER_S
    summary["met_wall"] = summary["together_files_per_s_wall"] >= BACKLOG_TARGET_FILES_PER_S
    return {"summary": summary, "runs": {k: [{kk: vv for kk, vv in r.items() if kk != "batch_rows_per_s"} for r in v]
                                         for k, v in runs.items()}}


def markdown(results: dict) -> list[str]:
    lines: list[str] = []
    if "cold_small" in results:
        c = results["cold_small"]
        lines += ["### One 20-row drop, cold: what a user waits", "",
                  "| repetition | `ecom-ingest ingest` wall | `psql \\copy` wall | ours / psql |", "|---|---|---|---|",
                  *[f"| {i + 1} | {o:.2f} s | {p:.2f} s | {r:.2f}× |"
                    for i, (o, p, r) in enumerate(zip(c["ours_wall_s"], c["psql_wall_s"], c["ratio_per_repetition"]))],
                  f"| **median** | **{c['ours_median_s']:.2f} s** | {c['psql_median_s']:.2f} s | {c['ratio_median']:.2f}× |",
                  "", f"Target: ≤ {c['target_s']:g} s wall: {'met' if c['met'] else '**not met**'}.", ""]
    if "backlog" in results:
        s = results["backlog"]["summary"]
        lines += [f"### A backlog of {s['files']:,} drops of 20 rows, one `ecom-ingest ingest`", "",
                  "| small files | wall | files/s (wall) | files/s (processing) |", "|---|---|---|---|",
                  f"| together (default) | {s['together_wall_s']:.1f} s | {s['together_files_per_s_wall']:,.0f} | "
                  f"{s['together_files_per_s_processing']:,.0f} |",
                  f"| one transaction each (`ECOM_INGEST_GROUP_MAX_BYTES=0`) | {s['one_by_one_wall_s']:.1f} s | "
                  f"{s['one_by_one_files_per_s_wall']:,.0f} | {s['one_by_one_files_per_s_processing']:,.0f} |", "",
                  f"Wall-clock speed-up {s['wall_speedup_median']:.2f}× (per repetition: "
                  f"{', '.join(f'{x:.2f}' for x in s['wall_speedup_per_repetition'])}); target ≥ "
                  f"{s['target_files_per_s']:,.0f} files/s: processing {'met' if s['met_processing'] else '**not met**'}, "
                  f"wall (Spark's start included) {'met' if s['met_wall'] else '**not met**'}; every row accounted for: "
                  f"{s['correct']}.", ""]
    return lines
