"""Latency: drop → committed in continuous mode and through a real ``dagster dev`` (sensor mode),
and the first drop's path after idle, part by part, from Dagster's event log.
"""

from __future__ import annotations

from pathlib import Path


from ecom_ingest_dagster.pipeline.database import connection
from ecom_ingest_dagster.pipeline.measure import percentile
from ecom_ingest_dagster.tools.bench.harness import (
    BenchConfig, dagster_dev, fmt, times, batch_processing_ms, drop_and_wait, drop_schema, fresh_schema, latency_summary,
    start_stream, stop,
)



ORIGINAL_BATCH_MS = 120.8  # the original report's sample: one 20-record batch's processing time


def latency_continuous(config: BenchConfig, work: Path, *, driver_batch_max_bytes: int | None = None) -> dict:
    """Continuous mode, trigger 0, one file per trigger: drop → queryable
    (``driver_batch_max_bytes``: the setting for the run, None for its default)."""
    home = work / ("latency" if driver_batch_max_bytes is None else f"latency_driver_max_{driver_batch_max_bytes}")
    landing = home / "landing"
    landing.mkdir(parents=True)
    schema = fresh_schema(config.database_url, "bench_lat")
    extra = {} if driver_batch_max_bytes is None else {"ECOM_INGEST_DRIVER_BATCH_MAX_BYTES": str(driver_batch_max_bytes)}
    process = None
    try:
        process = start_stream(config.database_url, schema, home, ["--trigger-seconds", "0", "--max-files-per-trigger", "1"],
                               extra_env=extra)
        latencies = drop_and_wait(config.database_url, schema, landing, config.latency_drops, 1.0, 120, config.log)
    finally:
        if process is not None:
            stop(process)
        drop_schema(config.database_url, schema)
    # The original report's own measure: a 20-row batch's processing time (its sample: 120.8 ms).
    batches = batch_processing_ms(home)
    config.log(f"20-row batch processing over {len(batches)} batches: p50 {percentile(batches, 50):.0f} ms, "
               f"p95 {percentile(batches, 95):.0f} ms (the original report: {ORIGINAL_BATCH_MS} ms)")
    return latency_summary(
        latencies, mode="continuous", trigger_seconds=0, max_files_per_trigger=1, driver_batch_max_bytes=driver_batch_max_bytes,
        batch_processing_ms={"batches": len(batches), "p50": percentile(batches, 50), "p95": percentile(batches, 95),
                             "max": max(batches), "original_report_ms": ORIGINAL_BATCH_MS},
    )


def latency_sensor(config: BenchConfig, work: Path, interval_s: int = 2) -> dict:
    """Sensor mode through the real daemon: a run per drop set, drop → queryable."""
    schema = fresh_schema(config.database_url, "bench_sensor")
    try:
        with dagster_dev(work / "sensor", config.database_url, schema,
                         {"ECOM_INGEST_SENSOR_INTERVAL_SECONDS": str(interval_s)}) as dev:
            latencies = drop_and_wait(config.database_url, schema, dev.landing, config.sensor_drops, 5.0, 300, config.log,
                                      first_alone=True)
            breakdown = cold_start_breakdown(config.database_url, schema, dev.dagster_home, "latency_0000.csv")
        config.log("first drop's path: " + ", ".join(f"{part} {seconds:.2f} s" for part, seconds in breakdown.items()))
    finally:
        drop_schema(config.database_url, schema)
    warm = latencies[1:]
    return {
        **latency_summary(warm or latencies, mode="sensor", sensor_interval_s=interval_s),
        "first_drop_ms": latencies[0], "cold_start_s": breakdown,
    }


# The parts of the first drop's path, in order, and the event that ends each one.
COLD_START_PARTS = (
    ("sensor tick (loop, settle margin, evaluation)", "run created"),
    ("run queue (dequeue)", "RUN_DEQUEUED"),
    ("run launch", "RUN_STARTING"),
    ("run process spawned", "process started"),
    ("run process start-up (imports, code location)", "RUN_START"),
    ("step start", "STEP_START"),
    ("database ready, landing sweep", "Spark start"),
    ("Spark session (JVM)", "Spark ready"),
    ("streaming query start, first trigger", "batch started"),
    ("first micro-batch (validate, COPY, commit)", "committed"),
)


