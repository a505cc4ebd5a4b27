"""The user events feed's contract (``feeds/user_events.yaml``) as the names the code uses.

The generator writes it, the validator enforces it, the loader's tables follow it. The
values come from the contract file; ``docs/data-contract.md`` says the same in prose.
"""

from __future__ import annotations

import re

from ecom_ingest_dagster.feeds import shipped_feed, types

FEED = shipped_feed("user_events")


def _rule(column: str, kind: str):
    rule = FEED.column(column).rule(kind)
    if rule is None:
        raise RuntimeError(f"feeds/user_events.yaml: column {column} has no {kind} rule, which the code relies on")
    return rule


EVENT_TYPE_MIX: dict[str, float] = dict(FEED.column("event_type").generate.weights)
EVENT_TYPES: tuple[str, ...] = _rule("event_type", "one_of").one_of

# Column order is the canonical one used when we write files and tables; input files
# may order their columns freely.
COLUMNS: tuple[str, ...] = tuple(col.name for col in FEED.columns)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(col.name for col in FEED.columns if col.required)
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in REQUIRED_COLUMNS)

# How each column is stored in ``user_events`` (the Dagster table schema and the benchmark's
# tables take theirs from it; the migrations in pipeline/database.py stay literal: they
# must never change).
SQL_TYPES: dict[str, str] = FEED.sql_types

# The text form each typed column must have (feeds/types.py says what each type accepts).
UUID_PATTERN = types.UUID_FORM
USER_ID_PATTERN = _rule("user_id", "pattern").pattern
PRODUCT_ID_PATTERN = _rule("product_id", "pattern").pattern
PRICE_PATTERN = types.text_form(SQL_TYPES["price"])
QUANTITY_PATTERN = types.text_form(SQL_TYPES["quantity"])
TIMESTAMP_PATTERN = types.TIMESTAMP_FORM

PRICE_MIN = int(_rule("price", "min").min)
PRICE_MAX = int(_rule("price", "max").max)
QUANTITY_MIN = int(_rule("quantity", "min").min)
QUANTITY_MAX = int(_rule("quantity", "max").max)
MAX_FUTURE_SECONDS = _rule("event_timestamp", "not_after_now_seconds").not_after_now_seconds
MAX_LENGTHS: dict[str, int] = {col.name: col.rule("max_length").max_length for col in FEED.columns if col.rule("max_length")}

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

REJECTION_REASONS: tuple[str, ...] = FEED.reasons
# The names above are the code's handles on the contract's reasons: each must be one of them.
if {INVALID_EVENT_ID, INVALID_USER_ID, INVALID_EVENT_TYPE, MISSING_REQUIRED_FIELD, NEGATIVE_PRICE, INVALID_PRICE,
        INVALID_QUANTITY, INVALID_TIMESTAMP, INVALID_SESSION_ID, FIELD_TOO_LONG, MALFORMED_ROW,
        INVALID_PRODUCT_ID} != set(REJECTION_REASONS):
    raise RuntimeError("contract.py's reason names and feeds/user_events.yaml's reasons disagree")

# What user_events' literal migrations, its generator (invalid_rows.py) and the report's
# categories are built for: the columns and types, and which rule of which column gives
# which reason. Validation and loading follow any contract; a change of this feed's shape
# would break its table or be ignored by its generator, so it is refused here, with what to do.
_BUILT_FOR_TYPES = {"event_id": "uuid", "user_id": "text", "session_id": "uuid", "event_type": "text",
                    "product_id": "text", "product_name": "text", "category": "text", "price": "numeric(12,2)",
                    "quantity": "integer", "event_timestamp": "timestamptz"}
_BUILT_FOR_RULES = {
    ("user_id", "pattern"): INVALID_USER_ID, ("event_type", "one_of"): INVALID_EVENT_TYPE,
    ("product_id", "pattern"): INVALID_PRODUCT_ID, ("product_name", "max_length"): FIELD_TOO_LONG,
    ("category", "max_length"): FIELD_TOO_LONG, ("price", "max"): INVALID_PRICE, ("price", "min"): NEGATIVE_PRICE,
    ("quantity", "min"): INVALID_QUANTITY, ("quantity", "max"): INVALID_QUANTITY,
    ("event_timestamp", "not_after_now_seconds"): INVALID_TIMESTAMP,
}
_BUILT_FOR_INVALID = {"event_id": INVALID_EVENT_ID, "session_id": INVALID_SESSION_ID, "price": INVALID_PRICE,
                      "quantity": INVALID_QUANTITY, "event_timestamp": INVALID_TIMESTAMP}


def shape_problems(feed) -> list[str]:
    """How ``feed`` (a ``FeedContract``) differs from the shape user_events' tables (literal
    migrations), generator and report are built for (validation and loading follow any contract)."""
    problems = []
    types = {col.name: col.type for col in feed.columns}
    required = tuple(col.name for col in feed.columns if col.required)
    if types != _BUILT_FOR_TYPES or list(types) != list(_BUILT_FOR_TYPES) or required != (
            "event_id", "user_id", "event_type", "product_id", "price", "quantity", "event_timestamp"):
        problems.append("its columns, their order, types or required flags differ from the table's")
    kinds = ("pattern", "one_of", "min", "max", "max_length", "not_after_now_seconds")
    given = {(col.name, kind): rule.reason for col in feed.columns for rule in col.rules
             for kind in kinds if getattr(rule, kind) is not None}
    if given != _BUILT_FOR_RULES:
        problems.append(f"its rules or their reasons differ: {sorted(set(given.items()) ^ set(_BUILT_FOR_RULES.items()))}")
    invalid = {col.name: col.invalid_reason for col in feed.columns if col.invalid_reason}
    if invalid != _BUILT_FOR_INVALID or (feed.missing_reason, feed.malformed_reason) != (MISSING_REQUIRED_FIELD, MALFORMED_ROW):
        problems.append("its invalid_reason, missing_reason or malformed_reason differ")
    bounds = [getattr(r, k) for col in feed.columns for r in col.rules for k in ("min", "max") if getattr(r, k) is not None]
    if any(b != int(b) for b in bounds):
        problems.append("a min or max is not a whole number")
    return problems


if _problems := shape_problems(FEED):
    raise RuntimeError(
        "feeds/user_events.yaml: " + "; ".join(_problems) + ". Its tables are the literal migrations, and its"
        " generator and report are built for these rules: change only rule values (patterns, one_of, min/max,"
        " max_length, not_after_now_seconds, weights); a feed of another shape is a contract file of its own"
        " (README: Add a feed)"
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
FILE_EXTRA_COLUMNS = "file_unexpected_columns"  # columns the contract does not name, in a feed that rejects them
FILE_REJECTION_REASONS: tuple[str, ...] = (
    FILE_NOT_UTF8,
    FILE_NO_HEADER,
    FILE_MISSING_COLUMNS,
    FILE_DUPLICATE_COLUMNS,
    FILE_UNPARSEABLE,
    FILE_UNREADABLE,
    FILE_CHANGED,
    FILE_EXTRA_COLUMNS,
)

_DROP_NAME = re.compile(r"^[^._][^/\\]*\.csv(?:\.gz|\.zst)?$")


def is_drop_name(name: str) -> bool:
    """True for a file name the landing directory treats as a drop (``*.csv``, ``*.csv.gz`` or ``*.csv.zst``, not hidden)."""
    return bool(_DROP_NAME.match(name))
