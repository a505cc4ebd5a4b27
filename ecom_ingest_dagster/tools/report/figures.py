"""The report's plots: one function per figure, each from the window's data alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Mapping, Sequence

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.tools.report.data import ReportData
from ecom_ingest_dagster.tools.report.measures import num, stage_shares

PLOTS = {
    "throughput": "throughput_per_batch.png",
    "latency": "latency_distribution.png",
    "stages": "stage_breakdown.png",
    "rejections": "rejections_by_reason.png",
    "resources": "resource_usage.png",
}



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
    return {name: draw(data) for name, draw in (("throughput", _throughput), ("latency", _latency), ("stages", _stages),
                                                ("rejections", _rejections), ("resources", _resources))}


def _figure(height: float):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, height))


def _finish(fig, caption: str | None = None):
    if caption:
        # Under the axes: what the plot leaves out, so a missing bar is not a mystery.
        fig.text(0.01, 0.01, caption, ha="left", va="bottom", color="dimgray", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1) if caption else None)
    return fig


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_above(ax, *args) -> None:
    # Between the title and the axes: inside the axes a legend hides data (it hid the
    # first run's memory line), beside the title it runs into it.
    ax.legend(*args, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=9)


def _whole_numbers(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    # A count has no 1.5: ticks on whole numbers only.
    axis.set_major_locator(MaxNLocator(integer=True))


def _throughput(data: ReportData):
    from matplotlib.ticker import FuncFormatter

    fig, ax = _figure(3.6)
    s = data.summary
    if data.batches:
        times, values = _break_gaps([b["committed_at"] for b in data.batches], [b["records_per_second"] for b in data.batches], 30)
        ax.plot(times, values, marker="o", linewidth=1.2, label="one micro-batch")
        ax.axhline(s["avg_records_per_second"], color="tab:green", linestyle="--", label=f"average {num(s['avg_records_per_second'])}")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # 150,000, not 150000
        _legend_above(ax)
        time_axis(ax, [b["committed_at"] for b in data.batches])
        fig.autofmt_xdate()
    else:
        _empty(ax, "no batches in the window")
    ax.set_title("Throughput per micro-batch", pad=22 if data.batches else None)
    ax.set_ylabel("records / second")
    return _finish(fig, "batches more than 30 s apart are not joined: the gap is idle time, not a trend" if data.batches else None)


def _latency(data: ReportData):
    fig, ax = _figure(3.6)
    latencies = [float(b["total_processing_time_ms"]) for b in data.batches]
    if latencies:
        ax.hist(latencies, bins=min(30, max(5, len(latencies))), color="tab:blue", alpha=0.75)
        _whole_numbers(ax.yaxis)
        for key, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            value = data.summary["batch_latency_ms"][key]
            ax.axvline(value, color=color, linestyle="--", label=f"{key} {num(value)} ms")
        _legend_above(ax)
    else:
        _empty(ax, "no batches in the window")
    ax.set_title("Micro-batch latency distribution", pad=22 if latencies else None)
    ax.set_xlabel("ms")
    ax.set_ylabel("batches")
    return _finish(fig)


def _stages(data: ReportData):
    fig, ax = _figure(3.2)
    shown, not_run = plotted_stages(data.summary)
    if shown:
        ax.barh([label for label, _, _ in shown][::-1], [ms for _, ms, _ in shown][::-1], color="tab:purple")
        for label, ms, pct in shown:
            ax.annotate(f" {num(pct, 1)}%", (ms, label), va="center", fontsize=8, color="dimgray")
        ax.margins(x=0.12)
        ax.set_xlabel("ms")
    else:
        _empty(ax, "no batches in the window")
    ax.set_title("Average time per stage in a micro-batch")
    return _finish(fig, f"none (0 ms, not drawn): {', '.join(not_run)}" if shown and not_run else None)


def _rejections(data: ReportData):
    s = data.summary
    reasons, caption = plotted_reasons(s, data.feed.reasons)
    fig, ax = _figure(4 if len(reasons) > len(data.feed.reasons) else 3.4)
    if reasons:
        values = [int(s["reason_counts"].get(r, 0)) for r in reasons]
        ax.barh(reasons[::-1], values[::-1], color="tab:red")
        for reason, n in zip(reasons, values):
            ax.annotate(f" {n:,}", (n, reason), va="center", fontsize=8, color="dimgray")
        ax.margins(x=0.08)
        _whole_numbers(ax.xaxis)
        ax.set_xlabel("rows (a row counts once per reason it has)")
    else:
        _empty(ax, caption or "no batches in the window")
        caption = None
    ax.set_title("Rejections by reason")
    return _finish(fig, caption)


def _resources(data: ReportData):
    fig, ax = _figure(3.6)
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
        _legend_above(ax, lines, [line.get_label() for line in lines])
        time_axis(ax, stamps)
        fig.autofmt_xdate()
    else:
        _empty(ax, "no resource samples in the window")
    ax.set_title("Resource use over time (process tree)", pad=22 if data.samples else None)
    return _finish(fig)


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



def plotted_reasons(summary: Mapping, row_reasons: Sequence[str] = c.REJECTION_REASONS) -> tuple[list[str], str | None]:
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
        return [*row_reasons, *c.FILE_REJECTION_REASONS], None
    return list(row_reasons), "files rejected whole: none"

