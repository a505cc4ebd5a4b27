"""Landing history: a sensor tick's scan and a run's start-up sweep stay flat as history grows.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable


from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.database import connection, migrate
from ecom_ingest_dagster.tools.bench.harness import BenchConfig, drop_schema, fresh_schema



HISTORY_DAY = "2026-11-30"  # the archive folder the "after" history is placed in


HISTORY_NEW_DROPS = 10  # new (un-ledgered) drops present in every case


HISTORY_BUDGET_S = 0.5  # per case, side and repetition: sub-millisecond calls are repeated this long


HISTORY_MAX_CALLS = 2000


HISTORY_MIN_REPEAT = 5  # sub-millisecond figures on a shared machine: five medians' worth at least


HISTORY_TARGET_RATIO = 1.10  # the "within 10 % of an empty history"


_HISTORY_MTIME_S = 1_796_040_000  # 2026-11-30T12:00:00Z: the history files' mtime and their ledger's landed_at


_HEADER = (",".join(c.COLUMNS) + "\n").encode()


def _history_name(i: int) -> str:
    return f"hist_{i:07d}.csv"


def _write_small_files(directory: Path, names: list[str], content: bytes, *, mtime_ns: int | None = None) -> None:
    """Many small files fast: one open/write/close each (``utime`` on the open file when asked)."""
    directory.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    base = str(directory)
    for name in names:
        fd = os.open(os.path.join(base, name), flags, 0o644)
        try:
            os.write(fd, content)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)


def _history_ledger(url: str, schema: str, files: int) -> None:
    """``files`` ingested header-only drops in a freshly migrated schema, in one INSERT ... SELECT."""
    from psycopg import sql

    from ecom_ingest_dagster.pipeline.database import table

    with connection(url, autocommit=True) as conn:
        migrate(conn, schema)
        if files:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (file_name, status, rows_total, rows_loaded, rows_duplicate, rows_rejected,"
                    " file_size, stream_id, batch_id, landed_at, started_at, committed_at)"
                    " SELECT 'hist_' || lpad(i::text, 7, '0') || '.csv', 'ingested', 0, 0, 0, 0, %s, 'bench-history',"
                    " i / 100, to_timestamp(%s), to_timestamp(%s), to_timestamp(%s)"
                    " FROM generate_series(0, %s - 1) AS i"
                ).format(table(schema, "ingest_files")),
                (len(_HEADER), _HISTORY_MTIME_S, _HISTORY_MTIME_S, _HISTORY_MTIME_S, files),
            )
        conn.execute(sql.SQL("ANALYZE {}").format(table(schema, "ingest_files")))  # as autovacuum would


def _old_replaced_check(conn, schema: str, landing: Path) -> list[str]:
    """What a run's start-up did before drops left the landing directory (the old ``check_replaced``):
    read every ingested row of the ledger, then stat each of those names in the landing directory."""
    from psycopg import sql

    from ecom_ingest_dagster.pipeline.database import table

    rows = conn.execute(
        sql.SQL(
            # the old ledger.ingested_files: landed_at as Spark's millisecond mtime
            "SELECT file_name, file_size, (extract(epoch FROM landed_at) * 1000)::bigint"
            " FROM {} WHERE status = 'ingested'"
        ).format(table(schema, "ingest_files"))
    ).fetchall()
    replaced = []
    for name, size, mtime_ms in rows:
        try:
            stat = (landing / name).stat()
        except OSError:  # gone (moved, cleaned up): nothing was replaced
            continue
        if (size is not None and stat.st_size != size) or (
            mtime_ms is not None and stat.st_mtime_ns // 1_000_000 != mtime_ms
        ):
            replaced.append(name)
    return sorted(replaced)


def _paired_ms(empty_call: Callable[[], object], history_call: Callable[[], object], calls: int,
               flip: bool) -> tuple[float, float]:
    """Mean ms per call of each, alternating call by call (the order flips every call), so the
    machine's drift and noise fall on both sides alike."""
    totals = [0.0, 0.0]
    pair = (empty_call, history_call)
    for i in range(calls):
        for side in ((0, 1) if (i % 2 == 0) != flip else (1, 0)):
            started = time.perf_counter()
            pair[side]()
            totals[side] += time.perf_counter() - started
    return totals[0] * 1000.0 / calls, totals[1] * 1000.0 / calls


