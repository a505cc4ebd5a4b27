"""``ecom-ingest``: generate drops, ingest them once, or stream continuously.

Errors a user can act on (a bad setting, PostgreSQL unreachable, a missing landing
directory) end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ecom_ingest_dagster.feeds import ALL_FEEDS, FEED_NAME_RULE, FeedError
from ecom_ingest_dagster.pipeline.database import DatabaseUnavailable
from ecom_ingest_dagster.pipeline.feed_tables import ContractBreaksTable
from ecom_ingest_dagster.settings import DEFAULT_FEED, Settings, SettingsError

if TYPE_CHECKING:
    from ecom_ingest_dagster.pipeline.run import Pipeline

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CliError(Exception):
    """A failure explained in one line; the exit code says which kind."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _nonnegative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _rate(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _rates(text: str) -> tuple[int, ...]:
    """Comma-separated drops per second; "0" (or nothing): none."""
    rates = tuple(_number(part.strip(), int) for part in text.split(",") if part.strip())
    if any(r < 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be >= 0, got {text}")
    return tuple(r for r in rates if r > 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecom-ingest",
        description="Ingest e-commerce event CSV drops into PostgreSQL (Spark + Pandera).",
        epilog="Configuration comes from ECOM_INGEST_* environment variables; see the README.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(commands)
    _add_feed_command(commands)
    _add_bench_command(commands)
    for name, command in commands.choices.items():
        if name not in ("bench", "feed"):
            every = ", or `all`: every feed in use" if name in EVERY_FEED_COMMANDS else ""
            command.add_argument("--feed", metavar="NAME",
                                 help=f"the feed (default: ECOM_INGEST_FEED, else user_events){every}; `ecom-ingest feed list`")
    return parser


def _add_feed_command(commands) -> None:
    feed = commands.add_parser("feed", help="feeds: list them, or write a new contract file to start from")
    actions = feed.add_subparsers(dest="feed_action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="write <feeds_dir>/NAME.yaml: a contract to edit (columns, types, rules)")
    new.add_argument("name", help="the feed's name (lower case letters, digits, _)")
    actions.add_parser("list", help="the feeds there are: shipped, and in ECOM_INGEST_FEEDS_DIR")


def _add_data_commands(commands) -> None:
    """The commands of the data path: make drops, take them, look at what is there."""
    gen = commands.add_parser("generate", help="write realistic event CSV drops into a landing directory")
    gen.add_argument("--landing", type=Path, help="landing directory (default: ECOM_INGEST_LANDING_DIR)")
    gen.add_argument("--events", type=int, default=20, help="events per file (default 20)")
    gen.add_argument("--batches", type=_positive_int, default=10, help="number of files (default 10)")
    gen.add_argument("--interval", type=_nonnegative_float, default=0.0, help="seconds between files (default 0)")
    gen.add_argument("--invalid-rate", type=_rate, default=0.0, help="share of invalid rows, 0..1 (default 0)")
    gen.add_argument("--seed", type=int, help="random seed for a reproducible drop")
    gen.add_argument("--prefix", help="file name prefix (default: 'events' for user_events, else the feed's name)")
    packing = gen.add_mutually_exclusive_group()
    packing.add_argument("--gzip", dest="compress", action="store_const", const="gz",
                         help="write gzip-compressed drops (*.csv.gz)")
    packing.add_argument("--zstd", dest="compress", action="store_const", const="zst",
                         help="write Zstandard-compressed drops (*.csv.zst)")

    ing = commands.add_parser("ingest", help="process every pending drop once, then stop")
    ing.add_argument("--landing", type=Path, help="landing directory (default: ECOM_INGEST_LANDING_DIR)")
    ing.add_argument("--max-files-per-trigger", type=_positive_int, help="bound a micro-batch by file count")

    stream = commands.add_parser("stream", help="process drops continuously until Ctrl+C / SIGTERM")
    stream.add_argument("--landing", type=Path, help="landing directory (default: ECOM_INGEST_LANDING_DIR)")
    stream.add_argument("--trigger-seconds", type=_nonnegative_float, help="trigger interval (default: ECOM_INGEST_TRIGGER_SECONDS)")
    stream.add_argument("--max-files-per-trigger", type=_positive_int,
                        help="files per micro-batch (default: ECOM_INGEST_MAX_FILES_PER_TRIGGER, else bounded by bytes)")
    status = commands.add_parser("status", help="show what the database holds: files, rows, rejections by reason")
    status.add_argument("--json", action="store_true", help="as one JSON object (the database password redacted)")
    show = commands.add_parser("settings", help="show the settings in force (environment and defaults)")
    show.add_argument("--json", action="store_true", help="as one JSON object (the database password redacted)")

    replay = commands.add_parser("replay-rejected", help="validate quarantined rows again and load those that now pass")
    replay.add_argument("--file", help="only rows of this source file (base name)")
    replay.add_argument("--reason", help="only rows rejected for this reason")

    psql = commands.add_parser("psql", help="psql on the feed's database (the embedded one by default), its schema first"
                               " on the search path; arguments after -- go to psql (e.g. -- -c 'SELECT 1')")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    report = commands.add_parser("report", help="render the performance report (Markdown + PNG plots)")
    report.add_argument("--out", type=Path, help="output directory (default: $ECOM_INGEST_HOME/reports, another"
                        " feed's $ECOM_INGEST_HOME/<feed>/reports; with --feed all, a directory per feed in it)")
    report.add_argument("--since", help="window start: 30m, 24h, 7d or an ISO-8601 time (default: everything)")
    report.add_argument("--until", help="window end, same forms (default: now)")


def _add_bench_command(commands) -> None:
    bench = commands.add_parser("bench", help="benchmark against psql COPY, the binary-COPY ceiling and Spark JDBC; latency of both modes")
    bench.add_argument("--rows", type=int, default=1_000_000, help="rows for the bulk benchmark (default 1,000,000; 0 skips it)")
    bench.add_argument("--invalid-rate", type=_rate, default=0.02, help="share of invalid rows (default 0.02)")
    bench.add_argument("--repeat", type=_positive_int, default=3, help="repetitions; medians are reported (default 3)")
    bench.add_argument("--latency-drops", type=int, default=30, help="20-row drops for continuous-mode latency (default 30; 0 skips)")
    bench.add_argument("--sensor-drops", type=int, default=0, help="drops for sensor-mode latency through dagster dev (default 0: skip)")
    bench.add_argument("--history", type=int, default=0,
                       help="files of landing history for the flat-cost benchmark (e.g. 100000; default 0: skip)")
    bench.add_argument("--backlog", type=int, default=2000,
                       help="20-row drops for the backlog drain and the cold one-drop benchmarks (default 2,000; 0: skip)")
    bench.add_argument("--rates", type=_rates, default=(20, 50, 100, 200),
                       help="drops/s of 20 rows into a running stream, comma-separated (default 20,50,100,200; "
                            "0: skip); then one --rows drop into that stream")
    bench.add_argument("--rate-seconds", type=_positive_float, default=20.0, help="seconds per rate (default 20)")
    bench.add_argument("--soak-minutes", type=_nonnegative_float, default=0.0,
                       help="an always-on deployment (real dagster dev, embedded PostgreSQL) at one drop a second for "
                            "this long, PostgreSQL restarted at a third and the run killed at two thirds (e.g. 60; "
                            "default 0: skip)")
    bench.add_argument("--no-jdbc", action="store_true", help="skip the Spark JDBC comparison")
    bench.add_argument("--no-adbc", action="store_true",
                       help="skip the ADBC PostgreSQL driver comparison (run only when adbc-driver-postgresql is installed)")
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder (default ./bench-results)")


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
        if getattr(args, "feed", None) == ALL_FEEDS:
            if args.command not in EVERY_FEED_COMMANDS:
                raise CliError(f"--feed all is for {' and '.join(EVERY_FEED_COMMANDS)}: name one feed", EXIT_USAGE)
            return _every_feed(settings, args)
        if getattr(args, "feed", None) is not None:
            try:
                settings = settings.with_overrides(feed=args.feed)
            except SettingsError:  # the setting's own message names its variable, not the flag
                raise CliError(f"--feed {args.feed!r}: a feed's name is {FEED_NAME_RULE}", EXIT_USAGE) from None
        if args.command not in ("feed", "bench", "psql"):
            settings.contract  # a missing or mistaken contract file is told now, before any work  # noqa: B018
        if getattr(args, "landing", None) is not None:
            settings = settings.with_landing(args.landing.expanduser().absolute())
        return COMMANDS[args.command](settings, args)
    except (SettingsError, FeedError) as exc:
        return _fail(CliError(str(exc), EXIT_USAGE))
    except ContractBreaksTable as exc:
        return _fail(CliError(str(exc)))
    except DatabaseUnavailable as exc:
        return _fail(CliError(str(exc)))
    except CliError as exc:
        return _fail(exc)
    except KeyboardInterrupt as exc:
        return _fail(CliError(f"interrupted: {exc}" if str(exc) else "interrupted", 130))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ecom-ingest")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


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
            compress=args.compress,
            feed=settings.contract,
        )
    except (ValueError, OSError) as exc:
        raise CliError(str(exc), EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILURE) from exc
    rows = sum(d.rows for d in drops)
    invalid = sum(d.invalid_rows for d in drops)
    what = "events" if settings.feed == DEFAULT_FEED else "rows"
    print(f"generated {len(drops)} file(s), {rows} {what} ({invalid} invalid) in {settings.landing_dir}")
    return 0


def _pipeline(settings: Settings, *, run: bool = False) -> Pipeline:
    """The pipeline for a command; a ``run`` (ingest, stream) waits for PostgreSQL as a run does."""
    # Imported here: pandas, Arrow and PySpark take a second to import, `--help` should not.
    from ecom_ingest_dagster.pipeline.run import Pipeline

    return Pipeline(
        settings, interactive=not run,
        on_spark_ready=lambda s: print(
            f"spark session ready in {s:.1f} s ({settings.spark_master}; its log: {settings.spark_log})",
            file=sys.stderr,
        ),
        # Spark's start-up chatter (JVM warnings, log4j's banner) goes to the log, not the terminal.
        jvm_log=settings.spark_log,
    )


def _print_batch(metrics: dict) -> None:
    from ecom_ingest_dagster.pipeline.measure import format_batch

    print(format_batch(metrics), file=sys.stderr, flush=True)


def _run(settings: Settings, runner) -> int:
    from ecom_ingest_dagster.pipeline.run import LandingMissing

    with _pipeline(settings, run=True) as pipeline:
        try:
            summary = runner(pipeline)
        except LandingMissing as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        except (DatabaseUnavailable, KeyboardInterrupt):
            raise  # main() words them
        except Exception as exc:  # Spark wraps task failures; keep the first line for the user
            raise CliError(f"ingest failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
    print(format_summary(summary, settings))
    return 0


def _ingest(settings: Settings, args) -> int:
    settings = settings.with_overrides(max_files_per_trigger=args.max_files_per_trigger)
    return _run(settings, lambda pipeline: pipeline.ingest(on_batch=_print_batch))


def _stream(settings: Settings, args) -> int:
    settings = settings.with_overrides(max_files_per_trigger=args.max_files_per_trigger, trigger_seconds=args.trigger_seconds)

    def stream(pipeline):
        query = pipeline.query(on_batch=_print_batch)  # the landing directory and database first
        print(f"streaming every {settings.trigger_seconds:g} s; Ctrl+C stops after the current micro-batch",
              file=sys.stderr)
        return query.run_continuous(trigger_seconds=settings.trigger_seconds)

    return _run(settings, stream)


def _status(settings: Settings, args=None) -> int:
    import json

    values = _status_values(settings)
    if getattr(args, "json", False):
        print(json.dumps(values, indent=2))
        return 0
    _print_status(values)
    return 0


def _status_values(settings: Settings) -> dict:
    """What ``status`` shows of one feed, as JSON-ready values (the database password redacted)."""
    import dataclasses

    from ecom_ingest_dagster.settings import redact_url

    problem = None
    try:
        with _pipeline(settings) as pipeline:
            status = pipeline.status()
            url = pipeline.database_url
    except ContractBreaksTable as exc:
        # What is loaded is still shown while the user mends the contract or the table:
        # the ledgers it reads do not depend on the feed's columns.
        from ecom_ingest_dagster.pipeline import ledger
        from ecom_ingest_dagster.pipeline.database import connection, resolve_database_url

        problem, url = str(exc), resolve_database_url(settings)
        with connection(url) as conn:
            status = ledger.status(conn, settings.db_schema, settings.contract)
    values = dataclasses.asdict(status)
    values["reasons"] = dict(status.reasons)
    values["files_rejected_by_reason"] = dict(status.files_rejected_by_reason)
    return {"feed": settings.feed, "database": redact_url(url), "schema": settings.db_schema, **values,
            "contract_problem": problem}


def _print_status(values: dict) -> None:
    print(f"database: {values['database']} (schema {values['schema']})")
    if values["contract_problem"]:
        print(f"contract: nothing is ingested until this is mended: {values['contract_problem']}")
    print(f"files: {values['files_ingested']} ingested, {values['files_rejected']} rejected whole")
    for reason, count in values["files_rejected_by_reason"].items():
        print(f"  {reason}: {count} file(s)")
    print(f"rows: {values['rows_total']} in = {values['rows_loaded']} loaded + {values['rows_duplicate']} duplicate"
          f" + {values['rows_rejected']} rejected")
    if values["reasons"]:
        print("  rejected rows by reason (a row may have several; rows replayed since not counted):")
    for reason, count in values["reasons"].items():
        print(f"    {reason}: {count}")


# The commands ``--feed all`` is for: what is there, feed by feed.
EVERY_FEED_COMMANDS = ("status", "report")


def _every_feed(settings: Settings, args) -> int:
    """``status`` or ``report`` of every feed in use, one after another (``--feed all``)."""
    import json

    from ecom_ingest_dagster.pipeline.run import feeds_in_use

    in_use, others = feeds_in_use(settings)
    shown, failed = {}, {}
    for feed_settings in in_use:
        # One feed that cannot be shown (its contract now breaks its table, say) is told, and
        # the others are still shown; the exit code says that one failed.
        try:
            if args.command == "status":
                shown[feed_settings.feed] = values = _status_values(feed_settings)
                if not args.json:
                    print(f"== {feed_settings.feed}")
                    _print_status(values)
            else:
                print(f"== {feed_settings.feed}")
                _report(feed_settings, args, out=args.out / feed_settings.feed if args.out else None)
        except (CliError, ContractBreaksTable, DatabaseUnavailable) as exc:
            failed[feed_settings.feed] = str(exc)
            print(f"ecom-ingest: error: {feed_settings.feed}: {exc}", file=sys.stderr)
    if args.command == "status" and args.json:
        print(json.dumps({"feeds": shown, "failed": failed, "not_in_use": others}, indent=2))
    else:
        for line in others:
            print(f"== {line}")
    return EXIT_FAILURE if failed else 0


def _report(settings: Settings, args, out: Path | None = None) -> int:
    """The feed's report; ``out`` (``--feed all``): its directory, instead of ``--out``."""
    from ecom_ingest_dagster.tools import report

    try:
        since = report.parse_since(args.since) if args.since else None
        until = report.parse_since(args.until) if args.until else None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if since and until and since >= until:
        raise CliError(f"--since ({since:%Y-%m-%d %H:%M} UTC) must be before --until ({until:%Y-%m-%d %H:%M} UTC)", EXIT_USAGE)
    out = out or args.out
    out = out.expanduser().absolute() if out else None
    with _pipeline(settings) as pipeline:
        outcome = report.write_report(pipeline, since=since, until=until, out_dir=out)
    failing = [r["name"] for r in outcome.requirements if r["passed"] is False]
    unjudged = [r["name"] for r in outcome.requirements if r["passed"] is None]
    print(f"report: {outcome.path} ({outcome.batches} batch(es), {outcome.samples} resource sample(s))")
    verdict = "not met: " + ", ".join(failing) if failing else "all met" if not unjudged else "none failed"
    # No batch in the window: nothing to be slow at, which is not a miss either.
    print("requirements: " + verdict + (f" ({', '.join(unjudged)}: nothing to judge)" if unjudged else ""))
    return 0


def _replay(settings: Settings, args) -> int:
    from ecom_ingest_dagster.tools.replay import replay_rejected

    try:
        with _pipeline(settings) as pipeline, pipeline.connect() as conn:
            outcome = replay_rejected(conn, settings.db_schema, file_name=args.file, reason=args.reason,
                                      feed=settings.contract)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    print(
        f"replayed {outcome.examined} rejected row(s): {outcome.loaded} loaded, {outcome.duplicate} duplicate, "
        f"{outcome.still_rejected} still rejected"
    )
    if outcome.examined == 0 and (args.file or args.reason):
        # Asked for something specific and found nothing: say so, in the exit code too.
        raise CliError(f"no quarantined rows match{' --file ' + args.file if args.file else ''}"
                       f"{' --reason ' + args.reason if args.reason else ''}")
    return 0


def _bench(settings: Settings, args) -> int:
    from ecom_ingest_dagster.tools import bench

    if min(args.rows, args.latency_drops, args.sensor_drops, args.history, args.backlog) < 0:
        raise CliError("--rows, --latency-drops, --sensor-drops, --history and --backlog must be >= 0", EXIT_USAGE)
    with _pipeline(settings) as pipeline:
        url = pipeline.database_url
    config = bench.BenchConfig(
        database_url=url, out_dir=args.out.expanduser().absolute(), rows=args.rows, invalid_rate=args.invalid_rate,
        repeat=args.repeat, jdbc=not args.no_jdbc, adbc=not args.no_adbc, latency_drops=args.latency_drops, sensor_drops=args.sensor_drops,
        history=args.history, backlog=args.backlog, rates=args.rates, rate_seconds=args.rate_seconds,
        soak_minutes=args.soak_minutes,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    results = bench.run(config)
    print(bench.markdown(results))
    print(f"results: {results['out_dir']}/results.json and results.md")
    return 0


def _psql(settings: Settings, args) -> int:
    """psql where the feed's tables are: a contract that no longer fits its table asks the
    user to change the table, and the embedded server has no other way in. The embedded
    server stays up while psql runs (this process asked for it)."""
    import os
    import subprocess

    from ecom_ingest_dagster.pipeline.database import psql_invocation, resolve_database_url

    command, env = psql_invocation(resolve_database_url(settings), settings.db_schema)
    extra = list(args.psql_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    psql = subprocess.Popen([*command, *extra], env={**os.environ, **env})
    # Ctrl+C is psql's (it cancels a query, clears a line): the terminal sends it to this
    # process too, which only waits, for as long as psql runs.
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return psql.wait()
    finally:
        signal.signal(signal.SIGINT, interrupt)


def _settings(settings: Settings, args) -> int:
    import json

    from ecom_ingest_dagster.settings import env_name, redact_url

    values = settings.model_dump(mode="json")
    if values.get("database_url"):
        values["database_url"] = redact_url(values["database_url"])
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        for name, value in values.items():
            shown = "" if value is None else value
            if name == "database_url" and value is None:
                # Unset is not "nothing": say what a run will use.
                shown = f"  # unset: the embedded PostgreSQL in {settings.embedded_pgdata}"
            print(f"{env_name(name)}={shown}")
    return 0


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
    if totals["files_rejected"]:
        why = ", ".join(f"{k}={v}" for k, v in totals["files_rejected_by_reason"].items())
        lines.append(f"files rejected whole: {why} (each file's reason: {settings.rejected_dir}/<file>.reason.json)")
    if summary.files_replaced:
        lines.append(
            f"warning: {len(summary.files_replaced)} drop(s) changed after they were ingested and were not read "
            f"again (re-send under a new name): {', '.join(summary.files_replaced[:5])}"
            + (" ..." if len(summary.files_replaced) > 5 else "")
        )
    lines.append(f"metrics: {settings.logs_dir}/performance_metrics.json (summary: performance_summary.json)")
    return "\n".join(lines)


def _feed(settings: Settings, args) -> int:
    from ecom_ingest_dagster.feeds import find_feed, known_feeds, new_contract

    if args.feed_action == "new":
        try:
            path = new_contract(args.name, settings.feeds_dir)
        except (ValueError, FileExistsError) as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        print(f"wrote {path}: edit its columns and rules, then `ecom-ingest ingest --feed {args.name}`"
              f" (drops go to {settings.with_overrides(feed=args.name).landing_dir})")
        return 0
    unusable = 0
    for name in known_feeds(settings.feeds_dir):
        try:
            contract = find_feed(name, settings.feeds_dir)
            where = settings.with_overrides(feed=name)
            print(f"{name}: version {contract.version}, {len(contract.columns)} columns -> "
                  f"{where.db_schema}.{contract.table} (landing {where.landing_dir})")
        except FeedError as exc:
            print(f"{name}: cannot be used: {exc}")
            unusable += 1
    # A check a script or CI can rely on: Dagster leaves such a feed out and loads the rest.
    return EXIT_USAGE if unusable else 0


COMMANDS = {
    "generate": _generate, "ingest": _ingest, "stream": _stream, "status": _status, "settings": _settings,
    "report": _report, "bench": _bench, "replay-rejected": _replay, "feed": _feed, "psql": _psql,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
