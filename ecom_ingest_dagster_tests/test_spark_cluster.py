"""The same ingest on a real Spark standalone cluster: the load runs on the executors.

A master and one worker are started from the installed pyspark on 127.0.0.1, the driver
listens on 127.0.0.2 only (``ECOM_INGEST_SPARK_DRIVER_HOST`` and ``_BIND_ADDRESS``), with no
``SPARK_LOCAL_IP`` of ours in its environment. The
suite's session-scoped ``spark`` fixture already owns this process's JVM (one
SparkContext per JVM), so the cluster's driver runs in a separate Python process: a
small script that builds the session for ``spark://127.0.0.1:<port>`` with the
project's own ``build_spark_session`` and runs ``Pipeline.ingest``.

Evidence that the load ran on the executors, not in the driver:
  * the driver's monitoring API: every task of the micro-batch stages (the scan of the
    drops and the per-file load in ``mapInPandas``) ran on an executor, none on the
    driver;
  * the master's JSON lists the application (by id) with cores granted while it ran,
    and the worker's JSON lists an executor for it;
  * the Python workers of that executor descend from the worker process this test
    started, not from the driver process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from .helpers import assert_accounting, csv_text, drop, ledger, row


def _java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),  # the cluster's start (up to 2 x STARTUP_TIMEOUT_S) and a driver (DRIVER_TIMEOUT_S)
    pytest.mark.skipif(_java() is None, reason="a Spark standalone cluster needs Java: no java on PATH and no JAVA_HOME"),
]

STARTUP_TIMEOUT_S = 60
DRIVER_TIMEOUT_S = 120
RESULT_MARKER = "ECOM_INGEST_CLUSTER_RESULT "
# The driver's own address: on loopback still (the network of this test), but not the one
# the master, the worker and the executors use.
DRIVER_HOST = "127.0.0.2"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict | list:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclasses.dataclass
class Cluster:
    master_url: str
    master_ui: str
    worker_ui: str
    worker_pid: int
    worker_dir: Path
    env: dict[str, str]


def _spark_env(tmp: Path) -> dict[str, str]:
    import pyspark

    env = dict(os.environ)
    for name in ("PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR", "SPARK_MASTER", "MASTER"):
        env.pop(name, None)
    conf_dir = tmp / "conf"  # empty: no spark-env.sh or spark-defaults.conf from elsewhere
    conf_dir.mkdir(parents=True, exist_ok=True)
    java_home = os.environ.get("JAVA_HOME") or str(Path(os.path.realpath(_java())).parent.parent)
    env.update(
        SPARK_HOME=str(Path(pyspark.__file__).parent),
        JAVA_HOME=java_home,
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_WORKER_DIR=str(tmp / "work"),
        SPARK_LOG_DIR=str(tmp / "logs"),
        SPARK_PID_DIR=str(tmp / "pids"),
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    return env


def _start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen, Path]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.out"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(Path(env["SPARK_HOME"]) / "bin" / "spark-class"), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown takes the executors too
        )
    return process, log_path


def _stop(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait_s)
            # The group may outlive its leader (an executor, a Python daemon): end it too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for(what: str, check, processes: list[tuple[subprocess.Popen, Path]]):
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for process, log_path in processes:
            if process.poll() is not None:
                pytest.fail(f"{log_path.stem} exited ({process.returncode}) before {what}:\n{_tail(log_path)}")
        with contextlib.suppress(OSError, ValueError):
            result = check()
            if result:
                return result
        time.sleep(0.25)
    logs = "\n".join(f"--- {p.stem}\n{_tail(p)}" for _, p in processes)
    pytest.fail(f"timed out after {STARTUP_TIMEOUT_S}s waiting for {what}\n{logs}")


@pytest.fixture
def standalone_cluster(tmp_path_factory):
    """A real standalone master and one worker (2 cores, 1 GiB) on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("spark_cluster")
    env = _spark_env(tmp)
    log_dir = Path(env["SPARK_LOG_DIR"])
    master_port, master_ui_port, worker_ui_port = _free_port(), _free_port(), _free_port()
    master_url = f"spark://127.0.0.1:{master_port}"
    master_ui = f"http://127.0.0.1:{master_ui_port}"
    started: list[tuple[subprocess.Popen, Path]] = []
    try:
        started.append(_start(
            "master",
            ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(master_port), "--webui-port", str(master_ui_port)],
            env, log_dir,
        ))
        _wait_for("the master's web UI", lambda: _get_json(f"{master_ui}/json/"), started)
        started.append(_start(
            "worker",
            ["org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
             "--cores", "2", "--memory", "1g", "--webui-port", str(worker_ui_port),
             "--work-dir", env["SPARK_WORKER_DIR"]],
            env, log_dir,
        ))

        def worker_registered():
            state = _get_json(f"{master_ui}/json/")
            alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
            return state.get("aliveworkers", len(alive)) >= 1 and alive

        _wait_for("the worker to register with the master", worker_registered, started)
        yield Cluster(
            master_url=master_url,
            master_ui=master_ui,
            worker_ui=f"http://127.0.0.1:{worker_ui_port}",
            worker_pid=started[1][0].pid,
            worker_dir=Path(env["SPARK_WORKER_DIR"]),
            env=env,
        )
    finally:
        for process, _ in reversed(started):
            _stop(process)


