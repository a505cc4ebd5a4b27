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
from pathlib import Path

from ecom_ingest_dagster.pipeline.measure import STAGES
from ecom_ingest_dagster.tools.report.data import ReportData, collect, parse_since
from ecom_ingest_dagster.tools.report.document import REPORT_NAME, default_targets, markdown, render, with_embedded_plots
from ecom_ingest_dagster.tools.report.figures import PLOTS, draw_plots, plot_figures, plotted_reasons, plotted_stages
from ecom_ingest_dagster.tools.report.measures import requirements

__all__ = [
    "PLOTS", "REPORT_NAME", "STAGES", "ReportData", "ReportOutcome", "collect", "default_targets", "draw_plots", "markdown",
    "parse_since", "plot_figures", "plotted_reasons", "plotted_stages", "render", "requirements", "with_embedded_plots",
    "write_report",
]


@dataclasses.dataclass(frozen=True)
class ReportOutcome:
    path: Path
    batches: int
    samples: int
    requirements: list[dict]



def write_report(pipeline, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                 out_dir: Path | None = None) -> ReportOutcome:
    """The performance report of the pipeline's feed for a window of runs, written with its plots
    (``ecom-ingest report`` and the feed's ``performance_report`` asset)."""
    with pipeline.connect() as conn:
        data = collect(conn, pipeline.settings.db_schema, since=since, until=until, paths=pipeline.report_paths(),
                       feed=pipeline.settings.contract)
    targets = pipeline.settings.targets
    path = render(data, out_dir or pipeline.settings.reports_dir, targets)
    return ReportOutcome(path, data.summary["total_batches"], len(data.samples), requirements(data, targets))

