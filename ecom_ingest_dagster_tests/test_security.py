"""Security (issue #6), against the real PostgreSQL, Spark, Dagster and command line.

1. A database password is shown nowhere: not in Dagster's event log, run config, job
   snapshot, materialization metadata or compute logs, not in the performance report or
   the metrics logs, not in the tables, not in what the CLI or the JVM print, not in the
   message of an unreachable database, in either of libpq's password forms.
2. A file name is data, never a path or SQL: odd names are loaded and stored verbatim and
   a file rejected whole ends up inside the rejected directory, whatever its name. A
   symlink in the landing directory is read through (like the file it points to) but
   never moved through: rejecting it moves the link, its target stays where it is.
3. The UIs listen on loopback unless configured otherwise.
4. CI's dependency audit fails on a known vulnerability, unless it is ignored with a
   reason, and only warns when the vulnerability service cannot be reached.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._serdes import serialize_value
from psycopg import sql

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline import database
from ecom_ingest_dagster.defs.metrics.assets import data_quality
from ecom_ingest_dagster.defs.resources import build_resources
from ecom_ingest_dagster.pipeline.load import FileTask, LoadOptions
from ecom_ingest_dagster.pipeline.load_batch import ingest_files
from ecom_ingest_dagster.settings import ENV_PREFIX, Settings, SettingsError, redact_url

from .defs import conftest as dagster_fixtures
from .helpers import csv_text, drop, ledger, row, run_cli, start_cli

# The Dagster layer's fixtures (defs/conftest.py), for the tests here that run the job.
definitions = dagster_fixtures.definitions
dagster_resources = dagster_fixtures.dagster_resources
instance = dagster_fixtures.instance

ROOT = Path(__file__).resolve().parents[1]
URL_VAR = ENV_PREFIX + "DATABASE_URL"
# Nothing listens on port 1: the connection is refused at once.
CLOSED = "127.0.0.1:1"


# -- 1. credentials ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Secret:
    role: str
    password: str
    url: str  # postgresql://role:password@host/db
    query_url: str  # postgresql://role@host/db?password=...: libpq's other form


def with_credentials(url: str, user: str, password: str, *, in_query: bool = False) -> str:
    """``url`` (the test database's) logging in as ``user`` with ``password``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = [p for p in parts.query.split("&") if p and not p.startswith(("user=", "password="))]
    if in_query:
        netloc = f"{quote(user)}@{host}"
        query.append(f"password={quote(password)}")
    else:
        netloc = f"{quote(user)}:{quote(password)}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(query), ""))


@pytest.fixture
def secret(database_url, db_schema):
    """A role with a password that owns the test's schema; its URL carries the password.

    The server may trust 127.0.0.1 (the password is then not checked), but the password
    is in the URL the pipeline is given, which is what must not show.
    """
    token = uuid.uuid4().hex
    role, password = f"ecom_sec_{token[:10]}", f"s3cr3t-{token}"
    ident = sql.Identifier
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(role), sql.Literal(password)))
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test database's user may not create roles")
        # Least privilege: the role owns its schemas and nothing else (no CREATE on the
        # database); the second is for the command line's run beside the job.
        for schema in (db_schema, db_schema + "_cli"):
            conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(schema), ident(role)))
    yield Secret(
        role, password, with_credentials(database_url, role, password),
        with_credentials(database_url, role, password, in_query=True),
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(db_schema)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident(role)))


def files_holding(needle: str, *roots: Path) -> list[str]:
    """Every file under ``roots`` whose bytes contain ``needle``."""
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
                found.append(str(path))
    return found


def tables_holding(conn, schema: str, needle: str) -> list[str]:
    """Every table of ``schema`` with a row whose text contains ``needle``."""
    names = [r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )]
    assert "ingest_files" in names
    return [
        name for name in names
        if conn.execute(
            sql.SQL("SELECT count(*) FROM {} t WHERE t::text LIKE %s").format(database.table(schema, name)),
            (f"%{needle}%",),
        ).fetchone()[0]
    ]


