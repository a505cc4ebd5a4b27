"""The performance report: the original template, filled from what the runs recorded.

``collect`` reads a window of batches, files, resource samples and verification queries
from PostgreSQL; ``render`` writes ``performance_report.md`` with PNG plots beside it.
Every figure comes from the data, every status is computed against the targets, and the
analysis sentences are derived from the same numbers, so the prose cannot contradict
the tables.

The prose and tables live in ``templates/performance_report.md.j2`` while ``markdown``
computes every figure, status and sentence: the computation stays in Python so it can
be tested, the wording in the template so it can be read and edited as the document it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import statistics
from pathlib import Path
from typing import Mapping, Sequence

import jinja2
from psycopg import sql
from psycopg.rows import dict_row

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.database import table
from ecom_ingest_dagster.pipeline.checks import judge
from ecom_ingest_dagster.pipeline.ledger import accounting_violations
from ecom_ingest_dagster.pipeline.measure import STAGES, summarize, unaccounted_rows
from ecom_ingest_dagster.pipeline.sampling import summarize_samples
from ecom_ingest_dagster.settings import Settings, Targets

REPORT_NAME = "performance_report.md"
PLOTS = {
    "throughput": "throughput_per_batch.png",
    "latency": "latency_distribution.png",
    "stages": "stage_breakdown.png",
    "rejections": "rejections_by_reason.png",
    "resources": "resource_usage.png",
}
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


@dataclasses.dataclass
class ReportData:
    generated_at: dt.datetime
    since: dt.datetime | None
    until: dt.datetime
    batches: list[dict]
    files: list[dict]
    samples: list[dict]
    event_types: list[tuple[str, int]]
    per_minute: list[tuple[dt.datetime, int]]
    user_events_total: int
    violations: list[dict]
    environment: dict[str, str]
    paths: dict[str, str]

    @property
    def summary(self) -> dict:
        return summarize(self.batches)

    @property
    def resources(self) -> dict:
        return summarize_samples(self.samples)


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``30m``, ``24h``, ``7d`` before now, or an ISO-8601 moment (UTC when it has no offset)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - dt.timedelta(seconds=float(text[:-1]) * units[text[-1]])
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since takes 30m, 24h, 7d or an ISO-8601 time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def collect(conn, schema: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
            paths: Mapping[str, str] | None = None) -> ReportData:
    """Everything the report shows, for batches committed in [since, until)."""
    until = until or dt.datetime.now(dt.timezone.utc)
    window = {"since": since, "until": until}
    in_window = sql.SQL("(%(since)s::timestamptz IS NULL OR {col} >= %(since)s) AND {col} < %(until)s")
    previous_factory, conn.row_factory = conn.row_factory, dict_row
    batches = [
        {**r["metrics"], "started_at": r["started_at"], "committed_at": r["committed_at"]}
        for r in conn.execute(
            sql.SQL("SELECT metrics, started_at, committed_at FROM {} WHERE {} ORDER BY committed_at, batch_id").format(
                table(schema, "ingest_batches"), in_window.format(col=sql.Identifier("committed_at"))
            ),
            window,
        )
    ]
    files = conn.execute(
        sql.SQL(
            "SELECT file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected, reason, file_size,"
            " landed_at, committed_at FROM {} WHERE {} ORDER BY committed_at"
        ).format(table(schema, "ingest_files"), in_window.format(col=sql.Identifier("committed_at"))),
        window,
    ).fetchall()
    samples = conn.execute(
        sql.SQL("SELECT * FROM {} WHERE {} ORDER BY sampled_at").format(
            table(schema, "resource_samples"), in_window.format(col=sql.Identifier("sampled_at"))
        ),
        window,
    ).fetchall()
    events = table(schema, "user_events")
    created = in_window.format(col=sql.Identifier("created_at"))
    event_types = [
        (r["event_type"], r["n"])
        for r in conn.execute(
            sql.SQL("SELECT event_type, count(*) AS n FROM {} WHERE {} GROUP BY 1 ORDER BY 2 DESC").format(events, created),
            window,
        )
    ]
    per_minute = [
        (r["minute"], r["n"])
        for r in conn.execute(
            sql.SQL(
                "SELECT date_trunc('minute', created_at) AS minute, count(*) AS n FROM {} WHERE {} GROUP BY 1 ORDER BY 1"
            ).format(events, created),
            window,
        )
    ]
    total = conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(events)).fetchone()["n"]
    pg_version = conn.execute("SHOW server_version").fetchone()["server_version"]
    conn.row_factory = previous_factory
    violations = accounting_violations(conn, schema, since=since, until=until)
    return ReportData(
        generated_at=dt.datetime.now(dt.timezone.utc),
        since=since,
        until=until,
        batches=batches,
        files=list(files),
        samples=list(samples),
        event_types=event_types,
        per_minute=per_minute,
        user_events_total=total,
        violations=violations,
        environment=_environment(pg_version),
        paths=dict(paths or {}),
    )


def _environment(pg_version: str) -> dict[str, str]:
    import os

    import pandera
    import pyspark

    return {
        "spark": pyspark.__version__,
        "postgresql": pg_version.split()[0],
        "python": platform.python_version(),
        "pandera": pandera.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
    }


# -- figures the report states -------------------------------------------------------


def requirements(data: ReportData, targets: Targets) -> list[dict]:
    """Section 9.1: each requirement with its measured value and its judged status."""
    j = judge(data.summary, targets, data_loss_pct(data))
    return [
        {"name": "Min Throughput", "target": f"{_num(targets.min_throughput_rps)} rec/sec",
         "actual": f"{_num(j['min_throughput']['measured'])} rec/sec", "passed": j["min_throughput"]["passed"]},
        {"name": "Max Latency", "target": f"{_num(targets.max_latency_ms)} ms",
         "actual": f"{_num(j['max_latency']['measured'])} ms (slowest batch)" if j["max_latency"]["passed"] is not None
         else "no batches", "passed": j["max_latency"]["passed"]},
        {"name": "Validation Rate", "target": f">{_num(targets.min_validation_rate_pct)}%",
         "actual": f"{_num(j['validation_rate']['measured'])}%", "passed": j["validation_rate"]["passed"]},
        {"name": "Data Loss", "target": f"{_num(targets.max_data_loss_pct)}%",
         "actual": f"{_num(j['zero_data_loss']['measured'])}%", "passed": j["zero_data_loss"]["passed"]},
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


# -- rendering -------------------------------------------------------------------------


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(round(value)):,}"
    return f"{value:,.{digits}f}"


def _status(passed: bool | None) -> str:
    if passed is None:
        return "➖ Not measured"
    return "✅ Pass" if passed else "❌ Fail"


def _when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "n/a"


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("ecom_ingest_dagster.tools", "templates"),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters.update(num=_num, status=_status, when=_when, thousands="{:,}".format)
TEMPLATE = _TEMPLATES.get_template("performance_report.md.j2")


def render(data: ReportData, out_dir: Path, targets: Targets | None = None) -> Path:
    """Write the report and its plots into ``out_dir``; returns the Markdown file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_plots(data, out_dir)
    path = out_dir / REPORT_NAME
    path.write_text(markdown(data, targets or default_targets()), encoding="utf-8")
    return path


