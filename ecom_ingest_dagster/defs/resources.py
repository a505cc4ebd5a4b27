"""The one resource: overrides of the ``ECOM_INGEST_*`` settings, and the opened pipeline.

Every field is an override: left unset (None) it means "the environment's value", so a
Dagster run reads exactly the settings the CLI reads, and nothing is defaulted twice.
The database URL can carry a password, so it is handed to Dagster as an ``EnvVar``: the
UI and run config show the variable's name, never its value.
"""

import contextlib
import os
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from ecom_ingest_dagster.settings import Settings, env_name


class PipelineResource(dg.ConfigurableResource):
    """The data path's settings for this code location (unset: the environment's value)."""

    home: Optional[str] = None
    landing_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    rejected_dir: Optional[str] = None
    archive_dir: Optional[str] = None
    after_commit: Optional[str] = None
    database_url: Optional[str] = None
    db_schema: Optional[str] = None
    feed: Optional[str] = None
    feeds_dir: Optional[str] = None
    db_retry_seconds: Optional[float] = None
    spark_master: Optional[str] = None
    spark_driver_memory: Optional[str] = None
    spark_driver_host: Optional[str] = None
    spark_driver_bind_address: Optional[str] = None
    spark_driver_java_options: Optional[str] = None
    spark_log_level: Optional[str] = None
    spark_ui: Optional[bool] = None
    max_files_per_trigger: Optional[int] = None
    max_bytes_per_trigger: Optional[int] = None
    trigger_seconds: Optional[float] = None
    warm_idle_seconds: Optional[float] = None
    always_on: Optional[bool] = None
    warm_trigger_seconds: Optional[float] = None
    warm_progress_seconds: Optional[float] = None
    driver_batch_max_bytes: Optional[int] = None
    group_max_bytes: Optional[int] = None
    csv_block_bytes: Optional[int] = None
    sensor_interval_seconds: Optional[int] = None
    settle_seconds: Optional[float] = None
    sample_retention_days: Optional[float] = None
    archive_retention_days: Optional[float] = None
    target_min_throughput_rps: Optional[float] = None
    target_max_latency_ms: Optional[float] = None
    target_max_end_to_end_latency_ms: Optional[float] = None
    target_min_validation_rate_pct: Optional[float] = None
    target_max_data_loss_pct: Optional[float] = None
    # The test suite shares one Spark session across runs; a deployment stops its own.
    stop_spark_after_run: bool = True

    _pipelines = PrivateAttr(default_factory=dict)  # feed -> the run's Pipeline of that feed

    def settings(self, **overrides) -> Settings:
        """The environment's settings with this resource's fields (and ``overrides``) on top."""
        fields = {name: getattr(self, name) for name in Settings.model_fields}
        return Settings.from_env(**{**fields, **{k: v for k, v in overrides.items() if v is not None}})

    def pipeline(self, on_spark_ready=None, feed: Optional[str] = None):
        """The run's pipeline of ``feed`` (None: the resource's, user_events by default), opened
        once per feed and shared by the run's steps (one process per run); ``on_spark_ready(seconds)``
        is told when it has started Spark (the first caller's wins). Keyed by feed: a run the UI
        launches over two feeds' assets gives each step its own feed's ledger and tables."""
        settings = self.settings(feed=feed)
        if settings.feed not in self._pipelines:
            from ecom_ingest_dagster.pipeline.run import Pipeline

            # Spark's console output goes to its log file, as with the CLI: the code server's
            # and `dagster dev`'s terminal is for lines a user should read.
            self._pipelines[settings.feed] = Pipeline(settings, on_spark_ready=on_spark_ready, jvm_log=settings.spark_log)
        return self._pipelines[settings.feed]

    def teardown_after_execution(self, context) -> None:
        pipelines, self._pipelines = self._pipelines, {}
        if self.stop_spark_after_run:
            # Each is closed even when one before it fails to close.
            with contextlib.ExitStack() as closing:
                for pipeline in pipelines.values():
                    closing.callback(pipeline.close)


def build_resources(settings: Optional[Settings] = None, **fields) -> dict[str, dg.ConfigurableResource]:
    """The code location's resources; ``settings`` (tests) pins the fields it set explicitly,
    ``fields`` sets resource fields directly."""
    url_var = env_name("database_url")
    # As configured: a feed's own schema and directories are derived again from them.
    pinned = {name: settings._configured.get(name, getattr(settings, name)) for name in settings.model_fields_set} if settings else {}
    pinned = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in pinned.items()}
    if os.environ.get(url_var):
        # EnvVar only when set: unset means "embedded", which needs no secret at all.
        pinned["database_url"] = dg.EnvVar(url_var)
    return {"pipeline": PipelineResource(**{**pinned, **fields})}


@dg.definitions
def resources() -> dg.Definitions:
    # One process per run for every job, the UI's "Materialize" ones included: the Spark
    # session and the embedded PostgreSQL start once, not once per step.
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)