def drop_sample(landing: Path) -> None:
    """Good rows, a rejected row and a file rejected whole: every output gets written."""
    drop(landing, "events.csv", csv_text([row(i) for i in range(1, 21)] + [row(99, price="-1")]))
    drop(landing, "broken.csv", "not,the,header\n1,2,3\n")


@pytest.mark.parametrize(
    "url, hidden",
    [
        ("postgresql://u:pw-1@h/db", "pw-1"),
        ("postgresql://u@h/db?sslmode=require&password=pw-1", "pw-1"),
        ("postgresql://u@h/db?password=pw-1&application_name=x", "pw-1"),
        ("postgresql://u@h/db?PASSWORD=pw-1", "pw-1"),
        ("postgresql://u@h/db?%70assword=pw-1", "pw-1"),  # libpq decodes parameter names
        ("postgresql://u@h/db?sslpassword=pw-1", "pw-1"),  # the client key's passphrase
        ("postgresql://u@h/db?password=pw#1", "pw#1"),  # a "#" ends nothing in libpq's query
        ("postgresql://u:pw%40x@h/db", "pw%40x"),
        ("postgresql://u:p@ss@h/db", "ss"),  # unescaped "@": libpq reads host "ss@h"
        ("postgresql://u:Ab+/9xY=@h/db", "9xY="),  # base64 with an unescaped "/"
        ("postgresql://u:pa?ss@h/db", "ss"),
        ("postgresql://u:pw-1@h1:5432,h2:5433/db", "pw-1"),
    ],
)
def test_redact_url_hides_the_password_in_every_form_libpq_reads(url, hidden):
    redacted = redact_url(url)
    assert hidden not in redacted and "***" in redacted
    assert redacted.startswith(url.split(":")[0] + "://u")


def test_redact_url_keeps_what_a_user_needs_to_find_the_server():
    assert redact_url("postgresql://ingest:pw@db.example:6432/warehouse?sslmode=require") == (
        "postgresql://ingest:***@db.example:6432/warehouse?sslmode=require"
    )
    assert redact_url("postgresql://ingest@db.example/warehouse") == "postgresql://ingest@db.example/warehouse"