def history(config: BenchConfig, work: Path) -> dict:
    """Flat cost with history: a sensor tick's scan and a run's start-up sweep, for an empty
    history and for ``config.history`` files of it, after (archived) and before (kept in landing).

    Each case has ``HISTORY_NEW_DROPS`` new, un-ledgered drops in its landing directory and a
    cursor from before they arrived, so every scan finds exactly those and every sweep leaves
    them for Spark (nothing moves: each call sees the same state). "Before" is the layout of
    every drop staying in the landing directory forever (``after_commit=keep``), measured with
    today's sweep and with the old start-up check (``_old_replaced_check``), which is what a
    run did then. Within a repetition the empty and the history call alternate, call by call,
    for about ``HISTORY_BUDGET_S`` (one call each for the slow cases); each repetition keeps
    the mean per call, and the figures are the medians over ``HISTORY_MIN_REPEAT`` (or
    ``--repeat``, if more) repetitions.
    """
    files = config.history
    reps = max(HISTORY_MIN_REPEAT, config.repeat)
    root = work / "history"
    homes = {name: root / name for name in ("empty", "after", "before")}
    schemas: dict[str, str] = {}
    log = config.log
    try:
        started = time.perf_counter()
        schemas["empty"] = fresh_schema(config.database_url, "bench_hist0")
        schemas["history"] = fresh_schema(config.database_url, "bench_hist")
        _history_ledger(config.database_url, schemas["empty"], 0)
        _history_ledger(config.database_url, schemas["history"], files)
        cursor, new = _history_layout(homes, files)
        setup_s = time.perf_counter() - started
        log(f"history: {files:,} ledger rows and files in the archive and in a landing directory, {setup_s:.1f} s")

        with connection(config.database_url, autocommit=True) as conn:
            cases = _history_cases(conn, homes, schemas, cursor, new)
            samples = _measure(cases, reps, log)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for schema in schemas.values():
            drop_schema(config.database_url, schema)

    return _history_result(samples, files, reps, setup_s, log)


Case = tuple[Callable[[], object], Callable[[], object]]  # the empty-history call, the history call


def _history_cases(conn, homes: dict[str, Path], schemas: dict[str, str], cursor, new: list[str]) -> dict[tuple[str, str], Case]:
    """Each (layout, operation) as a pair of calls, each of which checks that it changed nothing."""
    from ecom_ingest_dagster.pipeline import landing as landing_mod
    from ecom_ingest_dagster.settings import Settings

    settings = {  # built once: a run has its settings before it sweeps
        (home, schema, policy): Settings.from_env({}, home=homes[home], db_schema=schemas[schema], after_commit=policy)
        for home, schema, policy in (("empty", "empty", "archive"), ("after", "history", "archive"),
                                     ("empty", "empty", "keep"), ("before", "history", "keep"))
    }

    def scan(home: str):
        found = landing_mod.scan_new_drops(homes[home] / "landing", cursor)
        if sorted(found.names) != new:
            raise RuntimeError(f"history bench: the scan of {home} found {found.names}, expected the new drops")
        return found

    def sweep(home: str, schema: str, after_commit: str):
        done = landing_mod.sweep(conn, settings[home, schema, after_commit])
        if done.finished or done.empty or done.replaced:
            raise RuntimeError(f"history bench: the sweep of {home} changed something: {done}")
        return done

    def old_check(home: str, schema: str):
        replaced = _old_replaced_check(conn, schemas[schema], homes[home] / "landing")
        if replaced:
            raise RuntimeError(f"history bench: the old check reported {len(replaced)} replaced file(s)")
        return replaced

    s0, sh = "empty", "history"
    return {
        ("after", "sensor_scan"): (lambda: scan("empty"), lambda: scan("after")),
        ("after", "startup_sweep"): (lambda: sweep("empty", s0, "archive"), lambda: sweep("after", sh, "archive")),
        ("before", "sensor_scan"): (lambda: scan("empty"), lambda: scan("before")),
        ("before", "startup_sweep"): (lambda: sweep("empty", s0, "keep"), lambda: sweep("before", sh, "keep")),
        ("before", "old_replaced_check"): (lambda: old_check("empty", s0), lambda: old_check("before", sh)),
    }


def _measure(cases: dict[tuple[str, str], Case], reps: int, log: Callable[[str], None]) -> dict:
    """Per case, ``reps`` means per call of the empty and the history call, alternating call by call."""
    calls = {}
    for key, (empty_call, history_call) in cases.items():  # warm-up (and the checks above)
        first = _paired_ms(empty_call, history_call, 1, False)
        if max(first) < 50:  # a first call is cold: size the fast cases on warm ones
            first = _paired_ms(empty_call, history_call, 5, False)
        calls[key] = max(1, min(HISTORY_MAX_CALLS, int(HISTORY_BUDGET_S * 1000.0 / max(first))))
    samples: dict[tuple[str, str], dict] = {key: {"empty": [], "history": [], "calls": calls[key]} for key in cases}
    for rep in range(reps):
        for key, (empty_call, history_call) in cases.items():
            empty_ms, history_ms = _paired_ms(empty_call, history_call, calls[key], rep % 2 == 1)
            samples[key]["empty"].append(empty_ms)
            samples[key]["history"].append(history_ms)
        log(f"[{rep + 1}/{reps}] history: " + ", ".join(
            f"{layout} {op} {s['empty'][-1]:.3f}/{s['history'][-1]:.3f} ms" for (layout, op), s in samples.items()))
    return samples


