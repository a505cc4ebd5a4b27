"""The soak: an always-on deployment for N minutes at one 20-row drop a second.

As a user runs it: a real ``dagster dev`` (webserver, daemon, the project's instance config)
with ``ECOM_INGEST_ALWAYS_ON``, over the embedded PostgreSQL (pgserver, the default a fresh
machine gets). A third of the way in PostgreSQL restarts (every session cut); two thirds in the
run's process is killed with SIGKILL (run monitoring fails it, the sensor or a retry starts
another). Throughout, the memory of the whole ``dagster dev`` tree and of the ingest run's own
tree is sampled; drop → committed is judged per window (10 minutes, or a sixth of a shorter
soak); at the end every drop must be in the ledger once and every row loaded or rejected once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import psycopg

from ecom_ingest_dagster.pipeline.measure import percentile
from ecom_ingest_dagster.tools.bench.harness import BenchConfig, dagster_dev, fmt, median, verdict
from ecom_ingest_dagster.tools.bench.private_postgres import PrivatePostgres
from ecom_ingest_dagster.tools.bench.small import unique_drops

SOAK_TARGET_RSS_GROWTH = 0.10  # the tree's RSS after the first window, at most this much above it
SOAK_TARGET_P95_DRIFT = 0.20  # the last window's p95 within this of the first window's
SOAK_WINDOW_S = 600.0
SAMPLE_EVERY_S = 5.0
ROWS_PER_DROP = 20


def soak(config: BenchConfig, work: Path) -> dict:
    duration_s = config.soak_minutes * 60.0
    window_s = min(SOAK_WINDOW_S, duration_s / 6)
    home = work / "soak"
    staged = unique_drops(home / "staged", int(duration_s) + 2, rows=ROWS_PER_DROP)
    postgres = PrivatePostgres(home / "pgdata")
    schema = "soak"
    events: dict[str, float] = {}
    try:
        with dagster_dev(home, postgres.url, schema, {"ECOM_INGEST_ALWAYS_ON": "true"}) as dev:
            ledger = _LedgerWatch(postgres.url, schema)
            memory = _MemoryWatch(dev.process.pid)
            with ledger, memory:
                first = _drop(staged, dev.landing, "soak_warmup.csv")
                ledger.wait_for({"soak_warmup.csv": first}, timeout_s=300)
                config.log(f"soak: the always-on run took its first drop {ledger.committed['soak_warmup.csv'] - first:.1f} s "
                           f"after it landed; {config.soak_minutes:g} min at one drop a second from now")
                dropped = _drop_for(staged, dev.landing, duration_s, events, postgres, dev.process.pid, config.log)
                ledger.wait_for(dropped, timeout_s=600)
                samples = memory.samples
            committed = dict(ledger.committed)
            accounting = _accounting(postgres.url, schema, [*dropped, "soak_warmup.csv"])
    finally:
        with contextlib.suppress(Exception):
            postgres.stop()
    return _summary(dropped, committed, samples, events, accounting, window_s, duration_s)


def _drop(staged: list[Path], landing: Path, name: str) -> float:
    os.replace(staged.pop(0), landing / name)  # written aside, renamed in: the atomic drop
    return time.time()


def _drop_for(staged: list[Path], landing: Path, duration_s: float, events: dict[str, float],
              postgres: PrivatePostgres, dev_pid: int, log) -> dict[str, float]:
    """One drop a second for ``duration_s``; PostgreSQL restarted at a third, the run killed at two thirds."""
    dropped: dict[str, float] = {}
    started = time.monotonic()
    disruptions = [(duration_s / 3, "postgres_restart"), (2 * duration_s / 3, "run_killed")]
    i = 0
    while (elapsed := time.monotonic() - started) < duration_s and staged:
        if disruptions and elapsed >= disruptions[0][0]:
            _, what = disruptions.pop(0)
            threading.Thread(target=_disrupt, args=(what, postgres, dev_pid, events, log), daemon=True).start()
        due = started + i
        if (now := time.monotonic()) < due:
            time.sleep(due - now)
        name = f"soak_{i:06d}.csv"
        dropped[name] = _drop(staged, landing, name)
        i += 1
        if i % 600 == 0:
            log(f"soak: {i:,} drops in {elapsed / 60:.0f} min")
    return dropped


def _disrupt(what: str, postgres: PrivatePostgres, dev_pid: int, events: dict[str, float], log) -> None:
    """The disruption, recorded in ``events`` when it happened (not when it was due)."""
    if what == "postgres_restart":
        events[what] = time.time()
        postgres.restart()
        log("soak: PostgreSQL restarted")
        return
    # Only this soak's runs: the dagster dev it started is their ancestor (a test or a
    # user's own dagster dev on the same machine is not ours to kill).
    with contextlib.suppress(psutil.Error):
        runs = [p for p in psutil.Process(dev_pid).children(recursive=True) if _is_run(p)]
        for process in runs:
            with contextlib.suppress(psutil.Error):
                os.kill(process.pid, signal.SIGKILL)
        if runs:
            events[what] = time.time()
        log(f"soak: killed {len(runs)} run process(es) with SIGKILL")


class _Watch:
    """A loop on a thread of its own for the length of a ``with`` block (``_loop`` returns
    when ``_stop`` is set)."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        raise NotImplementedError


