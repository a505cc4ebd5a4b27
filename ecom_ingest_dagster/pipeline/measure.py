"""Per-batch performance metrics and their summary (the original report's Appendix B).

Batch metrics are computed from the ledger rows of the batch's files, so a replayed
micro-batch reports what was committed, once. They are stored in ``ingest_batches``
and appended to ``logs/performance_metrics.json`` (JSON lines); ``summarize`` turns any
set of them into ``logs/performance_summary.json`` and the figures the metric assets
and the report show.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

STAGES = ("read_parse", "validation", "dataframe_creation", "db_write")


@dataclasses.dataclass
class StageTimes:
    """Milliseconds a file spent in each stage (the original report's breakdown)."""

    read_ms: float = 0.0
    validate_ms: float = 0.0
    frame_ms: float = 0.0
    write_ms: float = 0.0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time the block takes to stage ``name`` (``read``, ``validate``, ``frame``, ``write``)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            field = f"{name}_ms"
            setattr(self, field, getattr(self, field) + (time.perf_counter() - started) * 1000.0)


def format_batch(metrics: Mapping) -> str:
    """The one line a committed micro-batch is reported with (CLI, Dagster's run log)."""
    return (
        f"batch {metrics['batch_id']}: {metrics['files']} file(s), {metrics['total_records']} rows "
        f"({metrics['loaded_records']} loaded, {metrics['duplicate_records']} duplicate, "
        f"{metrics['rejected_records']} rejected) in {metrics['total_processing_time_ms']:.0f} ms"
    )


def batch_metrics(
    *,
    batch_id: int,
    stream_id: str,
    mode: str,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    files: Sequence[Mapping],
) -> dict:
    """Metrics of one micro-batch from the ``ingest_files`` rows it committed."""
    total = sum(int(f["rows_total"]) for f in files)
    loaded = sum(int(f["rows_loaded"]) for f in files)
    duplicate = sum(int(f["rows_duplicate"]) for f in files)
    rejected = sum(int(f["rows_rejected"]) for f in files)
    reason_counts: dict[str, int] = {}
    for f in files:
        for reason, n in (f.get("reason_counts") or {}).items():
            reason_counts[reason] = reason_counts.get(reason, 0) + int(n)
    stage_ms = {
        "read_parse": sum(float(f["read_ms"]) for f in files),
        "validation": sum(float(f["validate_ms"]) for f in files),
        "dataframe_creation": sum(float(f["frame_ms"]) for f in files),
        "db_write": sum(float(f["write_ms"]) for f in files),
    }
    wall_ms = max((finished_at - started_at).total_seconds() * 1000.0, 0.001)
    e2e = [
        (f["committed_at"] - f["landed_at"]).total_seconds() * 1000.0
        for f in files
        if f.get("landed_at") is not None and f.get("committed_at") is not None
    ]
    valid = loaded + duplicate
    return {
        "batch_id": batch_id,
        "stream_id": stream_id,
        "mode": mode,
        "timestamp": finished_at.isoformat(),
        "files": len(files),
        "files_rejected": sum(1 for f in files if f["status"] == "rejected"),
        "files_rejected_by_reason": dict(collections.Counter(
            f.get("reason") or "?" for f in files if f["status"] == "rejected")),
        "total_records": total,
        "valid_records": valid,
        "invalid_records": rejected,
        "loaded_records": loaded,
        "duplicate_records": duplicate,
        "rejected_records": rejected,
        "reason_counts": reason_counts,
        "read_parse_time_ms": round(stage_ms["read_parse"], 3),
        "validation_time_ms": round(stage_ms["validation"], 3),
        "dataframe_creation_time_ms": round(stage_ms["dataframe_creation"], 3),
        "db_write_time_ms": round(stage_ms["db_write"], 3),
        "total_processing_time_ms": round(wall_ms, 3),
        "validation_success_rate": round(100.0 * valid / total, 4) if total else 100.0,
        "records_per_second": round(total / (wall_ms / 1000.0), 3),
        "end_to_end_latency_ms_max": round(max(e2e), 3) if e2e else None,
        "end_to_end_latency_ms_avg": round(sum(e2e) / len(e2e), 3) if e2e else None,
    }


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(batches: Iterable[Mapping]) -> dict:
    """Aggregate figures over batches: throughput, latency percentiles, quality, stages."""
    batches = [b for b in batches if b.get("total_records", 0) or b.get("files", 0)]
    latencies = [float(b["total_processing_time_ms"]) for b in batches]
    e2e = [float(b["end_to_end_latency_ms_max"]) for b in batches if b.get("end_to_end_latency_ms_max") is not None]
    total = sum(int(b["total_records"]) for b in batches)
    processing_s = sum(latencies) / 1000.0
    reason_counts: dict[str, int] = {}
    for b in batches:
        for reason, n in (b.get("reason_counts") or {}).items():
            reason_counts[reason] = reason_counts.get(reason, 0) + int(n)
    valid = sum(int(b["valid_records"]) for b in batches)
    stage_avg = {
        stage: (sum(float(b[f"{stage}_time_ms"]) for b in batches) / len(batches) if batches else 0.0)
        for stage in STAGES
    }

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "total_batches": len(batches),
        "total_files": sum(int(b["files"]) for b in batches),
        "files_rejected": sum(int(b["files_rejected"]) for b in batches),
        "files_rejected_by_reason": dict(sorted(sum(
            (collections.Counter(b.get("files_rejected_by_reason") or {}) for b in batches), collections.Counter()
        ).items())),
        "total_records": total,
        "valid_records": valid,
        "invalid_records": sum(int(b["invalid_records"]) for b in batches),
        "loaded_records": sum(int(b["loaded_records"]) for b in batches),
        "duplicate_records": sum(int(b["duplicate_records"]) for b in batches),
        "rejected_records": sum(int(b["rejected_records"]) for b in batches),
        "reason_counts": dict(sorted(reason_counts.items())),
        "avg_records_per_batch": r(total / len(batches)) if batches else 0.0,
        # Records over the time spent processing them: idle time between triggers excluded.
        "avg_records_per_second": r(total / processing_s) if processing_s else 0.0,
        "peak_records_per_second": r(max((float(b["records_per_second"]) for b in batches), default=0.0)),
        "validation_success_rate": r(100.0 * valid / total) if total else 100.0,
        "batch_latency_ms": {
            "avg": r(sum(latencies) / len(latencies)) if latencies else None,
            "min": r(min(latencies, default=None)) if latencies else None,
            "max": r(max(latencies, default=None)) if latencies else None,
            "p50": r(percentile(latencies, 50)),
            "p95": r(percentile(latencies, 95)),
            "p99": r(percentile(latencies, 99)),
        },
        "end_to_end_latency_ms": {
            "avg": r(sum(e2e) / len(e2e)) if e2e else None,
            "p50": r(percentile(e2e, 50)),
            "p95": r(percentile(e2e, 95)),
            "max": r(max(e2e)) if e2e else None,
        },
        "stage_avg_ms": {k: r(v) for k, v in stage_avg.items()},
        "first_batch_at": min((b["timestamp"] for b in batches), default=None),
        "last_batch_at": max((b["timestamp"] for b in batches), default=None),
    }


