"""The instance's run launcher: Dagster's default one, with a health check for run monitoring.

The default launcher starts each run as a child process of the code server that serves
the job. When that server goes away (its container recreated, ``docker compose down``,
``dagster dev`` restarted) its runs die with it, and nothing reports them: they stay
STARTED for good, and the landing directory's run limit of one then queues every later run
behind them. Dagster's run monitoring would fail them, but only for a launcher that can
say whether a run's worker is alive, and the default one cannot.

This one can: the code server knows which runs it is executing (``GetCurrentRuns``), and a
server started anew knows none of the old ones. So the monitoring daemon asks the server
that launched a run (its address is on the run's tags) and fails the run when the server
answers without it (a ``dagster api grpc`` server: the ``dagster code-server start`` proxy
cannot list its runs); run retries then relaunch it, and the file ledger keeps every drop
exactly once across the two. Chosen over ``DockerRunLauncher`` (a container per run):
the Spark driver lives in the run, so a container per run adds its start to every run and
needs the Docker socket inside the deployment, for runs that are cheap to retry anyway.
"""

from __future__ import annotations

import time

from dagster import DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._serdes import deserialize_value

# A server that does not answer may be restarting: a run is failed only once its server
# has not answered for this long (its runs cannot outlive it: they are its children).
UNREACHABLE_GRACE_SECONDS = 60.0


class MonitoredRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose runs run monitoring can fail when their code server lost them."""

    def __init__(self, inst_data=None):
        super().__init__(inst_data=inst_data)
        self._unreachable_since: dict[str, float] = {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        from dagster._grpc.types import GetCurrentRunsResult

        client = self._get_grpc_client_for_termination(run.run_id)
        if client is None:
            # Not launched through a code server (an in-process `dagster job execute`):
            # nothing to ask, as with the default launcher.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched by a code server")
        where = f"{client.host}:{client.port}" if client.port else str(client.socket)
        try:
            current = deserialize_value(client.get_current_runs(), GetCurrentRunsResult).current_runs
        except Exception as error:  # grpc's errors: the server is down or restarting
            if client._is_unimplemented_error(error):
                # A `dagster code-server start` proxy does not list its runs (its child
                # server does): nothing to judge by, as with the default launcher.
                return CheckRunHealthResult(
                    WorkerStatus.RUNNING, f"{where} cannot list its runs: serve the code location with `dagster api grpc`"
                )
            since = self._unreachable_since.setdefault(run.run_id, time.monotonic())
            waited = time.monotonic() - since
            if waited < UNREACHABLE_GRACE_SECONDS:
                return CheckRunHealthResult(WorkerStatus.RUNNING, f"code server {where} does not answer ({waited:.0f} s)")
            del self._unreachable_since[run.run_id]  # judged: the daemon keeps no state for it
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"the code server that launched the run ({where}) has not answered for {waited:.0f} s: "
                f"{type(error).__name__}",
            )
        self._unreachable_since.pop(run.run_id, None)
        if run.run_id in current:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the code server at {where} no longer runs it: the server restarted, or the run's process died",
        )
