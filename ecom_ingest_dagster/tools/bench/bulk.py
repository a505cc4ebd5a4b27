"""The bulk benchmark: each loader in turn per repetition, ratios within a repetition, medians.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable


from ecom_ingest_dagster.pipeline.database import connection
from ecom_ingest_dagster.tools.bench.baselines import (
    JDBC_JARS, adbc_available, adbc_copy, binary_copy, raw_copy, shape_valid_rows, spark_jdbc, typed_copy,
)
from ecom_ingest_dagster.tools.bench.harness import BenchConfig, fmt, median, pipeline, times, verdict



# The bulk targets (benchmark figures, never asserted by a test).
BULK_TARGET_VS_PSQL = 1.3  # psql \copy keyed seconds / our processing seconds, median, at 1M


BULK_TARGET_OF_CEILING = 0.90  # binary-COPY ceiling seconds / our processing seconds


BULK_TARGET_PEAK_RSS_MB = 1500.0  # the whole process tree, at 1M and at 10M


BULK_TARGET_WALL_VS_PSQL = 1.5  # a cold ingest's wall clock over psql \copy's


# Each repetition runs these in this order, so drift and the other jobs on the machine
# fall on every loader alike; ratios are taken within a repetition before the median.
BULK_ORDER = ("raw_copy", "typed_copy", "binary_copy", "binary_copy_keyed", "adbc_copy", "spark_jdbc", "pipeline")


def bulk(config: BenchConfig, files: list[Path], work: Path) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in BULK_ORDER}
    shaped = shape_valid_rows(files, work / "typed")
    jar = next((j for j in JDBC_JARS if Path(j).exists()), None)
    if "@/" in config.database_url or "host=/" in config.database_url:
        jar = None  # a Unix-socket database (the embedded one): JDBC needs TCP
    notes = {
        "spark_jdbc": None if config.jdbc and jar else (
            "skipped: no PostgreSQL JDBC jar (apt-get install libpostgresql-jdbc-java)" if config.jdbc else "skipped"),
        "adbc_copy": None if config.adbc and adbc_available() else (
            "skipped: adbc-driver-postgresql is not installed" if config.adbc else "skipped"),
    }
    notes["checkpoint"] = None if _checkpoint(config.database_url) else \
        "no CHECKPOINT privilege: loaders may inherit each other's checkpoints"
    for rep in range(1, config.repeat + 1):
        _repetition(config, rep, files, shaped, jar, notes, runs, work)
    summary = summarize_bulk(runs, config.rows, notes)
    h, f = summary["vs_psql_keyed"], summary["of_ceiling"]
    config.log(f"bulk: psql \\copy keyed / our processing = {h['median']:.2f} median "
               f"({', '.join(f'{r:.2f}' for r in h['per_repetition'])}; target >= {h['target']}); "
               f"ours vs binary ceiling {f['median']:.0%} (target >= {f['target']:.0%}); "
               f"peak RSS {summary['peak_rss']['max_mb']:,.0f} MB (target <= {summary['peak_rss']['target_mb']:,.0f})")
    return {"summary": summary, "runs": runs}


def _repetition(config: BenchConfig, rep: int, files: list[Path], shaped, jar: str | None, notes: dict,
                runs: dict[str, list[dict]], work: Path) -> None:
    """One repetition: every loader in ``BULK_ORDER``, each after a CHECKPOINT; appended to ``runs``."""
    tag = f"[{rep}/{config.repeat}]"

    def timed(name: str, load: Callable[[], dict]) -> dict:
        _checkpoint(config.database_url)
        runs[name].append(load())
        return runs[name][-1]

    raw = timed("raw_copy", lambda: raw_copy(config.database_url, files))
    config.log(f"{tag} raw COPY (text, no key): {raw['rows_per_s']:,.0f} rows/s")
    typed = timed("typed_copy", lambda: typed_copy(config.database_url, shaped.csv))
    config.log(f"{tag} psql \\copy keyed user_events: {typed['rows_per_s']:,.0f} rows/s, {typed['seconds']:.2f} s")
    b = timed("binary_copy", lambda: binary_copy(config.database_url, shaped.arrow))
    config.log(f"{tag} binary COPY ceiling (pgpq): {b['rows_per_s']:,.0f} rows/s, {b['seconds']:.2f} s "
               f"({typed['seconds'] / b['seconds']:.2f}x psql)")
    k = timed("binary_copy_keyed", lambda: binary_copy(config.database_url, shaped.arrow, key_order=True))
    config.log(f"{tag} binary COPY, each block in key order: {k['rows_per_s']:,.0f} rows/s, {k['seconds']:.2f} s "
               f"({typed['seconds'] / k['seconds']:.2f}x psql)")
    if notes["adbc_copy"] is None:
        try:
            a = timed("adbc_copy", lambda: adbc_copy(config.database_url, shaped.arrow))
        except Exception as exc:  # an optional comparison: its failure is reported, not fatal
            notes["adbc_copy"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            runs["adbc_copy"].clear()  # a column with some repetitions missing would not pair up
            config.log(f"{tag} ADBC {notes['adbc_copy']}")
        else:
            config.log(f"{tag} ADBC adbc_ingest: {a['rows_per_s']:,.0f} rows/s, {a['seconds']:.2f} s "
                       f"({typed['seconds'] / a['seconds']:.2f}x psql)")
    if notes["spark_jdbc"] is None:
        j = timed("spark_jdbc", lambda: spark_jdbc(config.database_url, files, jar))
        config.log(f"{tag} Spark JDBC: {j['rows_per_s']:,.0f} rows/s")
    ours = timed("pipeline", lambda: pipeline(config.database_url, files, work / f"pipeline_{rep}"))
    config.log(f"{tag} ecom-ingest: {ours['rows_per_s']:,.0f} rows/s processing ({ours['steady_s']:.2f} s), "
               f"{ours['wall_s']:.1f} s wall, peak RSS of the tree {ours['peak_rss_mb']:,.0f} MB; "
               f"psql/ours {typed['seconds'] / ours['steady_s']:.2f}, ceiling/ours {b['seconds'] / ours['steady_s']:.2f}, "
               f"key-ordered ceiling/ours {k['seconds'] / ours['steady_s']:.2f}")


def _checkpoint(url: str) -> bool:
    """A CHECKPOINT before each loader (not timed): PostgreSQL's WAL-triggered checkpoints
    (every ~1 GB of WAL, two or three loads' worth here) would otherwise land on whichever
    loader runs then, and the previous loader's dirty pages with them. False without the right."""
    import psycopg

    try:
        with connection(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:  # superuser or pg_checkpoint only
        return False
    return True


def _paired(reference: list[dict], ref_key: str, other: list[dict], other_key: str) -> list[float]:
    """``reference[i][ref_key] / other[i][other_key]`` per repetition (empty when either was skipped)."""
    if not reference or len(reference) != len(other):
        return []
    return [r[ref_key] / o[other_key] for r, o in zip(reference, other)]


def _target(per_repetition: list[float], target: float) -> dict:
    middle = median(per_repetition)
    return {"per_repetition": per_repetition, "median": middle, "target": target,
            "met": None if middle is None else middle >= target}


def summarize_bulk(runs: dict[str, list[dict]], rows: int, notes: dict[str, str | None] | None = None) -> dict:
    """Medians, each repetition's ratios and the targets, from the runs of ``bulk()`` (pure).
    Every "x psql" figure is a time ratio within one repetition (``psql \\copy`` seconds of the
    shaped valid rows into a fresh keyed ``user_events`` over the other loader's seconds; for
    ours the batch ledger's processing time), then the median over repetitions."""
    notes = notes or {}
    typed, ours, binary = runs["typed_copy"], runs["pipeline"], runs["binary_copy"]

    def of(name: str, key: str):
        return median(r.get(key) for r in runs.get(name, []))

    def vs_psql(name: str, key: str = "seconds"):
        return median(_paired(typed, "seconds", runs.get(name, []), key))

    rss = [r["peak_rss_mb"] for r in ours]
    summary = {
        "rows": rows,
        "order": [name for name in BULK_ORDER if runs.get(name)],
        "raw_copy_tool": runs["raw_copy"][0]["tool"],
        "raw_copy_rows_per_s": of("raw_copy", "rows_per_s"),
        "typed_copy_rows_per_s": of("typed_copy", "rows_per_s"),
        "typed_copy_s": of("typed_copy", "seconds"),
        "binary_copy_rows_per_s": of("binary_copy", "rows_per_s"),
        "binary_copy_s": of("binary_copy", "seconds"),
        "binary_copy_encode_s": of("binary_copy", "encode_s"),
        "binary_copy_vs_psql": vs_psql("binary_copy"),
        "binary_copy_keyed_rows_per_s": of("binary_copy_keyed", "rows_per_s"),
        "binary_copy_keyed_s": of("binary_copy_keyed", "seconds"),
        "binary_copy_keyed_vs_psql": vs_psql("binary_copy_keyed"),
        "adbc_copy_rows_per_s": of("adbc_copy", "rows_per_s"),
        "adbc_copy_vs_psql": vs_psql("adbc_copy"),
        "adbc_copy_note": notes.get("adbc_copy"),
        "spark_jdbc_rows_per_s": of("spark_jdbc", "rows_per_s"),
        "spark_jdbc_vs_psql": vs_psql("spark_jdbc"),
        "spark_jdbc_note": notes.get("spark_jdbc"),
        "pipeline_rows_per_s": of("pipeline", "rows_per_s"),
        "pipeline_wall_s": of("pipeline", "wall_s"),
        "pipeline_startup_s": of("pipeline", "startup_s"),
        "pipeline_steady_s": of("pipeline", "steady_s"),
        "pipeline_peak_rss_mb": of("pipeline", "peak_rss_mb"),
        "pipeline_stage_ms": {stage: statistics.median(r["stage_ms"][stage] for r in ours) for stage in ours[0]["stage_ms"]},
        "pipeline_batch_rows_per_s": [median(col) for col in zip(*(r.get("batch_rows_per_s", []) for r in ours))],
        "pipeline_correct": all(r["correct"] for r in ours),
        # what a user waits: our wall clock over psql's, each a process started for the job
        "wall_vs_psql_keyed": median(_paired(ours, "wall_s", typed, "seconds")),
        "checkpoint_note": notes.get("checkpoint"),
        # the headline: psql \copy of the same rows into the same keyed table, over ours
        "vs_psql_keyed": _target(_paired(typed, "seconds", ours, "steady_s"), BULK_TARGET_VS_PSQL),
        # ours as a share of the binary-COPY ceiling (the same rows, prepared Arrow, nothing else to do)
        "of_ceiling": _target(_paired(binary, "seconds", ours, "steady_s"), BULK_TARGET_OF_CEILING),
        # the same with the ceiling's blocks in key order, as the loader sends them (no target of its own)
        "of_keyed_ceiling": median(_paired(runs.get("binary_copy_keyed", []), "seconds", ours, "steady_s")),
        "peak_rss": {"per_repetition_mb": rss, "median_mb": median(rss), "max_mb": max(rss, default=None),
                     "target_mb": BULK_TARGET_PEAK_RSS_MB,
                     "met": None if not rss else max(rss) <= BULK_TARGET_PEAK_RSS_MB},
    }
    summary["repetitions"] = _repetition_rows(runs, summary)
    summary.update(_raw_copy_ratios(runs, summary))
    return summary


def _repetition_rows(runs: dict[str, list[dict]], summary: dict) -> list[dict]:
    """Each repetition's seconds and ratios, for the per-repetition table."""
    typed, ours, binary = runs["typed_copy"], runs["pipeline"], runs["binary_copy"]
    return [
        {
            "rep": i + 1,
            **{f"{name}_s": runs[name][i]["seconds"] for name in BULK_ORDER[:-1] if len(runs.get(name, [])) > i},
            "pipeline_s": p["steady_s"], "pipeline_wall_s": p["wall_s"], "peak_rss_mb": p["peak_rss_mb"],
            "vs_psql_keyed": summary["vs_psql_keyed"]["per_repetition"][i] if typed else None,
            "of_ceiling": summary["of_ceiling"]["per_repetition"][i] if binary else None,
            "of_keyed_ceiling": (runs["binary_copy_keyed"][i]["seconds"] / p["steady_s"]
                                 if len(runs.get("binary_copy_keyed", [])) > i else None),
        }
        for i, p in enumerate(ours)
    ]


def _raw_copy_ratios(runs: dict[str, list[dict]], summary: dict) -> dict:
    """Kept from the earlier reports: rows/s against the raw (text, unkeyed) COPY."""
    out: dict = {}
    raw = summary["raw_copy_rows_per_s"]
    if raw and summary["pipeline_rows_per_s"]:
        out["pipeline_vs_raw_copy"] = summary["pipeline_rows_per_s"] / raw
        out["ratios_per_repetition"] = [p["rows_per_s"] / r["rows_per_s"] for p, r in zip(runs["pipeline"], runs["raw_copy"])]
    if summary["spark_jdbc_rows_per_s"] and raw:
        out["spark_jdbc_vs_raw_copy"] = summary["spark_jdbc_rows_per_s"] / raw
    return out


def _bulk_markdown(s: dict, config: dict) -> list[str]:
    raw = s["raw_copy_rows_per_s"]

    def vs_raw(rows_per_s):
        return times(rows_per_s / raw) if rows_per_s and raw else "n/a"

    h = s["vs_psql_keyed"]
    order = ", ".join(s.get("order", []))
    invalid = config.get("invalid_rate")
    lines = [
        f"### Bulk load: {s['rows']:,} rows, {invalid:.0%} invalid, medians of {len(s['repetitions'])} repetitions"
        if invalid is not None else f"### Bulk load: {s['rows']:,} rows, medians of {len(s['repetitions'])} repetitions", "",
        f"Each repetition ran, in this order: {order}"
        f"{', each after a CHECKPOINT (not timed)' if not s.get('checkpoint_note') else ' (' + s['checkpoint_note'] + ')'}. "
        "×psql is a time ratio within a repetition "
        "(psql `\\copy` seconds of the same valid rows into a fresh keyed `user_events` over the loader's seconds; "
        "for ecom-ingest its processing time from the batch ledger), then the median.", "",
        "| loader | rows/s | × psql keyed COPY | vs raw COPY |", "|---|---|---|---|",
        f"| (a) raw COPY ({s['raw_copy_tool']}, text columns, no key, no checks) | {fmt(raw)} | "
        f"{times(median(_ratio_list(s, 'typed_copy_s', 'raw_copy_s')))} | 1.00× |",
        f"| (a') psql `\\copy` of the valid rows, pre-shaped, into a fresh `user_events` (typed, uuid PK): the reference | "
        f"{fmt(s['typed_copy_rows_per_s'])} | 1.00× | {vs_raw(s['typed_copy_rows_per_s'])} |",
        f"| (d) binary COPY ceiling: the same rows as prepared Arrow → pgpq (the loader's encoder) → psycopg, "
        f"one transaction per file | {fmt(s['binary_copy_rows_per_s'])} | {times(s['binary_copy_vs_psql'])} | "
        f"{vs_raw(s['binary_copy_rows_per_s'])} |",
        f"| (d\") the same, each block sorted by `event_id` first (on the clock), as the loader sends it | "
        f"{fmt(s.get('binary_copy_keyed_rows_per_s'))} | {times(s.get('binary_copy_keyed_vs_psql'))} | "
        f"{vs_raw(s.get('binary_copy_keyed_rows_per_s'))} |",
        f"| (d') ADBC PostgreSQL driver, `adbc_ingest` of the same Arrow tables | {fmt(s.get('adbc_copy_rows_per_s'))} | "
        f"{times(s.get('adbc_copy_vs_psql'))} | {vs_raw(s.get('adbc_copy_rows_per_s'))} {s.get('adbc_copy_note') or ''} |",
        f"| (b) Spark JDBC sink, default options | {fmt(s['spark_jdbc_rows_per_s'])} | {times(s.get('spark_jdbc_vs_psql'))} | "
        f"{vs_raw(s['spark_jdbc_rows_per_s'])} {s['spark_jdbc_note'] or ''} |",
        f"| (c) **ecom-ingest** (parse, validation, dedup, quarantine, ledger), processing time | "
        f"**{fmt(s['pipeline_rows_per_s'])}** | **{times(h['median'])}** | {vs_raw(s['pipeline_rows_per_s'])} |", "",
    ]
    return lines + _bulk_findings(s) + _bulk_repetitions(s)


def _bulk_findings(s: dict) -> list[str]:
    """The headline figures against their targets, as bullets."""
    h, f, rss = s["vs_psql_keyed"], s["of_ceiling"], s["peak_rss"]
    reps = ", ".join(fmt(r, 2) for r in h["per_repetition"])
    wall = s.get("wall_vs_psql_keyed")
    lines = [
        f"- **What a user waits: `ecom-ingest ingest` {fmt(s['pipeline_wall_s'], 1)} s wall against psql `\\copy`'s "
        f"{fmt(s['typed_copy_s'], 1)} s wall: {times(wall)}** (target ≤ {BULK_TARGET_WALL_VS_PSQL:.1f}×: "
        f"{verdict(None if wall is None else wall <= BULK_TARGET_WALL_VS_PSQL)}).",
        f"- **psql `\\copy` keyed / our processing: {times(h['median'])}** median (per repetition {reps}); "
        f"target ≥ {h['target']:.2f}×: {verdict(h['met'])}.",
        f"- **Ours vs the binary-COPY ceiling** (ceiling seconds / our seconds): **{fmt(f['median'], 2)}** median "
        f"(per repetition {', '.join(fmt(r, 2) for r in f['per_repetition'])}); target ≥ {f['target']:.2f}: {verdict(f['met'])}. "
        f"The ceiling's encoder share: {fmt(s.get('binary_copy_encode_s'), 2)} s of {fmt(s['binary_copy_s'], 2)} s. "
        f"Against the key-ordered ceiling (d\"): {fmt(s.get('of_keyed_ceiling'), 2)}.",
        f"- **Peak RSS of the whole process tree**: {fmt(rss['median_mb'])} MB median, {fmt(rss['max_mb'])} MB max "
        f"(per repetition {', '.join(fmt(r) for r in rss['per_repetition_mb'])}); "
        f"target ≤ {fmt(rss['target_mb'])} MB: {verdict(rss['met'])}.",
        f"- ecom-ingest: wall {fmt(s['pipeline_wall_s'], 1)} s = start-up {fmt(s['pipeline_startup_s'], 1)} s "
        f"(JVM, Spark session, Python workers) + processing {fmt(s['pipeline_steady_s'], 1)} s; "
        f"every row accounted for: {'yes' if s['pipeline_correct'] else 'NO'}.",
    ]
    batches = s.get("pipeline_batch_rows_per_s") or []
    if len(batches) > 1:
        lines.append(f"- rows/s per micro-batch, first to last: {', '.join(fmt(b) for b in batches)} "
                     f"(last/first {fmt(batches[-1] / batches[0], 2)}).")
    return lines


def _bulk_repetitions(s: dict) -> list[str]:
    """Each repetition's seconds and ratios, then the stage times."""
    lines = [
        "", "Per repetition (seconds):", "",
        "| rep | raw COPY | psql keyed | binary ceiling | key-ordered ceiling | ADBC | Spark JDBC | ours, processing "
        "| ours, wall | psql/ours | ceiling/ours | key-ordered ceiling/ours | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["repetitions"]:
        lines.append("| " + " | ".join([
            str(r["rep"]), *(fmt(r.get(f"{name}_s"), 2) for name in ("raw_copy", "typed_copy", "binary_copy", "binary_copy_keyed",
                                                                       "adbc_copy", "spark_jdbc", "pipeline", "pipeline_wall")),
            fmt(r.get("vs_psql_keyed"), 2), fmt(r.get("of_ceiling"), 2), fmt(r.get("of_keyed_ceiling"), 2),
            fmt(r["peak_rss_mb"]),
        ]) + " |")
    lines += [
        "", "Stage time (summed over the run, ms; the COPY runs in a writer thread, so 'db write wait' is the time the "
        "reader waited for PostgreSQL):", "",
        "| read & parse | validation | DataFrame/encoding | db write wait |", "|---|---|---|---|",
        "| " + " | ".join(fmt(s["pipeline_stage_ms"][k]) for k in
                         ("read_parse", "validation", "dataframe_creation", "db_write_wait")) + " |", "",
    ]
    return lines


def _ratio_list(s: dict, numerator: str, denominator: str) -> list[float]:
    return [r[numerator] / r[denominator] for r in s["repetitions"] if r.get(numerator) and r.get(denominator)]



def markdown(results: dict) -> list[str]:
    return _bulk_markdown(results["bulk"]["summary"], results.get("config", {})) if "bulk" in results else []
