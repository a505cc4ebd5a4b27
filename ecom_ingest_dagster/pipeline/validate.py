"""Row-level validation of raw event rows with a Pandera schema.

Input values are the text that was sent (``str`` or missing). Every rule of the data
contract is a named Pandera check whose name *is* the rejection reason, or a required
column's ``nullable=False`` (``missing_required_field``). Values are parsed inside the
checks and nothing is coerced: with coercion one unparseable value hides the other
failures of its column (see the stack notes).

Each block runs every rule of the schema through Pandera: each check is called as Pandera's
backend calls it during ``validate`` (``Check.__call__``), and a row's reasons are read
from the checks' boolean outputs (``failures``). Pandera's error report, ``SchemaErrors``
with its ``failure_cases`` frame, is the reference answer (``failure_cases``, held equal
by the tests) but is not built per block: building it cost more than the checks did.

Cost (the bench's stage times, ``ecom-ingest bench``, measure it): the text stays in Arrow from
the reader to the COPY, and every check is one vectorised Arrow or numpy pass over the
whole column.
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
from ecom_ingest_dagster.feeds import RESCUED, Column, FeedContract, Rule, types

# Arrow-backed text: the regex checks run vectorised in Arrow compute (RE2), several
# times faster than Python-object strings.
_TEXT = pd.ArrowDtype(pa_arrow.string())


def _text(series: pd.Series) -> pa_arrow.Array:
    """The series' values as one Arrow string array: no copy when they are Arrow text already."""
    if series.dtype != _TEXT:
        series = series.astype(_TEXT)
    array = pa_arrow.array(series.array)
    return array.combine_chunks() if isinstance(array, pa_arrow.ChunkedArray) else array


def parse(text: pa_arrow.Array, sql_type: str) -> tuple[np.ndarray, np.ndarray]:
    """A column's values and where they are of its type (``known``): float64 for the number
    types (NaN where not known), int64 microseconds since the epoch for timestamptz and
    date, the form's match for the rest (uuid, boolean)."""
    if sql_type == "timestamptz":
        return types.timestamp_micros(text)
    if sql_type == "date":
        return types.date_micros(text)
    if types.compares_numbers(sql_type):
        values = types.numbers(text, sql_type)
        return values, ~np.isnan(values)
    known = types.matches(text, types.text_form(sql_type)).to_numpy(zero_copy_only=False)
    return known, known


@dataclasses.dataclass(frozen=True)
class ParsedValues:
    """Each typed column parsed once per chunk, shared by the checks and the output:
    ``values[name]`` and ``known[name]`` as ``parse`` gives them, for every column that is
    not text."""

    values: dict[str, pd.Series]
    known: dict[str, pd.Series]

    @classmethod
    def of(cls, clean: pd.DataFrame, feed: FeedContract | None = None) -> "ParsedValues":
        values, known = {}, {}
        for column in (feed or c.FEED).columns:
            if column.type != "text":
                v, k = parse(_text(clean[column.name]), column.type)
                values[column.name], known[column.name] = pd.Series(v, index=clean.index), pd.Series(k, index=clean.index)
        return cls(values, known)


def _missing(s: pd.Series) -> np.ndarray:
    return s.isna().to_numpy()


def _series(passed: np.ndarray | pa_arrow.Array, s: pd.Series) -> pd.Series:
    values = passed if isinstance(passed, np.ndarray) else passed.to_numpy(zero_copy_only=False)
    return pd.Series(values, index=s.index)


def _pattern_check(pattern: str):
    def check(s: pd.Series) -> pd.Series:
        return _series(pc.fill_null(pc.match_substring_regex(_text(s), pattern), True), s)

    return check


def _length_at_most(limit: int):
    def check(s: pd.Series) -> pd.Series:
        return _series(pc.fill_null(pc.less_equal(pc.utf8_length(_text(s)), limit), True), s)

    return check


def _one_of(values: tuple[str, ...]):
    value_set = pa_arrow.array(values, pa_arrow.string())

    def check(s: pd.Series) -> pd.Series:
        text = _text(s)
        return _series(pc.or_(pc.is_in(text, value_set=value_set), pc.is_null(text)), s)

    return check


