"""Validation, stage by stage, on a generated drop: where the Python side of a load spends its time (issue #13).

    scripts/profile-validation [--rows 1000000] [--reps 3] [--check] [--rss] [--profile new]

Generates ``--rows`` events (``generator.generate_events``, 2 % invalid by default) once
into ``--workdir``, reads them in ``read.CsvDrop`` blocks as the loader does, then times
each stage of ``validate`` and of the conversion for the binary COPY (nothing is sent to
PostgreSQL), for the code in the package ("new") and for the original ``validate.py``
kept below ("old", for the comparison only), in alternating repetitions on the same
blocks. Figures are medians over the repetitions, seconds per 1M rows, wall and CPU time
of the process (the CPU time is what other processes on a shared machine disturb least).

``--check`` compares old and new outputs row by row: on the generated blocks and on a
frame of hostile values (several failures per row, blanks, edge prices and timestamps).
``--rss`` runs each variant alone in a child process, streaming blocks as the loader
does, and reports its peak RSS. ``--polars`` (only where polars is installed) adds
Pandera's polars backend running the same checks, to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import math
import pstats
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pyarrow.compute as pc
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline import load
from ecom_ingest_dagster.pipeline import validate as new
from ecom_ingest_dagster.pipeline.read import CsvDrop
from ecom_ingest_dagster.tools.generator import generate_events, write_drop

# The generated events lie in the 24 hours before this moment and are validated at it,
# so a cached drop validates the same on any day.
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
STAGES = ("normalize", "parse", "build_schema", "pandera", "failures", "valid_frame", "binary_frame", "direct_frame")
STAGE_NOTES = {
    "normalize": "normalize()",
    "parse": "ParsedValues.of()",
    "build_schema": "build_schema()",
    "pandera": "Pandera: old, validate (lazy) and its failure cases; new, the checks called and their outputs read",
    "failures": "failures -> reasons, details, rejected rows",
    "valid_frame": "the valid frame",
    "binary_frame": "load._binary_frame (Arrow table for binary COPY)",
    "direct_frame": "load._direct_frame (text form, the bench's)",
}


# --- the original validate.py (before issue #13 part 2), kept for the comparison only -------------

_OLD_TEXT = pd.ArrowDtype(pa_arrow.string())
_OLD_REASON_ORDER = {reason: i for i, reason in enumerate(c.REJECTION_REASONS)}


def _old_matches(series: pd.Series, pattern: str) -> pd.Series:
    return series.str.match(pattern).fillna(False).astype(bool)


def _old_arrow(series: pd.Series, mask: pd.Series) -> pa_arrow.Array:
    values = pa_arrow.array(series.astype(_OLD_TEXT).array) if not isinstance(series.dtype, pd.ArrowDtype) else series.array._pa_array
    return pc.if_else(pa_arrow.array(mask.to_numpy(), pa_arrow.bool_()), values, pa_arrow.scalar(None, pa_arrow.string()))


def _old_price_values(series: pd.Series) -> np.ndarray:
    well_formed = _old_matches(series, c.PRICE_PATTERN)
    return pc.cast(_old_arrow(series, well_formed), pa_arrow.float64()).to_numpy(zero_copy_only=False)


def _old_quantity_values(series: pd.Series) -> np.ndarray:
    well_formed = _old_matches(series, c.QUANTITY_PATTERN)
    return pc.cast(pc.utf8_trim(_old_arrow(series, well_formed), "+"), pa_arrow.float64()).to_numpy(zero_copy_only=False)


def _old_timestamp_micros(series: pd.Series) -> np.ndarray:
    well_formed = _old_matches(series, c.TIMESTAMP_PATTERN)
    try:
        stamps = pc.cast(_old_arrow(series, well_formed), pa_arrow.timestamp("us", tz="UTC"))
        micros = pc.cast(stamps, pa_arrow.int64())
    except (pa_arrow.ArrowInvalid, pa_arrow.ArrowNotImplementedError):
        parsed = pd.to_datetime(series.where(well_formed), format="ISO8601", utc=True, errors="coerce")
        return np.where(parsed.isna(), np.nan, parsed.to_numpy(dtype="datetime64[us]").astype(np.int64).astype(float))
    return micros.to_numpy(zero_copy_only=False).astype(float)


@dataclasses.dataclass(frozen=True)
class _OldParsed:
    price: pd.Series
    quantity: pd.Series
    timestamp_us: pd.Series

    @classmethod
    def of(cls, clean: pd.DataFrame) -> "_OldParsed":
        return cls(
            pd.Series(_old_price_values(clean["price"]), index=clean.index),
            pd.Series(_old_quantity_values(clean["quantity"]), index=clean.index),
            pd.Series(_old_timestamp_micros(clean["event_timestamp"]), index=clean.index),
        )


def _old_build_schema(now: dt.datetime, parsed: _OldParsed | None = None) -> pa.DataFrameSchema:
    latest = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    latest_us = (latest + pd.Timedelta(seconds=c.MAX_FUTURE_SECONDS)).value // 1000

    def values(s, name, parse):
        if parsed is not None:
            known = getattr(parsed, name)
            return known if len(known) == len(s) else known.reindex(s.index)
        return pd.Series(parse(s), index=s.index)

    def check(fn, reason):
        return pa.Check(fn, name=reason, ignore_na=True, error=reason)

    def required(*checks):
        return pa.Column(None, checks=list(checks), nullable=False, required=True)

    def optional(*checks):
        return pa.Column(None, checks=list(checks), nullable=True, required=True)

    def length_at_most(limit):
        return lambda s: (s.str.len() <= limit).fillna(True)

    def price(s):
        return values(s, "price", _old_price_values)

    return pa.DataFrameSchema(
        {
            "event_id": required(check(lambda s: _old_matches(s, c.UUID_PATTERN), c.INVALID_EVENT_ID)),
            "user_id": required(check(lambda s: _old_matches(s, c.USER_ID_PATTERN), c.INVALID_USER_ID)),
            "session_id": optional(check(lambda s: _old_matches(s, c.UUID_PATTERN), c.INVALID_SESSION_ID)),
            "event_type": required(check(lambda s: s.isin(c.EVENT_TYPES), c.INVALID_EVENT_TYPE)),
            "product_id": required(check(lambda s: _old_matches(s, c.PRODUCT_ID_PATTERN), c.INVALID_PRODUCT_ID)),
            "product_name": optional(check(length_at_most(c.MAX_LENGTHS["product_name"]), c.FIELD_TOO_LONG)),
            "category": optional(check(length_at_most(c.MAX_LENGTHS["category"]), c.FIELD_TOO_LONG)),
            "price": required(
                check(lambda s: price(s).le(c.PRICE_MAX), c.INVALID_PRICE),
                check(lambda s: ~price(s).lt(c.PRICE_MIN), c.NEGATIVE_PRICE),
            ),
            "quantity": required(
                check(lambda s: values(s, "quantity", _old_quantity_values).between(c.QUANTITY_MIN, c.QUANTITY_MAX), c.INVALID_QUANTITY)
            ),
            "event_timestamp": required(
                check(lambda s: values(s, "timestamp_us", _old_timestamp_micros) <= latest_us, c.INVALID_TIMESTAMP)
            ),
        },
        coerce=False,
        strict=False,
        name="user_event",
    )


def _old_normalize(raw: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=raw.index)
    for column in c.COLUMNS:
        if column in raw.columns:
            values = raw[column].astype(_OLD_TEXT).str.strip()
            out[column] = values.mask(values.eq("") | values.isna(), None)
        else:
            out[column] = pd.Series(None, index=raw.index, dtype=_OLD_TEXT)
    return out


def _old_pandera(schema: pa.DataFrameSchema, clean: pd.DataFrame) -> pd.DataFrame | None:
    try:
        schema.validate(clean, lazy=True)
    except SchemaErrors as err:
        return err.failure_cases
    return None


def _old_failures(cases: pd.DataFrame | None) -> pd.DataFrame:
    if cases is None:
        return pd.DataFrame(columns=["index", "reason", "detail"])
    unexpected = cases[cases["index"].isna()]
    if not unexpected.empty:
        raise RuntimeError(f"schema-level validation failure: {unexpected.to_dict('records')}")
    reason = cases["check"].astype(str).where(cases["check"] != "not_nullable", c.MISSING_REQUIRED_FIELD)
    return pd.DataFrame(
        {
            "index": cases["index"].to_numpy(),
            "reason": reason.to_numpy(),
            "detail": (cases["column"].astype(str) + ": " + reason).to_numpy(),
        }
    )


def _old_lists_by_index(frame: pd.DataFrame, column: str) -> pd.Series:
    index = frame["index"].to_numpy()
    values = frame[column].to_numpy()
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    parts = np.split(values, starts[1:])
    return pd.Series([part.tolist() for part in parts], index=index[starts], dtype=object)


def _old_rejected(raw: pd.DataFrame, clean: pd.DataFrame, failures: pd.DataFrame) -> tuple[pd.DataFrame, pd.Index]:
    if failures.empty:
        bad_index = pd.Index([], dtype=clean.index.dtype)
        rejected = raw.iloc[0:0].reindex(columns=list(c.COLUMNS))
        rejected["reasons"] = pd.Series(dtype=object)
        rejected["details"] = pd.Series(dtype=object)
        return rejected, bad_index
    ordered = failures.assign(order=failures["reason"].map(_OLD_REASON_ORDER)).sort_values(["index", "order"], kind="stable")
    reasons = _old_lists_by_index(ordered.drop_duplicates(["index", "reason"]), "reason")
    details = _old_lists_by_index(failures.sort_values("index", kind="stable"), "detail")
    rejected = raw.reindex(columns=list(c.COLUMNS)).loc[reasons.index].astype(object)
    rejected = rejected.where(rejected.notna(), None)
    rejected["reasons"] = reasons
    rejected["details"] = details
    return rejected, reasons.index


def _old_valid(clean: pd.DataFrame, parsed: _OldParsed, bad_index: pd.Index) -> pd.DataFrame:
    keep = ~clean.index.isin(bad_index)
    valid = clean[keep].copy()
    valid["event_id"] = valid["event_id"].str.lower()
    valid["event_ts_us"] = parsed.timestamp_us.to_numpy()[keep].astype(np.int64)
    return valid


# --- the variants, stage by stage ---------------------------------------------------------------


@dataclasses.dataclass
class Output:
    valid: pd.DataFrame
    rejected: pd.DataFrame
    binary: pa_arrow.Table
    direct: pa_arrow.Table


class Clock:
    """Wall and CPU seconds per stage, summed over the blocks of one run.

    CPU of the whole process, not of the thread: polars works in a pool of its own threads.
    """

    def __init__(self):
        self.wall = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[stage] += time.perf_counter() - wall
            self.cpu[stage] += time.process_time() - cpu


def run_old(raw: pd.DataFrame, clock: Clock, now: dt.datetime = NOW) -> Output:
    with clock("normalize"):
        clean = _old_normalize(raw)
    with clock("parse"):
        parsed = _OldParsed.of(clean)
    with clock("build_schema"):
        schema = _old_build_schema(now, parsed)
    with clock("pandera"):
        cases = _old_pandera(schema, clean)
    with clock("failures"):
        rejected, bad_index = _old_rejected(raw, clean, _old_failures(cases))
    with clock("valid_frame"):
        valid = _old_valid(clean, parsed, bad_index)
    with clock("binary_frame"):
        # load.py's conversions are unchanged: both sides time the package's own.
        binary = load._binary_frame(valid, load._DIRECT_SCHEMA, "events.csv", 1)
    with clock("direct_frame"):
        direct = load._direct_frame(valid, "events.csv", 1)
    return Output(valid, rejected, binary, direct)


def run_new(raw: pd.DataFrame, clock: Clock, now: dt.datetime = NOW, pandera_stage: Callable | None = None) -> Output:
    """``validate.validate`` taken apart (``check_composition`` makes sure it is the same), then the conversions."""
    with clock("normalize"):
        clean = new.normalize(raw)
    with clock("parse"):
        parsed = new.ParsedValues.of(clean)
    with clock("build_schema"):
        schema = new.build_schema(now, parsed)
    with clock("pandera"):
        if pandera_stage is None:  # as validate() does: the failing rows read off the checks' outputs
            failures = new.failures(schema, clean)
        else:  # a variant that gives Pandera's failure cases
            failures = new.failures_of(pandera_stage(clean, parsed, now))
    with clock("failures"):
        rejected = new.rejected_rows(raw, failures)
    with clock("valid_frame"):
        valid = new.valid_rows(clean, parsed, rejected.index)
    with clock("binary_frame"):
        binary = load._binary_frame(valid, load._DIRECT_SCHEMA, "events.csv", 1)
    with clock("direct_frame"):
        direct = load._direct_frame(valid, "events.csv", 1)
    return Output(valid, rejected, binary, direct)


# --- Pandera's polars backend on the same checks (measured, not a dependency of the package) -----


def polars_stage():
    """The Pandera stage on the polars backend, or None where polars is not installed."""
    try:
        import polars as pl
        import pandera.polars as ppl
    except ImportError:
        return None

    def check(expression, reason):
        return ppl.Check(lambda data: data.lazyframe.select(expression(pl.col(data.key))), name=reason, error=reason, ignore_na=True)

    def column(nullable, *checks):
        return ppl.Column(pl.String, checks=list(checks), nullable=nullable)

    def matches(pattern):
        return lambda col: col.str.contains(pattern)

    def schema(latest_us: int):
        # Parsed values ride along as hidden columns; a missing value passes (the nullable rule says it).
        return ppl.DataFrameSchema(
            {
                "event_id": column(False, check(matches(c.UUID_PATTERN), c.INVALID_EVENT_ID)),
                "user_id": column(False, check(matches(c.USER_ID_PATTERN), c.INVALID_USER_ID)),
                "session_id": column(True, check(matches(c.UUID_PATTERN), c.INVALID_SESSION_ID)),
                "event_type": column(False, check(lambda col: col.is_in(list(c.EVENT_TYPES)), c.INVALID_EVENT_TYPE)),
                "product_id": column(False, check(matches(c.PRODUCT_ID_PATTERN), c.INVALID_PRODUCT_ID)),
                "product_name": column(True, check(lambda col: col.str.len_chars() <= c.MAX_LENGTHS["product_name"], c.FIELD_TOO_LONG)),
                "category": column(True, check(lambda col: col.str.len_chars() <= c.MAX_LENGTHS["category"], c.FIELD_TOO_LONG)),
                "price": column(
                    False,
                    check(lambda col: (pl.col("__price") <= c.PRICE_MAX).fill_null(False) | col.is_null(), c.INVALID_PRICE),
                    check(lambda col: ~(pl.col("__price") < c.PRICE_MIN).fill_null(False), c.NEGATIVE_PRICE),
                ),
                "quantity": column(
                    False,
                    check(lambda col: pl.col("__quantity").is_between(c.QUANTITY_MIN, c.QUANTITY_MAX).fill_null(False) | col.is_null(),
                          c.INVALID_QUANTITY),
                ),
                "event_timestamp": column(
                    False, check(lambda col: (pl.col("__ts") <= latest_us).fill_null(False) | col.is_null(), c.INVALID_TIMESTAMP)
                ),
            },
            strict=False,
            coerce=False,
        )

    schemas: dict[int, object] = {}

    def stage(clean: pd.DataFrame, parsed: new.ParsedValues, now: dt.datetime) -> pd.DataFrame | None:
        latest_us = (pd.Timestamp(now) + pd.Timedelta(seconds=c.MAX_FUTURE_SECONDS)).value // 1000
        table = pa_arrow.table(
            {
                **{name: new._text(clean[name]) for name in c.COLUMNS},
                "__price": pa_arrow.array(parsed.price.to_numpy(), from_pandas=True),
                "__quantity": pa_arrow.array(parsed.quantity.to_numpy(), from_pandas=True),
                "__ts": pa_arrow.array(parsed.timestamp_us.to_numpy(), mask=~parsed.timestamp_known.to_numpy()),
            }
        )
        frame = pl.from_arrow(table)
        try:
            schemas.setdefault(latest_us, schema(latest_us)).validate(frame, lazy=True)
        except SchemaErrors as err:
            cases = err.failure_cases.to_pandas()
            # Positions, not labels: back to the frame's index, in the schema's column order.
            cases["index"] = clean.index.to_numpy()[cases["index"].to_numpy()]
            rank = {name: i for i, name in enumerate(c.COLUMNS)}
            return cases.iloc[np.argsort(cases["column"].map(rank).to_numpy(), kind="stable")].reset_index(drop=True)
        return None

    return stage


# --- the drop, the blocks ---------------------------------------------------------------------------


def drop_path(args) -> Path:
    workdir = Path(args.workdir)
    path = workdir / f"events_{args.rows}_{args.seed}_{args.invalid_rate}.csv"
    if not path.exists():
        tick = time.perf_counter()
        frame = generate_events(args.rows, rng=np.random.default_rng(args.seed), invalid_rate=args.invalid_rate, now=NOW)
        write_drop(frame, workdir, path.name)
        print(f"generated {path} ({args.rows:,} rows) in {time.perf_counter() - tick:.1f} s", flush=True)
    return path


def read_blocks(path: Path, block_bytes: int) -> list[pd.DataFrame]:
    return [chunk.rows for chunk in CsvDrop(path, block_bytes=block_bytes)]


# --- comparison -------------------------------------------------------------------------------------


def _float_rounding(old: np.ndarray, new_: np.ndarray) -> np.ndarray:
    """Where ``old`` is ``new_`` rounded through a float64 (the original kept microseconds as floats)."""
    return new_.astype(np.float64).astype(np.int64) == old


@dataclasses.dataclass
class Differences:
    rows: int = 0
    rejected: int = 0
    details_order: int = 0  # rows whose details are the same entries in another order
    float_microseconds: int = 0  # far-past timestamps the original rounded through a float
    problems: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: "Differences") -> None:
        self.rows += other.rows
        self.rejected += other.rejected
        self.details_order += other.details_order
        self.float_microseconds += other.float_microseconds
        self.problems += other.problems


def _values(frame: pd.DataFrame, column: str) -> list:
    return [None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v for v in frame[column].tolist()]


def compare(old: Output, new_: Output, label: str) -> Differences:
    d = Differences(rows=len(old.valid) + len(old.rejected), rejected=len(old.rejected))
    if _compare_valid(old, new_, label, d) and _compare_rejected(old, new_, label, d):
        _compare_tables(old, new_, label, d)
    return d


def _compare_valid(old: Output, new_: Output, label: str, d: Differences) -> bool:
    if not old.valid.index.equals(new_.valid.index):
        d.problems.append(f"{label}: valid rows differ")
        return False
    if list(old.valid.columns) != list(new_.valid.columns) or list(old.valid.dtypes) != list(new_.valid.dtypes):
        d.problems.append(f"{label}: valid columns or dtypes differ: {dict(old.valid.dtypes)} vs {dict(new_.valid.dtypes)}")
    for column in old.valid.columns:
        if column == "event_ts_us":
            a, b = old.valid[column].to_numpy(), new_.valid[column].to_numpy()
            off = a != b
            d.float_microseconds += int(off.sum())
            if not _float_rounding(a[off], b[off]).all():
                d.problems.append(f"{label}: event_ts_us differs beyond float rounding")
        elif _values(old.valid, column) != _values(new_.valid, column):
            d.problems.append(f"{label}: valid column {column} differs")
    return True


def _compare_rejected(old: Output, new_: Output, label: str, d: Differences) -> bool:
    if not old.rejected.index.equals(new_.rejected.index) or list(old.rejected.columns) != list(new_.rejected.columns):
        d.problems.append(f"{label}: rejected rows or columns differ")
        return False
    for column in c.COLUMNS:
        if _values(old.rejected, column) != _values(new_.rejected, column):
            d.problems.append(f"{label}: rejected column {column} differs")
    if [list(r) for r in old.rejected["reasons"]] != [list(r) for r in new_.rejected["reasons"]]:
        d.problems.append(f"{label}: reasons differ")
    for a, b in zip(old.rejected["details"], new_.rejected["details"]):
        if list(a) != list(b):
            if sorted(a) == sorted(b):
                d.details_order += 1
            else:
                d.problems.append(f"{label}: details differ: {a} vs {b}")
    return True


def _compare_tables(old: Output, new_: Output, label: str, d: Differences) -> None:
    for name, (a, b) in {"binary": (old.binary, new_.binary), "direct": (old.direct, new_.direct)}.items():
        if a.schema != b.schema:
            d.problems.append(f"{label}: {name} frame schemas differ")
            continue
        for field in a.schema:
            x, y = a.column(field.name).combine_chunks(), b.column(field.name).combine_chunks()
            if x.equals(y):
                continue
            if field.name == "event_timestamp" and name == "binary":
                xs, ys = x.cast(pa_arrow.int64()).to_numpy(), y.cast(pa_arrow.int64()).to_numpy()
                if _float_rounding(xs[xs != ys], ys[xs != ys]).all():
                    continue
            if field.name == "event_timestamp" and name == "direct" and d.float_microseconds:
                continue  # the same far-past rows, as text
            d.problems.append(f"{label}: {name} frame column {field.name} differs")


_HOSTILE = {
    "event_id": [None, "", "   ", "not-a-uuid", "8A3F0C2E-1B2D-4C5E-9F00-112233445566", " 8a3f0c2e-1b2d-4c5e-9f00-11223344556 ",
                 "8a3f0c2e1b2d4c5e9f00112233445566", "8a3f0c2e-1b2d-4c5e-9f00-112233445566\n"],
    "user_id": [None, "", "user_", "USER_1", " user_7 ", "user_12345678901", "user_1234567890", "user_\u0661"],
    "session_id": [None, "", "  ", "session-1", "0B1C2D3E-4F50-4617-8293-A4B5C6D7E8F9"],
    "event_type": [None, "", "View", "checkout", " purchase ", "remove_from_cart"],
    "product_id": [None, "", "sku_1", "prod_", "prod_12345678901", "prod_0"],
    "product_name": [None, "", "x" * 200, "x" * 201, "é" * 200, "é" * 201, "  padded  "],
    "category": [None, "", "y" * 100, "y" * 101, "\t"],
    "price": [None, "", "0", "0.00", "-0", "-0.01", "1000000", "1000000.00", "1000000.01", ".5", "+3", "1.234", "1e3", "abc", " 19.99 ",
              "-1000000000", "12."],
    "quantity": [None, "", "0", "1", "1000", "1001", "+007", "2.5", "two", "-1", "999999999", "1234567890"],
    "event_timestamp": [None, "", "yesterday", "2026-11-28T10:15:30", "2026-13-01T00:00:00Z", "2026-11-28T12:00:00+05:30",
                        "2026-11-28 09:00:00-0300", "2026-11-28T09:00:00+05", "2026-11-29T11:59:59Z", "2026-11-29T12:00:01Z",
                        "1970-01-01T00:00:00Z", "1600-06-01T12:00:00.123457Z",
                        "0001-01-01T00:00:00.000001Z", "2026-11-28T10:15Z"],
}


# Contract-shaped timestamps Arrow's cast refuses: each sends its whole block to pandas' parser.
_SLOW_TIMESTAMPS = ["2026-02-30T00:00:00Z", "2026-11-28T10:15:30,5Z", "2026-11-28T10:15:30z", "2026-11-28T10:15:30.123456789Z"]


def hostile_frames(rows: int, seed: int) -> list[pd.DataFrame]:
    """Generated rows with each cell replaced by a hostile value at random: rows with several failures.

    The second frame also has timestamps only pandas' parser takes (Feb 30, 9 decimals, ...),
    the slow path; the third is made of object (not Arrow) columns, as tests and replays pass.
    """
    rng = np.random.default_rng(seed)
    frame = generate_events(rows, rng=rng, invalid_rate=0.0, now=NOW)[list(c.COLUMNS)].astype(object)
    for column, values in _HOSTILE.items():
        hit = rng.random(rows) < 0.15
        frame.loc[hit, column] = np.array(values, dtype=object)[rng.integers(0, len(values), int(hit.sum()))]
    frame.index = pd.Index(np.arange(1, rows + 1), name="record_number")
    arrow = frame.astype(pd.ArrowDtype(pa_arrow.string()))
    slow = arrow.copy()
    hit = np.flatnonzero(rng.random(rows) < 0.02)
    slow.iloc[hit, slow.columns.get_loc("event_timestamp")] = np.array(_SLOW_TIMESTAMPS, dtype=object)[np.arange(len(hit)) % 4]
    return [arrow, slow, frame]


def check(blocks: list[pd.DataFrame], args, polars) -> bool:
    frames = [("generated", b) for b in blocks] + [("hostile", f) for f in hostile_frames(args.hostile_rows, args.seed)]
    ok = True
    for variant, stage in [("new", None)] + ([("polars", polars)] if polars else []):
        total = Differences()
        for label, raw in frames:
            clock = Clock()
            total.add(compare(run_old(raw, clock), run_new(raw, clock, pandera_stage=stage), label))
        print(f"check old vs {variant}: {total.rows:,} rows, {total.rejected:,} rejected; "
              f"{total.details_order:,} rows with the same details in another order, "
              f"{total.float_microseconds:,} far-past timestamps the original rounded through a float; "
              f"{len(total.problems)} differences otherwise")
        for line in total.problems[:20]:
            print("  ", line)
        ok = ok and not total.problems
    return ok


def check_composition(blocks: list[pd.DataFrame]) -> None:
    """The staged run of the harness gives what ``validate.validate`` gives (the harness measures the real thing)."""
    for raw in blocks[:2]:
        staged = run_new(raw, Clock())
        whole = new.validate(raw, now=NOW)
        pd.testing.assert_frame_equal(staged.valid, whole.valid)
        pd.testing.assert_frame_equal(staged.rejected, whole.rejected)


# --- timing -----------------------------------------------------------------------------------------


def time_variants(blocks: list[pd.DataFrame], args, polars) -> dict[str, list[Clock]]:
    variants: dict[str, Callable[[pd.DataFrame, Clock], Output]] = {"old": run_old, "new": run_new}
    if polars and args.polars:
        variants["polars"] = lambda raw, clock: run_new(raw, clock, pandera_stage=polars)
    runs: dict[str, list[Clock]] = {name: [] for name in variants}
    for name, run in variants.items():  # a warm-up each: imports, caches, first-call costs
        run(blocks[0], Clock())
    for rep in range(args.reps):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))  # alternate: drift hits both alike
        for name in order:
            gc.collect()
            clock = Clock()
            for raw in blocks:
                variants[name](raw, clock)
            runs[name].append(clock)
            print(f"  rep {rep + 1} {name}: wall {sum(clock.wall.values()):.2f} s, cpu {sum(clock.cpu.values()):.2f} s", flush=True)
    return runs


def report(runs: dict[str, list[Clock]], rows: int) -> None:
    scale = 1_000_000 / rows
    names = list(runs)

    def median(name, kind, stage):
        return statistics.median(getattr(clock, kind)[stage] for clock in runs[name]) * scale

    def total(name, kind, stages):
        return statistics.median(sum(getattr(clock, kind)[s] for s in stages) for clock in runs[name]) * scale

    header = "stage (s per 1M rows, median)".ljust(34) + "".join(f"{n + ' wall':>12}{n + ' cpu':>12}" for n in names)
    if "old" in runs and "new" in runs:
        header += f"{'new/old cpu':>13}"
    print(header)
    validate_stages = STAGES[:6]
    groups = [(s, (s,)) for s in STAGES]
    groups += [("= validate (first six)", validate_stages), ("= validate + binary frame", validate_stages + ("binary_frame",))]
    for label, stages in groups:
        line = label.ljust(34) + "".join(f"{total(n, 'wall', stages):12.3f}{total(n, 'cpu', stages):12.3f}" for n in names)
        if "old" in runs and "new" in runs:
            old_cpu = total("old", "cpu", stages)
            line += f"{(total('new', 'cpu', stages) / old_cpu if old_cpu else float('nan')):13.2f}"
        print(line)
    print(f"({len(next(iter(runs.values())))} alternating repetitions; stages: "
          + "; ".join(f"{s} = {STAGE_NOTES[s]}" for s in STAGES) + ")")


# --- peak RSS, one variant per process ------------------------------------------------------------


def stream(path: Path, variant: str, block_bytes: int) -> None:
    """Read, validate and convert block by block, as the loader does, then print the peak RSS."""
    run = {"old": run_old, "new": run_new}[variant]
    clock = Clock()
    for chunk in CsvDrop(path, block_bytes=block_bytes):
        run(chunk.rows, clock)
    print(peak_rss_mb(), sum(clock.wall.values()))


def peak_rss_mb() -> int:
    """This process's peak RSS: VmHWM, which a child starts afresh (``ru_maxrss`` keeps the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def peak_rss(path: Path, args) -> None:
    for rep in range(args.rss_reps):
        for variant in ("old", "new") if rep % 2 == 0 else ("new", "old"):
            out = subprocess.run(
                [sys.executable, __file__, "--stream", variant, "--block-bytes", str(args.block_bytes), "--drop", str(path)],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            print(f"  peak RSS {variant}, streaming {path.name}: {out[0]} MB (validate + convert {float(out[1]):.2f} s wall)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--invalid-rate", type=float, default=0.02)
    parser.add_argument("--block-bytes", type=int, default=16 * 1024 * 1024, help="CsvDrop block (the loader's default)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/ecom-profile-validation", help="where the generated drop is kept between runs")
    parser.add_argument("--check", action="store_true", help="compare old and new outputs row by row")
    parser.add_argument("--hostile-rows", type=int, default=20_000)
    parser.add_argument("--rss", action="store_true", help="peak RSS of each variant alone, in child processes")
    parser.add_argument("--rss-reps", type=int, default=2)
    parser.add_argument("--polars", action="store_true", help="also time Pandera's polars backend (where polars is installed)")
    parser.add_argument("--profile", choices=["old", "new"], help="cProfile one pass of a variant, top functions")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--stream", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--drop", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stream:
        stream(Path(args.drop), args.stream, args.block_bytes)
        return 0

    path = drop_path(args)
    tick = time.perf_counter()
    blocks = read_blocks(path, args.block_bytes)
    seconds = time.perf_counter() - tick
    print(f"read {sum(map(len, blocks)):,} rows in {len(blocks)} blocks of {args.block_bytes:,} bytes in {seconds:.2f} s")
    check_composition(blocks)
    polars = polars_stage()
    if args.polars and polars is None:
        print("polars is not installed here: --polars skipped")
    ok = True
    if args.check:
        ok = check(blocks, args, polars if args.polars else None)
    if args.profile:
        import cProfile

        run = {"old": run_old, "new": run_new}[args.profile]
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for raw in blocks:
            run(raw, Clock())
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    if not args.no_timing:
        report(time_variants(blocks, args, polars), sum(map(len, blocks)))
    if args.rss:
        peak_rss(path, args)
    print(f"peak RSS of this process (all blocks held): {peak_rss_mb()} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