def cold_start_breakdown(url: str, schema: str, dagster_home: Path, first_drop: str) -> dict[str, float]:
    """Seconds spent in each part of the first drop's path, from the drop's mtime to its commit:
    Dagster's own event log for the run that loaded it, and the ledgers."""
    import re

    import dagster as dg

    from ecom_ingest_dagster.pipeline.spark import SPARK_READY_MESSAGE

    with connection(url, autocommit=True) as conn:
        landed, committed, batch_started, run_id = conn.execute(
            f'SELECT extract(epoch FROM f.landed_at), extract(epoch FROM f.committed_at), extract(epoch FROM b.started_at),'
            f' b.run_id FROM "{schema}".ingest_files f JOIN "{schema}".ingest_batches b USING (stream_id, batch_id)'
            " WHERE f.file_name = %s", (first_drop,),
        ).fetchone()
    ready = re.compile(re.escape(SPARK_READY_MESSAGE).replace(r"\{seconds:\.2f\}", r"([0-9.]+)"))
    at: dict[str, float] = {"landed": float(landed), "batch started": float(batch_started), "committed": float(committed)}
    marks = {dg.DagsterEventType.RUN_DEQUEUED: "RUN_DEQUEUED", dg.DagsterEventType.RUN_STARTING: "RUN_STARTING",
             dg.DagsterEventType.RUN_START: "RUN_START", dg.DagsterEventType.STEP_START: "STEP_START"}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        at["run created"] = instance.get_run_record_by_id(run_id).create_timestamp.timestamp()
        for record in instance.get_records_for_run(run_id).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            text = (event.message if event else None) or entry.user_message or ""
            # By enum: their stored values are the old PIPELINE_* names.
            if event and event.event_type in marks:
                at.setdefault(marks[event.event_type], entry.timestamp)
            elif "Started process for run" in text:
                at.setdefault("process started", entry.timestamp)
            elif (found := ready.search(text)):
                at["Spark ready"] = entry.timestamp
                at["Spark start"] = entry.timestamp - float(found.group(1))
    spark_meanwhile = None
    if "Spark ready" in at and at["Spark ready"] > at["committed"]:
        # The drop was loaded before Spark was up (the run's waiting trickle): the session
        # started alongside, and nobody waited for it.
        spark_meanwhile = at.pop("Spark ready") - at.pop("Spark start")
        at.pop("batch started", None)
    parts, previous = {}, at["landed"]
    for part, ends in COLD_START_PARTS:
        if ends in at:
            parts[part] = at[ends] - previous
            previous = at[ends]
    parts["total (drop → committed)"] = at["committed"] - at["landed"]
    if spark_meanwhile is not None:
        parts["Spark session, started meanwhile (not waited for)"] = spark_meanwhile
    return parts



def markdown(results: dict) -> list[str]:
    lines: list[str] = []
    for key, title in (("latency_continuous", "Continuous mode (trigger 0, 1 file per trigger)"),
                       ("latency_continuous_executors",
                        "Continuous mode, every batch on the executors (ECOM_INGEST_DRIVER_BATCH_MAX_BYTES=0): the baseline"),
                       ("latency_sensor", "Sensor mode (real dagster dev), the drops after the first")):
        if key in results:
            r = results[key]
            lines += [f"### Latency, {title}: drop → committed over {r['drops']} drops of 20 rows", "",
                      "| p50 | p95 | p99 | max |", "|---|---|---|---|",
                      f"| {fmt(r['p50_ms'])} ms | {fmt(r['p95_ms'])} ms | {fmt(r['p99_ms'])} ms | {fmt(r['max_ms'])} ms |", ""]
            if "batch_processing_ms" in r:
                b = r["batch_processing_ms"]
                lines += [f"20-row batch processing over {b['batches']} batches: p50 {fmt(b['p50'], 1)} ms, "
                          f"p95 {fmt(b['p95'], 1)} ms, max {fmt(b['max'], 1)} ms (the original report's sample: "
                          f"{b['original_report_ms']} ms; p50 {times(b['p50'] / b['original_report_ms'])} of it).", ""]
            if "cold_start_s" in r:
                lines += [f"First drop after idle: {fmt(r['first_drop_ms'] / 1000, 2)} s, drop to commit, by part:", "",
                          "| part | seconds |", "|---|---|",
                          *[f"| {part} | {fmt(seconds, 2)} |" for part, seconds in r["cold_start_s"].items()], ""]
    return lines