def _check(fn, reason: str) -> pa.Check:
    return pa.Check(fn, name=reason, ignore_na=False, error=reason)


class _ValueChecks:
    """The checks of one typed column: with ``parsed`` they only compare the chunk's values
    parsed once, without it they parse the column they are given. A missing value passes
    (``nullable`` reports it), and so does a value that is not of the type for a rule
    (the type's own check reports it)."""

    def __init__(self, column: Column, parsed: ParsedValues | None):
        self.name, self.type, self.parsed = column.name, column.type, parsed

    def _parsed(self, s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        if self.parsed is None:
            return parse(_text(s), self.type)
        values, known = self.parsed.values[self.name], self.parsed.known[self.name]
        # The checks get whole columns (no ignore_na), so the parsed values line up; a
        # caller validating some other frame with this schema gets them by label.
        if not known.index.equals(s.index):
            values, known = values.reindex(s.index), known.reindex(s.index, fill_value=False)
        return values.to_numpy(), known.to_numpy()

    def of_type(self, s: pd.Series) -> pd.Series:
        return _series(self._parsed(s)[1] | _missing(s), s)

    def within(self, low, high):
        def check(s: pd.Series) -> pd.Series:
            values, known = self._parsed(s)
            inside = np.ones(len(s), dtype=bool)
            if low is not None:
                inside &= ~np.less(values, float(low))  # NaN compares False: passes
            if high is not None:
                inside &= ~np.greater(values, float(high))
            return _series(inside | ~known, s)

        return check

    def not_after(self, latest_us: int):
        def check(s: pd.Series) -> pd.Series:
            micros, known = self._parsed(s)
            return _series(~(known & (micros > latest_us)), s)

        return check


def _rule_check(column: Column, rule: Rule, values: _ValueChecks, now_us: int) -> pa.Check:
    if rule.pattern is not None:
        fn = _pattern_check(rule.pattern)
    elif rule.one_of is not None:
        fn = _one_of(rule.one_of)
    elif rule.max_length is not None:
        fn = _length_at_most(rule.max_length)
    elif rule.not_after_now_seconds is not None:
        fn = values.not_after(now_us + rule.not_after_now_seconds * 1_000_000)
    else:
        fn = values.within(rule.min, rule.max)
    return _check(fn, rule.reason)


def build_schema(now: dt.datetime, parsed: ParsedValues | None = None, feed: FeedContract | None = None) -> pa.DataFrameSchema:
    """The feed's contract as a Pandera schema; ``now`` bounds how far in the future values may be.

    Per column: the type's own check (``invalid_reason``), then the rules in the contract's
    order, each a check named by its reason. With ``parsed`` (the chunk's values parsed
    once) the checks only compare; without it they parse the column they are given.

    A missing value passes every check but the required columns' ``nullable=False``
    (reported as the feed's ``missing_reason``): the checks say so themselves rather than
    through ``ignore_na``, which made Pandera drop the missing values from a copy of
    the column before each check, and the check realign its parsed values to it.
    """
    feed = feed or c.FEED
    stamp = pd.Timestamp(now)
    now_us = (stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")).value // 1000
    columns = {}
    for column in feed.columns:
        values = _ValueChecks(column, parsed)
        checks = [_check(values.of_type, column.invalid_reason)] if column.type != "text" else []
        checks += [_rule_check(column, rule, values, now_us) for rule in column.rules]
        columns[column.name] = pa.Column(None, checks=checks, nullable=not column.required, required=True)
    return pa.DataFrameSchema(columns, coerce=False, strict=False, name=feed.feed)


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


def normalize(raw: pd.DataFrame, feed: FeedContract | None = None) -> pd.DataFrame:
    """Contract columns only, surrounding blanks trimmed, empty text as missing.

    The columns stay Arrow text (no copy of the values through pandas).
    """
    columns = {}
    for column in (feed or c.FEED).column_names:
        if column in raw.columns:
            trimmed = pc.utf8_trim_whitespace(_text(raw[column]))  # what pandas' str.strip() does on Arrow text
            columns[column] = types.where(pc.not_equal(trimmed, ""), trimmed)
        else:
            columns[column] = pa_arrow.nulls(len(raw), pa_arrow.string())
    return pd.DataFrame({name: pd.arrays.ArrowExtensionArray(values) for name, values in columns.items()}, index=raw.index)


def validate(raw: pd.DataFrame, *, now: dt.datetime | None = None, feed: FeedContract | None = None) -> ValidationResult:
    """Split ``raw`` (text values, any extra columns ignored) into valid and rejected rows
    by ``feed``'s contract (the shipped user_events feed when not given)."""
    feed = feed or c.FEED
    now = now or dt.datetime.now(dt.timezone.utc)
    clean = normalize(raw, feed)
    parsed = ParsedValues.of(clean, feed)
    return split(raw, clean, parsed, failures(build_schema(now, parsed, feed), clean, feed), feed)


def failures(schema: pa.DataFrameSchema, clean: pd.DataFrame, feed: FeedContract | None = None) -> pd.DataFrame:
    """One row per (row index, reason, column) that fails, as ``failures_of(failure_cases(...))`` gives.

    The same rules in the same order as Pandera's validation of each column: the missing
    values of a column that is not ``nullable`` first, then its checks, each called as
    Pandera's backend calls it (``Check.__call__`` applies the check to the whole column,
    as ``ignore_na=False`` asks). Only the report differs: the failing rows are read off
    the checks' boolean outputs. ``SchemaErrors`` builds, per failing column and block, a
    failure-case frame (assigned, concatenated, sorted) and a text summary with the values'
    repr: 0.31 s per 1M rows against the checks' own 0.27 s.
    """
    missing_reason = (feed or c.FEED).missing_reason
    index = clean.index.to_numpy()
    rows, reasons, details = [], [], []
    for name, column in schema.columns.items():
        values = clean[name]
        rules = [] if column.nullable else [(missing_reason, values.isna().to_numpy())]
        for check in column.checks:
            passed = check(values).check_output
            rules.append((check.error or check.name, ~passed.to_numpy(dtype=bool, na_value=False)))
        for reason, failing in rules:
            where = index[failing]
            if len(where):
                rows.append(where)
                reasons.append(np.full(len(where), reason, dtype=object))
                details.append(np.full(len(where), f"{name}: {reason}", dtype=object))
    if not rows:
        return pd.DataFrame(columns=["index", "reason", "detail"])
    return pd.DataFrame({"index": np.concatenate(rows), "reason": np.concatenate(reasons), "detail": np.concatenate(details)})


def failure_cases(schema: pa.DataFrameSchema, clean: pd.DataFrame) -> pd.DataFrame | None:
    """Pandera's own report of ``clean``'s failures, column by column in the schema's order
    (``None`` when every row passes): the reference ``failures`` is held to.

    Each column is validated with a ``SeriesSchema`` of that column's rules rather than
    the frame with the whole schema: the frame schema gathers its failure cases three
    times over (twice per column, once more for the frame; each time small pandas frames
    built, concatenated and sorted, most of the cost of a block), and that last sort is
    not stable, so a row's details came out in an order that changed with the other rows
    of the block. Here they follow the schema: column order, the missing value first.
    """
    parts = []
    for name, column in schema.columns.items():
        rules = pa.SeriesSchema(None, checks=column.checks, nullable=column.nullable, name=name)
        try:
            # inplace: nothing coerces or fills in, so Pandera's defensive copy is waste.
            rules.validate(clean[name], lazy=True, inplace=True)
        except SchemaErrors as err:
            parts.append(err.failure_cases)
    return pd.concat(parts, ignore_index=True) if parts else None


def failures_of(cases: pd.DataFrame | None, feed: FeedContract | None = None) -> pd.DataFrame:
    """One row per (row index, reason, column) that fails, empty when all rows pass."""
    if cases is None:
        return pd.DataFrame(columns=["index", "reason", "detail"])
    unexpected = cases[cases["index"].isna()]
    if not unexpected.empty:
        # Only schema-level failures lack a row index; normalize() rules them out, so
        # reaching here is a bug in this module, not bad input.
        raise RuntimeError(f"schema-level validation failure: {unexpected.to_dict('records')}")
    checks = cases["check"].astype(str).to_numpy()
    reason = np.where(checks == "not_nullable", (feed or c.FEED).missing_reason, checks).astype(object)
    return pd.DataFrame(
        {
            "index": cases["index"].to_numpy(),
            "reason": reason,
            "detail": (cases["column"].astype(str).to_numpy().astype(object) + ": " + reason),
        }
    )


def split(raw: pd.DataFrame, clean: pd.DataFrame, parsed: ParsedValues, failures: pd.DataFrame,
          feed: FeedContract | None = None) -> ValidationResult:
    """The rows of ``raw`` without failures (cleaned, typed) and those with (as sent, with their reasons)."""
    rejected = rejected_rows(raw, failures, feed)
    valid = valid_rows(clean, parsed, rejected.index, feed)
    if RESCUED in raw.columns:  # the values of the drop's unnamed columns travel with their row
        valid[RESCUED] = raw[RESCUED].reindex(valid.index)
    return ValidationResult(valid=valid, rejected=rejected)


def rejected_rows(raw: pd.DataFrame, failures: pd.DataFrame, feed: FeedContract | None = None) -> pd.DataFrame:
    """The failing rows of ``raw`` as sent, with their reasons (contract order, each once) and details."""
    feed = feed or c.FEED
    kept = [*feed.column_names, *([RESCUED] if RESCUED in raw.columns else [])]
    if failures.empty:
        rejected = raw.iloc[0:0].reindex(columns=kept)
        rejected["reasons"] = pd.Series(dtype=object)
        rejected["details"] = pd.Series(dtype=object)
        return rejected
    index = failures["index"].to_numpy()
    reason = failures["reason"].to_numpy()
    reasons_index = pd.Index(feed.reasons)
    order = reasons_index.get_indexer(reason)
    order[order < 0] = len(reasons_index)  # a name that is no reason (a bug) sorts last, as a NaN did
    by_reason = np.lexsort((order, index))
    index_r, order_r = index[by_reason], order[by_reason]
    firsts = np.r_[True, (index_r[1:] != index_r[:-1]) | (order_r[1:] != order_r[:-1])]
    reasons = _lists_by_index(index_r[firsts], reason[by_reason][firsts])
    by_index = np.argsort(index, kind="stable")  # a row's details in the order of the failures: the schema's
    details = _lists_by_index(index[by_index], failures["detail"].to_numpy()[by_index])
    rejected = raw.reindex(columns=kept).loc[reasons.index].astype(object)
    rejected = rejected.where(rejected.notna(), None)
    rejected["reasons"] = reasons
    rejected["details"] = details
    return rejected


def valid_rows(clean: pd.DataFrame, parsed: ParsedValues, bad_index: pd.Index,
               feed: FeedContract | None = None) -> pd.DataFrame:
    """The rows of ``clean`` not in ``bad_index``, each column as the encoder takes it: text,
    a uuid key in lower case (the encoder sends any uuid as its 16 bytes, case aside), and
    timestamptz columns as int64 microseconds since the epoch (parsed once, here; not every
    valid text form is one Arrow's cast reads)."""
    feed = feed or c.FEED
    keep = ~clean.index.isin(bad_index)
    # One Arrow filter per column: a pandas row selection goes through take() per column.
    rows = pa_arrow.array(keep, pa_arrow.bool_())
    columns = {}
    for column in feed.columns:
        if column.type == "timestamptz":
            columns[column.name] = parsed.values[column.name].to_numpy()[keep]
            continue
        text = pc.filter(_text(clean[column.name]), rows)
        lower = column.type == "uuid" and column.name == feed.unique_key
        columns[column.name] = pd.arrays.ArrowExtensionArray(pc.utf8_lower(text) if lower else text)
    return pd.DataFrame(columns, index=clean.index[keep])


def _lists_by_index(index: np.ndarray, values: np.ndarray) -> pd.Series:
    """``values`` (text) gathered into one list per index value (``index`` sorted).

    Arrow builds the lists from the run offsets: pandas' ``groupby(...).agg(list)`` runs
    Python per group, and even a split of the sorted array makes a view per row.
    """
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    offsets = pa_arrow.array(np.r_[starts, len(index)].astype(np.int32))
    lists = pa_arrow.ListArray.from_arrays(offsets, pa_arrow.array(values, pa_arrow.string())).to_pylist()
    return pd.Series(lists, index=index[starts], dtype=object)