def with_embedded_plots(text: str, out_dir: Path) -> str:
    """The report with its plots inlined as base64 data URIs, for a viewer (Dagster's UI)
    that cannot load the PNG files beside it by their relative names."""
    import base64

    for file in PLOTS.values():
        png = out_dir / file
        if png.exists():
            text = text.replace(f"]({file})", f"](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})")
    return text


def default_targets() -> Targets:
    """The targets as the settings' defaults give them (the environment left out)."""
    return Settings.from_env({}).targets


def markdown(data: ReportData, targets: Targets | None = None) -> str:
    """The report as Markdown: the figures computed here, the wording in ``TEMPLATE``."""
    targets = targets or default_targets()
    s = data.summary
    res = data.resources
    reqs = requirements(data, targets)
    shares = stage_shares(s)
    levels = load_levels(data.batches)
    loss = data_loss_pct(data)
    cores = _cores(data.environment)
    reasons = {reason: int(s["reason_counts"].get(reason, 0)) for reason in c.REJECTION_REASONS + c.FILE_REJECTION_REASONS}
    dominant = max(shares[:-1], key=lambda row: row[1]) if s["total_batches"] else None
    counts = dict(data.event_types)
    type_total = sum(n for _, n in data.event_types)
    writes = [float(b["db_write_time_ms"]) for b in data.batches]
    # Section 3.2 lists the first and last ten batches of a long window.
    batches_hidden = max(len(data.batches) - 20, 0)
    sample = {k: v for k, v in (data.batches[0] if data.batches else {}).items() if k not in ("started_at", "committed_at")}
    return TEMPLATE.render(
        generated_at=data.generated_at,
        duration=duration_text(data.batches),
        optimizations=optimizations(data),
        executor_batches=sum(1 for b in data.batches if b.get("loaded_in") != "driver"),
        env=data.environment,
        modes=sorted({b.get("mode", "?") for b in data.batches}) or ["none"],
        summary=s,
        latency=s["batch_latency_ms"],
        end_to_end=s["end_to_end_latency_ms"],
        resources=res,
        passed={r["name"]: r["passed"] for r in reqs},
        loss_pct=loss,
        trigger_seconds=sorted({b.get("trigger_seconds") for b in data.batches if b.get("trigger_seconds") is not None}),
        max_files=sorted({b.get("max_files_per_trigger") for b in data.batches if b.get("max_files_per_trigger")}),
        max_bytes=sorted({b.get("max_bytes_per_trigger") for b in data.batches if b.get("max_bytes_per_trigger")}),
        drops=drop_parameters(data.files),
        event_type_shares=[
            {"event_type": t, "count": counts.get(t, 0),
             "pct": 100.0 * counts.get(t, 0) / type_total if type_total else 0.0}
            for t in c.EVENT_TYPES
        ],
        plots=PLOTS,
        batches_shown=data.batches[:10] + data.batches[-10:] if batches_hidden else data.batches,
        batches_gap_at=10 if batches_hidden else None,
        batches_hidden=batches_hidden,
        throughput_analysis=_throughput_analysis(s, levels, targets),
        stage_shares=shares,
        latency_analysis=_latency_analysis(s, shares, dominant, targets),
        rejection_reasons=[
            {"reason": reason, "label": REASON_LABELS.get(reason, reason), "count": n,
             "pct": 100.0 * n / s["total_records"] if s["total_records"] else 0.0}
            for reason, n in reasons.items()
        ],
        validation_analysis=_validation_analysis(s, reasons, targets, data.paths),
        write_avg_ms=sum(writes) / len(writes) if writes else None,
        write_max_ms=max(writes) if writes else None,
        accounted_pct=100.0 - loss,
        user_events_total=data.user_events_total,
        event_types=data.event_types,
        minutes_shown=data.per_minute[:15],
        minutes_hidden=max(len(data.per_minute) - 15, 0),
        database_analysis=_database_analysis(s, writes),
        sample_count=len(data.samples),
        cores=cores,
        cpu_capacity_pct=cores * 100,
        files_rejected=sum(1 for f in data.files if f["status"] == "rejected"),
        violations=len(data.violations),
        unaccounted_rows=unaccounted_rows(data.violations),
        paths={
            "checkpoints": "under the state directory",
            "errors_log": "logs/validation_errors.log",
            "errors_json": "logs/validation_errors_detailed.json",
            "metrics": "logs/performance_metrics.json",
            "summary": "logs/performance_summary.json",
            **data.paths,
        },
        requirements=reqs,
        load_levels=levels,
        recommendations=_recommendations(s, shares, dominant, levels, res, reqs, cores),
        failing=sum(1 for r in reqs if r["passed"] is False),
        unjudged=any(r["passed"] is None for r in reqs),
        sample_json=json.dumps(sample, indent=2, default=str) if sample else "{}",
    )


