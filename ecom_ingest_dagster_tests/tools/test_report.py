"""The performance report rendered from what runs recorded in PostgreSQL."""

from __future__ import annotations

import dataclasses

import re
import struct

import matplotlib.dates as mdates
import numpy as np
import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.tools import report
from ecom_ingest_dagster.tools.generator import generate_events, write_drop

HEADINGS = [
    "# Performance Metrics Report", "## 1. Executive Summary", "### Key Findings", "## 2. Test Configuration",
    "### 2.1 System Specifications", "### 2.2 Data Generation Parameters", "### 2.3 Event Types Distribution",
    "## 3. Throughput Metrics", "### 3.1 Overall Throughput", "### 3.2 Throughput Over Time", "### 3.3 Analysis",
    "## 4. Latency Metrics", "### 4.1 End-to-End Latency", "### 4.2 Latency Breakdown", "### 4.3 Analysis",
    "## 5. Validation Metrics", "### 5.1 Validation Results", "### 5.2 Validation Error Breakdown", "### 5.3 Analysis",
    "## 6. Database Performance", "### 6.1 PostgreSQL Write Performance", "### 6.2 Database Verification",
    "### 6.3 Analysis", "## 7. Resource Utilization", "### 7.1 Spark Resource Usage", "### 7.2 PostgreSQL Resource Usage",
    "## 8. Error Handling & Reliability", "### 8.1 Error Statistics", "### 8.2 Data Integrity",
    "### 8.3 Recovery Capabilities", "## 9. Performance Benchmarks", "### 9.1 Comparison with Requirements",
    "### 9.2 Scalability Observations", "## 10. Recommendations", "### 10.1 Optimizations Implemented",
    "### 10.2 Potential Improvements", "## 11. Conclusion", "## Appendix A: How to Collect Metrics",
    "## Appendix B: Sample Raw Metrics",
]


@pytest.fixture
def recorded(ingest, settings, db):
    """Two real runs: 20-row files one per batch, then 50-row files, 5% invalid."""

    rng = np.random.default_rng(21)
    for i in range(3):
        write_drop(generate_events(20, rng=rng, invalid_rate=0.05), settings.landing_dir, f"small_{i}.csv")
    ingest(settings.with_overrides(max_files_per_trigger=1))
    for i in range(2):
        write_drop(generate_events(50, rng=rng, invalid_rate=0.05), settings.landing_dir, f"heavy_{i}.csv")
    ingest(settings.with_overrides(max_files_per_trigger=1))
    return settings


def cell(text: str, label: str) -> str:
    match = re.search(r"^\| (?:\*\*)?" + re.escape(label) + r"(?:\*\*)? \| ([^|]+) \|", text, re.M)
    assert match, f"no row {label!r}"
    return match.group(1).strip()


def number(text: str) -> float:
    return float(re.search(r"-?[\d,]+(?:\.\d+)?", text).group(0).replace(",", ""))


def test_report_has_every_section_real_figures_and_valid_plots(recorded, db, db_schema, tmp_path):
    data = report.collect(db, db_schema)
    path = report.render(data, tmp_path / "out")
    text = path.read_text()

    for heading in HEADINGS:
        assert heading + "\n" in text, heading
    assert "[X]" not in text and "[DATE]" not in text

    # Figures recomputed here straight from the tables.
    total, loaded, duplicate, rejected = db.execute(
        "SELECT sum(rows_total)::int, sum(rows_loaded)::int, sum(rows_duplicate)::int, sum(rows_rejected)::int FROM ingest_files"
    ).fetchone()
    batches = db.execute("SELECT count(*), sum(rows_total)::int FROM ingest_batches").fetchone()
    assert number(cell(text, "Total Records Processed")) == total == batches[1]
    assert number(cell(text, "Total Batches")) == batches[0] == 5
    assert number(cell(text, "Invalid Records")) == rejected
    assert number(cell(text, "Valid Records")) == loaded + duplicate
    assert number(cell(text, "Validation Success Rate")) == pytest.approx(100 * (loaded + duplicate) / total, abs=0.01)
    wall = db.execute(
        "SELECT sum((metrics->>'total_processing_time_ms')::float), max((metrics->>'total_processing_time_ms')::float),"
        " max((metrics->>'records_per_second')::float) FROM ingest_batches"
    ).fetchone()
    assert number(cell(text, "Average Throughput")) == pytest.approx(total / (wall[0] / 1000), abs=0.01)
    assert number(cell(text, "Peak Throughput")) == pytest.approx(wall[2], abs=0.01)
    assert number(cell(text, "Maximum Latency")) == pytest.approx(wall[1], abs=0.01)
    in_db = db.execute("SELECT count(*) FROM user_events").fetchone()[0]
    assert f"-- Result: {in_db:,}" in text
    for reason, n in db.execute("SELECT r, count(*) FROM (SELECT unnest(reasons) r FROM rejected_events) x GROUP BY 1"):
        assert re.search(rf"\(`{reason}`\) \| {n:,} \|", text), reason
    # Section 9.2: the 20- and 50-row batches land in their rows, with their source named.
    assert re.search(r"\| Medium \(20\) \| 20\.00 \| [\d,.]+ ms \| [\d,.]+ rec/sec \| 3 recorded batch", text)
    assert re.search(r"\| Heavy \(50\) \| 50\.00 \| [\d,.]+ ms \| [\d,.]+ rec/sec \| 2 recorded batch", text)
    # Resource figures were sampled during the runs.
    assert db.execute("SELECT count(*) FROM resource_samples").fetchone()[0] == len(data.samples) > 0
    assert number(cell(text, "Memory Usage (whole process tree)")) > 100

    for filename in report.PLOTS.values():
        assert f"]({filename})" in text
        png = (tmp_path / "out" / filename).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width > 300 and height > 200


