"""The Spark session a run works with, configured from the settings.

Start-up is the expensive part (a JVM, seconds), so a run builds one session and every
query of the run shares it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from ecom_ingest_dagster.settings import Settings


def build_spark_session(settings: Settings, *, app_name: str = "ecom-ingest", ui: bool | None = None,
                        jvm_log: Path | None = None):
    """A Spark session for ``settings.spark_master`` (``local[*]`` by default).

    With ``jvm_log`` the JVM (and the Python workers it starts) write their console output
    there instead of this process's stderr: a command's own lines stay readable.
    """
    # Python workers must run this interpreter, or they start the system python3 and
    # cannot import this package.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.spark_local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    ui = settings.spark_ui if ui is None else ui
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "true" if ui else "false")
        .config("spark.sql.session.timeZone", "UTC")
        # The driver handles file names and per-file outcomes only (rows never reach it),
        # so a small heap suffices; it is the biggest part of the process tree's memory.
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        # Our tasks hold a database transaction per file; a speculative twin would only
        # block on the same rows.
        .config("spark.speculation", "false")
    )
    if settings.spark_driver_java_options.strip():
        # Set before the JVM starts: the launcher reads it when it builds the java command.
        builder = builder.config("spark.driver.extraJavaOptions", settings.spark_driver_java_options)
    with _stderr_to(jvm_log):
        spark = _launch(builder)
    spark.sparkContext.setLogLevel(settings.spark_log_level)
    return spark


@contextlib.contextmanager
def _stderr_to(path: Path | None):
    """While the JVM starts, file descriptor 2 is ``path``: the JVM inherits it for good,
    this process gets its own stderr back."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _launch(builder):
    """``getOrCreate()`` with SIGINT/SIGTERM held until the JVM is up, then honoured.

    Interrupted mid-launch, py4j leaves behind a JVM that nothing stops (and that keeps
    the caller's output open); deferring the signal lets the session stop properly.
    """
    if threading.current_thread() is not threading.main_thread():
        return builder.getOrCreate()
    requested: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: requested.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        spark = builder.getOrCreate()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if requested:
        spark.stop()
        raise KeyboardInterrupt(f"stopped (signal {requested[0]}) while Spark was starting")
    return spark
