"""The report as Markdown: every figure, status and sentence computed here, the wording in
``templates/performance_report.md.j2`` (the computation stays in Python so it can be tested,
the wording in the template so it can be read and edited as the document it is)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Sequence

import jinja2

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.pipeline.measure import unaccounted_rows
from ecom_ingest_dagster.settings import DEFAULT_FEED, Settings, Targets
from ecom_ingest_dagster.tools.report.data import ReportData, category_column
from ecom_ingest_dagster.tools.report.figures import PLOTS, draw_plots
from ecom_ingest_dagster.tools.report.measures import (
    REASON_LABELS, STAGE_LABELS, data_loss_pct, drop_parameters, duration_text, load_levels, num, optimizations,
    requirements, stage_shares, status, when, cpu_cores,
)

REPORT_NAME = "performance_report.md"


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("ecom_ingest_dagster.tools", "templates"),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


_TEMPLATES.filters.update(num=num, status=status, when=when, thousands="{:,}".format,
                          # "1 duplicate", "2 duplicates": {{ n|thousands }} {{ n|plural("duplicate") }}
                          plural=lambda n, word: word if n == 1 else _plural(word))
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
    """The report as Markdown: the figures computed here, section by section; the wording in ``TEMPLATE``."""
    facts = _Facts.of(data, targets or default_targets())
    return TEMPLATE.render(
        feed=feed_wording(data.feed), **_overview(facts), **_throughput(facts), **_latency(facts), **_validation(facts), **_database(facts),
        **_reliability(facts), **_benchmarks(facts),
    )


@dataclasses.dataclass(frozen=True)
class _Facts:
    """What several sections share, computed once."""

    data: ReportData
    targets: Targets
    summary: dict
    requirements: list[dict]
    shares: list[tuple[str, float, float]]
    levels: list[dict]
    loss_pct: float
    cores: int
    writes: list[float]

    @classmethod
    def of(cls, data: ReportData, targets: Targets) -> _Facts:
        return cls(data, targets, data.summary, requirements(data, targets), stage_shares(data.summary),
                   load_levels(data.batches), data_loss_pct(data), cpu_cores(data.environment),
                   [float(b["db_write_time_ms"]) for b in data.batches])

    @property
    def dominant(self) -> tuple[str, float, float] | None:
        """The measured stage that takes the most time (the remainder aside)."""
        return max(self.shares[:-1], key=lambda row: row[1]) if self.summary["total_batches"] else None

    @property
    def reasons(self) -> dict[str, int]:
        counts = self.summary["reason_counts"]
        return {reason: int(counts.get(reason, 0)) for reason in (*self.data.feed.reasons, *c.FILE_REJECTION_REASONS)}


def _plural(words: str) -> str:
    if words.endswith("y") and words[-2:-1] not in tuple("aeiou"):
        return words[:-1] + "ies"  # currency -> currencies, but weekday -> weekdays
    return words + ("es" if words.endswith(("s", "x", "ch", "sh")) else "s")


def feed_wording(feed: FeedContract) -> dict:
    """How the report names the feed, its tables, its rows and its category column: user_events'
    report reads as the original one; another feed's in its own terms."""
    category = category_column(feed)
    own = {
        "name": feed.feed, "table": feed.table, "rejected_table": feed.rejected_table, "unique_key": feed.unique_key,
        "unique_key_type": feed.column(feed.unique_key).type,
        "category": category, "category_title": _plural(category.replace("_", " ").title()) if category else None,
        "cli": "" if feed.feed == DEFAULT_FEED else f" --feed {feed.feed}",
    }
    if feed.feed == DEFAULT_FEED:
        return {**own, "title": "E-Commerce Events", "subject": "e-commerce user events", "rows": "events"}
    about = f": {' '.join(feed.description.split())}" if feed.description else ""  # one line: it is a heading
    return {**own, "title": f"Feed {feed.feed}{about}", "subject": f"rows of the {feed.feed} feed", "rows": "rows"}


def _overview(f: _Facts) -> dict:
    """The header, section 1 and section 2."""
    d = f.data
    counts, category_total = dict(d.categories), sum(n for _, n in d.categories)
    category = category_column(d.feed)
    # The contract's values in its order, then any other the table holds (loaded before a change of the rule).
    values = [*(d.feed.column(category).rule("one_of").one_of if category else ()), *(v for v, _ in d.categories)]
    return {
        "generated_at": d.generated_at, "duration": duration_text(d.batches), "env": d.environment,
        "modes": sorted({b.get("mode", "?") for b in d.batches}) or ["none"],
        "summary": f.summary, "latency": f.summary["batch_latency_ms"], "end_to_end": f.summary["end_to_end_latency_ms"],
        "passed": {r["name"]: r["passed"] for r in f.requirements}, "loss_pct": f.loss_pct, "plots": PLOTS,
        "trigger_seconds": sorted({b["trigger_seconds"] for b in d.batches if b.get("trigger_seconds") is not None}),
        "max_files": sorted({b["max_files_per_trigger"] for b in d.batches if b.get("max_files_per_trigger")}),
        "max_bytes": sorted({b["max_bytes_per_trigger"] for b in d.batches if b.get("max_bytes_per_trigger")}),
        "drops": drop_parameters(d.files),
        "category_shares": [{"value": v, "count": counts.get(v, 0),
                             "pct": 100.0 * counts.get(v, 0) / category_total if category_total else 0.0}
                            for v in dict.fromkeys(values)],
    }


