"""The event data contract (``shared/data-contract.md``) as code.

The generator writes it, the validator enforces it, the loader's tables follow it.
Change it only together with the contract document, the tests and the schema.
"""

from __future__ import annotations

import re

EVENT_TYPE_MIX: dict[str, float] = {
    "view": 0.50,
    "add_to_cart": 0.20,
    "purchase": 0.15,
    "wishlist": 0.10,
    "remove_from_cart": 0.05,
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_TYPE_MIX)

# Column order is the canonical one used when we write files and tables; input files
# may order their columns freely.
COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "session_id",
    "event_type",
    "product_id",
    "product_name",
    "category",
    "price",
    "quantity",
    "event_timestamp",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "event_type",
    "product_id",
    "price",
    "quantity",
    "event_timestamp",
)
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in REQUIRED_COLUMNS)

# How each column is stored in ``user_events``: the one place the types are written. The
# load's stage tables, the Dagster table schema and the benchmark's tables derive theirs
# from it (the migrations in pipeline/database.py stay literal: they must never change).
SQL_TYPES: dict[str, str] = {
    "event_id": "uuid",
    "user_id": "text",
    "session_id": "uuid",
    "event_type": "text",
    "product_id": "text",
    "product_name": "text",
    "category": "text",
    "price": "numeric(12,2)",
    "quantity": "integer",
    "event_timestamp": "timestamptz",
}
# Stages carry the timestamp as microseconds since the epoch (no text round trip).
STAGE_COLUMNS: list[str] = [col for col in COLUMNS if col != "event_timestamp"] + ["event_ts_us"]


def stage_ddl(*, extra: dict[str, str] | None = None) -> str:
    """Column definitions of a stage table for validated rows (``extra`` columns first)."""
    types = {**(extra or {}), **{col: SQL_TYPES[col] for col in STAGE_COLUMNS[:-1]}, "event_ts_us": "bigint"}
    return ", ".join(f"{name} {sql_type}" for name, sql_type in types.items())

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
USER_ID_PATTERN = r"^user_[0-9]{1,10}$"
PRODUCT_ID_PATTERN = r"^prod_[0-9]{1,10}$"
# A decimal with at most two places: numeric(12,2) would silently round a third one.
PRICE_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]{0,2})?|\.[0-9]{1,2})$"
QUANTITY_PATTERN = r"^[+]?[0-9]{1,9}$"
# ISO-8601 date-time that carries its own offset ("Z" or +hh:mm / +hhmm / +hh), with
# fields in range (month 01-12, hour 00-23, ...); the calendar itself (Feb 30) is left
# to the parser.
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r"(?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)$"
)

PRICE_MIN = 0
PRICE_MAX = 1_000_000
QUANTITY_MIN = 1
QUANTITY_MAX = 1_000
MAX_FUTURE_SECONDS = 24 * 3600
MAX_LENGTHS: dict[str, int] = {"product_name": 200, "category": 100}

# Row rejection reasons, in the contract's order (also the order a row's reasons are listed).
INVALID_EVENT_ID = "invalid_event_id"
INVALID_USER_ID = "invalid_user_id"
INVALID_EVENT_TYPE = "invalid_event_type"
MISSING_REQUIRED_FIELD = "missing_required_field"
NEGATIVE_PRICE = "negative_price"
INVALID_PRICE = "invalid_price"
INVALID_QUANTITY = "invalid_quantity"
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_SESSION_ID = "invalid_session_id"
FIELD_TOO_LONG = "field_too_long"
MALFORMED_ROW = "malformed_row"
INVALID_PRODUCT_ID = "invalid_product_id"

REJECTION_REASONS: tuple[str, ...] = (
    INVALID_EVENT_ID,
    INVALID_USER_ID,
    INVALID_EVENT_TYPE,
    MISSING_REQUIRED_FIELD,
    NEGATIVE_PRICE,
    INVALID_PRICE,
    INVALID_QUANTITY,
    INVALID_TIMESTAMP,
    INVALID_SESSION_ID,
    FIELD_TOO_LONG,
    MALFORMED_ROW,
    # product_id has a rule in the contract's column table but no reason of its own
    # in the reasons table; we name it rather than hide it under another reason.
    INVALID_PRODUCT_ID,
)

# The categories of the original performance report (section 5.2).
REPORT_REASON_LABELS: dict[str, str] = {
    INVALID_EVENT_ID: "Invalid event_id format",
    INVALID_USER_ID: "Invalid user_id format",
    INVALID_EVENT_TYPE: "Invalid event_type",
    MISSING_REQUIRED_FIELD: "Missing required fields",
    NEGATIVE_PRICE: "Invalid price (negative)",
}

# Whole-file rejection reasons: the file cannot be ingested as a whole, every row of it
# is counted as rejected with this reason.
FILE_NOT_UTF8 = "file_not_utf8"
FILE_NO_HEADER = "file_no_header"
FILE_MISSING_COLUMNS = "file_missing_required_columns"
FILE_DUPLICATE_COLUMNS = "file_duplicate_columns"
FILE_UNPARSEABLE = "file_unparseable_csv"
# Beyond the contract's list: what a real landing directory does to a file.
FILE_UNREADABLE = "file_unreadable"  # no read permission, vanished, or not a regular file
FILE_CHANGED = "file_changed_while_reading"  # not placed atomically: written or replaced under our feet
FILE_REJECTION_REASONS: tuple[str, ...] = (
    FILE_NOT_UTF8,
    FILE_NO_HEADER,
    FILE_MISSING_COLUMNS,
    FILE_DUPLICATE_COLUMNS,
    FILE_UNPARSEABLE,
    FILE_UNREADABLE,
    FILE_CHANGED,
)

_DROP_NAME = re.compile(r"^[^._][^/\\]*\.csv$")


def is_drop_name(name: str) -> bool:
    """True for a file name the landing directory treats as a drop (``*.csv``, not hidden)."""
    return bool(_DROP_NAME.match(name))
