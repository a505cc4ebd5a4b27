"""What every benchmark shares: its data, a fresh schema, our pipeline in a process of its
own (its whole process tree watched), a running stream, drops timed to their commit, and the
figures' formatting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import psutil

from ecom_ingest_dagster.pipeline.database import connection, migrate
from ecom_ingest_dagster.pipeline.measure import percentile
from ecom_ingest_dagster.tools.generator import generate_events, write_drop



@dataclasses.dataclass
class BenchConfig:
    database_url: str
    out_dir: Path
    rows: int = 1_000_000
    invalid_rate: float = 0.02
    repeat: int = 3
    jdbc: bool = True
    adbc: bool = True  # ADBC's PostgreSQL driver beside the binary-COPY ceiling, when it is installed
    latency_drops: int = 0  # continuous mode drops; 0 skips the latency benchmark
    sensor_drops: int = 0  # sensor mode drops through dagster dev; 0 skips it
    history: int = 0  # files of landing history for the flat-cost benchmark; 0 skips it
    backlog: int = 0  # 20-row drops for the backlog and cold-drop benchmarks (small.py); 0 skips them
    rates: tuple[int, ...] = ()  # drops/s into a running stream (small.sustained); empty skips it
    rate_seconds: float = 20.0  # how long each rate is held
    soak_minutes: float = 0.0  # the always-on soak (soak.py); 0 skips it
    seed: int = 42
    log: Callable[[str], None] = print


ROWS_PER_FILE = 1_000_000


def generate(data: Path, rows: int, invalid_rate: float, seed: int) -> list[Path]:
    """The benchmark's data: files of up to a million rows (a 10M run is ten files)."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(math.ceil(rows / ROWS_PER_FILE)):
        n = min(ROWS_PER_FILE, rows - i * ROWS_PER_FILE)
        files.append(write_drop(generate_events(n, rng=rng, invalid_rate=invalid_rate), data, f"bench_{i:04d}.csv"))
    return files


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fresh_schema(url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connection(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name


def drop_schema(url: str, name: str) -> None:
    with connection(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def without_password(url: str) -> tuple[str, dict[str, str]]:
    """``url`` as a libpq connection string without its password, and an environment with it.

    A command line is visible to every user of the machine (ps, /proc) and is quoted whole
    by CalledProcessError; the password goes to child processes in PGPASSWORD instead.
    """
    from psycopg import conninfo

    params = conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, "PGPASSWORD": password} if password else dict(os.environ)
    return conninfo.make_conninfo(**params), env


def copy_files(url: str, target: str, files: list[Path], *, header: bool) -> tuple[float, str]:
    """COPY the files into ``target`` the fastest way at hand; returns seconds and the tool."""
    psql = shutil.which("psql")
    options = "CSV HEADER" if header else "CSV"
    dsn, env = without_password(url)
    started = time.perf_counter()
    for path in files:
        if psql:
            subprocess.run([psql, dsn, "-v", "ON_ERROR_STOP=1", "-qc", f"\\copy {target} FROM '{path}' {options}"],
                           check=True, capture_output=True, env=env)
        else:
            with connection(url) as conn, conn.cursor() as cur:
                with cur.copy(f"COPY {target} FROM STDIN (FORMAT csv, HEADER {str(header).lower()})") as copy:
                    with open(path, "rb") as handle:
                        while block := handle.read(1 << 20):
                            copy.write(block)
    return time.perf_counter() - started, "psql \\copy" if psql else "psycopg COPY"


def count_rows(url: str, table_sql: str) -> int:
    with connection(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table_sql}").fetchone()[0]


def watch_tree(process: subprocess.Popen, interval: float = 0.2) -> tuple[int, float]:
    """Wait for ``process``; return its exit code and the peak RSS (MB) of its whole tree."""
    root = psutil.Process(process.pid)
    peak = 0.0
    while process.poll() is None:
        try:
            total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            peak = max(peak, total / 1e6)
        except psutil.Error:
            pass
        time.sleep(interval)
    return process.returncode, peak


def pipeline(url: str, files: list[Path], home: Path, *, extra_env: dict[str, str] | None = None) -> dict:
    """``ecom-ingest ingest`` over the files, in a process of its own, fresh state and schema
    (``extra_env``: settings of this run)."""
    schema = fresh_schema(url, "bench_pipe")
    landing = home / "landing"
    landing.mkdir(parents=True)
    for path in files:
        os.link(path, landing / path.name) if same_device(path, landing) else shutil.copy(path, landing)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")},
        "ECOM_INGEST_HOME": str(home), "ECOM_INGEST_LANDING_DIR": str(landing),
        "ECOM_INGEST_DATABASE_URL": url, "ECOM_INGEST_DB_SCHEMA": schema, **(extra_env or {}),
    }
    try:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        code, peak = watch_tree(process)
        wall = time.perf_counter() - started
        output = process.stdout.read()
        if code != 0:
            raise RuntimeError(f"ecom-ingest ingest failed ({code}): {output[-2000:]}")
        batches = [json.loads(line) for line in (home / "logs" / "performance_metrics.json").read_text().splitlines()]
        with connection(url) as conn:
            loaded, rejected = conn.execute(
                f'SELECT (SELECT count(*) FROM "{schema}".user_events), (SELECT count(*) FROM "{schema}".rejected_events)'
            ).fetchone()
    finally:
        drop_schema(url, schema)
    total = sum(b["total_records"] for b in batches)
    steady = sum(b["total_processing_time_ms"] for b in batches) / 1000.0
    stage_ms = {
        "read_parse": sum(b["read_parse_time_ms"] for b in batches),
        "validation": sum(b["validation_time_ms"] for b in batches),
        "dataframe_creation": sum(b["dataframe_creation_time_ms"] for b in batches),
        "db_write_wait": sum(b["db_write_time_ms"] for b in batches),
    }
    return {
        "rows": total, "loaded": loaded, "rejected": rejected, "batches": len(batches),
        "correct": loaded + rejected == total,
        "wall_s": wall, "steady_s": steady, "startup_s": wall - steady,
        "rows_per_s": total / steady, "peak_rss_mb": peak, "stage_ms": stage_ms,
        # one figure per micro-batch: at 10M (ten files) whether the rate holds as the table grows
        "batch_rows_per_s": [b["total_records"] * 1000.0 / b["total_processing_time_ms"]
                             for b in batches if b["total_processing_time_ms"]],
    }


def same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def drop_and_wait(url: str, schema: str, landing: Path, drops: int, every_s: float, timeout_s: float,
                   log: Callable[[str], None], *, first_alone: bool = False) -> list[float]:
    """Drop 20-row files at a steady pace; drop → committed (ms) for each, in drop order, from the ledger.

    ``first_alone``: the first drop is committed before the others are dropped (the first
    drop after idle pays the cold start; the trickle after it measures the warm path).
    """
    rng = np.random.default_rng(7)
    dropped: dict[str, float] = {}
    committed: dict[str, float] = {}

    def collect(conn, until: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            for name, at in conn.execute(f'SELECT file_name, extract(epoch FROM committed_at) FROM "{schema}".ingest_files'):
                committed[name] = float(at)
            time.sleep(0.05)

    with connection(url, autocommit=True) as conn:
        for i in range(drops):
            name = f"latency_{i:04d}.csv"
            write_drop(generate_events(20, rng=rng), landing, name)  # written aside, renamed in: the atomic drop
            dropped[name] = time.time()
            if first_alone and i == 0:
                collect(conn, lambda: name in committed, timeout_s)
                log(f"first drop committed after {(committed.get(name, math.nan) - dropped[name]):.1f} s")
            time.sleep(every_s)
        collect(conn, lambda: len(committed) >= drops, timeout_s)
    missing = set(dropped) - set(committed)
    if missing:
        raise RuntimeError(f"{len(missing)} drop(s) were not committed within {timeout_s:.0f} s")
    latencies = [(committed[n] - dropped[n]) * 1000.0 for n in dropped]
    log(f"latency over {drops} drops: p50 {percentile(latencies, 50):.0f} ms, p95 {percentile(latencies, 95):.0f} ms")
    return latencies


def batch_processing_ms(home: Path) -> list[float]:
    """Each micro-batch's processing time (ms) from a run's metrics log."""
    path = home / "logs" / "performance_metrics.json"
    return [json.loads(line)["total_processing_time_ms"] for line in path.read_text().splitlines()] if path.exists() else []


def start_stream(url: str, schema: str, home: Path, args: list[str], *,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``ecom-ingest stream ARGS`` in a process of its own over ``home`` (its landing directory
    inside), returned once its query runs and its first triggers found the directory empty."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")},
        "ECOM_INGEST_HOME": str(home), "ECOM_INGEST_LANDING_DIR": str(home / "landing"),
        "ECOM_INGEST_DATABASE_URL": url, "ECOM_INGEST_DB_SCHEMA": schema, **(extra_env or {}),
    }
    process = subprocess.Popen([sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "stream", *args],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # Ready when the query has started: its checkpoint metadata exists.
        deadline = time.monotonic() + 120
        while not any((home / "checkpoints").glob("ingest-*/metadata")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stream did not start: {process.stdout.read()[-2000:]}")
            time.sleep(0.2)
        time.sleep(2)  # the first triggers find an empty directory
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    """SIGINT (a clean stop between batches), then, if it hangs, kill its whole group:
    the Spark JVM and Python workers must not outlive the benchmark."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def latency_summary(latencies: list[float], **extra) -> dict:
    return {**extra, "drops": len(latencies), "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies), "samples_ms": latencies}


def fmt(value, digits=0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def times(value, digits=2) -> str:
    return f"{fmt(value, digits)}×" if value is not None else "n/a"


def verdict(flag) -> str:
    return "n/a" if flag is None else ("met" if flag else "**not met**")



# The checkout the bench runs from: `dagster dev` loads its workspace and its instance config.
REPO = Path(__file__).resolve().parents[3]


@dataclasses.dataclass(frozen=True)
class DagsterDev:
    process: subprocess.Popen
    port: int
    dagster_home: Path
    landing: Path
    schema: str


@contextlib.contextmanager
def dagster_dev(home: Path, url: str, schema: str, extra_env: dict[str, str] | None = None) -> Iterator[DagsterDev]:
    """A real ``dagster dev`` (webserver, daemon, the project's instance config) over ``home``
    and ``schema`` (migrated here), stopped with its whole process group at the end."""
    landing = home / "landing"
    dagster_home = home / "dagster_home"
    landing.mkdir(parents=True)
    dagster_home.mkdir()
    shutil.copy(REPO / "infra" / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    with connection(url, autocommit=True) as conn:
        migrate(conn, schema)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ECOM_INGEST_", "DAGSTER_"))},
        "DAGSTER_HOME": str(dagster_home), "ECOM_INGEST_HOME": str(home / "state"),
        "ECOM_INGEST_LANDING_DIR": str(landing), "ECOM_INGEST_DATABASE_URL": url,
        "ECOM_INGEST_DB_SCHEMA": schema, **(extra_env or {}),
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        import urllib.request

        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("dagster dev did not start")
                time.sleep(1)
        yield DagsterDev(process, port, dagster_home, landing, schema)
    finally:
        stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what SIGINT left behind (a run's JVM)