def duration_text(batches: Sequence[Mapping]) -> str:
    """The window the batches cover: from the first one's start to the last one's commit."""
    if not batches:
        return "no micro-batch in the window"
    start = min(b.get("started_at") or b["committed_at"] for b in batches)
    end = max(b["committed_at"] for b in batches)
    if len(batches) == 1:
        return f"one micro-batch, started {_when(start)}, committed after {_elapsed((end - start).total_seconds())}"
    return f"{_when(start)} to {_when(end)} ({_elapsed((end - start).total_seconds())}, {len(batches):,} micro-batches)"


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
        "**Bulk Loading:** binary `COPY` straight into `user_events`, one transaction per file (a batch's small files "
        "together, one per group); a file with ids already loaded goes through a staging table and `INSERT ... ON "
        f"CONFLICT DO NOTHING` ({staged:,} file(s) in this window)",
        "**Checkpointing:** Spark checkpoints plus file and batch ledgers for an exactly-once effect",
    ]


def _cores(environment: Mapping[str, str]) -> int:
    try:
        return int(environment["machine"].rsplit(",", 1)[1].split()[0])
    except (IndexError, ValueError):
        return 1


def _throughput_analysis(s: Mapping, levels: Sequence[Mapping], targets: Targets) -> str:
    if not s["total_batches"]:
        return "No micro-batch was committed in the window, so there is no throughput to analyse."
    avg, peak = s["avg_records_per_second"], s["peak_records_per_second"]
    ratio = avg / targets.min_throughput_rps if targets.min_throughput_rps else float("inf")
    verdict = (f"{_num(ratio)}× the {_num(targets.min_throughput_rps)} rec/sec requirement"
               if avg >= targets.min_throughput_rps else
               f"below the {_num(targets.min_throughput_rps)} rec/sec requirement")
    measured = [lv for lv in levels if lv["throughput"] is not None]
    scaling = ""
    if len(measured) >= 2:
        lo, hi = measured[0], measured[-1]
        scaling = (f" Throughput went from {_num(lo['throughput'])} rec/sec at {_num(lo['records_per_batch'])} records per "
                   f"batch to {_num(hi['throughput'])} rec/sec at {_num(hi['records_per_batch'])}: "
                   + ("bigger batches amortise the fixed per-batch cost." if hi["throughput"] > lo["throughput"]
                      else "bigger batches did not raise it, so per-record work dominates."))
    return (f"The pipeline averaged {_num(avg)} records/second over the time it spent processing (peak {_num(peak)}), "
            f"{verdict}.{scaling}")