# The driver: the project's own session builder and query, for the cluster's master.
# Before stopping it collects, from its own monitoring API and a probe job, where the
# tasks ran; it prints one JSON line after RESULT_MARKER.
DRIVER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, urllib.request
    from pathlib import Path

    from ecom_ingest_dagster.settings import Settings
    from ecom_ingest_dagster.pipeline.run import Pipeline
    from ecom_ingest_dagster.pipeline.spark import build_spark_session

    args = json.loads(sys.argv[1])
    settings = Settings(
        home=Path(args["home"]), landing_dir=Path(args["landing_dir"]),
        database_url=args["database_url"], db_schema=args["db_schema"],
        spark_master=args["spark_master"],
        # Another address than the cluster's: the driver listens there only, so executors
        # that were told a loopback guess (pandera's SPARK_LOCAL_IP) could not connect.
        spark_driver_host=args["driver_host"], spark_driver_bind_address=args["driver_host"],
        # The evidence below comes from Spark's UI API; and these drops are small enough for
        # the driver to load them itself, which this test is not about.
        spark_ui=True, driver_batch_max_bytes=0,
    )
    spark_local_ip_on_import = os.environ.get("SPARK_LOCAL_IP")  # pandera's, by now
    t0 = time.perf_counter()
    spark = build_spark_session(settings, app_name=args["app_name"])
    sc = spark.sparkContext
    try:
        t1 = time.perf_counter()
        summary = Pipeline(settings, spark=spark).ingest()
        t2 = time.perf_counter()

        def get(path):
            with urllib.request.urlopen(sc.uiWebUrl + path, timeout=10) as response:
                return json.load(response)

        api = f"/api/v1/applications/{sc.applicationId}"
        executors = get(api + "/allexecutors")
        stages = []
        for stage in get(api + "/stages"):
            detail = get(f"{api}/stages/{stage['stageId']}/{stage['attemptId']}?details=true")
            stages.append({
                "name": stage["name"],
                "description": stage.get("description"),
                "input_records": stage.get("inputRecords"),
                "status": stage["status"],
                "task_executors": sorted(t["executorId"] for t in (detail.get("tasks") or {}).values()),
            })

        def ancestry(_):
            # This Python worker's process chain up to init, from /proc.
            chain, pid = [], os.getpid()
            while pid > 1:
                chain.append(pid)
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            return chain

        probe = (
            sc.parallelize(range(2), 2).map(ancestry).collect()
            if os.path.exists("/proc/self/stat") else []
        )
        with urllib.request.urlopen(args["master_ui"] + "/json/", timeout=10) as response:
            master_state = json.load(response)
        result = {
            "driver_pid": os.getpid(),
            "timings_s": {"session": t1 - t0, "ingest": t2 - t1, "warm_up": summary.warm_up_s,
                          "query": summary.elapsed_s, "evidence": time.perf_counter() - t2},
            "master": sc.master,
            "driver_host": sc.getConf().get("spark.driver.host"),
            "spark_local_ip_on_import": spark_local_ip_on_import,
            "app_id": sc.applicationId,
            "totals": summary.totals,
            "executors": [
                {"id": e["id"], "host_port": e["hostPort"], "total_tasks": e["totalTasks"],
                 "completed_tasks": e["completedTasks"], "failed_tasks": e["failedTasks"]}
                for e in executors
            ],
            "stages": stages,
            "python_worker_ancestry": probe,
            "master_state_while_running": master_state,
        }
        print(args["marker"] + json.dumps(result, default=str), flush=True)
    finally:
        spark.stop()
    """
)


def test_ingest_on_standalone_cluster_loads_on_executors(standalone_cluster, settings, db, tmp_path):
    cluster = standalone_cluster
    landing = settings.landing_dir
    frame = generate_events(240, rng=np.random.default_rng(11), invalid_rate=0.1)
    write_drop(frame.iloc[:120], landing, "cluster_0001.csv")
    write_drop(frame.iloc[120:], landing, "cluster_0002.csv")
    # Cross-file duplicates of the first 10 generated rows, and a hand-written file with
    # one valid and one invalid row.
    drop(landing, "cluster_0003.csv", csv_text(frame.iloc[:10].to_dict("records")))
    drop(landing, "cluster_0004.csv", csv_text([row(1), row(2, price="-1")]))

    app_name = f"ecom-ingest-cluster-test-{uuid.uuid4().hex[:8]}"
    args = {
        "home": str(settings.home),
        "landing_dir": str(landing),
        "database_url": settings.database_url,
        "db_schema": settings.db_schema,
        "spark_master": cluster.master_url,
        "app_name": app_name,
        "master_ui": cluster.master_ui,
        "marker": RESULT_MARKER,
        "driver_host": DRIVER_HOST,
    }
    script = tmp_path / "cluster_driver.py"
    script.write_text(DRIVER_SCRIPT)
    started = time.monotonic()
    try:
        completed = subprocess.run(
            [sys.executable, str(script), json.dumps(args)],
            # The product's environment, not the cluster daemons': no SPARK_LOCAL_IP.
            env={k: v for k, v in cluster.env.items() if k != "SPARK_LOCAL_IP"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the cluster driver did not finish in {DRIVER_TIMEOUT_S}s:\n{(exc.stderr or '')[-4000:]}")
    elapsed = time.monotonic() - started
    results = [line[len(RESULT_MARKER):] for line in completed.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    assert completed.returncode == 0 and results, (
        f"driver exit {completed.returncode}\nstdout:\n{completed.stdout[-2000:]}\nstderr:\n{completed.stderr[-6000:]}"
    )
    result = json.loads(results[-1])

    # --- the data: every valid id exactly once, the accounting holds ---------------
    valid_ids = set(frame.loc[frame["expected_reason"] == "", "event_id"]) | {row(1)["event_id"]}
    loaded_ids = [r[0] for r in db.execute("SELECT event_id::text FROM user_events")]
    assert len(loaded_ids) == len(set(loaded_ids))
    assert set(loaded_ids) == valid_ids
    files = ledger(db)
    assert set(files) == {"cluster_0001.csv", "cluster_0002.csv", "cluster_0003.csv", "cluster_0004.csv"}
    assert all(f["status"] == "ingested" for f in files.values())
    first_10_valid = int((frame.iloc[:10]["expected_reason"] == "").sum())
    assert sum(f["rows_duplicate"] for f in files.values()) == first_10_valid
    assert_accounting(db)
    totals = result["totals"]
    assert totals["total_records"] == 240 + 10 + 2
    assert totals["loaded_records"] == len(valid_ids)

    # --- it ran on the cluster, the load on its executors ----------------------------
    assert result["master"] == cluster.master_url
    # The driver advertised the configured address, though pandera's import had set
    # SPARK_LOCAL_IP to loopback in its process; the executors reached it there.
    assert result["spark_local_ip_on_import"] == "127.0.0.1"
    assert result["driver_host"] == DRIVER_HOST
    app_id = result["app_id"]
    assert app_id.startswith("app-")
    by_id = {e["id"]: e for e in result["executors"]}
    assert by_id["driver"]["total_tasks"] == 0, by_id
    cluster_executors = [e for e in result["executors"] if e["id"] != "driver"]
    assert cluster_executors and all(e["host_port"].startswith("127.0.0.1:") for e in cluster_executors)
    assert sum(e["completed_tasks"] for e in cluster_executors) > 0
    assert all(e["failed_tasks"] == 0 for e in cluster_executors)
    # The load's stages are the micro-batches' (Spark describes their jobs with the
    # query's name and batch); their scan read one record per file.
    load_stages = [
        s for s in result["stages"]
        if (s["description"] or "").startswith("ecom_ingest\n") and "batch = " in s["description"]
    ]
    assert load_stages, result["stages"]
    assert all(s["status"] == "COMPLETE" for s in load_stages)
    assert sum(s["input_records"] for s in load_stages) == len(files)
    load_executors = {e for s in load_stages for e in s["task_executors"]}
    assert load_executors and load_executors <= {e["id"] for e in cluster_executors}, load_executors

    running = {a["id"]: a for a in result["master_state_while_running"]["activeapps"]}
    assert running[app_id]["name"] == app_name and running[app_id]["cores"] > 0
    master_after = _get_json(f"{cluster.master_ui}/json/")
    assert app_id in {a["id"] for a in master_after["completedapps"] + master_after["activeapps"]}
    worker_state = _get_json(f"{cluster.worker_ui}/json/")
    assert app_id in {e["appid"] for e in worker_state["executors"] + worker_state["finishedexecutors"]}
    assert (cluster.worker_dir / app_id).is_dir()  # the worker launched the executor here

    # The Python workers are descendants of the worker process this test started, not
    # of the driver process (the same daemon forks the workers that ran the load).
    for chain in result["python_worker_ancestry"]:
        assert cluster.worker_pid in chain and result["driver_pid"] not in chain, chain
    print(f"cluster driver ran in {elapsed:.1f}s; {result['timings_s']}")
