"""A run whose code server went away is failed by Dagster's run monitoring, not left STARTED.

Real parts: ``dagster api grpc`` serving this code location (as in docker-compose.yml), a ``stream_job`` run
launched through it by ``dagster job launch`` with the shipped local instance
configuration (its launcher), and Dagster's own run-monitoring step
(``monitor_started_run``, what the daemon calls every poll) judging the run. The code
server is then killed with its runs and started again on the same port, as a container
recreate does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from ecom_ingest_dagster_tests.defs.conftest import free_port
from ecom_ingest_dagster_tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(300)


def _start_code_server(port: int, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(BIN / "dagster"), "api", "grpc", "-h", "127.0.0.1", "-p", str(port),
             "-m", "ecom_ingest_dagster.definitions"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _serving(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=port, host="127.0.0.1").ping("")
        return True
    except Exception:
        return False


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


def _judge(instance, workspace_file: Path, run_id: str):
    """One pass of Dagster's run monitoring over this run, as the daemon makes it."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    record = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))[0]
    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace_file)])) as context:
        monitor_started_run(instance, context.create_request_context(), record, logging.getLogger("test"))
    return instance.get_run_by_id(run_id)


def test_a_run_lost_with_its_code_server_is_failed_and_a_live_one_is_not(tmp_path, database_url, db_schema):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    # `dagster job launch` hands the run to the launcher at once (no daemon to dequeue it here).
    config = (home / "dagster.yaml").read_text()
    config = (config[:config.index("run_coordinator:")]
              + "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n\n"
              + config[config.index("concurrency:"):])
    (home / "dagster.yaml").write_text(config)
    port = free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": port, "location_name": "ecom_ingest_dagster"}}]}))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ECOM_INGEST_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "ECOM_INGEST_HOME": str(tmp_path / "state"),
        "ECOM_INGEST_DATABASE_URL": database_url,
        "ECOM_INGEST_DB_SCHEMA": db_schema,
        "ECOM_INGEST_SPARK_MASTER": "local[1]",
    }
    log = tmp_path / "code_server.log"
    server = _start_code_server(port, env, log)
    try:
        wait_for(lambda: _serving(port), 120, "the code server")
        launched = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", str(workspace), "-j", "stream_job",
             "--config-json", json.dumps({"ops": {"stream_landing": {"config": {"stop_after_seconds": 120}}}})],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert launched.returncode == 0, launched.stderr[-3000:]
        os.environ["DAGSTER_HOME"] = str(home)  # the instance this process judges with
        try:
            with dg.DagsterInstance.get() as instance:
                run_id = instance.get_run_records(limit=1)[0].dagster_run.run_id
                wait_for(lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED, 120,
                         "the stream run to start")
                # Alive and served: monitoring leaves it alone.
                assert _judge(instance, workspace, run_id).status == dg.DagsterRunStatus.STARTED

                # The server and its runs die together (a recreated container); a new one
                # takes the same address and knows nothing of the run.
                _kill_group(server)
                server = _start_code_server(port, env, log)
                wait_for(lambda: _serving(port), 120, "the new code server")
                assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # nobody told Dagster
                judged = _judge(instance, workspace, run_id)
                assert judged.status == dg.DagsterRunStatus.FAILURE
                messages = [e.message for e in instance.all_logs(run_id) if e.message]
                assert any("no longer runs it" in m for m in messages), messages[-5:]
        finally:
            os.environ.pop("DAGSTER_HOME", None)
    finally:
        _kill_group(server)
        time.sleep(0.5)