def _latency_analysis(s: Mapping, shares, dominant, targets: Targets) -> str:
    if not s["total_batches"]:
        return "No micro-batch was committed in the window."
    lat = s["batch_latency_ms"]
    within = lat["max"] <= targets.max_latency_ms
    text = (f"Micro-batches took {_num(lat['avg'])} ms on average (P95 {_num(lat['p95'])} ms), the slowest "
            f"{_num(lat['max'])} ms, {'within' if within else 'above'} the {_num(targets.max_latency_ms)} ms limit.")
    if dominant is not None:
        rest = shares[-1]
        text += (f" Of the measured stages, {dominant[0]} takes the most time ({_num(dominant[1])} ms, "
                 f"{_num(dominant[2])}% of a batch); scheduling (a Spark job, none for a batch the driver loads) "
                 f"and the ledger account for {_num(rest[2])}%.")
    return text


def _validation_analysis(s: Mapping, reasons: Mapping[str, int], targets: Targets, paths: Mapping[str, str]) -> str:
    if not s["total_records"]:
        return "No records were validated in the window."
    top = sorted(((n, r) for r, n in reasons.items() if n), reverse=True)[:3]
    rate = s["validation_success_rate"]
    text = (f"The validation success rate of {_num(rate)}% is "
            f"{'above' if rate > targets.min_validation_rate_pct else 'at or below'} "
            f"the {_num(targets.min_validation_rate_pct)}% requirement.")
    if top:
        text += " The most frequent reasons were " + ", ".join(f"`{r}` ({n:,})" for n, r in top) + "."
    text += (f" Failed rows are kept in `rejected_events` and logged to `{paths.get('errors_log', 'logs/validation_errors.log')}` "
             f"and `{paths.get('errors_json', 'logs/validation_errors_detailed.json')}`.")
    return text


