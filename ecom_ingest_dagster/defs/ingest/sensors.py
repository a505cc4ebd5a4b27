"""The landing sensor: new drops become one bounded ingest run (or, always on, one run is kept alive)."""

import time

import dagster as dg

from ecom_ingest_dagster.defs.ingest.jobs import ingest_job, stream_job
from ecom_ingest_dagster.defs.resources import PipelineResource
from ecom_ingest_dagster.pipeline.landing import LandingCursor, scan_new_drops
from ecom_ingest_dagster.settings import DEFAULT_FEED, Settings

_ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
ALWAYS_ON_RETRY_AFTER_S = 30.0


def build_landing_sensor(job, *, name: str, asset_name: str, stream_job_name: str, feed: str,
                         default_status=dg.DefaultSensorStatus.RUNNING):
    """The sensor of ``feed``'s landing directory, launching ``job`` whose ingest step is
    ``asset_name``; it stands aside while the feed's stream job (``stream_job_name``) runs."""

    @dg.sensor(
        name=name,
        job=job,
        # Read when the code location loads: Dagster fixes the interval with the definition.
        minimum_interval_seconds=Settings.from_env().sensor_interval_seconds,
        default_status=default_status,
        description=f"Launches {job.name} when new *.csv, *.csv.gz or *.csv.zst drops appear in the"
                    f" {feed} landing directory.",
    )
    def landing(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
        return _evaluate(context, pipeline.settings(feed=feed), job, asset_name, stream_job_name)

    return landing


def _evaluate(context: dg.SensorEvaluationContext, settings: Settings, job, asset_name: str, stream_job_name: str):
    streaming = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=stream_job_name, statuses=_ACTIVE), limit=1
    )
    if streaming:
        # The stream run owns the checkpoint and picks the drops up itself.
        return dg.SkipReason(f"stream run {streaming[0].dagster_run.run_id} is active")
    cursor = LandingCursor.from_json(context.cursor)
    new = scan_new_drops(settings.landing_dir, cursor, settle_ns=int(settings.settle_seconds * 1e9))
    if settings.always_on:
        return _always_on(context, settings, new, job, asset_name)
    if not new.names:
        waiting = f", {new.settling} too recent: next tick" if new.settling else ""
        return dg.SkipReason(f"no new drops ({new.scanned} entries in {settings.landing_dir}{waiting})")
    from ecom_ingest_dagster.pipeline.run import Pipeline

    run = Pipeline(settings, interactive=True)  # one database check per tick, shared by both look-ups
    held = _landing_held_elsewhere(run)
    if held:
        # Leave the cursor: once the holder lets go, whatever it did not take is requested.
        return dg.SkipReason(f"{len(new.names)} new drop(s); {held}")
    context.update_cursor(new.cursor.to_json())
    # Drops a stream or CLI run already took (they stay here under ECOM_INGEST_AFTER_COMMIT=keep)
    # would only make a run that finds nothing to do.
    taken = _already_ingested(run, new.names)
    fresh = [name for name in new.names if name not in taken]
    if not fresh:
        return dg.SkipReason(f"{len(new.names)} new drop(s), every one ingested already by another run")
    # Whatever has landed goes into this one run (availableNow processes all of it);
    # the key names the newest drop, so no file set is requested twice.
    return dg.RunRequest(
        run_key=f"drops-{new.cursor.ctime_ns}-{new.names[-1]}",
        # The run stays warm: drops that land while it runs are its own, within a trigger.
        run_config={"ops": {asset_name: {"config": {"idle_seconds": settings.warm_idle_seconds}}}},
        tags={"ecom_ingest/new_files": str(len(fresh)), "ecom_ingest/newest_file": fresh[-1][:200]},
    )


landing_sensor = build_landing_sensor(ingest_job, name="landing_sensor", asset_name="ingest_landing",
                                      stream_job_name=stream_job.name, feed=DEFAULT_FEED)


def _always_on(context: dg.SensorEvaluationContext, settings: Settings, new, job, asset_name: str):
    """Keep one run of ``job`` alive: start one when none is queued or running and nothing else
    holds the landing directory (the deployment's start, a run that failed or was stopped)."""
    from ecom_ingest_dagster.pipeline.run import Pipeline

    active = context.instance.get_run_records(filters=dg.RunsFilter(job_name=job.name, statuses=_ACTIVE), limit=1)
    if active:
        context.update_cursor(new.cursor.to_json())  # the live run takes whatever lands
        return dg.SkipReason(f"always on: run {active[0].dagster_run.run_id} takes the drops as they land")
    latest = context.instance.get_run_records(filters=dg.RunsFilter(job_name=job.name), limit=1)
    if latest and _failed_soon_after_start(latest[0]):
        # A run that keeps failing at once (a wrong master, a database refusing us) is not
        # relaunched every tick; one that ran a while before it died (killed, its server
        # recreated) is replaced at once.
        waited = time.time() - latest[0].end_time
        if waited < ALWAYS_ON_RETRY_AFTER_S:
            return dg.SkipReason(f"always on: the last run failed {waited:.0f} s after it started; the next starts "
                                 f"{ALWAYS_ON_RETRY_AFTER_S:.0f} s after that")
    held = _landing_held_elsewhere(Pipeline(settings, interactive=True))
    if held:
        return dg.SkipReason(f"always on, but {held}")
    context.update_cursor(new.cursor.to_json())
    return dg.RunRequest(
        run_key=f"always-on-{time.time_ns()}",
        run_config={"ops": {asset_name: {"config": {"always_on": True}}}},
        tags={"ecom_ingest/always_on": "true", "ecom_ingest/new_files": str(len(new.names))},
    )


def _failed_soon_after_start(record) -> bool:
    if record.dagster_run.status != dg.DagsterRunStatus.FAILURE or not record.end_time:
        return False
    began = record.start_time or record.create_timestamp.timestamp()
    return record.end_time - began < ALWAYS_ON_RETRY_AFTER_S


def _already_ingested(run, names: list[str]) -> set[str]:
    """The names among ``names`` that the file ledger has (none when the database does not answer)."""
    from ecom_ingest_dagster.pipeline.database import DatabaseUnavailable

    try:
        return run.already_ingested(names)
    except DatabaseUnavailable:
        return set()


def _landing_held_elsewhere(run) -> str | None:
    """Why a new run would only be refused now (a warm run, a stream, a CLI ingest holds the
    landing directory's checkpoint lock), or None. A database that does not answer is no
    reason to stand aside: the sensor keeps requesting runs, which wait for it."""
    from ecom_ingest_dagster.pipeline.database import DatabaseUnavailable

    try:
        if run.held_elsewhere():
            return "another run holds the landing directory and takes them itself"
    except DatabaseUnavailable:
        return None
    return None
