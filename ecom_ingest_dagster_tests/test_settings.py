"""Unit tests of configuration from the environment: no database, no Spark."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecom_ingest_dagster.settings import Settings, SettingsError, redact_url

P = "ECOM_INGEST_"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    # Relative defaults resolve against the working directory.
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(in_tmp):
    s = Settings.from_env(environ={})
    assert s.home == in_tmp / ".ecom_ingest"
    assert s.home.is_absolute()
    assert s.landing_dir == s.home / "landing"
    assert s.database_url is None
    assert s.db_schema == "public"
    assert s.spark_master == "local[*]"
    assert s.checkpoint_dir == s.home / "checkpoints"
    assert s.rejected_dir == s.home / "rejected"
    assert s.logs_dir == s.home / "logs"
    assert s.embedded_pgdata == s.home / "pgdata"
    assert s.max_files_per_trigger is None
    assert s.max_bytes_per_trigger == 256 * 1024 * 1024
    assert s.trigger_seconds == 10.0


def test_from_env_reads_the_given_mapping_not_the_process_environment(monkeypatch):
    monkeypatch.setenv(P + "DB_SCHEMA", "from_process")
    assert Settings.from_env(environ={}).db_schema == "public"
    assert Settings.from_env().db_schema == "from_process"


def test_every_variable_is_honoured(in_tmp):
    env = {
        P + "HOME": str(in_tmp / "h"),
        P + "LANDING_DIR": "drops",
        P + "DATABASE_URL": "postgresql://u:pw@db.example:5433/events",
        P + "DB_SCHEMA": "ingest_2",
        P + "SPARK_MASTER": "spark://m:7077",
        P + "CHECKPOINT_DIR": "cp",
        P + "REJECTED_DIR": "/var/rejected",
        P + "MAX_BYTES_PER_TRIGGER": "1048576",
        P + "TRIGGER_SECONDS": "2.5",
    }
    s = Settings.from_env(environ=env)
    assert s.home == in_tmp / "h"
    assert s.landing_dir == in_tmp / "drops"  # relative paths made absolute
    assert s.database_url == "postgresql://u:pw@db.example:5433/events"
    assert s.db_schema == "ingest_2"
    assert s.spark_master == "spark://m:7077"
    assert s.checkpoint_dir == in_tmp / "cp"
    assert s.rejected_dir == Path("/var/rejected")
    assert s.max_bytes_per_trigger == 1048576
    assert s.max_files_per_trigger is None
    assert s.trigger_seconds == 2.5
    assert s.logs_dir == in_tmp / "h" / "logs"


def test_relative_home_is_absolute_and_carries_the_landing_dir(in_tmp):
    s = Settings.from_env(environ={P + "HOME": "some/where"})
    assert s.home == in_tmp / "some" / "where"
    assert s.landing_dir == in_tmp / "some" / "where" / "landing"


def test_postgres_scheme_alias_and_blank_values():
    s = Settings.from_env(environ={P + "DATABASE_URL": "postgres://h/db", P + "DB_SCHEMA": "  ", P + "SPARK_MASTER": ""})
    assert s.database_url == "postgres://h/db"
    # A variable set to blank means "not set", not an invalid value.
    assert s.db_schema == "public" and s.spark_master == "local[*]"


def test_max_files_per_trigger_wins_over_max_bytes():
    s = Settings.from_env(environ={P + "MAX_FILES_PER_TRIGGER": "3"})
    assert (s.max_files_per_trigger, s.max_bytes_per_trigger) == (3, None)
    s = Settings.from_env(environ={P + "MAX_FILES_PER_TRIGGER": "3", P + "MAX_BYTES_PER_TRIGGER": "1000"})
    assert (s.max_files_per_trigger, s.max_bytes_per_trigger) == (3, None)
    overridden = Settings.from_env(environ={}).with_overrides(max_files_per_trigger=7)
    assert (overridden.max_files_per_trigger, overridden.max_bytes_per_trigger) == (7, None)


def test_with_overrides_ignores_none():
    s = Settings.from_env(environ={P + "DB_SCHEMA": "keep"})
    assert s.with_overrides(db_schema=None, spark_master="local[2]").db_schema == "keep"


@pytest.mark.parametrize(
    "name, value",
    [
        ("DB_SCHEMA", "bad-name"),
        ("DB_SCHEMA", "1starts_with_digit"),
        ("DB_SCHEMA", 'x"; DROP TABLE y; --'),
        ("DB_SCHEMA", "a" * 64),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("DATABASE_URL", "sqlite:///x.db"),
        ("DATABASE_URL", "not a url"),
        ("MAX_FILES_PER_TRIGGER", "ten"),
        ("MAX_FILES_PER_TRIGGER", "2.5"),
        ("MAX_FILES_PER_TRIGGER", "-1"),
        ("MAX_FILES_PER_TRIGGER", "0"),
        ("MAX_BYTES_PER_TRIGGER", "-5"),
        ("MAX_BYTES_PER_TRIGGER", "1GB"),
        ("TRIGGER_SECONDS", "soon"),
        ("TRIGGER_SECONDS", "-1"),
        ("TRIGGER_SECONDS", "nan"),
        ("TRIGGER_SECONDS", "inf"),
        ("SPARK_DRIVER_MEMORY", "lots"),
        ("SPARK_DRIVER_MEMORY", "1.5g"),
        ("SPARK_DRIVER_MEMORY", "-512m"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ={P + name: value})
    assert P + name in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", ["512m", "2g", "2G", "1024k", "1gb", "3072"])
def test_memory_sizes_the_jvm_takes_are_accepted(value):
    assert Settings.from_env(environ={P + "SPARK_DRIVER_MEMORY": value}).spark_driver_memory == value


def test_schema_at_identifier_length_limit_is_fine():
    assert Settings.from_env(environ={P + "DB_SCHEMA": "a" * 63}).db_schema == "a" * 63


@pytest.mark.parametrize(
    "url",
    [
        "mysql://admin:secret@h/db",
        "host=h user=u password=secret dbname=d",  # a libpq keyword string, not a URL
        "u:secret@h/db",
    ],
)
def test_rejected_database_url_does_not_leak_its_password(url):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ={P + "DATABASE_URL": url})
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s3cr:et@h:5432/db?sslmode=require", "postgresql://u:***@h:5432/db?sslmode=require"),
        ("postgres://:secret@h/db", "postgres://:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgresql://u@h/db?sslmode=require&password=secret", "postgresql://u@h/db?sslmode=require&password=***"),
        ("postgresql://h/db?password=secret&user=u", "postgresql://h/db?password=***&user=u"),
    ],
)
def test_redact_url_hides_passwords(url, expected):
    redacted = redact_url(url)
    assert redacted == expected
    assert "secret" not in redacted and "s3cr" not in redacted
