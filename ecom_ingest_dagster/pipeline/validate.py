"""Row-level validation of raw event rows with a Pandera schema.

Input values are the text that was sent (``str`` or missing). Every rule of the data
contract is a named Pandera check whose name *is* the rejection reason, so a row's
reasons come straight out of ``SchemaErrors.failure_cases``. Values are parsed inside
the checks and the schema runs with ``coerce=False``: with coercion one unparseable
value hides the other failures of its column (see the stack notes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pyarrow.compute as pc
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ecom_ingest_dagster import contract as c

# Arrow-backed text: the regex checks run vectorised in Arrow compute (RE2), several
# times faster than Python-object strings.
_TEXT = pd.ArrowDtype(pa_arrow.string())
_REASON_ORDER = {reason: i for i, reason in enumerate(c.REJECTION_REASONS)}


def _matches(series: pd.Series, pattern: str) -> pd.Series:
    return series.str.match(pattern).fillna(False).astype(bool)


def _arrow(series: pd.Series, mask: pd.Series) -> pa_arrow.Array:
    """The series' text where ``mask`` holds, null elsewhere, as one Arrow array."""
    values = pa_arrow.array(series.astype(_TEXT).array) if not isinstance(series.dtype, pd.ArrowDtype) else series.array._pa_array
    return pc.if_else(pa_arrow.array(mask.to_numpy(), pa_arrow.bool_()), values, pa_arrow.scalar(None, pa_arrow.string()))


def price_values(series: pd.Series) -> np.ndarray:
    """Numeric value of well-formed prices (float64), NaN for anything else.

    Plain float64: an Arrow-backed NA would compare to NA, which Pandera lets pass.
    """
    well_formed = _matches(series, c.PRICE_PATTERN)
    numbers = pc.cast(_arrow(series, well_formed), pa_arrow.float64())  # the pattern makes every cast safe
    return numbers.to_numpy(zero_copy_only=False)


def quantity_values(series: pd.Series) -> np.ndarray:
    well_formed = _matches(series, c.QUANTITY_PATTERN)
    numbers = pc.cast(pc.utf8_trim(_arrow(series, well_formed), "+"), pa_arrow.float64())
    return numbers.to_numpy(zero_copy_only=False)


def timestamp_micros(series: pd.Series) -> np.ndarray:
    """Microseconds since the epoch (UTC) of contract-shaped timestamps, NaN for the rest."""
    well_formed = _matches(series, c.TIMESTAMP_PATTERN)
    try:
        # Arrow's ISO-8601 cast is several times faster than pandas' parser, but all or
        # nothing: one impossible date (Feb 30) sends the chunk to pandas instead.
        stamps = pc.cast(_arrow(series, well_formed), pa_arrow.timestamp("us", tz="UTC"))
        micros = pc.cast(stamps, pa_arrow.int64())
    except (pa_arrow.ArrowInvalid, pa_arrow.ArrowNotImplementedError):
        parsed = pd.to_datetime(series.where(well_formed), format="ISO8601", utc=True, errors="coerce")
        return np.where(parsed.isna(), np.nan, parsed.to_numpy(dtype="datetime64[us]").astype(np.int64).astype(float))
    return micros.to_numpy(zero_copy_only=False).astype(float)


@dataclasses.dataclass(frozen=True)
class ParsedValues:
    """Each typed column parsed once per chunk, shared by the checks and the output."""

    price: pd.Series
    quantity: pd.Series
    timestamp_us: pd.Series

    @classmethod
    def of(cls, clean: pd.DataFrame) -> "ParsedValues":
        return cls(
            pd.Series(price_values(clean["price"]), index=clean.index),
            pd.Series(quantity_values(clean["quantity"]), index=clean.index),
            pd.Series(timestamp_micros(clean["event_timestamp"]), index=clean.index),
        )


def _length_at_most(limit: int):
    return lambda s: (s.str.len() <= limit).fillna(True)


def build_schema(now: dt.datetime, parsed: ParsedValues | None = None) -> pa.DataFrameSchema:
    """The contract as a Pandera schema; ``now`` bounds how far in the future events may be.

    With ``parsed`` (the chunk's values parsed once) the checks only compare; without
    it they parse the column they are given.
    """
    latest = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    latest_us = (latest + pd.Timedelta(seconds=c.MAX_FUTURE_SECONDS)).value // 1000

    def values(s: pd.Series, name: str, parse) -> pd.Series:
        # Pandera hands a check only the non-missing values (ignore_na): align by label.
        if parsed is not None:
            known = getattr(parsed, name)
            return known if len(known) == len(s) else known.reindex(s.index)
        return pd.Series(parse(s), index=s.index)

    def check(fn, reason: str) -> pa.Check:
        # ignore_na: a missing value is the nullable rule's business, not this one's.
        return pa.Check(fn, name=reason, ignore_na=True, error=reason)

    def required(*checks: pa.Check) -> pa.Column:
        return pa.Column(None, checks=list(checks), nullable=False, required=True)

    def optional(*checks: pa.Check) -> pa.Column:
        return pa.Column(None, checks=list(checks), nullable=True, required=True)

    def timestamp_ok(s: pd.Series) -> pd.Series:
        return values(s, "timestamp_us", timestamp_micros) <= latest_us  # NaN compares False

    def price(s: pd.Series) -> pd.Series:
        return values(s, "price", price_values)

    def quantity_ok(s: pd.Series) -> pd.Series:
        return values(s, "quantity", quantity_values).between(c.QUANTITY_MIN, c.QUANTITY_MAX)

    return pa.DataFrameSchema(
        {
            "event_id": required(check(lambda s: _matches(s, c.UUID_PATTERN), c.INVALID_EVENT_ID)),
            "user_id": required(check(lambda s: _matches(s, c.USER_ID_PATTERN), c.INVALID_USER_ID)),
            "session_id": optional(check(lambda s: _matches(s, c.UUID_PATTERN), c.INVALID_SESSION_ID)),
            "event_type": required(check(lambda s: s.isin(c.EVENT_TYPES), c.INVALID_EVENT_TYPE)),
            "product_id": required(check(lambda s: _matches(s, c.PRODUCT_ID_PATTERN), c.INVALID_PRODUCT_ID)),
            "product_name": optional(check(_length_at_most(c.MAX_LENGTHS["product_name"]), c.FIELD_TOO_LONG)),
            "category": optional(check(_length_at_most(c.MAX_LENGTHS["category"]), c.FIELD_TOO_LONG)),
            "price": required(
                # A negative price "parses": it is negative_price, not also invalid_price.
                check(lambda s: price(s).le(c.PRICE_MAX), c.INVALID_PRICE),
                check(lambda s: ~price(s).lt(c.PRICE_MIN), c.NEGATIVE_PRICE),
            ),
            "quantity": required(check(quantity_ok, c.INVALID_QUANTITY)),
            "event_timestamp": required(check(timestamp_ok, c.INVALID_TIMESTAMP)),
        },
        coerce=False,
        strict=False,
        name="user_event",
    )