def _database_analysis(s: Mapping, writes: Sequence[float]) -> str:
    if not writes:
        return "No writes were made in the window."
    avg = sum(writes) / len(writes)
    per_row = avg / (s["avg_records_per_batch"] or 1)
    return (f"Writes use psycopg COPY into a staging table and one INSERT per file, in one transaction with the "
            f"file's ledger row. A batch spent {_num(avg)} ms writing on average ({_num(per_row, 3)} ms per record).")


def _recommendations(s, shares, dominant, levels, res, reqs, cores) -> list[str]:
    items = []
    if not s["total_batches"]:
        return ["Run some drops through the pipeline first: there is nothing to recommend from an empty window."]
    rest = shares[-1]
    if rest[2] > 50:
        items.append(f"**Fewer, bigger micro-batches:** {_num(rest[2])}% of a batch is fixed Spark overhead; raise "
                     "`maxFilesPerTrigger` / `maxBytesPerTrigger` or the trigger interval when latency allows.")
    if dominant is not None and dominant[0] == STAGE_LABELS["db_write"]:
        items.append("**PostgreSQL write path:** writing dominates; consider `synchronous_commit=off` for this role, "
                     "a larger `max_wal_size`, or fewer indexes on `user_events`.")
    if dominant is not None and dominant[0] in (STAGE_LABELS["validation"], STAGE_LABELS["read_parse"]):
        items.append(f"**More executor cores:** {dominant[0].lower()} dominates and runs on the executors; add cores or "
                     "workers (`ECOM_INGEST_SPARK_MASTER`).")
    cpu_peak = res["cpu_pct"]["peak"]
    if cpu_peak is not None and cpu_peak >= 80 * cores:
        items.append(f"**CPU bound:** the process tree peaked at {_num(cpu_peak)}% of {cores * 100}%: scale out before up.")
    for r in reqs:
        if r["passed"] is False:
            items.append(f"**{r['name']}:** measured {r['actual']} against {r['target']}; this needs attention first.")
    missing = [lv["label"] for lv in levels if lv["throughput"] is None]
    if missing:
        items.append("**Measure the missing load levels** (" + ", ".join(missing) + "): e.g. "
                     "`ecom-ingest generate --events 50 --batches 10` then `ecom-ingest ingest --max-files-per-trigger 1`.")
    if not items:
        items.append("**No bottleneck stands out** in this window: keep collecting at higher loads.")
    return items


def time_axis(ax, times: Sequence[dt.datetime]) -> None:
    """A time axis a reader can use: UTC clock times at the precision the span needs. A single
    moment (or a few seconds) is shown in a minute around it, not matplotlib's ±2 years."""
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    low, high = min(times), max(times)
    span = (high - low).total_seconds()
    if span < 60:
        middle = low + (high - low) / 2
        ax.set_xlim(middle - dt.timedelta(seconds=30), middle + dt.timedelta(seconds=30))
        span = 60.0
    shape = ("%H:%M:%S" if span <= 600 else "%H:%M" if span <= 2 * 86400
             else "%m-%d %H:%M" if span <= 14 * 86400 else "%Y-%m-%d")
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: mdates.num2date(x, tz=dt.timezone.utc).strftime(shape)))
    ax.set_xlabel("time (UTC)" if span <= 14 * 86400 else "date (UTC)")


def _break_gaps(times: Sequence[dt.datetime], values: Sequence, max_gap_s: float) -> tuple[list, list]:
    """Insert a gap (NaN) between points further apart than ``max_gap_s``: idle time
    between runs is not a line from one run's last value to the next run's first."""
    out_t, out_v = [], []
    for i, (t, v) in enumerate(zip(times, values)):
        if i and (t - times[i - 1]).total_seconds() > max_gap_s:
            out_t.append(times[i - 1] + (t - times[i - 1]) / 2)
            out_v.append(float("nan"))
        out_t.append(t)
        out_v.append(float("nan") if v is None else float(v))
    return out_t, out_v


