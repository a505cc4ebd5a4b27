"""Resources, configured from the same ECOM_INGEST_* environment the CLI reads.

The database URL can carry a password, so it is handed to Dagster as an ``EnvVar``:
the UI and run config show the variable's name, never its value.
"""


import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
from pydantic import PrivateAttr

from ecom_ingest_dagster.pipeline import database
from ecom_ingest_dagster.tools.report import Targets
from ecom_ingest_dagster.settings import ENV_PREFIX, Settings, check_database_url


class LandingResource(dg.ConfigurableResource):
    """Where drops land and where the pipeline keeps its state."""

    landing_dir: str
    home: str
    checkpoint_dir: Optional[str] = None
    rejected_dir: Optional[str] = None
    max_files_per_trigger: Optional[int] = None
    max_bytes_per_trigger: Optional[int] = 256 * 1024 * 1024
    # The sensor leaves drops younger than this for its next tick (landing.py says why).
    settle_seconds: float = 2.0

    def settings(self, postgres: "PostgresResource", spark: "SparkResource") -> Settings:  # noqa: F821
        """The core's Settings for a run: one description of the pipeline for CLI and Dagster."""
        return Settings(
            home=Path(self.home),
            landing_dir=Path(self.landing_dir),
            database_url=postgres.database_url,
            db_schema=postgres.db_schema,
            spark_master=spark.master,
            checkpoint_root=Path(self.checkpoint_dir) if self.checkpoint_dir else None,
            rejected_dir=Path(self.rejected_dir) if self.rejected_dir else None,
            max_files_per_trigger=self.max_files_per_trigger,
            max_bytes_per_trigger=self.max_bytes_per_trigger,
        )


class PostgresResource(dg.ConfigurableResource):
    """The warehouse. Without a URL, the embedded PostgreSQL under ``home`` is used."""

    database_url: Optional[str] = None
    db_schema: str = "public"
    home: str = ".ecom_ingest"

    def url(self) -> str:
        if self.database_url:
            # A malformed URL fails here with a message that does not quote it: the
            # driver's own parse errors can hold the password, and Dagster keeps them.
            check_database_url(self.database_url)
            return self.database_url
        return database.start_embedded_postgres(Path(self.home) / "pgdata")

    @contextlib.contextmanager
    def connection(self) -> Iterator:
        with database.connection(self.url()) as conn:
            yield conn


class SparkResource(dg.ConfigurableResource):
    """One Spark session per run (JVM start-up is the expensive part), stopped after it."""

    master: str = "local[*]"
    stop_after_run: bool = True
    _session = PrivateAttr(default=None)

    def session(self, settings: Settings):
        if self._session is None:
            from ecom_ingest_dagster.pipeline.query import build_spark_session

            self._session = build_spark_session(dataclasses.replace(settings, spark_master=self.master))
        return self._session

    def teardown_after_execution(self, context) -> None:
        if self._session is not None and self.stop_after_run:
            self._session.stop()
            self._session = None


class ServiceTargetsResource(dg.ConfigurableResource):
    """The original report's requirements (section 9.1), checked after every run."""

    min_throughput_rps: float = Targets.min_throughput_rps
    max_latency_ms: float = Targets.max_latency_ms
    min_validation_rate_pct: float = Targets.min_validation_rate_pct
    max_data_loss_pct: float = Targets.max_data_loss_pct

    def targets(self) -> Targets:
        return Targets(self.min_throughput_rps, self.max_latency_ms, self.min_validation_rate_pct, self.max_data_loss_pct)


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or Settings.from_env()
    url_var = ENV_PREFIX + "DATABASE_URL"
    return {
        "landing": LandingResource(
            landing_dir=str(settings.landing_dir),
            home=str(settings.home),
            checkpoint_dir=str(settings.checkpoint_root) if settings.checkpoint_root else None,
            rejected_dir=str(settings.rejected_dir) if settings.rejected_dir else None,
            max_files_per_trigger=settings.max_files_per_trigger,
            max_bytes_per_trigger=settings.max_bytes_per_trigger,
        ),
        "postgres": PostgresResource(
            # EnvVar only when set: unset means "embedded", which needs no secret at all.
            database_url=dg.EnvVar(url_var) if os.environ.get(url_var) else None,
            db_schema=settings.db_schema,
            home=str(settings.home),
        ),
        "spark": SparkResource(master=settings.spark_master),
        "targets": ServiceTargetsResource(**dataclasses.asdict(Targets.from_env())),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