def _throughput(f: _Facts) -> dict:
    """Section 3: a long window lists its first and last ten batches."""
    batches = f.data.batches
    hidden = max(len(batches) - 20, 0)
    return {"batches_shown": batches[:10] + batches[-10:] if hidden else batches, "batches_gap_at": 10 if hidden else None,
            "batches_hidden": hidden, "throughput_analysis": _throughput_analysis(f.summary, f.levels, f.targets)}


def _latency(f: _Facts) -> dict:
    """Section 4."""
    return {"stage_shares": f.shares, "latency_analysis": _latency_analysis(f.summary, f.shares, f.dominant, f.targets),
            "executor_batches": sum(1 for b in f.data.batches if b.get("loaded_in") != "driver")}


def _validation(f: _Facts) -> dict:
    """Section 5."""
    total = f.summary["total_records"]
    return {
        "rejection_reasons": [{"reason": reason, "label": REASON_LABELS.get(reason, reason.replace("_", " ").capitalize()), "count": n,
                               "pct": 100.0 * n / total if total else 0.0} for reason, n in f.reasons.items()],
        "validation_analysis": _validation_analysis(f.summary, f.reasons, f.targets, f.data.paths, f.data.feed),
    }


def _database(f: _Facts) -> dict:
    """Sections 6 and 7."""
    d = f.data
    return {
        "write_avg_ms": sum(f.writes) / len(f.writes) if f.writes else None, "write_max_ms": max(f.writes, default=None),
        "accounted_pct": 100.0 - f.loss_pct, "table_total": d.table_total, "categories": d.categories,
        "minutes_shown": d.per_minute[:15], "minutes_hidden": max(len(d.per_minute) - 15, 0),
        "database_analysis": _database_analysis(f.summary, f.writes, d.feed), "resources": d.resources,
        "sample_count": len(d.samples), "cores": f.cores, "cpu_capacity_pct": f.cores * 100,
        "no_samples_because": None if d.samples else _why_no_samples(d.batches),
    }


def _why_no_samples(batches: list[dict]) -> str:
    """Section 7 without samples: why, rather than a table of n/a."""
    if not batches:
        return "No micro-batch was committed in the window, so no run was sampled."
    if all(b.get("loaded_in") == "driver" for b in batches):
        return ("A run is sampled while its Spark query runs, and these runs loaded their drops before Spark"
                " started (a small trickle goes straight to PostgreSQL).")
    return ("The window's samples are gone: they are kept ECOM_INGEST_SAMPLE_RETENTION_DAYS days (the ledgers for"
            " good), or they could not be stored (the run's log says so).")


def _reliability(f: _Facts) -> dict:
    """Section 8 and appendix A's paths."""
    d = f.data
    return {
        "files_rejected": sum(1 for x in d.files if x["status"] == "rejected"), "violations": len(d.violations),
        "unaccounted_rows": unaccounted_rows(d.violations),
        "paths": {"checkpoints": "under the state directory", "errors_log": "logs/validation_errors.log",
                  "errors_json": "logs/validation_errors_detailed.json", "metrics": "logs/performance_metrics.json",
                  "summary": "logs/performance_summary.json", **d.paths},
    }


def _benchmarks(f: _Facts) -> dict:
    """Sections 9, 10, 11 and appendix B."""
    first = f.data.batches[0] if f.data.batches else {}
    sample = {k: v for k, v in first.items() if k not in ("started_at", "committed_at")}
    return {
        "requirements": f.requirements, "load_levels": f.levels, "optimizations": optimizations(f.data),
        "recommendations": _recommendations(f.summary, f.shares, f.dominant, f.levels, f.data.resources, f.requirements,
                                            f.cores, f.data.feed),
        "failing": sum(1 for r in f.requirements if r["passed"] is False),
        "unjudged": any(r["passed"] is None for r in f.requirements),
        "sample_json": json.dumps(sample, indent=2, default=str) if sample else "{}",
    }


def _throughput_analysis(s: Mapping, levels: Sequence[Mapping], targets: Targets) -> str:
    if not s["total_batches"]:
        return "No micro-batch was committed in the window, so there is no throughput to analyse."
    avg, peak = s["avg_records_per_second"], s["peak_records_per_second"]
    ratio = avg / targets.min_throughput_rps if targets.min_throughput_rps else float("inf")
    verdict = (f"{num(ratio)}× the {num(targets.min_throughput_rps)} rec/sec requirement"
               if avg >= targets.min_throughput_rps else
               f"below the {num(targets.min_throughput_rps)} rec/sec requirement")
    measured = [lv for lv in levels if lv["throughput"] is not None]
    scaling = ""
    if len(measured) >= 2:
        lo, hi = measured[0], measured[-1]
        scaling = (f" Throughput went from {num(lo['throughput'])} rec/sec at {num(lo['records_per_batch'])} records per "
                   f"batch to {num(hi['throughput'])} rec/sec at {num(hi['records_per_batch'])}: "
                   + ("bigger batches amortise the fixed per-batch cost." if hi["throughput"] > lo["throughput"]
                      else "bigger batches did not raise it, so per-record work dominates."))
    return (f"The pipeline averaged {num(avg)} records/second over the time it spent processing (peak {num(peak)}), "
            f"{verdict}.{scaling}")