@pytest.mark.parametrize(
    "value",
    [
        "host=127.0.0.1 user=u password=s3cr3t-kw",  # libpq keyword form: no scheme
        "mysql://u:s3cr3t-kw@h/db",
        "postgresql://u:s3cr3t-kw%zz@h/db",  # bad percent-encoding: libpq's error quotes it
        "postgresql://u:s3cr3t-kw/x@h/db",  # unescaped "/": libpq reads host "u", port "s3cr3t-kw"
        "postgresql://u:s3cr3t@kw@h/db",  # unescaped "@": libpq reads host "kw@h"
    ],
)
def test_a_malformed_database_url_is_refused_without_being_quoted(value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({URL_VAR: value})
    assert URL_VAR in str(info.value)
    assert "s3cr3t" not in str(info.value) and "kw" not in str(info.value).replace(URL_VAR, "")


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_an_unreachable_database_is_named_with_the_password_hidden(form):
    password = f"s3cr3t-{uuid.uuid4().hex}"
    url = with_credentials(f"postgresql://{CLOSED}/warehouse", "ingest", password, in_query=form == "query")
    with pytest.raises(database.DatabaseUnavailable) as info:
        database.connect(url)
    message = str(info.value)
    assert password not in message
    assert "***" in message and CLOSED.split(":")[0] in message and "warehouse" in message


def test_ingest_job_and_cli_with_a_password_in_the_url_show_it_nowhere(
    definitions, dagster_resources, instance, settings, secret, monkeypatch, capfd, tmp_path
):
    """The ingest job as deployed (the URL an EnvVar) and ``ecom-ingest ingest`` / ``status``.

    The command runs in its own process, beside the job (it starts a JVM of its own: the
    two overlap to keep the test short), into a second schema of the same role.
    """
    cli_home = tmp_path / "cli"
    cli_env = {
        ENV_PREFIX + "HOME": str(cli_home), URL_VAR: secret.url,
        ENV_PREFIX + "DB_SCHEMA": settings.db_schema + "_cli", ENV_PREFIX + "SPARK_MASTER": "local[1]",
    }
    drop_sample(cli_home / "landing")
    cli_ingest = start_cli(["-v", "ingest"], cli_env, tmp_path)  # -v: our INFO logs too
    try:
        monkeypatch.setenv(URL_VAR, secret.url)
        resources = build_resources(settings, stop_spark_after_run=False)
        # What makes Dagster store the name only:
        assert isinstance(resources["pipeline"].database_url, dg.EnvVar)
        drop_sample(settings.landing_dir)

        result = definitions.resolve_job_def("ingest_job").execute_in_process(resources=resources, instance=instance)
        assert result.success
        out, err = cli_ingest.communicate(timeout=300)
    finally:
        if cli_ingest.poll() is None:
            cli_ingest.kill()
            cli_ingest.wait()
    assert cli_ingest.returncode == 0, err[-3000:]
    assert "= 20 loaded + 0 duplicate + " in out and "1 rejected whole" in out
    cli_outputs = {"ingest": out + err}
    status = run_cli(["status"], {**cli_env, URL_VAR: secret.query_url}, tmp_path)
    assert status.returncode == 0, status.stderr
    assert "password=***" in status.stdout and secret.role in status.stdout
    cli_outputs["status"] = status.stdout + status.stderr
    down = run_cli(["status"], {**cli_env, URL_VAR: with_credentials(f"postgresql://{CLOSED}/x", "u", secret.password)}, tmp_path)
    assert down.returncode == 1 and "u:***@" in down.stderr
    cli_outputs["status, database down"] = down.stdout + down.stderr

    password = secret.password
    run = instance.get_run_by_id(result.run_id)
    records = instance.all_logs(result.run_id)
    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
    }
    report_md = mats["performance_report"].metadata["report"].value
    assert "## 9. Performance Benchmarks" in report_md
    logs = settings.logs_dir
    assert (logs / "performance_metrics.json").exists() and (logs / "validation_errors_detailed.json").exists()
    assert (settings.home / "reports" / "performance_report.md").exists()

    places = {
        "run config and tags": serialize_value(run),
        "job snapshot": serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
        "execution plan": serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)),
        "materialization metadata": serialize_value(list(mats.values())),
        "performance report (asset)": report_md,
        **{f"event {r.dagster_event_type or 'log'} #{i}": serialize_value(r) for i, r in enumerate(records)},
        **{f"ecom-ingest {name}": text for name, text in cli_outputs.items()},
    }
    assert len(records) > 20
    assert [name for name, text in places.items() if password in text] == []
    # Files: metrics JSON logs, reports, checkpoints, rejected files (the job's and the
    # command's); Dagster's storage and compute logs.
    assert files_holding(password, tmp_path, Path(instance.root_directory)) == []
    output = capfd.readouterr()  # this process, the Spark JVM and its Python workers
    assert password not in output.out and password not in output.err
    with psycopg.connect(secret.url) as conn:
        for schema in (settings.db_schema, settings.db_schema + "_cli"):
            # The runs really logged in as the role of the URL with the password.
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'ingest_files'", (schema,)
            ).fetchone()[0]
            assert owner == secret.role
            assert tables_holding(conn, schema, password) == []


