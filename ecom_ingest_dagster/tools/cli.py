"""``ecom-ingest``: generate drops, ingest them once, or stream continuously.

Errors a user can act on (a bad setting, PostgreSQL unreachable, a missing landing
directory) end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from ecom_ingest_dagster.pipeline.database import DatabaseUnavailable
from ecom_ingest_dagster.settings import Settings, SettingsError

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CliError(Exception):
    """A failure explained in one line; the exit code says which kind."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecom-ingest",
        description="Ingest e-commerce event CSV drops into PostgreSQL (Spark + Pandera).",
        epilog="Configuration comes from ECOM_INGEST_* environment variables; see the README.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="write realistic event CSV drops into a landing directory")
    gen.add_argument("--landing", type=Path, help="landing directory (default: ECOM_INGEST_LANDING_DIR)")
    gen.add_argument("--events", type=int, default=20, help="events per file (default 20)")
    gen.add_argument("--batches", type=_positive_int, default=10, help="number of files (default 10)")
    gen.add_argument("--interval", type=_nonnegative_float, default=0.0, help="seconds between files (default 0)")
    gen.add_argument("--invalid-rate", type=_rate, default=0.0, help="share of invalid rows, 0..1 (default 0)")
    gen.add_argument("--seed", type=int, help="random seed for a reproducible drop")
    gen.add_argument("--prefix", default="events", help="file name prefix (default 'events')")

    ing = commands.add_parser("ingest", help="process every pending drop once, then stop")
    ing.add_argument("--landing", type=Path, help="landing directory (default: ECOM_INGEST_LANDING_DIR)")
    ing.add_argument("--max-files-per-trigger", type=_positive_int, help="bound a micro-batch by file count")

    stream = commands.add_parser("stream", help="process drops continuously until Ctrl+C / SIGTERM")
    stream.add_argument("--landing", type=Path, help="landing directory (default: ECOM_INGEST_LANDING_DIR)")
    stream.add_argument("--trigger-seconds", type=_nonnegative_float, default=10.0, help="trigger interval (default 10)")
    stream.add_argument("--max-files-per-trigger", type=_positive_int, default=1, help="files per micro-batch (default 1)")
    commands.add_parser("status", help="show what the database holds: files, rows, rejections by reason")

    replay = commands.add_parser("replay-rejected", help="validate quarantined rows again and load those that now pass")
    replay.add_argument("--file", help="only rows of this source file (base name)")
    replay.add_argument("--reason", help="only rows rejected for this reason")

    bench = commands.add_parser("bench", help="benchmark against raw COPY and Spark JDBC; latency of both modes")
    bench.add_argument("--rows", type=int, default=1_000_000, help="rows for the bulk benchmark (default 1,000,000; 0 skips it)")
    bench.add_argument("--invalid-rate", type=_rate, default=0.02, help="share of invalid rows (default 0.02)")
    bench.add_argument("--repeat", type=_positive_int, default=3, help="repetitions; medians are reported (default 3)")
    bench.add_argument("--latency-drops", type=int, default=30, help="20-row drops for continuous-mode latency (default 30; 0 skips)")
    bench.add_argument("--sensor-drops", type=int, default=0, help="drops for sensor-mode latency through dagster dev (default 0: skip)")
    bench.add_argument("--no-jdbc", action="store_true", help="skip the Spark JDBC comparison")
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder (default ./bench-results)")

    report = commands.add_parser("report", help="render the performance report (Markdown + PNG plots)")
    report.add_argument("--out", type=Path, help="output directory (default: $ECOM_INGEST_HOME/reports)")
    report.add_argument("--since", help="window start: 30m, 24h, 7d or an ISO-8601 time (default: everything)")
    report.add_argument("--until", help="window end, same forms (default: now)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # SIGTERM (kill, a supervisor) stops a command as Ctrl+C does, with the Spark session
    # stopped on the way out; a running query installs its own handler meanwhile.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        settings = Settings.from_env()
        if getattr(args, "landing", None) is not None:
            settings = settings.with_overrides(landing_dir=args.landing.expanduser().absolute())
        return COMMANDS[args.command](settings, args)
    except SettingsError as exc:
        return _fail(CliError(str(exc), EXIT_USAGE))
    except DatabaseUnavailable as exc:
        return _fail(CliError(str(exc)))
    except CliError as exc:
        return _fail(exc)
    except KeyboardInterrupt as exc:
        return _fail(CliError(f"interrupted: {exc}" if str(exc) else "interrupted", 130))


def _fail(exc: CliError) -> int:
    print(f"ecom-ingest: error: {exc}", file=sys.stderr)
    return exc.code


def _generate(settings: Settings, args) -> int:
    from ecom_ingest_dagster.tools.generator import generate_drops

    if args.events < 0:
        raise CliError("--events must be >= 0", EXIT_USAGE)
    try:
        drops = generate_drops(
            settings.landing_dir,
            events=args.events,
            batches=args.batches,
            interval=args.interval,
            invalid_rate=args.invalid_rate,
            seed=args.seed,
            prefix=args.prefix,
            progress=sys.stderr.isatty() or args.batches > 1,
        )
    except (ValueError, OSError) as exc:
        raise CliError(str(exc), EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILURE) from exc
    rows = sum(d.rows for d in drops)
    invalid = sum(d.invalid_rows for d in drops)
    print(f"generated {len(drops)} file(s), {rows} events ({invalid} invalid) in {settings.landing_dir}")
    return 0


def _open_pipeline(settings: Settings):
    """Database ready (migrated) and a Spark session: what both run modes need."""
    from ecom_ingest_dagster.pipeline.database import ready_database

    if not settings.landing_dir.is_dir():
        raise CliError(f"landing directory {settings.landing_dir} does not exist", EXIT_USAGE)
    url = ready_database(settings, retry_s=settings.db_retry_seconds)
    from ecom_ingest_dagster.pipeline.query import build_spark_session

    started = time.perf_counter()
    spark = build_spark_session(settings)
    print(f"spark session ready in {time.perf_counter() - started:.1f} s ({settings.spark_master})", file=sys.stderr)
    return url, spark


def _print_batch(metrics: dict) -> None:
    print(
        f"batch {metrics['batch_id']}: {metrics['files']} file(s), {metrics['total_records']} rows "
        f"({metrics['loaded_records']} loaded, {metrics['duplicate_records']} duplicate, "
        f"{metrics['rejected_records']} rejected) in {metrics['total_processing_time_ms']:.0f} ms",
        file=sys.stderr,
        flush=True,
    )


def _run(settings: Settings, runner) -> int:
    from ecom_ingest_dagster.pipeline.query import IngestQuery

    url, spark = _open_pipeline(settings)
    try:
        query = IngestQuery(spark, settings, url, on_batch=_print_batch)
        try:
            summary = runner(query)
        except DatabaseUnavailable:
            raise  # main() words it
        except Exception as exc:  # Spark wraps task failures; keep the first line for the user
            raise CliError(f"ingest failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
    finally:
        spark.stop()
    print(format_summary(summary, settings))
    return 0


def _ingest(settings: Settings, args) -> int:
    if args.max_files_per_trigger:
        settings = settings.with_overrides(max_files_per_trigger=args.max_files_per_trigger)
    return _run(settings, lambda query: query.run_available_now())


def _stream(settings: Settings, args) -> int:
    settings = settings.with_overrides(
        max_files_per_trigger=args.max_files_per_trigger, trigger_seconds=args.trigger_seconds
    )
    print("streaming; Ctrl+C stops after the current micro-batch", file=sys.stderr)
    return _run(settings, lambda query: query.run_continuous(trigger_seconds=settings.trigger_seconds))


def _status(settings: Settings, args=None) -> int:
    from ecom_ingest_dagster.pipeline.database import connection, ready_database
    from ecom_ingest_dagster.settings import redact_url

    url = ready_database(settings)
    with connection(url) as conn:
        conn.execute("SELECT set_config('search_path', %s, true)", (settings.db_schema,))
        files = dict(conn.execute("SELECT status, count(*) FROM ingest_files GROUP BY 1").fetchall())
        total, loaded, duplicate, rejected = conn.execute(
            "SELECT coalesce(sum(rows_total),0), coalesce(sum(rows_loaded),0), coalesce(sum(rows_duplicate),0),"
            " coalesce(sum(rows_rejected),0) FROM ingest_files"
        ).fetchone()
        reasons = conn.execute(
            "SELECT reason, count(*) FROM (SELECT unnest(reasons) AS reason FROM rejected_events"
            " WHERE replayed_at IS NULL) r GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    print(f"database: {redact_url(url)} (schema {settings.db_schema})")
    print(f"files: {files.get('ingested', 0)} ingested, {files.get('rejected', 0)} rejected whole")
    print(f"rows: {total} in = {loaded} loaded + {duplicate} duplicate + {rejected} rejected")
    for reason, count in reasons:
        print(f"  {reason}: {count}")
    return 0


def _report(settings: Settings, args) -> int:
    from ecom_ingest_dagster.tools import report
    from ecom_ingest_dagster.pipeline.database import connection, ready_database

    try:
        since = report.parse_since(args.since) if args.since else None
        until = report.parse_since(args.until) if args.until else None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    out = (args.out or settings.home / "reports").expanduser().absolute()
    with connection(ready_database(settings)) as conn:
        data = report.collect(conn, settings.db_schema, since=since, until=until, paths=report_paths(settings))
    targets = report.Targets.from_env()
    path = report.render(data, out, targets)
    failing = [r["name"] for r in report.requirements(data, targets) if not r["passed"]]
    print(f"report: {path} ({data.summary['total_batches']} batches, {len(data.samples)} resource samples)")
    print("requirements: " + ("all met" if not failing else "not met: " + ", ".join(failing)))
    return 0


def _replay(settings: Settings, args) -> int:
    from ecom_ingest_dagster.pipeline.database import connection, ready_database
    from ecom_ingest_dagster.tools.replay import replay_rejected

    try:
        with connection(ready_database(settings)) as conn:
            outcome = replay_rejected(conn, settings.db_schema, file_name=args.file, reason=args.reason)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    print(
        f"replayed {outcome.examined} rejected row(s): {outcome.loaded} loaded, {outcome.duplicate} duplicate, "
        f"{outcome.still_rejected} still rejected"
    )
    return 0


def _bench(settings: Settings, args) -> int:
    from ecom_ingest_dagster.tools import bench
    from ecom_ingest_dagster.pipeline.database import ready_database

    if args.rows < 0 or args.latency_drops < 0 or args.sensor_drops < 0:
        raise CliError("--rows, --latency-drops and --sensor-drops must be >= 0", EXIT_USAGE)
    url = ready_database(settings)
    config = bench.BenchConfig(
        database_url=url, out_dir=args.out.expanduser().absolute(), rows=args.rows, invalid_rate=args.invalid_rate,
        repeat=args.repeat, jdbc=not args.no_jdbc, latency_drops=args.latency_drops, sensor_drops=args.sensor_drops,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    results = bench.run(config)
    print(bench.markdown(results))
    print(f"results: {results['out_dir']}/results.json and results.md")
    return 0


def report_paths(settings: Settings) -> dict[str, str]:
    """Where the report says the metrics live, for this installation."""
    from ecom_ingest_dagster.pipeline.measure import MetricsLog

    logs = MetricsLog(settings.logs_dir)
    return {
        "metrics": str(logs.metrics_path), "summary": str(logs.summary_path),
        "errors_log": str(logs.errors_log_path), "errors_json": str(logs.errors_json_path),
        "checkpoints": str(settings.checkpoint_dir),
    }


def format_summary(summary, settings: Settings) -> str:
    totals = summary.totals
    latency = totals["batch_latency_ms"]
    lines = [
        f"files: {totals['total_files']} processed ({totals['files_rejected']} rejected whole), "
        f"{summary.files_skipped} already ingested before; {totals['total_batches']} micro-batch(es) "
        f"in {summary.elapsed_s:.1f} s",
        f"rows: {totals['total_records']} in = {totals['loaded_records']} loaded + "
        f"{totals['duplicate_records']} duplicate + {totals['rejected_records']} rejected",
    ]
    if totals["total_batches"]:
        lines.append(
            f"throughput: {totals['avg_records_per_second']:.0f} rows/s average, "
            f"{totals['peak_records_per_second']:.0f} rows/s peak; batch latency p50 {latency['p50']:.0f} ms, "
            f"p95 {latency['p95']:.0f} ms; validation success {totals['validation_success_rate']:.2f}%"
        )
        if totals["reason_counts"]:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(totals["reason_counts"].items()))
            lines.append(f"rejections by reason: {reasons}")
    if summary.files_replaced:
        lines.append(
            f"warning: {len(summary.files_replaced)} drop(s) changed after they were ingested and were not read "
            f"again (re-send under a new name): {', '.join(summary.files_replaced[:5])}"
            + (" ..." if len(summary.files_replaced) > 5 else "")
        )
    lines.append(f"metrics: {settings.logs_dir}/performance_metrics.json (summary: performance_summary.json)")
    return "\n".join(lines)


COMMANDS = {
    "generate": _generate, "ingest": _ingest, "stream": _stream, "status": _status,
    "report": _report, "bench": _bench, "replay-rejected": _replay,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