def _latency_analysis(s: Mapping, shares, dominant, targets: Targets) -> str:
    if not s["total_batches"]:
        return "No micro-batch was committed in the window."
    lat = s["batch_latency_ms"]
    within = lat["max"] <= targets.max_latency_ms
    text = (f"Micro-batches took {num(lat['avg'])} ms on average (P95 {num(lat['p95'])} ms), the slowest "
            f"{num(lat['max'])} ms, {'within' if within else 'above'} the {num(targets.max_latency_ms)} ms limit.")
    if dominant is not None:
        rest = shares[-1]
        text += (f" Of the measured stages, {dominant[0]} takes the most time ({num(dominant[1])} ms, "
                 f"{num(dominant[2])}% of a batch); scheduling (a Spark job, none for a batch the driver loads) "
                 f"and the ledger account for {num(rest[2])}%.")
    return text



def _validation_analysis(s: Mapping, reasons: Mapping[str, int], targets: Targets, paths: Mapping[str, str],
                         feed: FeedContract) -> str:
    if not s["total_records"]:
        return "No records were validated in the window."
    top = sorted(((n, r) for r, n in reasons.items() if n), reverse=True)[:3]
    rate = s["validation_success_rate"]
    verdict = "meets" if rate > targets.min_validation_rate_pct else "falls short of"
    text = (f"The validation success rate of {num(rate)}% {verdict} "
            f"the requirement of more than {num(targets.min_validation_rate_pct)}%.")
    if top:
        text += " The most frequent reasons were " + ", ".join(f"`{r}` ({n:,})" for n, r in top) + "."
    text += (f" Failed rows are kept in `{feed.rejected_table}` and logged to `{paths.get('errors_log', 'logs/validation_errors.log')}` "
             f"and `{paths.get('errors_json', 'logs/validation_errors_detailed.json')}`.")
    return text



def _database_analysis(s: Mapping, writes: Sequence[float], feed: FeedContract) -> str:
    if not writes:
        return "No writes were made in the window."
    avg = sum(writes) / len(writes)
    per_row = avg / (s["avg_records_per_batch"] or 1)
    return (f"Writes are binary COPY straight into `{feed.table}` (through a staging table and one INSERT only for a "
            f"file with ids already loaded), in one transaction with the files' ledger rows. A batch spent {num(avg)} ms "
            f"writing on average ({num(per_row, 3)} ms per record).")



def _recommendations(s, shares, dominant, levels, res, reqs, cores, feed: FeedContract) -> list[str]:
    items, cli = [], feed_wording(feed)["cli"]
    if not s["total_batches"]:
        return ["Run some drops through the pipeline first: there is nothing to recommend from an empty window."]
    rest = shares[-1]
    if rest[2] > 50:
        items.append(f"**Fewer, bigger micro-batches:** {num(rest[2])}% of a batch is fixed Spark overhead; raise "
                     "`maxFilesPerTrigger` / `maxBytesPerTrigger` or the trigger interval when latency allows.")
    if dominant is not None and dominant[0] == STAGE_LABELS["db_write"]:
        items.append("**PostgreSQL write path:** writing dominates; consider `synchronous_commit=off` for this role, "
                     f"a larger `max_wal_size`, or fewer indexes on `{feed.table}`.")
    if dominant is not None and dominant[0] in (STAGE_LABELS["validation"], STAGE_LABELS["read_parse"]):
        items.append(f"**More executor cores:** {dominant[0].lower()} dominates and runs on the executors; add cores or "
                     "workers (`ECOM_INGEST_SPARK_MASTER`).")
    cpu_peak = res["cpu_pct"]["peak"]
    if cpu_peak is not None and cpu_peak >= 80 * cores:
        items.append(f"**CPU bound:** the process tree peaked at {num(cpu_peak)}% of {cores * 100}%: scale out before up.")
    for r in reqs:
        if r["passed"] is False:
            items.append(f"**{r['name']}:** measured {r['actual']} against {r['target']}; this needs attention first.")
    missing = [lv["label"] for lv in levels if lv["throughput"] is None]
    if missing:
        items.append("**Measure the missing load levels** (" + ", ".join(missing) + "): e.g. "
                     f"`ecom-ingest generate{cli} --events 50 --batches 10` then"
                     f" `ecom-ingest ingest{cli} --max-files-per-trigger 1`.")
    if not items:
        items.append("**No bottleneck stands out** in this window: keep collecting at higher loads.")
    return items