@pytest.mark.parametrize("form", ["userinfo", "query", "malformed"])
def test_a_failed_step_shows_the_database_url_redacted(dagster_resources, instance, settings, monkeypatch, form):
    """The error Dagster keeps when PostgreSQL is unreachable (or the URL unparseable)."""
    password = f"s3cr3t-{uuid.uuid4().hex}"
    if form == "malformed":  # "%zz" is no percent-encoding: libpq's own error would quote it
        url = f"postgresql://ingest:{password}%zz@{CLOSED}/warehouse"
    else:
        url = with_credentials(f"postgresql://{CLOSED}/warehouse", "ingest", password, in_query=form == "query")
    monkeypatch.setenv(URL_VAR, url)
    monkeypatch.setenv(ENV_PREFIX + "DB_RETRY_SECONDS", "0")  # what the error says, not how long a run waits
    resources = build_resources(settings, stop_spark_after_run=False)
    # The metric asset alone: it connects at once and has no retry policy to wait through.
    result = dg.materialize([data_quality], resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error.to_string()
    assert ("***" in error and "cannot connect to PostgreSQL" in error) if form != "malformed" else URL_VAR in error
    leaks = [r.dagster_event_type for r in instance.all_logs(result.run_id) if password in serialize_value(r)]
    assert leaks == []


@pytest.mark.skipif(shutil.which("psql") is None, reason="no psql: the benchmark COPYs through psycopg")
def test_the_benchmark_gives_psql_the_password_in_its_environment_not_its_command_line(secret, db_schema, tmp_path):
    """A command line is public (ps, /proc) and CalledProcessError quotes it whole."""
    from ecom_ingest_dagster.tools.bench.harness import copy_files

    data = tmp_path / "a.csv"
    data.write_text("a\n1\n2\n")
    with psycopg.connect(secret.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (a int)").format(database.table(db_schema, "t")))
        _, tool = copy_files(secret.url, f'"{db_schema}".t', [data], header=True)
        assert tool == "psql \\copy"
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(database.table(db_schema, "t"))).fetchone()[0] == 2
    with pytest.raises(subprocess.CalledProcessError) as info:
        copy_files(secret.url, f'"{db_schema}".missing', [data], header=True)
    assert secret.password not in str(info.value) and secret.password not in " ".join(info.value.cmd)


# -- 2. file names ---------------------------------------------------------------------------

# Names Spark and the loader must take as they are: never a path, never SQL.
ODD_NAMES = [
    "with  spaces .csv",
    "ünïcødé – ✓ 日本語.csv",
    "quote's \"double\".csv",
    "x'); DROP TABLE ingest_files; --.csv",
    "semi;colon & pipe | $(id) `id`.csv",
    "-rf --no-preserve-root.csv",
    "a" * 200 + ".csv",
]
# Names that are no drop for Spark or the sensor, or that Spark's listing must not mangle; the loader copes with all.
LOADER_ONLY_NAMES = [
    "%2e%2e%2f%2e%2e%2fescape.csv",
    "new\nline\r\ttab.csv",
    "hash#fragment?query.csv",
    "..evil.csv",  # hidden: no drop for Spark or the sensor, but the loader must still cope
    "back\\slash.csv",  # not a drop name for the sensor (contract.is_drop_name)
]


def rejected_variant(name: str) -> str:
    return name[: -len(".csv")] + " (rejected).csv"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_loader_stores_odd_names_verbatim_and_keeps_rejected_files_in_the_rejected_dir(settings, db, tmp_path):
    landing, rejected = settings.landing_dir, settings.rejected_dir
    names = ODD_NAMES + LOADER_ONLY_NAMES
    good = {name: 100 + i for i, name in enumerate(names)}
    bad = [rejected_variant(name) for name in names]
    for name, n in good.items():
        drop(landing, name, csv_text([row(n), row(n + 1000, price="-1")]))
    for name in bad:
        drop(landing, name, "not,the,header\n1,2,3\n")
    before = tree(tmp_path)
    tasks = [FileTask(str(landing / name), (landing / name).stat().st_size) for name in [*good, *bad]]

    outcomes = ingest_files(
        tasks, LoadOptions(schema=settings.db_schema, stream_id="names", batch_id=0, rejected_dir=rejected),
        database_url=settings.database_url,
    )

    assert [o.file_name for o in outcomes] == [*good, *bad]
    assert [o.status for o in outcomes] == ["ingested"] * len(good) + ["rejected"] * len(bad)
    files = ledger(db)
    assert set(files) == {*good, *bad}  # verbatim, through parameters: the DROP TABLE name did nothing
    assert all(files[name]["status"] == "ingested" and files[name]["rows_loaded"] == 1 for name in good)
    assert all(files[name]["status"] == "rejected" for name in bad)
    sources = {r[0] for r in db.execute("SELECT DISTINCT source_file FROM user_events")}
    assert sources == set(good)
    sources = {r[0] for r in db.execute("SELECT DISTINCT source_file FROM rejected_events")}
    assert sources == {*good, *bad}
    # Files rejected whole are in the rejected directory, each with its reason beside it,
    # and nothing else moved or appeared anywhere.
    assert sorted(p.name for p in rejected.iterdir()) == sorted([*bad, *(name + ".reason.json" for name in bad)])
    for name in bad:
        reason = json.loads((rejected / (name + ".reason.json")).read_text())
        assert reason["file_name"] == name and reason["reason"]
    assert sorted(p.name for p in landing.iterdir()) == sorted(good)
    moved = {str((landing / name).relative_to(tmp_path)) for name in bad}
    created = {str(p.relative_to(tmp_path)) for p in [*rejected.parents, rejected] if tmp_path in p.parents}
    created |= {str((rejected / p).relative_to(tmp_path)) for p in os.listdir(rejected)}
    assert tree(tmp_path) == (before - moved) | created


def test_a_rejected_file_with_the_longest_name_allowed_gets_its_reason(settings, db):
    name = "r" * 251 + ".csv"  # 255 bytes: the longest a file system takes
    path = settings.landing_dir / name  # no room for drop()'s temporary name: written in place
    path.write_text("not,the,header\n1,2\n")
    (outcome,) = ingest_files(
        [FileTask(str(path), path.stat().st_size)],
        LoadOptions(schema=settings.db_schema, stream_id="long", batch_id=0, rejected_dir=settings.rejected_dir),
        database_url=settings.database_url,
    )
    assert outcome.status == "rejected"
    assert (settings.rejected_dir / name).exists()
    (reason_file,) = settings.rejected_dir.glob("*.reason.json")  # shortened, with a digest
    assert json.loads(reason_file.read_text())["file_name"] == name


def test_spark_ingest_takes_odd_names_and_symlinks_without_leaving_its_directories(ingest, settings, db, tmp_path):
    """Through the real streaming query: Spark lists, the executors load and move.

    A symlink is a drop like the file it points to (Spark lists it with the target's
    size): its rows are read through it. Rejecting it moves the link only: the target,
    outside the landing directory, is neither moved nor changed. Links to directories
    and dangling links are not drops.
    """
    landing, rejected = settings.landing_dir, settings.rejected_dir
    for i, name in enumerate(ODD_NAMES):
        drop(landing, name, csv_text([row(200 + i)]))
    bad = rejected_variant(ODD_NAMES[3])
    drop(landing, bad, "not,the,header\n1,2,3\n")
    drop(landing, "..evil.csv", csv_text([row(290)]))  # hidden names are not drops
    drop(landing, "_partial.csv", csv_text([row(291)]))
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.csv"
    target.write_text("not,the,header\nrow-behind-the-link\n")
    (landing / "link.csv").symlink_to(target)
    (landing / "dir-link.csv").symlink_to(outside, target_is_directory=True)
    (landing / "dangling-link.csv").symlink_to(outside / "missing.csv")

    summary = ingest()

    files = ledger(db)
    assert set(files) == {*ODD_NAMES, bad, "link.csv"}
    assert all(files[name]["status"] == "ingested" and files[name]["rows_loaded"] == 1 for name in ODD_NAMES)
    assert files[bad]["status"] == "rejected" and files["link.csv"]["status"] == "rejected"
    assert summary.totals["total_files"] == len(ODD_NAMES) + 2
    assert sorted(p.name for p in rejected.iterdir()) == sorted(
        [bad, bad + ".reason.json", "link.csv", "link.csv.reason.json"]
    )
    assert json.loads((rejected / (bad + ".reason.json")).read_text())["file_name"] == bad
    # The link moved, as a link; its target stayed where it was, unchanged.
    assert (rejected / "link.csv").is_symlink() and (rejected / "link.csv").resolve() == target
    assert sorted(p.name for p in outside.iterdir()) == ["target.csv"]
    assert target.read_text() == "not,the,header\nrow-behind-the-link\n"
    raw = {r[0] for r in db.execute("SELECT raw_line FROM rejected_events WHERE source_file = 'link.csv'")}
    assert "row-behind-the-link" in raw  # read through the link: documented, see the module docstring
    # Loaded drops went to the archive under their own names, inside it; the hidden names and
    # the links that are no drops are left alone.
    assert {p.name for p in landing.iterdir()} == {"..evil.csv", "_partial.csv", "dir-link.csv", "dangling-link.csv"}
    archived = list(settings.archive_dir.rglob("*"))
    assert {p.name for p in archived if p.is_file()} == set(ODD_NAMES)
    assert all(p.resolve().is_relative_to(settings.archive_dir.resolve()) for p in archived)


def test_spark_ingest_loads_names_that_look_url_encoded_as_they_are(ingest, settings, db):
    names = ["a%20b.csv", "what?.csv", "tag#1.csv", "new\nline.csv"]
    for i, name in enumerate(names):
        drop(settings.landing_dir, name, csv_text([row(300 + i)]))
    drop(settings.landing_dir, "a b.csv", csv_text([row(310)]))  # what "a%20b.csv" decodes to
    ingest()
    files = ledger(db)
    assert set(files) == {*names, "a b.csv"}
    assert all(f["status"] == "ingested" and f["rows_loaded"] == 1 for f in files.values())


def test_a_drop_name_cannot_reach_a_file_outside_the_landing_dir(ingest, settings, db, tmp_path):
    outside = settings.landing_dir.parent / "outside"
    outside.mkdir()
    secret_file = outside / "secret.txt"
    secret_file.write_text("root:x:0:0:root\nsecret-line\n")
    name = "%2E%2E%2Foutside%2Fsecret.txt?.csv"
    drop(settings.landing_dir, name, "harmless\n")
    try:
        ingest()
    finally:
        # Whatever happened, the file outside is still there, unchanged, and unread.
        assert secret_file.read_text() == "root:x:0:0:root\nsecret-line\n"
        leaked = db.execute("SELECT count(*) FROM rejected_events WHERE raw_line LIKE '%secret-line%'").fetchone()[0]
        assert leaked == 0
    assert set(ledger(db)) == {name}


def test_a_drop_name_cannot_make_the_landing_directory_move(ingest, settings, db):
    drop(settings.landing_dir, "#x.csv", csv_text([row(400)]))
    drop(settings.landing_dir, "innocent.csv", csv_text([row(401)]))
    try:
        ingest()
    finally:
        assert settings.landing_dir.is_dir() and not (settings.rejected_dir / "landing").exists()
    files = ledger(db)
    assert set(files) == {"#x.csv", "innocent.csv"} and files["innocent.csv"]["rows_loaded"] == 1


@pytest.mark.parametrize(
    "schema",
    ['public"; DROP SCHEMA public CASCADE; --', "x; DROP TABLE ingest_files", "a b", "1abc", "x" * 64, "ünï", ""],
)
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused_clearly(schema):
    env = {ENV_PREFIX + "DB_SCHEMA": schema}
    if schema == "":
        assert Settings.from_env(env).db_schema == "public"  # empty means the default
        return
    with pytest.raises(SettingsError, match=r"ECOM_INGEST_DB_SCHEMA=.* is not a plain SQL identifier"):
        Settings.from_env(env)


def test_the_schema_name_reaches_sql_only_as_a_quoted_identifier(database_url):
    """Defence in depth: even a name validation let through could not inject."""
    hostile = 'evil"; DROP TABLE pg_catalog.pg_class; --'
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            assert database.migrate(conn, hostile) == len(database.MIGRATIONS)
            tables = {r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (hostile,)
            )}
            assert {"user_events", "rejected_events", "ingest_files", "ingest_batches"} <= tables
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(hostile)))


