"""The column types a contract may use: the text a drop must send for each, and the value
it stands for.

One place for what a type means, so the validator (which accepts the text), the encoder
(which sends the value as PostgreSQL's binary form) and the tables (which store it) cannot
disagree: text the validator lets through always casts here.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# PostgreSQL's names; numeric takes its precision and scale.
PLAIN_TYPES = ("uuid", "text", "integer", "bigint", "boolean", "date", "timestamptz")
NUMERIC = re.compile(r"^numeric\((\d{1,2}),\s*(\d{1,2})\)$")
# Types whose values min/max rules compare; types a not_after_now_seconds rule applies to.
NUMBER_TYPES = ("integer", "bigint")
TIME_TYPES = ("timestamptz", "date")

UUID_FORM = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# ISO-8601 date-time that carries its own offset ("Z" or +hh:mm / +hhmm / +hh), with
# fields in range (month 01-12, hour 00-23, ...); the calendar itself (Feb 30) is left to
# the parser.
TIMESTAMP_FORM = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r"(?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)$"
)
DATE_FORM = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
# integer: up to 10 digits, then held to int32's range; bigint: up to 18 digits (always
# within int64), so a value never overflows the column it is sent to.
INTEGER_FORM = r"^[+-]?[0-9]{1,10}$"
BIGINT_FORM = r"^[+-]?[0-9]{1,18}$"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
BOOLEAN_TRUE = ("true", "t", "yes", "y", "1")
BOOLEAN_FALSE = ("false", "f", "no", "n", "0")
BOOLEAN_FORM = r"(?i)^(?:" + "|".join(BOOLEAN_TRUE + BOOLEAN_FALSE) + r")$"


def is_known(sql_type: str) -> bool:
    return sql_type in PLAIN_TYPES or NUMERIC.match(sql_type) is not None


def numeric_scale(sql_type: str) -> tuple[int, int] | None:
    """(precision, scale) of a numeric(p,s) type, None for any other."""
    found = NUMERIC.match(sql_type)
    return (int(found.group(1)), int(found.group(2))) if found else None


def compares_numbers(sql_type: str) -> bool:
    """True for the types min/max rules apply to."""
    return sql_type in NUMBER_TYPES or NUMERIC.match(sql_type) is not None


def text_form(sql_type: str) -> str | None:
    """The regular expression every value of the type must match (None: any text)."""
    if sql_type == "text":
        return None
    if (ps := numeric_scale(sql_type)) is not None:
        precision, scale = ps
        whole = precision - scale
        if scale == 0:
            return rf"^[+-]?[0-9]{{1,{whole}}}$"
        # At most ``scale`` places: a further one would be silently rounded by PostgreSQL.
        return rf"^[+-]?(?:[0-9]{{1,{whole}}}(?:\.[0-9]{{0,{scale}}})?|\.[0-9]{{1,{scale}}})$"
    return {"uuid": UUID_FORM, "integer": INTEGER_FORM, "bigint": BIGINT_FORM, "boolean": BOOLEAN_FORM,
            "date": DATE_FORM, "timestamptz": TIMESTAMP_FORM}[sql_type]


def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow type that is the column's binary COPY form exactly (binary COPY has no coercion).

    pgpq has no uuid type; a uuid's binary form is its 16 bytes, which pgpq sends as a
    16-byte field (as for bytea) and the uuid column reads as they are.
    """
    if (ps := numeric_scale(sql_type)) is not None:
        return pa.decimal128(*ps)
    return {"uuid": pa.binary(16), "text": pa.string(), "integer": pa.int32(), "bigint": pa.int64(),
            "boolean": pa.bool_(), "date": pa.date32(), "timestamptz": pa.timestamp("us", tz="UTC")}[sql_type]


# -- parsing text that matched the type's form -----------------------------------------

_NULL_TEXT = pa.scalar(None, pa.string())


def matches(text: pa.Array, pattern: str) -> pa.Array:
    """True where the text matches ``pattern``, false elsewhere (missing values too)."""
    return pc.fill_null(pc.match_substring_regex(text, pattern), False)


def where(mask: pa.Array, text: pa.Array) -> pa.Array:
    """The text where ``mask`` holds, null elsewhere."""
    return pc.if_else(mask, text, _NULL_TEXT)


def numbers(text: pa.Array, sql_type: str) -> np.ndarray:
    """float64 value of each well-formed value of a number type, NaN for anything else.

    Plain float64 with NaN for null: an Arrow-backed NA would compare to NA, which Pandera
    lets pass. The form makes every cast safe.
    """
    well_formed = where(matches(text, text_form(sql_type)), text)
    values = pc.cast(well_formed, pa.float64()).to_numpy(zero_copy_only=False)  # "+3" casts as it is
    if sql_type == "integer":
        values = np.where((values >= INT32_MIN) & (values <= INT32_MAX), values, np.nan)
    return values


def timestamp_micros(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds since the epoch (UTC, int64) and where they are known (bool).

    Integers, not floats: a float64 holds microseconds exactly only within ~285 years of
    1970, and a valid event from 1600 would be loaded a microsecond off.
    """
    well_formed = matches(text, TIMESTAMP_FORM)
    try:
        # Arrow's ISO-8601 cast is several times faster than pandas' parser, but all or
        # nothing: one impossible date (Feb 30) sends the chunk to pandas instead.
        stamps = pc.cast(where(well_formed, text), pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = pd.Series(pd.arrays.ArrowExtensionArray(text))
        parsed = pd.to_datetime(values.where(well_formed.to_numpy(zero_copy_only=False)), format="ISO8601", utc=True,
                                errors="coerce")
        known = parsed.notna().to_numpy()
        micros = parsed.to_numpy(dtype="datetime64[us]").astype(np.int64)
        return np.where(known, micros, 0), known
    known = stamps.is_valid().to_numpy(zero_copy_only=False)
    micros = pc.cast(stamps, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    return micros, known


def date_micros(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A date's midnight UTC in microseconds since the epoch, and where it is known: a real
    calendar day (Feb 30 is not), compared as a timestamp by not_after_now_seconds."""
    well_formed = matches(text, DATE_FORM)
    try:
        days = pc.cast(where(well_formed, text), pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = pd.Series(pd.arrays.ArrowExtensionArray(text))
        parsed = pd.to_datetime(values.where(well_formed.to_numpy(zero_copy_only=False)), format="%Y-%m-%d",
                                utc=True, errors="coerce")
        known = parsed.notna().to_numpy()
        return np.where(known, parsed.to_numpy(dtype="datetime64[us]").astype(np.int64), 0), known
    known = days.is_valid().to_numpy(zero_copy_only=False)
    micros = pc.cast(days, pa.int32()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) * 86_400_000_000
    return micros, known


def binary_values(text: pa.Array, sql_type: str) -> pa.Array:
    """Validated text of ``sql_type`` as its Arrow binary form (nulls stay null).

    Only text that matched the type's form may come here: every cast succeeds. uuid and
    timestamptz take their own routes (``encode``): the bytes, the parsed microseconds.
    """
    if sql_type in ("integer", "bigint"):  # a leading "+" is allowed; Arrow's cast refuses it
        return pc.cast(pc.utf8_ltrim(text, characters="+"), arrow_type(sql_type))
    if sql_type == "boolean":
        lowered = pc.utf8_lower(text)
        return pc.if_else(pc.is_null(lowered), pa.scalar(None, pa.bool_()), pc.is_in(lowered, value_set=pa.array(BOOLEAN_TRUE)))
    return pc.cast(text, arrow_type(sql_type))  # text, numeric ("+19.9", ".5" cast as they are), date