@dataclasses.dataclass
class ValidationResult:
    """The rows of one chunk split in two; both keep the input's index."""

    valid: pd.DataFrame  # contract columns, cleaned; event_id lower case; event_ts_us (int64)
    rejected: pd.DataFrame  # contract columns as sent, plus reasons / details (lists of str)

    @property
    def reason_counts(self) -> dict[str, int]:
        return count_reasons(self.rejected["reasons"]) if len(self.rejected) else {}


def count_reasons(reasons: pd.Series) -> dict[str, int]:
    counts = reasons.explode().value_counts()
    return {str(reason): int(n) for reason, n in counts.items()}


def normalize(raw: pd.DataFrame) -> pd.DataFrame:
    """Contract columns only, surrounding blanks trimmed, empty text as missing."""
    out = pd.DataFrame(index=raw.index)
    for column in c.COLUMNS:
        if column in raw.columns:
            values = raw[column].astype(_TEXT).str.strip()
            out[column] = values.mask(values.eq("") | values.isna(), None)
        else:
            out[column] = pd.Series(None, index=raw.index, dtype=_TEXT)
    return out


def validate(raw: pd.DataFrame, *, now: dt.datetime | None = None) -> ValidationResult:
    """Split ``raw`` (text values, any extra columns ignored) into valid and rejected rows."""
    now = now or dt.datetime.now(dt.timezone.utc)
    clean = normalize(raw)
    parsed = ParsedValues.of(clean)
    failures = _failures(clean, now, parsed)
    if failures.empty:
        bad_index = pd.Index([], dtype=clean.index.dtype)
        rejected = raw.iloc[0:0].reindex(columns=list(c.COLUMNS))
        rejected["reasons"] = pd.Series(dtype=object)
        rejected["details"] = pd.Series(dtype=object)
    else:
        ordered = failures.assign(order=failures["reason"].map(_REASON_ORDER)).sort_values(["index", "order"], kind="stable")
        reasons = _lists_by_index(ordered.drop_duplicates(["index", "reason"]), "reason")
        details = _lists_by_index(failures.sort_values("index", kind="stable"), "detail")
        bad_index = reasons.index
        rejected = raw.reindex(columns=list(c.COLUMNS)).loc[bad_index].astype(object)
        rejected = rejected.where(rejected.notna(), None)
        rejected["reasons"] = reasons
        rejected["details"] = details
    keep = ~clean.index.isin(bad_index)
    valid = clean[keep].copy()
    valid["event_id"] = valid["event_id"].str.lower()
    valid["event_ts_us"] = parsed.timestamp_us.to_numpy()[keep].astype(np.int64)
    return ValidationResult(valid=valid, rejected=rejected)


def _failures(clean: pd.DataFrame, now: dt.datetime, parsed: ParsedValues) -> pd.DataFrame:
    """One row per (row index, reason, column) that fails, empty when all rows pass."""
    try:
        build_schema(now, parsed).validate(clean, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
    else:
        return pd.DataFrame(columns=["index", "reason", "detail"])
    unexpected = cases[cases["index"].isna()]
    if not unexpected.empty:
        # Only schema-level failures lack a row index; normalize() rules them out, so
        # reaching here is a bug in this module, not bad input.
        raise RuntimeError(f"schema-level validation failure: {unexpected.to_dict('records')}")
    reason = cases["check"].astype(str).where(cases["check"] != "not_nullable", c.MISSING_REQUIRED_FIELD)
    return pd.DataFrame(
        {
            "index": cases["index"].to_numpy(),
            "reason": reason.to_numpy(),
            "detail": (cases["column"].astype(str) + ": " + reason).to_numpy(),
        }
    )


def _lists_by_index(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]`` gathered into one list per index value (``frame`` sorted by index).

    A split of the sorted array: pandas' ``groupby(...).agg(list)`` runs Python per group.
    """
    index = frame["index"].to_numpy()
    values = frame[column].to_numpy()
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    parts = np.split(values, starts[1:])
    return pd.Series([part.tolist() for part in parts], index=index[starts], dtype=object)