def plotted_stages(summary: Mapping) -> tuple[list[tuple[str, float, float]], list[str]]:
    """The stage bars worth drawing, and the labels of those that are not.

    A stage that ran takes time: exactly 0 ms means it never ran in the window (no batches,
    or only files rejected whole, which are not shaped into frames). The remainder is
    clamped at 0 when the stages, summed over parallel tasks, outlast the batch: 0 there is
    not a measurement either. Neither is drawn as a bar; the caption names them.
    """
    rows = stage_shares(summary)
    return [row for row in rows if row[1] > 0], [label for label, ms, _ in rows if ms <= 0]


def plotted_reasons(summary: Mapping) -> tuple[list[str], str | None]:
    """The reasons the rejections plot draws a bar for, and its caption (None: no caption).

    Every row reason is drawn, 0 included (each is a real count, and a fixed axis keeps
    reports comparable). The whole-file reasons count the rows of files rejected whole, so
    they are all 0 by construction when no file was: then they are left out and the
    caption says so.
    """
    file_rows = sum(int(summary["reason_counts"].get(r, 0)) for r in c.FILE_REJECTION_REASONS)
    if not summary["total_records"]:
        return [], None
    if not summary["rejected_records"]:
        return [], f"none of the {summary['total_records']:,} rows was rejected"
    if summary["files_rejected"] or file_rows:
        return [*c.REJECTION_REASONS, *c.FILE_REJECTION_REASONS], None
    return list(c.REJECTION_REASONS), "files rejected whole: none"


def draw_plots(data: ReportData, out_dir: Path) -> dict[str, Path]:
    """Write the report's PNG plots into ``out_dir``; returns them by name (``PLOTS``)."""
    import matplotlib.pyplot as plt

    paths = {}
    for name, fig in plot_figures(data).items():
        paths[name] = out_dir / PLOTS[name]
        fig.savefig(paths[name], dpi=110)
        plt.close(fig)
    return paths