def test_the_cli_refuses_a_hostile_schema_before_touching_the_database(tmp_path):
    result = run_cli(
        ["status"], {ENV_PREFIX + "DB_SCHEMA": "x; DROP TABLE ingest_files", URL_VAR: f"postgresql://u:pw@{CLOSED}/x"},
        tmp_path,
    )
    assert result.returncode == 2
    assert "ECOM_INGEST_DB_SCHEMA" in result.stderr and "cannot connect" not in result.stderr


# -- 3. where the UIs listen ----------------------------------------------------------------


def _shell_default(text: str, variable: str) -> str:
    match = re.search(r"\$\{" + variable + r":-([^}]*)\}", text)
    assert match, f"no ${{{variable}:-default}} in the text"
    return match.group(1)


def test_dagster_dev_binds_loopback_unless_told_otherwise():
    dev = (ROOT / "scripts" / "dev").read_text()
    (command,) = [line for line in dev.splitlines() if re.search(r"\bdagster dev\b", line) and not line.startswith("#")]
    host = re.search(r"\s(?:-h|--host)\s+(\S+)", command).group(1)
    assert host == '"${DAGSTER_HOST:-127.0.0.1}"'
    assert _shell_default(command, "DAGSTER_HOST") == "127.0.0.1"
    # quickstart runs the job without a server; its UI is scripts/dev's.
    quickstart = (ROOT / "scripts" / "quickstart").read_text()
    assert "exec scripts/dev" in quickstart
    assert not re.search(r"dagster(-webserver| dev)\b", quickstart)
    assert "0.0.0.0" not in dev + quickstart