class MetricsLog:
    """The JSON files under ``logs/`` that the original report names (Appendix A)."""

    def __init__(self, logs_dir: Path):
        self.dir = Path(logs_dir)
        self.metrics_path = self.dir / "performance_metrics.json"
        self.summary_path = self.dir / "performance_summary.json"
        self.errors_log_path = self.dir / "validation_errors.log"
        self.errors_json_path = self.dir / "validation_errors_detailed.json"

    def append_batch(self, metrics: Mapping) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics, default=str) + "\n")

    def trim(self, before: dt.datetime) -> int:
        """Drop the lines of the batch and rejection logs older than ``before``; lines removed.

        A line whose time cannot be read is kept: retention never loses what it cannot date.
        """
        def json_time(key: str):
            return lambda line: json.loads(line).get(key)

        def text_time(line: str):
            return " ".join(line.split(" ", 2)[:2])

        removed = 0
        for path, when in ((self.metrics_path, json_time("timestamp")), (self.errors_json_path, json_time("rejected_at")),
                           (self.errors_log_path, text_time)):
            removed += _trim_lines(path, when, before)
        return removed

    def read_batches(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def write_summary(self, summary: Mapping) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.summary_path)

    def append_rejections(self, rows: Iterable[Mapping]) -> int:
        """Rejected rows to the human-readable log and the structured JSON-lines file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        count = 0
        with open(self.errors_log_path, "a", encoding="utf-8") as text, open(
            self.errors_json_path, "a", encoding="utf-8"
        ) as structured:
            for row in rows:
                count += 1
                where = f"{row['source_file']}#{row['record_number']}" if row.get("record_number") else row["source_file"]
                text.write(
                    f"{row['rejected_at']} batch={row['batch_id']} {where} "
                    f"key={row.get('key')!r} reasons={','.join(row['reasons'])} "
                    f"details={'; '.join(row.get('details') or [])}\n"
                )
                structured.write(json.dumps(dict(row), default=str) + "\n")
        return count


def _trim_lines(path: Path, when, before: dt.datetime) -> int:
    if not path.exists():
        return 0
    kept, removed = [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                moment = dt.datetime.fromisoformat(str(when(line)))
                old = (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)) < before
            except (ValueError, TypeError, AttributeError):
                old = False
            if old:
                removed += 1
            else:
                kept.append(line)
    if removed:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        tmp.replace(path)
    return removed


def unaccounted_rows(violations: Iterable[Mapping]) -> int:
    """Rows of the violating files with no outcome in the tables (or counted twice)."""
    return sum(
        abs(v["rows_total"] - v["rows_duplicate"] - v["rows_in_table"] - v["rows_in_quarantine"])
        for v in violations
    )