def test_a_failing_requirement_is_reported_as_failing(recorded, db, db_schema, tmp_path):
    data = report.collect(db, db_schema)
    strict = dataclasses.replace(report.default_targets(), min_throughput_rps=1e9, max_latency_ms=5000,
                                 min_validation_rate_pct=99.99)
    text = report.markdown(data, strict)
    assert re.search(r"\| Min Throughput \| 1,000,000,000 rec/sec \| [\d,.]+ rec/sec \| ❌ Fail \|", text)
    assert re.search(r"\| Validation Rate \| >99\.99% \| [\d.]+% \| ❌ Fail \|", text)
    assert re.search(r"\| Max Latency \| 5,000 ms \| [\d,.]+ ms \(slowest batch\) \| ✅ Pass \|", text)
    assert "The pipeline misses 2 of 4 requirements" in text
    assert "meets all performance requirements" not in text
    assert re.search(r"The validation success rate of [\d.]+% falls short of the requirement of more than 99\.99%", text)
    lenient = report.markdown(data, dataclasses.replace(report.default_targets(), min_throughput_rps=0.001,
                                                           min_validation_rate_pct=1))
    assert "meets all performance requirements" in lenient and "❌" not in lenient


def test_empty_window_renders_without_inventing_numbers(db, db_schema, tmp_path):
    import datetime as dt

    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    data = report.collect(db, db_schema, since=future)
    text = report.render(data, tmp_path / "empty").read_text()
    assert "over 0 micro-batch(es)" in text and "[X]" not in text
    assert "No micro-batch was committed in the window" in text
    assert "No resource samples in the window. No micro-batch was committed in the window, so no run was sampled." in text
    # Nothing to judge is neither a pass nor a fail; data loss can still be judged.
    assert re.search(r"\| Min Throughput \| [^|]+ \| [^|]+ \| ➖ Not measured \|", text)
    assert re.search(r"\| Data Loss \| [^|]+ \| 0\.00% \| ✅ Pass \|", text)


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("24h", 86400), ("7d", 604800), ("90s", 90)])
def test_parse_since_relative(text, seconds):
    import datetime as dt

    now = dt.datetime(2026, 11, 28, 12, tzinfo=dt.timezone.utc)
    assert (now - report.parse_since(text, now)).total_seconds() == seconds


def test_parse_since_iso_and_errors():
    assert report.parse_since("2026-11-28T10:00:00Z").hour == 10
    assert report.parse_since("2026-11-28T10:00:00").tzinfo is not None
    with pytest.raises(ValueError, match="--since"):
        report.parse_since("yesterday")


def test_count_axes_tick_whole_numbers_and_zero_by_construction_is_left_out(recorded, db, db_schema):
    import matplotlib.pyplot as plt

    data = report.collect(db, db_schema)
    figures = report.plot_figures(data)
    try:
        # Five batches: the histogram's counts are 1 or 2, where matplotlib's own ticks are 0.25 apart.
        batches_axis = figures["latency"].axes[0].get_yticks()
        assert len(batches_axis) >= 2 and all(float(t).is_integer() for t in batches_axis), batches_axis
        rows_axis = figures["rejections"].axes[0].get_xticks()
        assert all(float(t).is_integer() for t in rows_axis), rows_axis
        # No file was rejected whole, so every whole-file reason is 0 by construction: no bar
        # for them, a caption instead; each row reason keeps its bar, 0 included.
        bars = [t.get_text() for t in figures["rejections"].axes[0].get_yticklabels()]
        assert set(bars) == set(c.REJECTION_REASONS)
        captions = [t.get_text() for t in figures["rejections"].texts]
        assert captions == ["files rejected whole: none"]
        # Every stage ran and took time: a bar each, the remainder included.
        assert len(figures["stages"].axes[0].patches) == len(report.STAGES) + 1
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_a_window_without_rejections_says_none_instead_of_drawing_zero_bars(ingest, settings, db, db_schema):
    import matplotlib.pyplot as plt

    write_drop(generate_events(20, rng=np.random.default_rng(5), invalid_rate=0.0), settings.landing_dir, "clean.csv")
    ingest()
    data = report.collect(db, db_schema)
    assert data.summary["rejected_records"] == 0 and data.summary["total_records"] == 20
    figures = report.plot_figures(data)
    try:
        ax = figures["rejections"].axes[0]
        assert not ax.patches
        assert [t.get_text() for t in ax.texts] == ["none of the 20 rows was rejected"]
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_an_empty_window_draws_no_zero_bars(db, db_schema):
    import datetime as dt

    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    summary = report.collect(db, db_schema, since=future).summary
    shown, not_run = report.plotted_stages(summary)
    assert shown == [] and len(not_run) == len(report.STAGES) + 1
    assert report.plotted_reasons(summary) == ([], None)


