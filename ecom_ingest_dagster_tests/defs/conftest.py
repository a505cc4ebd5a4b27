"""Fixtures for the Dagster layer: the real definitions with test resources bound, and one
real `dagster dev` (webserver and daemon) for the end-to-end modules.

`dagster dev` is started once for the package (it costs seconds) and stopped with SIGINT to
its parent process, which shuts its children down cleanly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import pytest

from ecom_ingest_dagster.defs.resources import build_resources
from ecom_ingest_dagster.tools.bench.harness import stop

from ..helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
WARM_IDLE_SECONDS = 4


@pytest.fixture(scope="session")
def definitions():
    from ecom_ingest_dagster.definitions import defs

    return defs() if callable(defs) else defs


@pytest.fixture
def dagster_resources(settings, spark):
    """The resources the code location builds, pointed at the test's state and schema."""
    # The suite shares one Spark session; a run must not stop it.
    return build_resources(settings, stop_spark_after_run=False)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def dagster_dev(tmp_path_factory, database_url):
    with running_dagster_dev(tmp_path_factory.mktemp("dagster_dev"), database_url) as dev:
        yield dev


@contextlib.contextmanager
def running_dagster_dev(base: Path, database_url: str, **extra_env: str):
    """A real `dagster dev` (webserver and daemon) over a schema of its own; ``extra_env`` on top."""
    import psycopg

    from ecom_ingest_dagster.pipeline import database

    # Unique across xdist workers: each worker's temp directory names this one
    # "dagster_dev0", and two workers each starting a dagster dev (the package's modules
    # split between them) shared one schema, which the first to finish dropped under the other.
    schema = "e2e_" + uuid.uuid4().hex[:12]
    with psycopg.connect(database_url, autocommit=True) as conn:
        database.migrate(conn, schema)
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ECOM_INGEST_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "ECOM_INGEST_HOME": str(base / "state"),
        "ECOM_INGEST_LANDING_DIR": str(base / "landing"),
        "ECOM_INGEST_DATABASE_URL": database_url,
        "ECOM_INGEST_DB_SCHEMA": schema,
        "ECOM_INGEST_SPARK_MASTER": "local[2]",
        "ECOM_INGEST_SENSOR_INTERVAL_SECONDS": "2",
        # Sensor runs stay warm this long after their last batch (the default, 120 s, would
        # make every run of these tests wait two minutes before it ends).
        "ECOM_INGEST_WARM_IDLE_SECONDS": str(WARM_IDLE_SECONDS),
        # Metric assets while a warm run goes on, every second (30 s by default).
        "ECOM_INGEST_WARM_PROGRESS_SECONDS": "1",
        **extra_env,
    }
    log = open(base / "dagster_dev.log", "w")
    # As a user starts it: scripts/dev (its terminal is what the tests read).
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "dev")], cwd=ROOT,
        env={**env, "DAGSTER_HOST": "127.0.0.1", "DAGSTER_PORT": str(port), "ECOM_INGEST_PYTHON": sys.executable},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def serving():
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return process.poll() is not None and pytest.fail(f"dagster dev exited: {(base / 'dagster_dev.log').read_text()[-3000:]}")

    try:
        wait_for(serving, 120, "the Dagster webserver")
        yield {"url": url, "home": home, "landing": base / "landing", "log": base / "dagster_dev.log", "schema": schema,
               "env": env}
    finally:
        stop(process)  # SIGINT (its children shut down cleanly), then the whole group if it hangs
        log.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
