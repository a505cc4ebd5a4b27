"""The figures the report states, computed from a window's data (pure: no database, no plotting),
and how a number or a moment is written in it."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Mapping, Sequence

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.checks import judge
from ecom_ingest_dagster.pipeline.measure import STAGES, unaccounted_rows
from ecom_ingest_dagster.settings import Targets
from ecom_ingest_dagster.tools.report.data import ReportData

STAGE_LABELS = {
    "read_parse": "CSV Read & Parse",
    "validation": "Data Validation",
    "dataframe_creation": "DataFrame Creation",
    "db_write": "PostgreSQL Write",
}


# The template names five categories (contract.REPORT_REASON_LABELS); the rest read so.
REASON_LABELS = {
    **c.REPORT_REASON_LABELS,
    c.INVALID_PRICE: "Invalid price (unparseable or above limit)",
    c.INVALID_QUANTITY: "Invalid quantity",
    c.INVALID_TIMESTAMP: "Invalid timestamp",
    c.INVALID_SESSION_ID: "Invalid session_id format",
    c.FIELD_TOO_LONG: "Field too long",
    c.MALFORMED_ROW: "Malformed CSV row",
    c.INVALID_PRODUCT_ID: "Invalid product_id format",
    c.FILE_NOT_UTF8: "File not UTF-8",
    c.FILE_NO_HEADER: "File without header",
    c.FILE_MISSING_COLUMNS: "File missing required columns",
    c.FILE_DUPLICATE_COLUMNS: "File with duplicate columns",
    c.FILE_UNPARSEABLE: "File not parseable as CSV",
}


# Section 9.2's load levels (records per batch) and the bigger ones we also see.
LOAD_LEVELS = (
    ("Light (10)", 0, 15),
    ("Medium (20)", 15, 35),
    ("Heavy (50)", 35, 100),
    ("Bulk (100-9,999)", 100, 10_000),
    ("Large (10,000+)", 10_000, None),
)



def requirements(data: ReportData, targets: Targets) -> list[dict]:
    """Section 9.1: each requirement with its measured value and its judged status."""
    j = judge(data.summary, targets, data_loss_pct(data))
    return [
        {"name": "Min Throughput", "target": f"{num(targets.min_throughput_rps)} rec/sec",
         "actual": f"{num(j['min_throughput']['measured'])} rec/sec", "passed": j["min_throughput"]["passed"]},
        {"name": "Max Latency", "target": f"{num(targets.max_latency_ms)} ms",
         "actual": f"{num(j['max_latency']['measured'])} ms (slowest batch)" if j["max_latency"]["passed"] is not None
         else "no batches", "passed": j["max_latency"]["passed"]},
        {"name": "Validation Rate", "target": f">{num(targets.min_validation_rate_pct)}%",
         "actual": f"{num(j['validation_rate']['measured'])}%", "passed": j["validation_rate"]["passed"]},
        {"name": "Data Loss", "target": f"{num(targets.max_data_loss_pct)}%",
         "actual": f"{num(j['zero_data_loss']['measured'])}%", "passed": j["zero_data_loss"]["passed"]},
    ]


def data_loss_pct(data: ReportData) -> float:
    total = sum(int(f["rows_total"]) for f in data.files)
    return 100.0 * unaccounted_rows(data.violations) / total if total else 0.0


def load_levels(batches: Sequence[Mapping]) -> list[dict]:
    """Section 9.2: batches grouped by records per batch, with where each row comes from."""
    rows = []
    for label, low, high in LOAD_LEVELS:
        group = [b for b in batches if b["total_records"] >= low and (high is None or b["total_records"] < high)]
        if group:
            latencies = [float(b["total_processing_time_ms"]) for b in group]
            records = sum(int(b["total_records"]) for b in group)
            rows.append({
                "label": label,
                "records_per_batch": records / len(group),
                "avg_latency_ms": sum(latencies) / len(latencies),
                "throughput": records / (sum(latencies) / 1000.0),
                "source": f"{len(group)} recorded batch(es)",
            })
        else:
            rows.append({"label": label, "records_per_batch": None, "avg_latency_ms": None, "throughput": None,
                         "source": "no batch of this size in the window"})
    return rows


def drop_parameters(files: Sequence[Mapping]) -> dict:
    """What the producer sent, as observed: files, rows per file, interval between drops."""
    sizes = [int(f["rows_total"]) for f in files]
    landed = sorted(f["landed_at"] for f in files if f.get("landed_at"))
    gaps = [(b - a).total_seconds() for a, b in zip(landed, landed[1:])]
    return {
        "files": len(files),
        "rows": sum(sizes),
        "rows_per_file_min": min(sizes) if sizes else 0,
        "rows_per_file_max": max(sizes) if sizes else 0,
        "rows_per_file_avg": (sum(sizes) / len(sizes)) if sizes else 0,
        "median_interval_s": statistics.median(gaps) if gaps else None,
    }


def stage_shares(summary: Mapping) -> list[tuple[str, float, float]]:
    """(stage label, average ms, % of the average batch latency), plus the remainder."""
    total = summary["batch_latency_ms"]["avg"] or 0.0
    rows = []
    for stage in STAGES:
        ms = summary["stage_avg_ms"][stage] or 0.0
        rows.append((STAGE_LABELS[stage], ms, 100.0 * ms / total if total else 0.0))
    other = max(total - sum(ms for _, ms, _ in rows), 0.0)
    rows.append(("Scheduling & ledger (rest)", other, 100.0 * other / total if total else 0.0))
    return rows


def duration_text(batches: Sequence[Mapping]) -> str:
    """The window the batches cover: from the first one's start to the last one's commit."""
    if not batches:
        return "no micro-batch in the window"
    start = min(b.get("started_at") or b["committed_at"] for b in batches)
    end = max(b["committed_at"] for b in batches)
    if len(batches) == 1:
        return f"one micro-batch, started {when(start)}, committed after {_elapsed((end - start).total_seconds())}"
    return f"{when(start)} to {when(end)} ({_elapsed((end - start).total_seconds())}, {len(batches):,} micro-batches)"


def _elapsed(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds * 1000:,.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def optimizations(data: ReportData) -> list[str]:
    """Section 10.1, said of what this window's batches did (where they ran, how they were written)."""
    driver = sum(1 for b in data.batches if b.get("loaded_in") == "driver")
    executors = len(data.batches) - driver
    where = []
    if executors:
        where.append(f"{executors:,} on the executors (each file parsed and loaded in a Spark task; only per-file "
                     "outcomes reach the driver)")
    if driver:
        where.append(f"{driver:,} loaded by the driver itself (a small batch: no Spark job, no Python worker)")
    staged = sum(1 for f in data.files if int(f.get("rows_duplicate") or 0) > 0)
    return [
        "**Batch Processing:** micro-batches of the landing directory (Spark's `foreachBatch`)"
        + (": " + "; ".join(where) if where else " (none in this window)"),
        "**Schema Validation:** a Pandera schema over Arrow-backed columns, every reason of every row",
        f"**Bulk Loading:** binary `COPY` straight into `{data.feed.table}`, one transaction per file (a batch's small files "
        "together, one per group); a file with ids already loaded goes through a staging table and `INSERT ... ON "
        f"CONFLICT DO NOTHING` ({staged:,} file(s) in this window)",
        "**Checkpointing:** Spark checkpoints plus file and batch ledgers for an exactly-once effect",
    ]


def cpu_cores(environment: Mapping[str, str]) -> int:
    try:
        return int(environment["machine"].rsplit(",", 1)[1].split()[0])
    except (IndexError, ValueError):
        return 1


# -- how figures are written ------------------------------------------------------------


def num(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(round(value)):,}"
    return f"{value:,.{digits}f}"



def status(passed: bool | None) -> str:
    if passed is None:
        return "➖ Not measured"
    return "✅ Pass" if passed else "❌ Fail"



def when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "n/a"

