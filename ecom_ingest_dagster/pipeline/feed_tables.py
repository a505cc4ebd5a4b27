"""A feed's own tables, made from its contract and kept in step with it.

The ``user_events`` feed's tables come from the schema's migrations (``database.py``),
literal and never edited. Every other feed's table and quarantine table are created here
from its contract the first time it runs, and when the contract changes:

- a new optional column is added to both (``ALTER TABLE ... ADD COLUMN``, no rewrite);
- a column that became optional loses its ``NOT NULL``;
- anything that would break what is loaded already (a type change, a removed column, a new
  or newly required column) is refused before any file is touched, with one sentence
  saying what to do.

Knows nothing of files, Spark or Dagster.
"""

from __future__ import annotations

import dataclasses

from psycopg import sql

from ecom_ingest_dagster.feeds import RESERVED_COLUMNS, FeedContract

# What PostgreSQL's format_type() calls our types.
_PG_NAMES = {"timestamptz": "timestamp with time zone"}


class ContractBreaksTable(RuntimeError):
    """The contract cannot be applied to the feed's existing table; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class TableColumn:
    type: str
    required: bool


def _qualified(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def table_ddl(schema: str, feed: FeedContract) -> sql.Composed:
    """The feed's table and quarantine table, with their indexes, as they are created."""
    target, rejected = _qualified(schema, feed.table), _qualified(schema, feed.rejected_table)
    columns = [sql.SQL("{} {}{}").format(sql.Identifier(col.name), sql.SQL(col.type), sql.SQL(" NOT NULL" if col.required else ""))
               for col in feed.columns]
    raw = [sql.SQL("{} text").format(sql.Identifier(name)) for name in feed.column_names]
    return sql.SQL("""
    CREATE TABLE {target} (
        {columns},
        source_file text NOT NULL,
        batch_id    bigint NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        rescued     jsonb,
        PRIMARY KEY ({key})
    );
    CREATE INDEX ON {target} USING brin (source_file) WITH (pages_per_range = 16);
    CREATE INDEX ON {target} USING brin (created_at);
    CREATE TABLE {rejected} (
        id             bigserial PRIMARY KEY,
        {raw},
        raw_line       text,
        record_number  bigint,
        reasons        text[] NOT NULL,
        details        text[] NOT NULL DEFAULT '{{}}',
        source_file    text NOT NULL,
        batch_id       bigint NOT NULL,
        rejected_at    timestamptz NOT NULL DEFAULT now(),
        replayed_at    timestamptz,
        replay_outcome text CHECK (replay_outcome IN ('loaded', 'duplicate')),
        rescued        jsonb
    );
    CREATE INDEX ON {rejected} (source_file);
    CREATE INDEX ON {rejected} USING gin (reasons);
    """).format(target=target, rejected=rejected, columns=sql.SQL(",\n        ").join(columns),
                raw=sql.SQL(",\n        ").join(raw), key=sql.Identifier(feed.unique_key))


def existing_columns(conn, schema: str, name: str) -> dict[str, TableColumn]:
    """A table's columns as PostgreSQL has them (empty when there is no such table)."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a"
        " JOIN pg_class t ON t.oid = a.attrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = %s AND t.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, name),
    ).fetchall()
    return {column: TableColumn(pg_type, not_null) for column, pg_type, not_null in rows}


def changes(feed: FeedContract, have: dict[str, TableColumn], where: str) -> tuple[list[tuple[str, str]], list[str]]:
    """What applying ``feed`` to a table whose columns are ``have`` takes: the changes to make
    (``("add", column)``, ``("optional", column)``) and the problems that refuse it."""
    clauses, problems = [], []
    for col in feed.columns:
        pg_type = _PG_NAMES.get(col.type, col.type)
        there = have.get(col.name)
        if there is None:
            if col.required:
                problems.append(f"column {col.name} is new and required, and the rows loaded already have no value for"
                                " it: add it as optional (required: false)")
            else:
                clauses.append(("add", col.name))
        elif there.type != pg_type:
            problems.append(f"column {col.name} is {there.type} in {where} and {pg_type} in the contract: a type change"
                            " breaks the rows loaded already; load into a new table (table: ...) or migrate this one"
                            " yourself")
        elif col.required and not there.required:
            problems.append(f"column {col.name} became required, and rows loaded already may lack it: keep it optional")
        elif there.required and not col.required:
            clauses.append(("optional", col.name))
    # the platform's own columns (source_file, rescued, ...) are names no contract may use
    gone = [name for name in have if name not in feed.column_names and name not in RESERVED_COLUMNS]
    if gone:
        problems.append(f"column(s) {', '.join(gone)} of {where} are no longer in the contract: a removed column loses"
                        " what is loaded; keep them in the contract (required: false) or drop them from the table"
                        " yourself")
    return clauses, problems


def ensure(conn, schema: str, feed: FeedContract, contract_path: str = "the contract") -> list[str]:
    """Create the feed's tables, or bring them in step with its contract; returns what was
    changed (empty when nothing). Raises ``ContractBreaksTable`` for a change that breaks."""
    have = existing_columns(conn, schema, feed.table)
    if not have:
        conn.execute(table_ddl(schema, feed))
        return [f"created {schema}.{feed.table} and {schema}.{feed.rejected_table}"]
    clauses, problems = changes(feed, have, f"{schema}.{feed.table}")
    if clauses and not problems:
        # Each file records the contract version it was held to: a table that changes under
        # a version files were already loaded with would make that record say two things.
        loaded_with = conn.execute(
            sql.SQL("SELECT max(contract_version) FROM {}").format(_qualified(schema, "ingest_files"))
        ).fetchone()[0]
        if loaded_with is not None and loaded_with >= feed.version:
            changed = ", ".join(f"{name} added" if kind == "add" else f"{name} made optional" for kind, name in clauses)
            problems.append(f"its columns changed ({changed}) but its"
                            f" version is {feed.version}, and files were already loaded under version {loaded_with}:"
                            f" bump version to {loaded_with + 1}")
    if problems:
        raise ContractBreaksTable(
            f"{contract_path} (feed {feed.feed}, version {feed.version}) cannot be applied to {schema}.{feed.table}: "
            + "; ".join(problems) + f". (`ecom-ingest psql --feed {feed.feed}` opens that database in {schema}.)"
        )
    target, rejected = _qualified(schema, feed.table), _qualified(schema, feed.rejected_table)
    done = []
    for kind, name in clauses:
        column = sql.Identifier(name)
        if kind == "add":
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(target, column, sql.SQL(feed.column(name).type)))
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(rejected, column))
            done.append(f"{schema}.{feed.table}: added optional column {name}")
        else:
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(target, column))
            done.append(f"{schema}.{feed.table}: column {name} is optional now")
    return done
