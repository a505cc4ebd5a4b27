"""Tests for the synthetic event generator: contract conformance, exact invalid rows, drops."""

from __future__ import annotations

import datetime as dt
import math
import pathlib
import re
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from ecom_ingest_dagster import contract
from ecom_ingest_dagster.tools import generator
from ecom_ingest_dagster.tools.generator import (
    EXPECTED_REASON,
    INVALID_REASONS,
    DropSummary,
    generate_drops,
    generate_events,
    write_drop,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
UUID4_LOWER = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def contract_reasons(frame: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """One boolean column per reason: does the row break that rule of the contract?

    Written from contract.py alone (not from the generator), so the two cannot agree on a
    shared mistake.
    """
    def present(col: str) -> pd.Series:
        return frame[col] != ""

    def matches(col: str, pattern: str) -> pd.Series:
        return frame[col].str.match(pattern)

    out = pd.DataFrame(index=frame.index)
    out[contract.MISSING_REQUIRED_FIELD] = ~frame[list(contract.REQUIRED_COLUMNS)].ne("").all(axis=1)
    out[contract.INVALID_EVENT_ID] = present("event_id") & ~matches("event_id", contract.UUID_PATTERN)
    out[contract.INVALID_USER_ID] = present("user_id") & ~matches("user_id", contract.USER_ID_PATTERN)
    out[contract.INVALID_EVENT_TYPE] = present("event_type") & ~frame["event_type"].isin(contract.EVENT_TYPES)
    out[contract.INVALID_PRODUCT_ID] = present("product_id") & ~matches("product_id", contract.PRODUCT_ID_PATTERN)
    out[contract.INVALID_SESSION_ID] = present("session_id") & ~matches("session_id", contract.UUID_PATTERN)

    price_ok = matches("price", contract.PRICE_PATTERN)
    price_value = frame["price"].where(price_ok, "0").map(Decimal)
    out[contract.NEGATIVE_PRICE] = present("price") & price_ok & (price_value < contract.PRICE_MIN)
    out[contract.INVALID_PRICE] = present("price") & (~price_ok | (price_value > contract.PRICE_MAX))

    qty_ok = matches("quantity", contract.QUANTITY_PATTERN)
    qty_value = frame["quantity"].where(qty_ok, "1").astype(np.int64)
    out[contract.INVALID_QUANTITY] = present("quantity") & (
        ~qty_ok | (qty_value < contract.QUANTITY_MIN) | (qty_value > contract.QUANTITY_MAX)
    )

    ts_ok = matches("event_timestamp", contract.TIMESTAMP_PATTERN)
    parsed = pd.to_datetime(frame["event_timestamp"].where(ts_ok, None), format="ISO8601", utc=True, errors="coerce")
    latest = pd.Timestamp(now) + pd.Timedelta(seconds=contract.MAX_FUTURE_SECONDS)
    out[contract.INVALID_TIMESTAMP] = present("event_timestamp") & (~ts_ok | parsed.isna() | (parsed > latest))

    out[contract.FIELD_TOO_LONG] = (
        (frame["product_name"].str.len() > contract.MAX_LENGTHS["product_name"])
        | (frame["category"].str.len() > contract.MAX_LENGTHS["category"])
    )
    return out


@pytest.fixture(scope="module")
def big_valid() -> pd.DataFrame:
    return generate_events(200_000, rng=np.random.default_rng(11), now=NOW, faker_seed=5)


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    return generate_events(20_000, rng=np.random.default_rng(12), invalid_rate=0.1, now=NOW, faker_seed=5)


def test_shape_and_types():
    frame = generate_events(500, rng=np.random.default_rng(0), invalid_rate=0.2, now=NOW)
    assert list(frame.columns) == [*contract.COLUMNS, EXPECTED_REASON]
    assert len(frame) == 500
    assert all(frame[c].dtype == object for c in frame.columns)
    assert all(type(v) is str for c in frame.columns for v in frame[c])


def test_zero_rows():
    frame = generate_events(0, rng=np.random.default_rng(0), invalid_rate=0.5, now=NOW)
    assert list(frame.columns) == [*contract.COLUMNS, EXPECTED_REASON]
    assert frame.empty


def test_event_type_mix(big_valid):
    shares = big_valid["event_type"].value_counts(normalize=True)
    assert set(shares.index) == set(contract.EVENT_TYPES)
    for event_type, expected in contract.EVENT_TYPE_MIX.items():
        assert abs(shares[event_type] - expected) < 0.01, (event_type, shares[event_type])


def test_valid_rows_follow_contract(big_valid):
    frame = big_valid
    assert (frame[EXPECTED_REASON] == "").all()
    broken = contract_reasons(frame, NOW)
    assert not broken.any().any(), broken.sum()[broken.sum() > 0]

    assert frame["event_id"].str.match(UUID4_LOWER.pattern).all()
    assert frame["session_id"].str.match(contract.UUID_PATTERN).all()
    assert frame["price"].str.match(r"^[0-9]+\.[0-9]{2}$").all()
    prices = frame["price"].astype(float)
    assert prices.between(contract.PRICE_MIN, contract.PRICE_MAX).all()
    quantities = frame["quantity"].astype(int)
    assert quantities.between(contract.QUANTITY_MIN, contract.QUANTITY_MAX).all()
    assert (quantities <= 5).mean() > 0.9  # mostly small baskets
    assert frame["event_timestamp"].str.match(TIMESTAMP_Z.pattern).all()
    stamps = pd.to_datetime(frame["event_timestamp"], format="ISO8601", utc=True)
    assert (stamps >= pd.Timestamp(NOW) - pd.Timedelta(hours=24)).all()
    assert (stamps < pd.Timestamp(NOW)).all()
    assert (frame["product_name"] != "").all() and (frame["category"] != "").all()
    # A realistic catalogue: many products, a dozen-ish categories, one name per product.
    assert frame["product_id"].nunique() > 300
    assert 5 <= frame["category"].nunique() <= 50
    assert (frame.groupby("product_id")["product_name"].nunique() == 1).all()


def test_sessions_belong_to_one_user_and_are_consecutive(big_valid):
    frame = big_valid
    assert (frame.groupby("session_id")["user_id"].nunique() == 1).all()
    sizes = frame.groupby("session_id").size()
    assert sizes.max() > 1 and 1.5 < sizes.mean() < 10
    # Consecutive: a session's rows form one run, so the number of runs equals sessions.
    runs = (frame["session_id"] != frame["session_id"].shift()).sum()
    assert runs == frame["session_id"].nunique()


def test_unique_event_ids(big_valid):
    assert big_valid["event_id"].is_unique


def test_invalid_rows_exact_count_and_even_spread(mixed):
    reasons = mixed[EXPECTED_REASON]
    assert (reasons != "").sum() == 2_000
    counts = reasons[reasons != ""].value_counts()
    assert set(counts.index) == set(INVALID_REASONS)
    assert (counts == 200).all(), counts
    # Reasons are at random positions, not clustered at the start or end.
    positions = np.flatnonzero(reasons.to_numpy() != "")
    assert positions.min() < 2_000 and positions.max() > 18_000


def test_each_row_breaks_exactly_its_reason(mixed):
    broken = contract_reasons(mixed, NOW)
    expected = mixed[EXPECTED_REASON]
    for i in range(len(mixed)):
        row = broken.iloc[i]
        got = set(row.index[row.to_numpy()])
        want = {expected.iloc[i]} if expected.iloc[i] else set()
        assert got == want, (i, want, got, mixed.iloc[i].to_dict())


def test_missing_fields_cover_every_required_column(mixed):
    missing = mixed[mixed[EXPECTED_REASON] == contract.MISSING_REQUIRED_FIELD]
    blanked = {c for c in contract.REQUIRED_COLUMNS for v in missing[c] if v == ""}
    assert blanked == set(contract.REQUIRED_COLUMNS)
    assert (missing[list(contract.REQUIRED_COLUMNS)].eq("").sum(axis=1) == 1).all()


def test_invalid_values_are_never_empty_except_missing(mixed):
    invalid = mixed[~mixed[EXPECTED_REASON].isin(["", contract.MISSING_REQUIRED_FIELD])]
    assert not invalid[list(contract.COLUMNS)].eq("").any().any()


@pytest.mark.parametrize(
    ("n", "rate"),
    [(10, 0.0), (10, 1.0), (7, 0.5), (1_000, 0.0015), (1_000, 0.01), (3, 0.34), (1, 0.4)],
)
def test_invalid_count_is_rounded(n, rate):
    frame = generate_events(n, rng=np.random.default_rng(3), invalid_rate=rate, now=NOW)
    assert (frame[EXPECTED_REASON] != "").sum() == round(n * rate)


def test_every_reason_present_with_small_rate():
    frame = generate_events(1_000, rng=np.random.default_rng(4), invalid_rate=0.01, now=NOW)
    assert sorted(frame.loc[frame[EXPECTED_REASON] != "", EXPECTED_REASON]) == sorted(INVALID_REASONS)


def test_all_invalid():
    frame = generate_events(3_000, rng=np.random.default_rng(6), invalid_rate=1.0, now=NOW)
    broken = contract_reasons(frame, NOW)
    assert (broken.sum(axis=1) == 1).all()
    assert (broken.idxmax(axis=1) == frame[EXPECTED_REASON]).all()


def test_seed_reproducible():
    def make(seed, faker_seed=None, now=NOW):
        return generate_events(3_000, rng=np.random.default_rng(seed), invalid_rate=0.1, now=now, faker_seed=faker_seed)

    pd.testing.assert_frame_equal(make(1), make(1))
    pd.testing.assert_frame_equal(make(1, faker_seed=9), make(1, faker_seed=9))
    assert not make(1).equals(make(2))
    a, b = make(1, faker_seed=9), make(1, faker_seed=10)
    assert not a["product_name"].equals(b["product_name"])
    # `now` shifts the timestamps and nothing else.
    later = make(1, now=NOW + dt.timedelta(days=3))
    earlier = make(1)
    others = [c for c in later.columns if c != "event_timestamp"]
    pd.testing.assert_frame_equal(later[others], earlier[others])


def test_default_now_is_current_time():
    before = pd.Timestamp.now(tz="UTC")
    frame = generate_events(2_000, rng=np.random.default_rng(0))
    after = pd.Timestamp.now(tz="UTC")
    stamps = pd.to_datetime(frame["event_timestamp"], format="ISO8601", utc=True)
    assert stamps.min() >= before - pd.Timedelta(hours=24)
    assert stamps.max() < after


def test_naive_now_is_utc():
    naive = NOW.replace(tzinfo=None)
    a = generate_events(100, rng=np.random.default_rng(0), now=naive, faker_seed=1)
    b = generate_events(100, rng=np.random.default_rng(0), now=NOW, faker_seed=1)
    pd.testing.assert_frame_equal(a, b)


def test_product_pool_is_not_writable():
    frame = generate_events(10, rng=np.random.default_rng(0), faker_seed=1, now=NOW)
    frame.loc[0, "product_name"] = "changed"
    again = generate_events(10, rng=np.random.default_rng(0), faker_seed=1, now=NOW)
    assert again.loc[0, "product_name"] != "changed"


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"invalid_rate": -0.1}, {"invalid_rate": 1.5}, {"invalid_rate": math.nan}])
def test_generate_events_bad_args(kwargs):
    args = {"n": 10, "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(ValueError):
        generate_events(args.pop("n"), **args)


def _read(path: pathlib.Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def test_write_drop_round_trip(tmp_path, mixed):
    frame = mixed.head(3_000).copy()
    # Values that need quoting in CSV must survive too.
    frame.loc[0, "product_name"] = 'Say "cheese", please'
    frame.loc[1, "category"] = "Ünïcödé, & more"
    landing = tmp_path / "landing" / "nested"
    path = write_drop(frame, landing, "events_0001.csv")
    assert path == landing / "events_0001.csv"
    assert [p.name for p in landing.iterdir()] == ["events_0001.csv"]
    back = _read(path)
    pd.testing.assert_frame_equal(back, frame[list(contract.COLUMNS)].reset_index(drop=True))
    assert EXPECTED_REASON not in path.read_text(encoding="utf-8").splitlines()[0]


def test_write_drop_header_only(tmp_path):
    frame = generate_events(0, rng=np.random.default_rng(0), now=NOW)
    path = write_drop(frame, tmp_path, "empty.csv")
    back = _read(path)
    assert list(back.columns) == list(contract.COLUMNS) and back.empty


def test_write_drop_subset_of_columns(tmp_path):
    frame = generate_events(20, rng=np.random.default_rng(0), now=NOW).drop(columns=["price"])
    back = _read(write_drop(frame, tmp_path, "no_price.csv"))
    assert list(back.columns) == [c for c in contract.COLUMNS if c != "price"]


def test_write_drop_replaces_atomically(tmp_path):
    first = generate_events(10, rng=np.random.default_rng(0), now=NOW)
    second = generate_events(5, rng=np.random.default_rng(1), now=NOW)
    write_drop(first, tmp_path, "a.csv")
    path = write_drop(second, tmp_path, "a.csv")
    assert len(_read(path)) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_write_drop_removes_temp_file_on_error(tmp_path, monkeypatch):
    seen: list[str] = []

    def broken_write(table, fh, **kwargs):
        seen.extend(p.name for p in tmp_path.iterdir())
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(generator.pacsv, "write_csv", broken_write)
    frame = generate_events(10, rng=np.random.default_rng(0), now=NOW)
    with pytest.raises(OSError, match="disk full"):
        write_drop(frame, tmp_path, "events.csv")
    assert list(tmp_path.iterdir()) == []
    # The temporary file was hidden (not a drop) while it existed.
    assert len(seen) == 1 and seen[0].startswith(".events.csv.") and seen[0].endswith(".tmp")
    assert not contract.is_drop_name(seen[0])


@pytest.mark.parametrize("name", ["", ".", "..", "a/b.csv", "..\\x.csv"])
def test_write_drop_rejects_paths_as_names(tmp_path, name):
    frame = generate_events(1, rng=np.random.default_rng(0), now=NOW)
    with pytest.raises(ValueError):
        write_drop(frame, tmp_path, name)


def test_generate_drops(tmp_path):
    landing = tmp_path / "landing"
    first = generate_drops(landing, events=200, batches=3, invalid_rate=0.1, seed=1, progress=False, now=NOW)
    second = generate_drops(landing, events=200, batches=3, invalid_rate=0.1, seed=1, progress=False, now=NOW)
    assert all(isinstance(s, DropSummary) for s in first + second)
    names = [s.path.name for s in first]
    assert names == sorted(names)
    assert all(contract.is_drop_name(n) and n.startswith("events_") for n in names)
    assert re.match(r"^events_\d{8}T\d{6}_[0-9a-f]+_0000\.csv$", names[0])
    all_names = names + [s.path.name for s in second]
    assert len(set(all_names)) == 6
    assert sorted(p.name for p in landing.iterdir()) == sorted(all_names)  # no temp files left
    for s in first + second:
        back = _read(s.path)
        assert s.rows == len(back) == 200
        assert s.invalid_rows == 20
        assert list(back.columns) == list(contract.COLUMNS)
    # Same seed: same contents under different names (re-sent duplicates on purpose).
    assert first[0].path.read_bytes() == second[0].path.read_bytes()
    # Files of one run differ from each other.
    assert first[0].path.read_bytes() != first[1].path.read_bytes()


def test_generate_drops_sleeps_between_files_only(tmp_path, monkeypatch):
    import threading

    sleeps: list[float] = []
    caller, real_sleep = threading.get_ident(), generator.time.sleep

    def fake_sleep(seconds):
        # time.sleep is process-wide: other tests' background threads (Spark, samplers)
        # keep sleeping for real; only this thread's calls are the generator's.
        if threading.get_ident() == caller:
            sleeps.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(generator.time, "sleep", fake_sleep)
    generate_drops(tmp_path, events=5, batches=4, interval=0.25, progress=False)
    assert sleeps == [0.25, 0.25, 0.25]


def test_generate_drops_progress_and_zero_events(tmp_path, capsys):
    summaries = generate_drops(tmp_path, events=0, batches=2, prefix="big", progress=True)
    assert [s.rows for s in summaries] == [0, 0]
    assert all(_read(s.path).empty for s in summaries)
    assert "2/2" in capsys.readouterr().err


def test_generate_drops_wide_index_still_sorts(tmp_path, monkeypatch):
    # Ten thousand real fsynced files would make the test slow; only the names matter.
    empty = generate_events(0, rng=np.random.default_rng(0), now=NOW)
    monkeypatch.setattr(generator, "generate_events", lambda *args, **kwargs: empty)
    monkeypatch.setattr(generator, "write_drop", lambda frame, landing, name: pathlib.Path(landing) / name)
    summaries = generate_drops(tmp_path, events=0, batches=10_001, progress=False)
    names = [s.path.name for s in summaries]
    assert names == sorted(names) and names[0].endswith("_00000.csv")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"events": -1},
        {"events": 1.5},
        {"batches": 0},
        {"interval": -1},
        {"interval": math.inf},
        {"invalid_rate": -0.01},
        {"invalid_rate": 1.01},
        {"invalid_rate": math.nan},
        {"prefix": ".hidden"},
        {"prefix": "_private"},
        {"prefix": "a/b"},
        {"prefix": ""},
    ],
)
def test_generate_drops_bad_args(tmp_path, kwargs):
    args = {"events": 1, "batches": 1, "progress": False, **kwargs}
    with pytest.raises(ValueError):
        generate_drops(tmp_path, **args)
    assert not any(tmp_path.iterdir())


def test_small_files_keep_the_overall_invalid_rate(tmp_path):
    # 10 files of 20 rows at 2%: per-file rounding would give 0 bad rows in total.
    drops = generate_drops(tmp_path, events=20, batches=10, invalid_rate=0.02, seed=1, progress=False)
    assert sum(d.invalid_rows for d in drops) == 4