def test_compose_publishes_ports_on_loopback_only():
    """Inside a container the servers listen on 0.0.0.0; the host sees them on 127.0.0.1."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env_example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the short syntax, with a host IP"
            parts = re.fullmatch(r"(\$\{[^}]+\}|[\d.]+):(\$\{[^}]+\}|\d+):(\d+)", port)
            assert parts, f"{name}: {port} names no host IP: it would listen on every interface"
            host_ip, _, container_port = parts.groups()
            variable = re.fullmatch(r"\$\{([A-Z_]+):-([^}]*)\}", host_ip)
            if variable:  # ${X_BIND:-127.0.0.1}: loopback by default and in .env.example
                assert variable.group(2) == "127.0.0.1", f"{name}: {port}"
                assert env_example.get(variable.group(1)) == "127.0.0.1", variable.group(1)
            else:
                assert host_ip == "127.0.0.1", f"{name}: {port}"
            published[name] = int(container_port)
    assert published == {"dagster-webserver": 3000, "spark-master": 8080}
    # The database, the code server, the daemon and the workers are reached on the compose network only.
    assert not {"postgres", "dagster-code", "dagster-daemon", "spark-worker"} & set(published)


# -- 4. CI's dependency audit ---------------------------------------------------------------

AUDIT = ROOT / ".ci" / "audit_dependencies.py"
VULN_ID = "GHSA-test-0000-0001"


class _FakeOsv(http.server.BaseHTTPRequestHandler):
    """OSV's query API, knowing one vulnerability: jinja2 before 3.1.5."""

    def do_POST(self):  # noqa: N802
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        vulns = []
        if query["package"]["name"] == "jinja2" and query["version"] == "3.1.4":
            vulns.append({
                "id": VULN_ID, "aliases": ["CVE-0000-00001"], "summary": "a test vulnerability",
                "affected": [{"package": {"name": "jinja2", "ecosystem": "PyPI"},
                              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1.5"}]}]}],
            })
        body = json.dumps({"vulns": vulns} if vulns else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_osv():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeOsv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    server.server_close()


def audit(tmp_path: Path, osv_url: str, ignores: str | None = None) -> subprocess.CompletedProcess:
    """The CI step on a one-line requirements file, against ``osv_url``."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("jinja2==3.1.4\n")
    ignore_file = tmp_path / "ignore.txt"
    ignore_file.write_text(ignores or "")
    args = [
        sys.executable, str(AUDIT), "--ignore-file", str(ignore_file), "-r", str(requirements), "--no-deps",
        "--disable-pip", "-s", "osv", "--osv-url", osv_url, "--cache-dir", str(tmp_path / "cache"),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_audit_fails_on_a_known_vulnerability(tmp_path, fake_osv):
    result = audit(tmp_path, fake_osv)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("VULNERABLE")]
    # pip-audit names the CVE first when there is one; an ignore may use either ID.
    assert line.startswith("VULNERABLE jinja2 3.1.4: ") and VULN_ID in line and "CVE-0000-00001" in line
    assert line.endswith("fixed in 3.1.5")


def test_audit_passes_a_vulnerability_ignored_with_a_reason(tmp_path, fake_osv):
    result = audit(tmp_path, fake_osv, f"# comment\n{VULN_ID} not reachable: we never render templates\n")
    assert result.returncode == 0, result.stderr
    assert f"ignored by policy: {VULN_ID}" in result.stderr


def test_audit_refuses_an_ignore_without_a_reason(tmp_path, fake_osv):
    result = audit(tmp_path, fake_osv, f"{VULN_ID}\n")
    assert result.returncode == 2
    assert "without a reason" in result.stderr


def test_audit_only_warns_when_the_service_cannot_be_reached(tmp_path):
    result = audit(tmp_path, f"http://127.0.0.1:{closed_port()}/v1/query")
    assert result.returncode == 0, result.stderr
    assert "WARNING: pip-audit: the vulnerability service could not be reached" in result.stderr


def test_the_ignore_file_ci_reads_gives_every_entry_a_reason():
    sys.path.insert(0, str(AUDIT.parent))
    try:
        from audit_dependencies import IGNORE_FILE, read_ignores
    finally:
        sys.path.remove(str(AUDIT.parent))
    assert IGNORE_FILE.exists()
    assert all(reason for reason in read_ignores(IGNORE_FILE).values())
    assert "audit_dependencies.py" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r'"pip-audit==[\d.]+"', (ROOT / "pyproject.toml").read_text())


def test_contract_still_treats_hidden_names_as_no_drops():
    """What the Spark test relies on for "..evil.csv" and "_partial.csv"."""
    assert not c.is_drop_name("..evil.csv") and not c.is_drop_name("_partial.csv")
    assert all(c.is_drop_name(name) for name in ODD_NAMES)
    assert os.sep not in "".join(ODD_NAMES + LOADER_ONLY_NAMES)


def test_a_role_that_may_not_create_the_schema_gets_one_clear_line(secret, tmp_path):
    (tmp_path / "landing").mkdir()
    result = run_cli(
        ["ingest", "--landing", str(tmp_path / "landing")],
        {ENV_PREFIX + "HOME": str(tmp_path / "home"), URL_VAR: secret.url, ENV_PREFIX + "DB_SCHEMA": "not_granted"},
        tmp_path,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "may not create it" in last and "CREATE SCHEMA not_granted AUTHORIZATION" in last
    assert "Traceback" not in result.stderr and secret.password not in result.stderr