def _history_layout(homes: dict[str, Path], files: int):
    """The history files (archived for "after", in the landing directory for "before"), then the
    new drops in every landing directory, settled; returns the sensor's cursor from before them."""
    from ecom_ingest_dagster.pipeline.landing import SETTLE_NS, LandingCursor, scan_new_drops

    names = [_history_name(i) for i in range(files)]
    mtime_ns = _HISTORY_MTIME_S * 1_000_000_000
    _write_small_files(homes["after"] / "archive" / HISTORY_DAY, names, _HEADER, mtime_ns=mtime_ns)
    _write_small_files(homes["before"] / "landing", names, _HEADER, mtime_ns=mtime_ns)
    for home in homes.values():
        (home / "landing").mkdir(parents=True, exist_ok=True)
    # The cursor the sensor holds once it has taken the whole history: the newest change
    # time among the history files (a timestamp of our own could sort before some of them:
    # the kernel hands out fine- and coarse-grained file times).
    cursor = scan_new_drops(homes["before"] / "landing", LandingCursor(), limit=files + 1, settle_ns=0).cursor
    time.sleep(0.05)  # past the file clock's tick: the new drops sort after the cursor
    new = [f"new_{i:02d}.csv" for i in range(HISTORY_NEW_DROPS)]
    for home in homes.values():
        _write_small_files(home / "landing", new, _HEADER)
    time.sleep(SETTLE_NS / 1e9 + 0.2)  # the new drops are settled: a tick takes them
    return cursor, new


def _history_result(samples: dict, files: int, reps: int, setup_s: float, log: Callable[[str], None]) -> dict:
    result: dict = {"files": files, "new_drops": HISTORY_NEW_DROPS, "repetitions": reps,
                    "budget_s_per_repetition": HISTORY_BUDGET_S, "target_ratio": HISTORY_TARGET_RATIO,
                    "setup_s": round(setup_s, 2), "after": {}, "before": {}}
    for (layout, op), s in samples.items():
        empty_ms, history_ms = statistics.median(s["empty"]), statistics.median(s["history"])
        result[layout][op] = {"empty_ms": empty_ms, "history_ms": history_ms, "ratio": history_ms / empty_ms,
                              "calls_per_repetition": s["calls"],
                              "empty_samples_ms": s["empty"], "history_samples_ms": s["history"]}
    after, before = result["after"], result["before"]
    result["before_vs_after"] = {
        # at the full history: what a tick / a run's start-up cost before, over what it costs now
        "sensor_scan": before["sensor_scan"]["history_ms"] / after["sensor_scan"]["history_ms"],
        "startup": before["old_replaced_check"]["history_ms"] / after["startup_sweep"]["history_ms"],
    }
    result["flat"] = all(f["ratio"] <= HISTORY_TARGET_RATIO for f in after.values())
    log("history: after, history/empty = " + ", ".join(f"{op} {f['ratio']:.2f}x" for op, f in after.items())
        + f"; before/after at {files:,}: scan {result['before_vs_after']['sensor_scan']:.0f}x, "
        f"start-up {result['before_vs_after']['startup']:.0f}x")
    return result


def _ms(value: float) -> str:
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _history_markdown(h: dict) -> list[str]:
    n = f"{h['files']:,}"
    rows = (
        ("after", "sensor_scan", "**after** (archive): a sensor tick's scan"),
        ("after", "startup_sweep", "**after** (archive): a run's start-up sweep"),
        ("before", "sensor_scan", "before (history in landing, `keep`): a sensor tick's scan"),
        ("before", "old_replaced_check", "before: a run's start-up (the old whole-ledger replaced-file check)"),
        ("before", "startup_sweep", "today's sweep under `after_commit=keep` (history in landing)"),
    )
    lines = [
        f"### Landing history: {n} files, {h['new_drops']} new drops present, medians of {h['repetitions']} "
        "repetitions (empty and history calls alternating)", "",
        f"| operation | empty history | {n} files of history | history/empty | calls per repetition |",
        "|---|---|---|---|---|",
    ]
    for layout, op, label in rows:
        f = h[layout][op]
        lines.append(f"| {label} | {_ms(f['empty_ms'])} ms | {_ms(f['history_ms'])} ms | {_ratio(f['ratio'])}× "
                     f"| {f['calls_per_repetition']:,} |")
    b = h["before_vs_after"]
    lines += [
        "", f"At {n} files, before/after: sensor tick {_ratio(b['sensor_scan'])}×, run start-up {_ratio(b['startup'])}×. "
        f"Flat (after, history/empty ≤ {h['target_ratio']:.2f}×): {'yes' if h['flat'] else 'NO'}.", "",
    ]
    return lines



def markdown(results: dict) -> list[str]:
    return _history_markdown(results["history"]) if "history" in results else []