class _LedgerWatch(_Watch):
    """Commit times of the ledger's files, polled on a thread (through PostgreSQL's restart)."""

    def __init__(self, url: str, schema: str):
        super().__init__()
        self.url, self.schema = url, schema
        self.committed: dict[str, float] = {}

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn:
                    while not self._stop.wait(0.25):
                        rows = conn.execute(f'SELECT file_name, extract(epoch FROM committed_at) FROM "{self.schema}".ingest_files'
                                            " WHERE committed_at > to_timestamp(%s) - interval '5 seconds'",
                                            (max(self.committed.values(), default=0.0),)).fetchall()
                        self.committed.update({name: float(at) for name, at in rows})
            except psycopg.Error:
                self._stop.wait(1.0)  # down (the restart): try again

    def wait_for(self, dropped: dict[str, float], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(name not in self.committed for name in dropped):
            if time.monotonic() > deadline:
                missing = sum(name not in self.committed for name in dropped)
                raise RuntimeError(f"soak: {missing} drop(s) not committed {timeout_s:.0f} s after the last drop")
            time.sleep(0.5)


class _MemoryWatch(_Watch):
    """RSS of the whole ``dagster dev`` tree and of the ingest run's tree, every few seconds."""

    def __init__(self, root_pid: int):
        super().__init__()
        self.root = psutil.Process(root_pid)
        self.samples: list[tuple[float, float, float]] = []  # (time, tree MB, run tree MB)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            if (sample := self._one()) is not None:
                self.samples.append(sample)

    def _one(self) -> tuple[float, float, float] | None:
        """One sample; None when the tree could not be walked (a process came or went
        mid-walk): a missing sample, not a zero that would read as memory freed."""
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None
        runs = {p.pid for p in processes if _is_run(p)}
        tree = run = 0
        for p in processes:
            with contextlib.suppress(psutil.Error):  # gone since the walk: it holds nothing now
                rss = p.memory_info().rss
                tree += rss
                if p.pid in runs or any(a.pid in runs for a in p.parents()):
                    run += rss
        return time.time(), tree / 1e6, run / 1e6


def _is_run(process: psutil.Process) -> bool:
    """A Dagster run worker: the code server (``dagster api grpc``) starts each run in a
    process of its own through multiprocessing's spawn."""
    with contextlib.suppress(psutil.Error):
        parent = process.parent()
        return "multiprocessing.spawn" in " ".join(process.cmdline()) and parent is not None \
            and "api grpc" in " ".join(parent.cmdline())
    return False


def _accounting(url: str, schema: str, names: list[str]) -> dict:
    """Every drop once in the ledger; every row of it loaded, rejected or counted a duplicate, once."""
    with psycopg.connect(url, autocommit=True) as conn:
        files, rows_total, ledger_loaded, ledger_rejected, duplicates = conn.execute(
            f'SELECT count(*), sum(rows_total), sum(rows_loaded), sum(rows_rejected), sum(rows_duplicate)'
            f' FROM "{schema}".ingest_files WHERE file_name = ANY(%s)', (names,)).fetchone()
        loaded, rejected, rejected_twice = conn.execute(
            f'SELECT (SELECT count(*) FROM "{schema}".user_events), (SELECT count(*) FROM "{schema}".rejected_events),'
            f' (SELECT count(*) FROM (SELECT 1 FROM "{schema}".rejected_events GROUP BY source_file, record_number'
            "  HAVING count(*) > 1) d)").fetchone()
    rows = len(names) * ROWS_PER_DROP
    ledger = {"loaded": int(ledger_loaded or 0), "rejected": int(ledger_rejected or 0), "duplicate": int(duplicates or 0)}
    return {"drops": len(names), "files_in_ledger": files, "rows_dropped": rows, "rows_in_ledger": int(rows_total or 0),
            "rows_loaded": loaded, "rows_rejected": rejected, "rows_duplicate": ledger["duplicate"],
            "rejected_twice": rejected_twice,
            "every_event_once": files == len(names) and rows_total == rows and loaded == ledger["loaded"]
            and rejected == ledger["rejected"] and loaded + rejected + ledger["duplicate"] == rows and rejected_twice == 0}


def _summary(dropped: dict[str, float], committed: dict[str, float], samples: list[tuple[float, float, float]],
             events: dict[str, float], accounting: dict, window_s: float, duration_s: float) -> dict:
    start = min(dropped.values())
    end = max(dropped.values())
    windows = []
    # Whole windows; the last also holds what is left over (the final drop lands at the very end).
    count = max(1, int((end - start) // window_s))
    for k in range(count):
        lo, hi = start + k * window_s, start + (k + 1) * window_s
        last = k == count - 1

        def inside(at: float) -> bool:
            return lo <= at < hi or (last and at >= lo)

        latencies = [(committed[n] - at) * 1000.0 for n, at in dropped.items() if inside(at) and n in committed]
        tree = [s[1] for s in samples if inside(s[0])]
        run = [s[2] for s in samples if inside(s[0]) and s[2] > 0]
        windows.append({
            "from_min": k * window_s / 60, "to_min": ((end - start) if last else (k + 1) * window_s) / 60,
            "drops": len(latencies),
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "max_ms": max(latencies, default=None),
            "tree_rss_mb": median(tree), "tree_rss_max_mb": max(tree, default=None), "run_rss_mb": median(run),
            "events": [what for what, at in events.items() if lo <= at < hi],
        })
    first, last = windows[0], windows[-1]
    later = [w["tree_rss_mb"] for w in windows[1:] if w["tree_rss_mb"] is not None]
    growth = (max(later) / first["tree_rss_mb"] - 1) if later and first["tree_rss_mb"] else None
    drift = (last["p95_ms"] / first["p95_ms"] - 1) if first["p95_ms"] and last["p95_ms"] else None
    recovery = {what: _first_commit_after(at, dropped, committed) for what, at in events.items()}
    return {
        "minutes": duration_s / 60, "window_minutes": window_s / 60, "windows": windows, "recovery": recovery,
        "accounting": accounting,
        "rss_growth": growth, "rss_target": SOAK_TARGET_RSS_GROWTH,
        "rss_met": None if growth is None else growth <= SOAK_TARGET_RSS_GROWTH,
        "p95_drift": drift, "p95_target": SOAK_TARGET_P95_DRIFT,
        "p95_met": None if drift is None else abs(drift) <= SOAK_TARGET_P95_DRIFT,
        "met": accounting["every_event_once"] and growth is not None and growth <= SOAK_TARGET_RSS_GROWTH
        and drift is not None and abs(drift) <= SOAK_TARGET_P95_DRIFT,
    }


def _first_commit_after(at: float, dropped: dict[str, float], committed: dict[str, float]) -> dict:
    """For a disruption at ``at``: the slowest drop committed around it and when drops flowed again."""
    after = sorted((t, n) for n, t in dropped.items() if t >= at)
    hit = [(committed[n] - t) for t, n in after[:120] if n in committed]
    first = after[0][1] if after else None
    return {"first_drop_after_s": (committed[first] - dropped[first]) if first in committed else None,
            "worst_of_next_120_s": max(hit, default=None)}


def markdown(results: dict) -> list[str]:
    if "soak" not in results:
        return []
    s = results["soak"]
    a = s["accounting"]
    lines = [f"### Soak: {s['minutes']:g} minutes, one 20-row drop a second, always on (real `dagster dev`, "
             "embedded PostgreSQL)", "",
             "| minutes | drops | p50 | p95 | max | `dagster dev` tree RSS (median / max) | run tree RSS | events |",
             "|---|---|---|---|---|---|---|---|"]
    for w in s["windows"]:
        lines.append(f"| {w['from_min']:.4g}–{w['to_min']:.4g} | {w['drops']} | {fmt(w['p50_ms'])} ms | {fmt(w['p95_ms'])} ms | "
                     f"{fmt(w['max_ms'])} ms | {fmt(w['tree_rss_mb'])} / {fmt(w['tree_rss_max_mb'])} MB | "
                     f"{fmt(w['run_rss_mb'])} MB | {', '.join(w['events']).replace('_', ' ')} |")
    lines.append("")
    for what, r in s["recovery"].items():
        lines.append(f"- {what.replace('_', ' ')}: the next drop committed after {fmt(r['first_drop_after_s'], 1)} s; "
                     f"the slowest of the next two minutes {fmt(r['worst_of_next_120_s'], 1)} s.")
    growth = "n/a" if s["rss_growth"] is None else f"{s['rss_growth']:+.1%}"
    drift = "n/a" if s["p95_drift"] is None else f"{s['p95_drift']:+.1%}"
    lines += [
        f"- Tree RSS after the first window, highest window median against the first: **{growth}** "
        f"(target ≤ +{s['rss_target']:.0%}: {verdict(s['rss_met'])}).",
        f"- Last window's p95 against the first's: **{drift}** (target within {s['p95_target']:.0%}: "
        f"{verdict(s['p95_met'])}).",
        f"- {a['drops']:,} drops, {a['rows_dropped']:,} rows: {a['files_in_ledger']:,} files in the ledger "
        f"({a['rows_in_ledger']:,} rows), {a['rows_loaded']:,} loaded + {a['rows_rejected']:,} rejected + "
        f"{a['rows_duplicate']:,} duplicates, "
        f"{a['rejected_twice']} rejected twice: every event once: **{'yes' if a['every_event_once'] else 'NO'}**.", "",
    ]
    return lines
