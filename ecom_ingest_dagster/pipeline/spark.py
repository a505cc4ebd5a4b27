"""The Spark session a run works with, configured from the settings.

Start-up is the expensive part (a JVM, seconds), so a run builds one session and every
query of the run shares it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from ecom_ingest_dagster.settings import Settings


FILE_SOURCE_COMPACT_INTERVAL = 1_000
# What a run logs once its session is up (the bench's cold-start breakdown reads it back).
SPARK_READY_MESSAGE = "Spark session ready in {seconds:.2f} s"


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
    address = driver_address_conf(settings)
    if settings.spark_local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    else:
        # What the JVM binds to when nothing else says (its web UI, for one): the driver's
        # own address, not whatever an imported library left in the environment. Not the
        # bind address: a wildcard (0.0.0.0) there cost ~10 s of the session's start in a
        # container whose DNS forwards to no one (a look-up that times out).
        os.environ["SPARK_LOCAL_IP"] = address["spark.driver.host"]
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
        # Spark packs a batch's files into tasks counting each as 4 MiB more than its size
        # (the cost of opening it): 2,000 drops of 3 KB became 63 tasks, each with its own
        # connection and transaction. Our tasks open a small file for far less than that.
        .config("spark.sql.files.openCostInBytes", str(64 * 1024))
        # A micro-batch of more than 32 files was listed again by a Spark job of its own
        # (parallel partition discovery): 8 s for 2,000 drops, before the batch began. The
        # driver lists them itself in a fraction of that.
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", str(1_000_000))
        # The file source's log is compacted every this many batches, each time rewriting
        # every file name the query has listed: at Spark's default (10), a compaction every
        # few seconds at 200 drops/s, costing more the longer the query lives
        # (query.QUERY_MAX_FILES bounds how long). A crash's restart reads at most this many
        # small delta files instead.
        .config("spark.sql.streaming.fileSource.log.compactInterval", str(FILE_SOURCE_COMPACT_INTERVAL))
    )
    for key, value in address.items():
        builder = builder.config(key, value)
    if settings.spark_driver_java_options.strip():
        # Set before the JVM starts: the launcher reads it when it builds the java command.
        builder = builder.config("spark.driver.extraJavaOptions", settings.spark_driver_java_options)
    with _stderr_to(jvm_log):
        spark = _launch(builder)
    spark.sparkContext.setLogLevel(settings.spark_log_level)
    return spark


def driver_address_conf(settings: Settings) -> dict[str, str]:
    """Where executors reach the driver: always explicit on a cluster.

    Spark would take ``SPARK_LOCAL_IP`` from the environment, and importing pandera sets it
    to 127.0.0.1 when it is unset (``pandera/external_config.py``): a driver that validates
    with Pandera would advertise loopback, and executors on other hosts would never connect
    ("Initial job has not accepted any resources"). So no library's import decides it.
    """
    conf = {}
    host = settings.spark_driver_host or (None if settings.spark_local else default_driver_host())
    if host:
        conf["spark.driver.host"] = host
    if settings.spark_driver_bind_address:
        conf["spark.driver.bindAddress"] = settings.spark_driver_bind_address
    return conf


def default_driver_host() -> str:
    """This host's address as Spark itself picks it without ``SPARK_LOCAL_IP``: what the host
    name resolves to unless that is loopback (Debian maps it to 127.0.1.1), else the first
    non-loopback IPv4 address of an interface, else the name. An address, not the name:
    another host may not resolve this one's name (a container's is its id)."""
    name = socket.gethostname()
    with contextlib.suppress(OSError, ValueError):
        resolved = socket.gethostbyname(name)
        if not ipaddress.ip_address(resolved).is_loopback:
            return resolved
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not ipaddress.ip_address(address.address).is_loopback:
                return address.address
    return name


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
