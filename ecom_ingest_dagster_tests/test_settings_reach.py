"""Every setting set in the environment reaches an ``ecom-ingest`` command and a Dagster run.

Walks ``Settings.model_fields`` (so a new setting is covered without editing this file):
each gets a value different from its default, the command (a real process) and a real
Dagster run through the code location's own resource must both see it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg

from ecom_ingest_dagster.defs.resources import PipelineResource, build_resources
from ecom_ingest_dagster.settings import Settings, env_name, settings_table
from ecom_ingest_dagster_tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
_STRINGS = {
    "database_url": "postgresql://someone@127.0.0.1:1/elsewhere",
    "db_schema": "custom_schema",
    "feed": "orders",
    "spark_master": "local[1]",
    "spark_driver_memory": "640m",
    "spark_driver_java_options": "-XX:+UseSerialGC",
    "spark_driver_host": "driver.example",
    "spark_driver_bind_address": "0.0.0.0",
    "spark_log_level": "ERROR",
    "after_commit": "keep",
    "spark_ui": "true",
    "always_on": "true",
}


def _non_defaults(tmp_path: Path) -> dict[str, str]:
    """One environment value per field, each unlike its default (max_files_per_trigger apart:
    it switches max_bytes_per_trigger off)."""
    values = {}
    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if name in _STRINGS:
            values[name] = _STRINGS[name]
        elif "Path" in str(kind):
            values[name] = str(tmp_path / name)
        elif "int" in str(kind):
            values[name] = str((field.default or 0) + 7)
        else:
            values[name] = str((field.default or 0) / 2 + 1.5)
    return values


def _expected(values: dict[str, str]) -> dict:
    return Settings.from_env({env_name(k): v for k, v in values.items()}).model_dump(mode="json")


def _environments(tmp_path: Path) -> list[dict[str, str]]:
    values = _non_defaults(tmp_path)
    files = values.pop("max_files_per_trigger")
    return [values, {"max_files_per_trigger": files}]


def test_every_setting_differs_from_its_default_in_the_walk(tmp_path):
    defaults = Settings.from_env({}).model_dump(mode="json")
    for env in _environments(tmp_path):
        expected = _expected(env)
        assert all(expected[name] != defaults[name] for name in env), env


def test_every_setting_reaches_an_ecom_ingest_command(tmp_path):
    for env in _environments(tmp_path):
        result = run_cli(["settings", "--json"], {env_name(k): v for k, v in env.items()}, tmp_path)
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        expected = _expected(env)
        for name in env:
            assert shown[name] == expected[name], name


def test_every_setting_reaches_a_dagster_run(tmp_path, monkeypatch):
    seen = {}

    @dg.asset
    def settings_probe(pipeline: PipelineResource) -> None:
        seen.update(pipeline.settings().model_dump(mode="json"))

    for env in _environments(tmp_path):
        for name in Settings.model_fields:
            monkeypatch.delenv(env_name(name), raising=False)
        for name, value in env.items():
            monkeypatch.setenv(env_name(name), value)
        seen.clear()
        # The code location's own resources, as a deployment builds them from the environment.
        result = dg.materialize([settings_probe], resources=build_resources())
        assert result.success
        expected = _expected(env)
        for name in env:
            assert seen[name] == expected[name], name


def test_the_resource_can_override_every_setting():
    # An override field per setting: nothing the environment can say is out of a run's reach.
    assert set(Settings.model_fields) <= set(PipelineResource.model_fields)


def test_readme_configuration_table_is_generated_from_the_settings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", readme, re.S)
    assert found, "README.md lost its settings-table markers"
    assert found.group(1).strip() == settings_table(), "regenerate: python -m ecom_ingest_dagster.settings"
