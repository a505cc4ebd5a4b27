"""Every knob the platform reads, in one typed object loaded from ``ECOM_INGEST_*``.

This is the one source of configuration: the CLI's flags, the Dagster resources' fields
and run config are *overrides* of it (unset means "the environment's value"), applied
with ``Settings.with_overrides``, so nothing can be dropped or defaulted differently on
the way. Each field's description is its documentation: the README's configuration
table is generated from them (``settings_table``) and a test keeps the two equal.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ECOM_INGEST_"
DEFAULT_FEED = "user_events"
# The settings a feed other than user_events derives its own from (settings._resolve).
FEED_DERIVED = ("db_schema", "landing_dir", "checkpoint_dir", "rejected_dir", "archive_dir")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_JVM_MEMORY = re.compile(r"^[0-9]+([kmgtp]b?)?$", re.IGNORECASE)
KiB = 1024
MiB = 1024 * KiB


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable (never a secret's value)."""


@dataclasses.dataclass(frozen=True)
class Targets:
    """The original report's requirements (section 9.1), judged by ``pipeline.checks``.

    No defaults here: they are the ``target_*`` settings' (``Settings.targets``), one source.
    """

    min_throughput_rps: float
    max_latency_ms: float
    min_validation_rate_pct: float
    max_data_loss_pct: float
    max_end_to_end_latency_ms: float