def plot_figures(data: ReportData) -> dict:
    """The report's plots as matplotlib figures, laid out and captioned, by name (``PLOTS``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    s = data.summary
    figures = {}

    def finish(fig, name: str, caption: str | None = None) -> None:
        if caption:
            # Under the axes: what the plot leaves out, so a missing bar is not a mystery.
            fig.text(0.01, 0.01, caption, ha="left", va="bottom", color="dimgray", fontsize=9)
        fig.tight_layout(rect=(0, 0.05, 1, 1) if caption else None)
        figures[name] = fig

    def empty(ax, text: str) -> None:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xticks([])
        ax.set_yticks([])

    def legend_above(ax, *args) -> None:
        # Between the title and the axes: inside the axes a legend hides data (it hid the
        # first run's memory line), beside the title it runs into it.
        ax.legend(*args, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=9)

    def counts(axis) -> None:
        # A count has no 1.5: ticks on whole numbers only.
        axis.set_major_locator(MaxNLocator(integer=True))

    fig, ax = plt.subplots(figsize=(8, 3.6))
    if data.batches:
        times, values = _break_gaps([b["committed_at"] for b in data.batches], [b["records_per_second"] for b in data.batches], 30)
        ax.plot(times, values, marker="o", linewidth=1.2, label="one micro-batch")
        ax.axhline(s["avg_records_per_second"], color="tab:green", linestyle="--", label=f"average {_num(s['avg_records_per_second'])}")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # 150,000, not 150000
        legend_above(ax)
        time_axis(ax, [b["committed_at"] for b in data.batches])
        fig.autofmt_xdate()
    else:
        empty(ax, "no batches in the window")
    ax.set_title("Throughput per micro-batch", pad=22 if data.batches else None)
    ax.set_ylabel("records / second")
    finish(fig, "throughput", "batches more than 30 s apart are not joined: the gap is idle time, not a trend"
           if data.batches else None)

    fig, ax = plt.subplots(figsize=(8, 3.6))
    latencies = [float(b["total_processing_time_ms"]) for b in data.batches]
    if latencies:
        ax.hist(latencies, bins=min(30, max(5, len(latencies))), color="tab:blue", alpha=0.75)
        counts(ax.yaxis)
        for key, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            value = s["batch_latency_ms"][key]
            ax.axvline(value, color=color, linestyle="--", label=f"{key} {_num(value)} ms")
        legend_above(ax)
    else:
        empty(ax, "no batches in the window")
    ax.set_title("Micro-batch latency distribution", pad=22 if latencies else None)
    ax.set_xlabel("ms")
    ax.set_ylabel("batches")
    finish(fig, "latency")

    fig, ax = plt.subplots(figsize=(8, 3.2))
    shown, not_run = plotted_stages(s)
    if shown:
        ax.barh([label for label, _, _ in shown][::-1], [ms for _, ms, _ in shown][::-1], color="tab:purple")
        for label, ms, pct in shown:
            ax.annotate(f" {_num(pct, 1)}%", (ms, label), va="center", fontsize=8, color="dimgray")
        ax.margins(x=0.12)
        ax.set_xlabel("ms")
    else:
        empty(ax, "no batches in the window")
    ax.set_title("Average time per stage in a micro-batch")
    finish(fig, "stages", f"none (0 ms, not drawn): {', '.join(not_run)}" if shown and not_run else None)

    reasons, caption = plotted_reasons(s)
    fig, ax = plt.subplots(figsize=(8, 4 if len(reasons) > len(c.REJECTION_REASONS) else 3.4))
    if reasons:
        values = [int(s["reason_counts"].get(r, 0)) for r in reasons]
        ax.barh(reasons[::-1], values[::-1], color="tab:red")
        for reason, n in zip(reasons, values):
            ax.annotate(f" {n:,}", (n, reason), va="center", fontsize=8, color="dimgray")
        ax.margins(x=0.08)
        counts(ax.xaxis)
        ax.set_xlabel("rows (a row counts once per reason it has)")
    else:
        empty(ax, caption or "no batches in the window")
        caption = None
    ax.set_title("Rejections by reason")
    finish(fig, "rejections", caption)

    fig, ax = plt.subplots(figsize=(8, 3.6))
    if data.samples:
        stamps = [x["sampled_at"] for x in data.samples]
        times, cpu = _break_gaps(stamps, [x["cpu_pct"] for x in data.samples], 5)
        ax.plot(times, cpu, color="tab:orange", label="CPU % (one core = 100)")
        ax.set_ylabel("CPU %")
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        times, rss = _break_gaps(stamps, [x["rss_mb"] for x in data.samples], 5)
        ax2.plot(times, rss, color="tab:blue", label="memory MB")
        ax2.set_ylabel("memory (MB)")
        ax2.set_ylim(bottom=0)
        lines = ax.get_lines() + ax2.get_lines()
        legend_above(ax, lines, [line.get_label() for line in lines])
        time_axis(ax, stamps)
        fig.autofmt_xdate()
    else:
        empty(ax, "no resource samples in the window")
    ax.set_title("Resource use over time (process tree)", pad=22 if data.samples else None)
    finish(fig, "resources")
    return figures


@dataclasses.dataclass(frozen=True)
class ReportOutcome:
    path: Path
    batches: int
    samples: int
    requirements: list[dict]


def write_report(pipeline, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                 out_dir: Path | None = None) -> ReportOutcome:
    """The performance report for a window of runs, written with its plots (``ecom-ingest report``
    and the ``performance_report`` asset)."""
    with pipeline.connect() as conn:
        data = collect(conn, pipeline.settings.db_schema, since=since, until=until, paths=pipeline.report_paths())
    targets = pipeline.settings.targets
    path = render(data, out_dir or pipeline.settings.reports_dir, targets)
    return ReportOutcome(path, data.summary["total_batches"], len(data.samples), requirements(data, targets))
