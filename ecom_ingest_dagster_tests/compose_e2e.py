"""The Docker Compose deployment end to end, as a user runs it (``scripts/compose-e2e``).

Builds the image from infra/Dockerfile, brings the whole stack up under a project name of
its own (ports on 127.0.0.1, a random password), and drives it only from outside, as a
user would: drops written by ``ecom-ingest generate`` inside the code server's container,
the sensor and the daemon doing the rest, and the warehouse read with ``psql``. Then the
failures an operator meets: a second Spark worker, the code server recreated during a warm
run, a run's process killed, PostgreSQL restarted mid-ingest, and ``down``/``up``.

Fails loudly (exit 1, the step that failed and the services' last log lines) on any red or
stuck state, prints the timings it measured, and removes every container, network and
volume it made whatever happens (the image stays, as the build cache does).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("INGEST_IMAGE", "ecom-ingest:e2e")
BIG_ROWS = 200_000
HEALTH_TIMEOUT_S = 300
QUERYABLE_TIMEOUT_S = 240
# Run monitoring polls every 15 s and waits a minute for a code server that does not answer.
DEAD_RUN_TIMEOUT_S = 120


class E2EFailure(AssertionError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    raise E2EFailure("neither `docker compose` nor `docker-compose` is installed")


class Stack:
    """One compose project: the commands a user types, with this run's names and ports."""

    def __init__(self, project: str):
        self.project = project
        self.compose = compose_command()
        self.ui_port, self.master_ui_port = _free_port(), _free_port()
        self.password = secrets.token_hex(16)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")},
            "COMPOSE_PROJECT_NAME": project,
            "INGEST_IMAGE": IMAGE,
            "POSTGRES_PASSWORD": self.password,
            "DAGSTER_WEBSERVER_PORT": str(self.ui_port),
            "SPARK_MASTER_UI_PORT": str(self.master_ui_port),
        }
        self.timings: dict[str, float] = {}

    def command(self, *args: str) -> list[str]:
        return [*self.compose, "-f", str(ROOT / "docker-compose.yml"), "-p", self.project, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        command = self.command(*args)
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise E2EFailure(f"`{' '.join(command[len(self.compose):])}` exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def exec(self, service: str, *args: str, timeout: float = 300) -> str:
        return self.run("exec", "-T", service, *args, timeout=timeout)

    def sql(self, query: str, database: str = "ecom") -> str:
        return self.exec("postgres", "psql", "-U", "ecom", "-d", database, "-tAX", "-c", query).strip()

    def container_ids(self, service: str | None = None) -> list[str]:
        return self.run("ps", "-q", *([service] if service else [])).split()

    def health(self) -> dict[str, str]:
        states = {}
        for cid in self.container_ids():
            info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout)[0]
            name = info["Name"].lstrip("/")
            state = info["State"]
            states[name] = (state.get("Health") or {}).get("Status") or state["Status"]
        return states

    def wait_healthy(self, label: str, expect: int) -> float:
        started = time.monotonic()
        while time.monotonic() - started < HEALTH_TIMEOUT_S:
            states = self.health()
            if len(states) >= expect and all(s == "healthy" for s in states.values()):
                return self._timed(label, started)
            bad = {n: s for n, s in states.items() if s in ("unhealthy", "exited", "dead")}
            if bad:
                raise E2EFailure(f"{label}: {bad}")
            time.sleep(2)
        raise E2EFailure(f"{label}: not healthy after {HEALTH_TIMEOUT_S} s: {self.health()}")

    def _timed(self, label: str, started: float) -> float:
        self.timings[label] = round(time.monotonic() - started, 1)
        print(f"  {label}: {self.timings[label]} s", flush=True)
        return self.timings[label]

    # -- what a user looks at ----------------------------------------------------------
    @staticmethod
    def _generate_args(prefix: str, events: int, seed: int, batches: int, interval: float = 0) -> list[str]:
        return ["exec", "-T", "dagster-code", "ecom-ingest", "generate", "--events", str(events), "--batches", str(batches),
                "--interval", str(interval), "--invalid-rate", "0.02", "--seed", str(seed), "--prefix", prefix]

    def generate(self, prefix: str, events: int, seed: int, batches: int = 1) -> None:
        self.run(*self._generate_args(prefix, events, seed, batches), timeout=600)

    def popen_generate(self, prefix: str, events: int, seed: int, batches: int) -> subprocess.Popen:
        """The same drops written in the background, a second apart (to act while they land)."""
        return subprocess.Popen(self.command(*self._generate_args(prefix, events, seed, batches, interval=1)),
                                cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def files(self, prefix: str) -> dict[str, tuple[str, int]]:
        """file name -> (status, rows_total) for the drops named ``prefix*``."""
        rows = self.sql(f"SELECT file_name, status, rows_total FROM ingest_files WHERE file_name LIKE '{prefix}%'"
                        if self._has_ledger() else "SELECT 1 WHERE false")
        return {name: (status, int(total)) for name, status, total in (line.split("|") for line in rows.splitlines() if line)}

    def _has_ledger(self) -> bool:
        return self.sql("SELECT to_regclass('public.ingest_files') IS NOT NULL") == "t"

    def wait_queryable(self, label: str, prefix: str, count: int, started: float,
                       timeout: float = QUERYABLE_TIMEOUT_S) -> dict[str, tuple[str, int]]:
        while time.monotonic() - started < timeout:
            files = self.files(prefix)
            if len(files) >= count:
                if any(status != "ingested" for status, _ in files.values()):
                    raise E2EFailure(f"{label}: {files}")
                self._timed(label, started)
                return files
            time.sleep(1)
        raise E2EFailure(f"{label}: {len(self.files(prefix))} of {count} file(s) ingested after {timeout:.0f} s; "
                         f"runs: {self.runs()[:5]}")

    def runs(self) -> list[tuple[str, str, str]]:
        """(run id, job, status) of Dagster's runs, newest first."""
        rows = self.sql("SELECT run_id, pipeline_name, status FROM runs ORDER BY create_timestamp DESC", database="dagster")
        return [tuple(line.split("|")) for line in rows.splitlines() if line]

    def wait_run(self, status: str, timeout: float, job: str = "ingest_job", run_id: str | None = None) -> str:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            for rid, name, state in self.runs():
                if name == job and state == status and (run_id is None or rid == run_id):
                    return rid
            time.sleep(1)
        raise E2EFailure(f"no {job} run {run_id or ''} reached {status} in {timeout:.0f} s: {self.runs()[:5]}")

    def master_state(self) -> dict:
        out = self.exec("spark-master", "python", "-c",
                        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/json/').read().decode())")
        return json.loads(out)

    def logs(self, lines: int = 40) -> str:
        return self.run("logs", "--no-color", "--tail", str(lines), check=False, timeout=60)


def step(title: str):
    print(f"- {title}", flush=True)


def scenario(stack: Stack, build: bool) -> None:
    if build:
        step("build the image (infra/Dockerfile)")
        started = time.monotonic()
        env = {**os.environ}
        if "DOCKER_BUILDKIT" not in env and subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode:
            env["DOCKER_BUILDKIT"] = "0"
        network = ["--network", os.environ["E2E_BUILD_NETWORK"]] if os.environ.get("E2E_BUILD_NETWORK") else []
        done = subprocess.run(["docker", "build", *network, "-f", "infra/Dockerfile", "-t", IMAGE, "."],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise E2EFailure(f"docker build failed:\n{(done.stdout + done.stderr)[-4000:]}")
        stack._timed("build", started)

    step("up: six services healthy")
    started = time.monotonic()
    stack.run("up", "-d", "--no-build")
    stack.wait_healthy("up -> healthy", expect=6)
    stack._timed("up -> healthy (with the up command)", started)

    step("a small drop, through the sensor")
    started = time.monotonic()
    stack.generate("small", 20, seed=1)
    stack.wait_queryable("small drop -> queryable (first after up: cold run)", "small", 1, started)
    started = time.monotonic()
    stack.generate("warm", 20, seed=2)
    stack.wait_queryable("second small drop -> queryable (warm run)", "warm", 1, started)

    step(f"a {BIG_ROWS:,}-row drop, on the cluster's executors")
    started = time.monotonic()
    stack.generate("big", BIG_ROWS, seed=3)
    generated = time.monotonic()
    files = stack.wait_queryable(f"{BIG_ROWS:,}-row drop -> queryable", "big", 1, generated)
    stack.timings["generate 200k rows in the container"] = round(generated - started, 1)
    assert_eq(list(files.values())[0][1], BIG_ROWS, "rows in the big drop's ledger row")
    loaded_in = stack.sql("SELECT b.metrics->>'loaded_in' FROM ingest_batches b JOIN ingest_files f "
                          "USING (stream_id, batch_id) WHERE f.file_name LIKE 'big%'")
    assert_eq(loaded_in, "executors", "where the big drop's batch was loaded")
    state = stack.master_state()
    apps = state["activeapps"] + state["completedapps"]
    if not any(app.get("cores", 0) > 0 or app.get("duration", 0) > 0 for app in apps):
        raise E2EFailure(f"the master lists no application that ran: {apps}")

    step("scale out: two Spark workers")
    started = time.monotonic()
    stack.run("up", "-d", "--no-build", "--no-recreate", "--scale", "spark-worker=2")
    stack.wait_healthy("second worker healthy", expect=7)
    stack._timed("scale to two workers (with the up command)", started)
    deadline = time.monotonic() + 60
    while stack.master_state().get("aliveworkers", 0) < 2:
        if time.monotonic() > deadline:
            raise E2EFailure(f"the master does not list two alive workers: {stack.master_state().get('workers')}")
        time.sleep(2)

    step("recreate dagster-code during a warm run")
    warm_run = _active_ingest_run(stack, "before-recreate", seed=4)
    started = time.monotonic()
    stack.run("up", "-d", "--no-build", "--no-deps", "--force-recreate", "dagster-code")
    _wait_failed(stack, warm_run, started, "recreated code server's run failed")
    stack.wait_healthy("code server healthy again", expect=7)
    started = time.monotonic()
    stack.generate("after-recreate", 20, seed=5)
    stack.wait_queryable("drop after the recreate -> queryable", "after-recreate", 1, started)

    step("kill -9 a run's process")
    warm_run = _active_ingest_run(stack, "before-kill", seed=6)
    stack.exec("dagster-code", "pkill", "-KILL", "-f", "multiprocessing-fork")
    started = time.monotonic()
    _wait_failed(stack, warm_run, started, "killed run failed")
    started = time.monotonic()
    stack.generate("after-kill", 20, seed=7)
    stack.wait_queryable("drop after the kill -> queryable", "after-kill", 1, started)

    step(f"restart PostgreSQL while two {BIG_ROWS:,}-row drops land and load")
    started = time.monotonic()
    producer = stack.popen_generate("outage", BIG_ROWS, seed=8, batches=2)
    stack.wait_queryable("first outage drop -> queryable", "outage", 1, started)
    stack.run("restart", "postgres", timeout=120)  # the second drop is being written or loaded
    if producer.wait(timeout=600):
        raise E2EFailure(f"the generator failed: {producer.stderr.read()[-2000:]}")
    stack.wait_queryable("drops across the restart -> queryable", "outage", 2, started, timeout=QUERYABLE_TIMEOUT_S + 60)
    _assert_every_row_once(stack)

    step("down, then up: the data is kept")
    before = stack.sql("SELECT count(*) FROM user_events")
    # A warm run is in progress when the stack goes down: it dies, and must not stay STARTED
    # after up. (Queued runs survive in the queue and start after up, as they should.)
    active = [rid for rid, _, state in stack.runs() if state in ("STARTED", "STARTING")]
    started = time.monotonic()
    stack.run("down", timeout=300)
    stack.run("up", "-d", "--no-build")
    stack.wait_healthy("down/up -> healthy", expect=6)
    healthy = time.monotonic()
    assert_eq(stack.sql("SELECT count(*) FROM user_events"), before, "rows after down/up")
    started = time.monotonic()
    stack.generate("after-up", 20, seed=9)
    stack.wait_queryable("drop after down/up -> queryable", "after-up", 1, started)
    _assert_every_row_once(stack)
    for run_id in active:
        _wait_failed(stack, run_id, healthy, "a run that died at down failed (after healthy)", allow_success=True)
    running = [r for r in stack.runs() if r[2] in ("STARTED", "STARTING")]
    if len(running) > 1:  # the warm run that took the last drop, at most
        raise E2EFailure(f"runs left running: {running}")


def _active_ingest_run(stack: Stack, prefix: str, seed: int) -> str:
    """A warm sensor run that has just taken a drop (so it holds the landing directory)."""
    started = time.monotonic()
    stack.generate(prefix, 20, seed=seed)
    stack.wait_queryable(f"{prefix} drop -> queryable", prefix, 1, started)
    return stack.wait_run("STARTED", 30)


def _wait_failed(stack: Stack, run_id: str, started: float, label: str, allow_success: bool = False) -> None:
    while time.monotonic() - started < DEAD_RUN_TIMEOUT_S:
        status = {rid: state for rid, _, state in stack.runs()}.get(run_id)
        if status in ("FAILURE", "CANCELED") or (allow_success and status == "SUCCESS"):
            stack._timed(label, started)
            return
        if status == "SUCCESS":
            raise E2EFailure(f"{label}: the run {run_id} ended SUCCESS, it should have died")
        time.sleep(2)
    raise E2EFailure(f"{label}: run {run_id} still {status} after {DEAD_RUN_TIMEOUT_S} s")


def _assert_every_row_once(stack: Stack) -> None:
    totals = stack.sql(
        "SELECT (SELECT count(*) FROM user_events), (SELECT count(DISTINCT event_id) FROM user_events), "
        "(SELECT coalesce(sum(rows_loaded), 0) FROM ingest_files), "
        "(SELECT count(*) FROM ingest_files WHERE rows_total <> rows_loaded + rows_duplicate + rows_rejected)"
    ).split("|")
    rows, distinct, loaded, unbalanced = (int(x) for x in totals)
    if not (rows == distinct == loaded and unbalanced == 0):
        raise E2EFailure(f"rows {rows}, distinct ids {distinct}, ledger says loaded {loaded}, unbalanced files {unbalanced}")


def assert_eq(got, want, what: str) -> None:
    if str(got) != str(want):
        raise E2EFailure(f"{what}: {got!r}, expected {want!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help=f"use the image {IMAGE} as it is")
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards (to look at it)")
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "compose_e2e.json")
    args = parser.parse_args(argv)
    project = "ecomingeste2e" + secrets.token_hex(3)
    stack = Stack(project)
    print(f"compose end-to-end: project {project}, UI http://127.0.0.1:{stack.ui_port}", flush=True)
    started = time.monotonic()
    failure = None
    try:
        scenario(stack, build=not args.no_build)
    except (E2EFailure, subprocess.TimeoutExpired) as error:
        failure = error
        print(f"FAILED: {error}\n--- last log lines\n{stack.logs()}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            stack.run("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
            left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                                  capture_output=True, text=True).stdout.split()
            if left:
                subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
    stack.timings["total"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"passed": failure is None, "timings_s": stack.timings,
                                    "failure": str(failure) if failure else None}, indent=2))
    print("timings (s): " + ", ".join(f"{k} {v}" for k, v in stack.timings.items()))
    print(f"compose end-to-end: {'1 passed, 0 failed' if failure is None else '0 passed, 1 failed'} "
          f"in {stack.timings['total']} s (written to {args.out})")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