def test_one_batch_of_one_file_reads_right_axes_duration_and_prose(ingest, settings, db, db_schema, tmp_path):
    """A first run's report: one small drop, loaded by the driver straight into the table."""
    import matplotlib.pyplot as plt

    write_drop(generate_events(20, rng=np.random.default_rng(8), invalid_rate=0.1), settings.landing_dir, "one.csv")
    ingest()
    data = report.collect(db, db_schema)
    (batch,) = data.batches
    assert batch["loaded_in"] == "driver"
    figures = report.plot_figures(data)
    try:
        for name in ("throughput", "resources"):
            if name == "resources" and not data.samples:
                continue
            ax = figures[name].axes[0]
            figures[name].canvas.draw()
            low, high = (mdates.num2date(x) for x in ax.get_xlim())
            # Around the batch, not matplotlib's ±2 years for a single point.
            assert (high - low).total_seconds() <= 600, (low, high)
            assert low <= batch["committed_at"] <= high
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
            assert labels and all(re.fullmatch(r"\d\d:\d\d:\d\d", label) for label in labels), labels
            assert ax.get_xlabel() == "time (UTC)"
    finally:
        for fig in figures.values():
            plt.close(fig)
    text = report.markdown(data)
    duration = re.search(r"\*\*Test Duration:\*\* (.+?)  $", text, re.M).group(1)
    assert duration.startswith("one micro-batch, started ") and "committed after" in duration
    assert "1 loaded by the driver itself" in text and "on the executors" not in text.split("### 10.2")[0]
    assert "loaded one after another by the driver" in text
    assert "(0 file(s) in this window)" in text  # no staging table: the load went straight in
    assert "loaded, 0 duplicates skipped)" in text
    # The drop was loaded before Spark started, but the run's sampler may still catch its last
    # second on a busy machine (CI did): section 7 then shows that sample. Without samples, the
    # report says why rather than drawing tables of n/a; checked on the same window with its
    # samples set aside, so both cases are asserted every time.
    if data.samples:
        assert "### 7.1" in text and "No resource samples in the window" not in text
    unsampled = report.markdown(dataclasses.replace(data, samples=[]))
    assert "No resource samples in the window. A run is sampled while its Spark query" in unsampled
    assert "### 7.1" not in unsampled and "n/a MB" not in unsampled


def test_the_report_names_each_feed_in_its_own_terms(tmp_path):
    from ecom_ingest_dagster.feeds import load_feed, shipped_feed
    from ecom_ingest_dagster.tools.report.document import feed_wording

    events, orders = feed_wording(shipped_feed("user_events")), feed_wording(shipped_feed("orders"))
    # user_events' reads as the original report did
    assert (events["title"], events["category_title"], events["rows"], events["cli"]) == (
        "E-Commerce Events", "Event Types", "events", "")
    assert (orders["table"], orders["rejected_table"], orders["category"], orders["category_title"], orders["cli"]) == (
        "orders", "orders_rejected", "currency", "Currencies", " --feed orders")
    path = tmp_path / "shifts.yaml"
    path.write_text("feed: shifts\nversion: 1\ntable: shifts\nunique_key: shift_id\nmissing_reason: missing\n"
                    "malformed_reason: malformed\nreasons: [missing, bad_day, malformed]\n"
                    "description: |\n  rota exports,\n  one per shift\ncolumns:\n"
                    "  - {name: shift_id, type: text, required: true}\n"
                    "  - name: weekday\n    type: text\n    rules: [{one_of: [mon, tue], reason: bad_day}]\n")
    shifts = feed_wording(load_feed(path))
    # a heading is one line; "weekday" is not pluralised as "currency" is
    assert shifts["title"] == "Feed shifts: rota exports, one per shift" and shifts["category_title"] == "Weekdays"
