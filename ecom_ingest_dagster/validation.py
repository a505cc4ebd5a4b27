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
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ecom_ingest_dagster import contract as c

# Arrow-backed text: the regex checks run vectorised in Arrow compute (RE2), several
# times faster than Python-object strings.
_TEXT = pd.ArrowDtype(pa_arrow.string())
_REASON_ORDER = {reason: i for i, reason in enumerate(c.REJECTION_REASONS)}


def _matches(series: pd.Series, pattern: str) -> pd.Series:
    return series.str.match(pattern).fillna(False).astype(bool)


def _price_value(series: pd.Series) -> pd.Series:
    """Numeric value of well-formed prices, NaN for anything else."""
    well_formed = _matches(series, c.PRICE_PATTERN)
    # Plain float64: an Arrow-backed NA would compare to NA, which Pandera lets pass.
    return pd.to_numeric(series.where(well_formed), errors="coerce").astype("float64")


def _quantity_ok(series: pd.Series) -> pd.Series:
    well_formed = _matches(series, c.QUANTITY_PATTERN)
    value = pd.to_numeric(series.where(well_formed), errors="coerce").astype("float64")
    return well_formed & value.between(c.QUANTITY_MIN, c.QUANTITY_MAX)


def parse_timestamps(series: pd.Series) -> pd.Series:
    """UTC timestamps for contract-shaped values (with an offset), NaT for the rest."""
    well_formed = _matches(series, c.TIMESTAMP_PATTERN)
    return pd.to_datetime(series.where(well_formed), format="ISO8601", utc=True, errors="coerce")


def _length_at_most(limit: int):
    return lambda s: (s.str.len() <= limit).fillna(True)


def build_schema(now: dt.datetime) -> pa.DataFrameSchema:
    """The contract as a Pandera schema; ``now`` bounds how far in the future events may be."""
    latest = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    latest = latest + pd.Timedelta(seconds=c.MAX_FUTURE_SECONDS)

    def check(fn, reason: str) -> pa.Check:
        # ignore_na: a missing value is the nullable rule's business, not this one's.
        return pa.Check(fn, name=reason, ignore_na=True, error=reason)

    def required(*checks: pa.Check) -> pa.Column:
        return pa.Column(None, checks=list(checks), nullable=False, required=True)

    def optional(*checks: pa.Check) -> pa.Column:
        return pa.Column(None, checks=list(checks), nullable=True, required=True)

    def timestamp_ok(s: pd.Series) -> pd.Series:
        ts = parse_timestamps(s)
        return (ts.notna() & (ts <= latest)).astype(bool)

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
                check(lambda s: _price_value(s).le(c.PRICE_MAX), c.INVALID_PRICE),
                check(lambda s: _price_value(s).ge(c.PRICE_MIN) | _price_value(s).isna(), c.NEGATIVE_PRICE),
            ),
            "quantity": required(check(_quantity_ok, c.INVALID_QUANTITY)),
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
    failures = _failures(clean, now)
    if failures.empty:
        bad_index = pd.Index([], dtype=clean.index.dtype)
        rejected = raw.iloc[0:0].reindex(columns=list(c.COLUMNS))
        rejected["reasons"] = pd.Series(dtype=object)
        rejected["details"] = pd.Series(dtype=object)
    else:
        per_row = failures.groupby("index", sort=True)
        reasons = per_row["reason"].agg(lambda r: sorted(set(r), key=_REASON_ORDER.__getitem__))
        details = per_row["detail"].agg(list)
        bad_index = reasons.index
        rejected = raw.reindex(columns=list(c.COLUMNS)).loc[bad_index].astype(object)
        rejected = rejected.where(rejected.notna(), None)
        rejected["reasons"] = reasons
        rejected["details"] = details
    valid = clean.drop(index=bad_index)
    valid["event_id"] = valid["event_id"].str.lower()
    valid["event_ts_us"] = _epoch_micros(parse_timestamps(valid["event_timestamp"]))
    return ValidationResult(valid=valid, rejected=rejected)


def _failures(clean: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """One row per (row index, reason, column) that fails, empty when all rows pass."""
    try:
        build_schema(now).validate(clean, lazy=True)
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


def _epoch_micros(ts: pd.Series) -> pd.Series:
    if ts.empty:
        return pd.Series(dtype="int64", index=ts.index)
    return pd.Series(
        ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64),
        index=ts.index,
    )