class Settings(BaseSettings):
    """The platform's configuration. Paths left unset are placed under ``home``."""

    _configured: dict = PrivateAttr(default_factory=dict)
    _landing_as_given: bool = PrivateAttr(False)  # with_landing: kept through with_overrides
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", env_ignore_empty=True, validate_default=True
    )

    # -- where things are --------------------------------------------------------------
    home: Path = Field(
        Path("./.ecom_ingest"), description="state: checkpoints, logs, rejected files, the embedded database"
    )
    landing_dir: Optional[Path] = Field(None, description="where producers drop CSV files (default `$ECOM_INGEST_HOME/landing`)")
    checkpoint_dir: Optional[Path] = Field(
        None, description="streaming checkpoints, must be reachable by the driver (default `$ECOM_INGEST_HOME/checkpoints`)"
    )
    rejected_dir: Optional[Path] = Field(
        None, description="files rejected whole, each with a `.reason.json` (default `$ECOM_INGEST_HOME/rejected`)"
    )
    archive_dir: Optional[Path] = Field(
        None, description="ingested drops, once committed, by commit date (default `$ECOM_INGEST_HOME/archive`)"
    )
    after_commit: Literal["archive", "keep", "delete"] = Field(
        "archive",
        description="what happens to an ingested drop once its rows are committed: `archive` (moved byte for byte to"
        " `archive_dir/YYYY-MM-DD/`), `keep` (left in the landing directory) or `delete`",
    )
    # -- the warehouse -----------------------------------------------------------------
    database_url: Optional[str] = Field(
        None, repr=False,
        description="`postgresql://user:password@host:port/db`; unset: an embedded PostgreSQL under `$ECOM_INGEST_HOME/pgdata`",
    )
    db_schema: str = Field(
        "public", description="schema of the tables (a plain identifier); a feed other than `user_events` gets one of"
        " its own: the feed's name, or `<db_schema>_<feed>` when this is set"
    )
    # -- feeds ---------------------------------------------------------------------------
    feed: str = Field(
        DEFAULT_FEED,
        description="the feed to ingest: its contract is `<feeds_dir>/<feed>.yaml`, or one shipped with the package"
        " (`user_events`); its landing, checkpoint, rejected and archive directories are `$ECOM_INGEST_HOME/<feed>/...`"
        " unless it is `user_events` (`$ECOM_INGEST_HOME/landing`, ...)",
    )
    feeds_dir: Optional[Path] = Field(
        None, description="where feed contract files are (`<name>.yaml`; default `$ECOM_INGEST_HOME/feeds`)"
    )
    db_retry_seconds: float = Field(
        60.0, ge=0, allow_inf_nan=False,
        description="how long a run reconnects to a PostgreSQL that went away before it fails (interactive commands: 0)",
    )
    # -- Spark ---------------------------------------------------------------------------
    spark_master: str = Field("local[*]", description="any Spark master URL (`spark://host:7077`, `yarn`, `k8s://...`)")
    spark_driver_memory: str = Field("512m", description="driver JVM heap (local mode: the executors live there too)")
    spark_driver_java_options: str = Field(
        "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        description="the driver JVM's options (`spark.driver.extraJavaOptions`); blank (a space): Spark's own",
    )
    spark_driver_host: Optional[str] = Field(
        None,
        description="on a cluster, the address executors reach the driver at (`spark.driver.host`); unset: the address this"
        " host's name resolves to if not loopback, else its first non-loopback IPv4 address (as Spark picks it, but never"
        " from a `SPARK_LOCAL_IP` that a library set on import)",
    )
    spark_driver_bind_address: Optional[str] = Field(
        None, description="the address the driver listens on (`spark.driver.bindAddress`, e.g. `0.0.0.0`); unset: the driver host"
    )
    spark_log_level: str = Field("WARN", description="Spark's log level (`ERROR`, `WARN`, `INFO`, ...)")
    spark_ui: bool = Field(
        False, description="serve Spark's web UI (port 4040 and up) while a run works; off, a run starts sooner"
    )
    # -- micro-batches -------------------------------------------------------------------
    max_files_per_trigger: Optional[int] = Field(
        None, gt=0, description="bound a micro-batch by file count (wins over bytes)"
    )
    max_bytes_per_trigger: Optional[int] = Field(256 * MiB, gt=0, description="bound a micro-batch by bytes")
    trigger_seconds: float = Field(10.0, ge=0, allow_inf_nan=False, description="continuous mode's trigger interval")
    warm_idle_seconds: float = Field(
        120.0, ge=0, allow_inf_nan=False,
        description="a sensor-launched run stays warm, taking drops as they land, until none has come for this long (0: one pass)",
    )
    always_on: bool = Field(
        False,
        # Off for a laptop (a JVM's ~1 GB held while nothing lands; warm_idle_seconds covers a
        # burst); on in the Compose deployment, a real-time service.
        description="keep one ingest run alive for the landing directory: the sensor starts one whenever none runs (so"
        " with the deployment too) and it never idles out, so the first drop after a quiet night is taken warm",
    )
    warm_trigger_seconds: float = Field(
        0.5, ge=0, allow_inf_nan=False, description="how often a warm run looks for new drops (its trigger interval)"
    )
    warm_progress_seconds: float = Field(
        30.0, gt=0, allow_inf_nan=False,
        description="while a warm run's batches commit, its metric assets and checks are recorded this often",
    )
    driver_batch_max_bytes: int = Field(
        512 * KiB, ge=0,
        # A Spark job costs ~0.1-0.2 s before any file is touched; a trickle batch's own work
        # is tens of milliseconds. Bigger batches go to the executors, in parallel.
        description="micro-batches up to this many bytes are loaded by the driver itself, without a Spark job (0: never)",
    )
    group_max_bytes: int = Field(
        4 * MiB, ge=0,
        # A small drop loaded alone costs its own transaction and commit, several times its
        # rows' work; together, a backlog of 20-row drops loads as fast as one bigger file.
        description="a micro-batch's small files are loaded together, one transaction per group of up to this many"
        " bytes (bigger files one by one; 0: every file in a transaction of its own)",
    )
    csv_block_bytes: int = Field(
        16 * MiB, gt=0,
        # 16 MiB is the measured sweet spot; 8 MiB saves ~90 MB per busy task for ~25% more validation time.
        description="Arrow CSV block read at a time per task (memory vs speed)",
    )
    # -- the sensor ----------------------------------------------------------------------
    sensor_interval_seconds: int = Field(5, gt=0, description="how often the landing sensor looks")
    settle_seconds: float = Field(
        # A local file system stamps a rename within a clock tick (milliseconds); each tick the
        # margin makes a drop wait is a sensor loop (5 s). Raise it on NFS (attribute caching).
        0.5, ge=0, allow_inf_nan=False,
        description="the sensor leaves drops younger than this for its next tick (so no arrival is skipped)",
    )
    # -- retention (the daily retention schedule) ----------------------------------------
    sample_retention_days: float = Field(
        30.0, gt=0, allow_inf_nan=False, description="resource samples and metric log lines older than this are deleted"
    )
    archive_retention_days: Optional[float] = Field(
        None, gt=0, allow_inf_nan=False, description="archived drops older than this are deleted (unset: kept)"
    )
    # -- service targets (asset checks and the report) ---------------------------------
    target_min_throughput_rps: float = Field(10.0, ge=0, description="asset check `min_throughput` (records/s)")
    target_max_latency_ms: float = Field(5000.0, ge=0, description="asset check `max_latency` (slowest micro-batch, ms)")
    target_max_end_to_end_latency_ms: float = Field(
        30000.0, ge=0, description="asset check `max_end_to_end_latency` (slowest file, landed to committed, ms)"
    )
    target_min_validation_rate_pct: float = Field(95.0, ge=0, le=100, description="asset check `validation_rate` (%)")
    target_max_data_loss_pct: float = Field(0.0, ge=0, le=100, description="asset check `zero_data_loss` (%)")

    @field_validator("home", "landing_dir", "checkpoint_dir", "rejected_dir", "archive_dir", "feeds_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().absolute()

    @field_validator("spark_driver_memory")
    @classmethod
    def _jvm_memory(cls, value: str) -> str:
        # What the JVM's -Xmx and Spark's byte strings accept; anything else would fail only
        # once the JVM starts, seconds into a run.
        if not _JVM_MEMORY.match(value.strip()):
            raise ValueError("is not a memory size (a number with k, m, g or t, e.g. 512m or 2g)")
        return value.strip()

    @field_validator("db_schema", "feed")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("is not a plain SQL identifier (letters, digits, underscore; not starting with a digit)")
        return value

    @field_validator("database_url")
    @classmethod
    def _libpq_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_database_url(value)
        return value

    @model_validator(mode="after")
    def _resolve(self) -> "Settings":
        # Derived defaults are filled in here (not in the fields) so that an override of
        # ``home`` moves every path that was not set explicitly.
        for name, default in (("landing_dir", "landing"), ("checkpoint_dir", "checkpoints"), ("rejected_dir", "rejected"),
                              ("archive_dir", "archive")):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.home / default)
        if self.feeds_dir is None:
            object.__setattr__(self, "feeds_dir", self.home / "feeds")
        # What with_overrides carries over: the values as configured, not a feed's.
        self._configured = {name: getattr(self, name) for name in FEED_DERIVED}
        if self.feed != DEFAULT_FEED:
            # A feed other than user_events has directories and a schema of its own, beside
            # user_events' (``home/landing`` -> ``home/<feed>/landing``), so two feeds never
            # share a landing directory, a checkpoint or a ledger.
            for name in FEED_DERIVED[1:]:
                path = getattr(self, name)
                object.__setattr__(self, name, path.parent / self.feed / path.name)
            schema = f"{self.db_schema}_{self.feed}" if "db_schema" in self.model_fields_set else self.feed
            object.__setattr__(self, "db_schema", schema)
        if self.max_files_per_trigger is not None and self.max_bytes_per_trigger is not None:
            # Spark refuses both on one source; files win when the user names them.
            object.__setattr__(self, "max_bytes_per_trigger", None)
        return self

    # -- construction ------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # Overrides on top of the environment; with the environment switched off (a
        # mapping given to ``from_env``, or ``with_overrides``) only the values passed.
        return (init_settings,) if _ENVIRONMENT_OFF.get() else (init_settings, env_settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """The environment's settings (``os.environ`` unless given), with ``overrides`` on top.

        ``None`` overrides are ignored ("the environment's value"). A malformed value
        raises ``SettingsError`` naming the variable, never quoting the value (a
        database URL may hold a password).
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        if environ is None:
            return _validated(cls, given, environment=True)
        values = {name: raw for name in cls.model_fields if (raw := environ.get(env_name(name), "").strip())}
        return _validated(cls, {**values, **given}, environment=False)

    def with_overrides(self, **overrides: Any) -> "Settings":
        """These settings with the given fields replaced; ``None`` means "keep the value".

        Fields that were never set stay unset, so derived paths follow a new ``home``.
        """
        unknown = set(overrides) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        explicit = {name: self._configured.get(name, getattr(self, name)) for name in self.model_fields_set}
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = _validated(type(self), {**explicit, **given}, environment=False)
        return settings.with_landing(self.landing_dir) if self._landing_as_given and "landing_dir" not in given else settings

    # -- derived -------------------------------------------------------------------------
    def with_landing(self, landing_dir: Path) -> "Settings":
        """These settings with the feed's own landing directory ``landing_dir``, as it is (the
        CLI's ``--landing``: not derived again for the feed)."""
        settings = self.model_copy(update={"landing_dir": landing_dir})
        settings._landing_as_given = True
        return settings

    @property
    def contract(self):
        """The feed's contract (``feeds.FeedContract``): ``FeedError`` names the file and the field."""
        from ecom_ingest_dagster.feeds import find_feed

        return find_feed(self.feed, self.feeds_dir)

    @property
    def feed_home(self) -> Path:
        """Where the feed's own logs and reports go: ``home`` for user_events, ``home/<feed>`` for another."""
        return self.home if self.feed == DEFAULT_FEED else self.home / self.feed

    @property
    def logs_dir(self) -> Path:
        return self.feed_home / "logs"

    @property
    def spark_log(self) -> Path:
        """Where Spark's console output goes (JVM warnings, log4j), not a user's terminal."""
        return self.logs_dir / "spark.log"

    @property
    def reports_dir(self) -> Path:
        return self.feed_home / "reports"

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def targets(self) -> Targets:
        return Targets(
            self.target_min_throughput_rps, self.target_max_latency_ms,
            self.target_min_validation_rate_pct, self.target_max_data_loss_pct,
            self.target_max_end_to_end_latency_ms,
        )

    @property
    def spark_local(self) -> bool:
        return self.spark_master.startswith("local")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


_ENVIRONMENT_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("ecom_ingest_environment_off", default=False)


_SECRET_FIELDS = frozenset({"database_url"})


def _validated(cls: type[Settings], values: dict[str, Any], *, environment: bool) -> Settings:
    token = _ENVIRONMENT_OFF.set(not environment)
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            name = env_name(field) if field else "settings"
            message = error["msg"].removeprefix("Value error, ")
            if message.startswith(name):
                problems.append(message)
            elif field in _SECRET_FIELDS or field not in cls.model_fields:
                problems.append(f"{name}: {message}")  # never echoed: it may hold a password
            else:
                problems.append(f"{name}={error.get('input')!r}: {message}")
        raise SettingsError("; ".join(problems)) from None
    finally:
        _ENVIRONMENT_OFF.reset(token)


def default_text(name: str) -> str:
    """A field's default as the docs' tables show it (Markdown), as it would be written in the environment."""
    default = Settings.model_fields[name].default
    if default is None:
        return "*(unset)*"
    if isinstance(default, Path):
        return f"`{default if default.is_absolute() else './' + str(default)}`"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


def settings_table() -> str:
    """The README's configuration table, generated from the fields' descriptions."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        lines.append(f"| `{env_name(name)}` | {default_text(name)} | {field.description} |")
    return "\n".join(lines)


def check_database_url(url: str) -> None:
    """Refuse a database URL that libpq would refuse or misread; the message never holds it.

    libpq's own parse errors quote the offending text, which may be the password (an
    unescaped "%" in it, say), so they are replaced by a hint. An unescaped "/" or "@"
    in the password parses "successfully" into a wrong host or port, which a connection
    error would then print: those are refused here too.
    """
    name = f"{ENV_PREFIX}DATABASE_URL"
    if not url.startswith(("postgresql://", "postgres://")):
        # Name only the scheme: the value may hold a password (a libpq
        # "host=... password=..." string has no scheme at all).
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
        got = f"a {scheme.group(1)}:// URL" if scheme else "a value that is not a URL"
        raise SettingsError(f"{name} must be a postgresql:// URL (got {got})")
    hint = "percent-encode special characters in the user name and password (% as %25, / as %2F, @ as %40)"
    from psycopg import Error, conninfo  # here: only a configured URL needs the driver

    try:
        params = conninfo.conninfo_to_dict(url)
    except Error:
        raise SettingsError(f"{name} is not a URL libpq can parse: {hint}") from None
    ports = str(params.get("port") or "").split(",")
    if "@" in str(params.get("host") or "") or not all(p.isdigit() or p == "" for p in ports):
        raise SettingsError(f"{name} does not split into user, password, host and port as intended: {hint}")


# "user:password@": the password runs to the *last* "@" of the URL, so one with an
# unescaped "@", "/", "?" or "#" (which libpq misreads) is still hidden whole. An "@"
# in a query value then hides the host as well: better too much than a password.
_URL_PASSWORD = re.compile(r"(://[^:/@]*:).*@")
# libpq also takes the password (and sslpassword, the client key's passphrase) as a
# query parameter, percent-decodes parameter names ("%70assword"), and ends a value only
# at "&" (a "#" belongs to it).
_QUERY_PASSWORD = re.compile(
    r"([?&](?:ssl)?" + "".join(f"(?:{ch}|%{ord(ch):02x})" for ch in "password") + r"=)[^&]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and metadata."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))


if __name__ == "__main__":  # python -m ecom_ingest_dagster.settings: the README's table
    print(settings_table())
