"""Synthetic e-commerce event drops that follow, or deliberately break, the data contract.

Plain Python (no Dagster, no Spark) so the CLI, the tests and the benchmarks can all use
it. Everything per row is vectorised with numpy: Faker only builds a small product pool
once per seed, because calling it per row would cost minutes for a million events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import gzip
import math
import operator
import os
import pathlib
import secrets
import sys
import time
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from faker import Faker
from tqdm import tqdm

from ecom_ingest_dagster import contract
from ecom_ingest_dagster.feeds import FeedContract
from ecom_ingest_dagster.tools.feed_generator import generate_rows
from ecom_ingest_dagster.tools.invalid_rows import BREAKERS, INVALID_REASONS, US_PER_SECOND, epoch_us, format_timestamps

EXPECTED_REASON = "expected_reason"

PRODUCT_POOL_SIZE = 1_000
USER_ID_MAX = 999_999
WINDOW = dt.timedelta(hours=24)

_WINDOW_US = int(WINDOW / dt.timedelta(microseconds=1))
# Mean gap between two events of one session; capped so a session stays short.
_SESSION_GAP_MEAN_S = 45.0
_SESSION_GAP_MAX_S = 900.0
_SESSION_CONTINUE_P = 0.7  # geometric session length, mean ~3.3 events
_SESSION_MAX_EVENTS = 20

# category -> (median price in dollars, product nouns)
_CATALOGUE: dict[str, tuple[float, tuple[str, ...]]] = {
    "Electronics": (79.0, ("Headphones", "Bluetooth Speaker", "Smartwatch", "USB-C Charger",
                           "Webcam", "Tablet", "E-Reader", "Power Bank", "Keyboard", "Monitor")),
    "Home & Kitchen": (34.0, ("Coffee Maker", "Chef's Knife", "Blender", "Dutch Oven", "Toaster",
                              "Cutting Board", "Kettle", "Frying Pan", "Mixing Bowl Set")),
    "Clothing": (29.0, ("T-Shirt", "Hoodie", "Jeans", "Rain Jacket", "Sneakers", "Wool Socks",
                        "Chino Shorts", "Denim Jacket", "Beanie")),
    "Books": (16.0, ("Cookbook", "Mystery Novel", "Travel Guide", "Biography",
                     "Science Fiction Novel", "Graphic Novel", "Children's Picture Book")),
    "Sports & Outdoors": (45.0, ("Yoga Mat", "Running Shoes", "Tent", "Water Bottle", "Dumbbell Set",
                                 "Cycling Helmet", "Hiking Backpack", "Sleeping Bag")),
    "Beauty & Personal Care": (19.0, ("Face Serum", "Shampoo", "Electric Toothbrush", "Lip Balm",
                                      "Hair Dryer", "Sunscreen", "Body Lotion")),
    "Toys & Games": (24.0, ("Board Game", "Puzzle", "Building Blocks", "Plush Bear", "RC Car",
                            "Card Game", "Doll House")),
    "Grocery": (8.0, ("Ground Coffee", "Green Tea", "Olive Oil", "Dark Chocolate", "Granola",
                      "Pasta Sauce", "Honey")),
    "Garden": (27.0, ("Garden Hose", "Pruning Shears", "Planter", "Seed Kit", "Watering Can",
                      "Bird Feeder")),
    "Office Supplies": (12.0, ("Notebook", "Gel Pens", "Desk Lamp", "Stapler", "Desk Organizer",
                               "Whiteboard")),
    "Pet Supplies": (21.0, ("Dog Leash", "Cat Tree", "Pet Bed", "Chew Toy", "Litter Box",
                            "Aquarium Filter")),
    "Automotive": (39.0, ("Car Phone Mount", "Dash Cam", "Tire Inflator", "Seat Cover",
                          "Jump Starter")),
}
_ADJECTIVES = ("Classic", "Premium", "Essential", "Deluxe", "Everyday", "Pro", "Compact",
               "Signature", "Eco", "Vintage", "Ultra", "Original")
# Some events see a discounted price, so one product does not always cost the same.
_DISCOUNTS = (1.0, 0.9, 0.8, 0.7)
_DISCOUNT_P = (0.85, 0.08, 0.05, 0.02)

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_HEX_POS = np.array([p for p in range(36) if p not in (8, 13, 18, 23)])
_QUANTITY_STRINGS = np.array([str(i) for i in range(contract.QUANTITY_MAX + 1)], dtype=object)


def _quantity_p() -> np.ndarray:
    # Carts hold one to five items almost always; bulk orders exist but are rare.
    w = np.zeros(contract.QUANTITY_MAX, dtype=np.float64)
    w[:5] = (0.60, 0.20, 0.09, 0.05, 0.03)
    w[5:50] = 0.025 / 45
    w[50:] = 0.005 / (contract.QUANTITY_MAX - 50)
    return w / w.sum()


_QUANTITY_P = _quantity_p()


class _ProductPool(NamedTuple):
    product_id: np.ndarray  # object[str], P
    product_name: np.ndarray  # object[str], P
    category: np.ndarray  # object[str], P
    price: np.ndarray  # object[str], P x len(_DISCOUNTS)
    popularity: np.ndarray  # float64, P, sums to 1


@functools.lru_cache(maxsize=8)
def _product_pool(faker_seed: int) -> _ProductPool:
    fake = Faker("en_US")
    fake.seed_instance(faker_seed)
    rnd = fake.random
    categories = list(_CATALOGUE)
    ids, names, cats, cents = [], [], [], []
    for _ in range(PRODUCT_POOL_SIZE):
        category = rnd.choice(categories)
        median, nouns = _CATALOGUE[category]
        name = f"{fake.last_name()} {rnd.choice(_ADJECTIVES)} {rnd.choice(nouns)}"
        if rnd.random() < 0.4:
            name += f" - {fake.safe_color_name().title()}"
        dollars = min(max(rnd.lognormvariate(math.log(median), 0.6), 0.5), 20_000.0)
        # Most shop prices end in .99; the rest are whole or half units, or arbitrary.
        style = rnd.random()
        if style < 0.7:
            c = max(int(dollars) * 100 + 99, 99)
        elif style < 0.9:
            c = int(round(dollars * 2)) * 50 or 50
        else:
            c = max(int(round(dollars * 100)), 1)
        ids.append(f"prod_{fake.unique.random_int(min=1_000, max=9_999_999)}")
        names.append(name)
        cats.append(category)
        cents.append(c)
    base = np.array(cents, dtype=np.int64)
    levels = np.maximum(np.rint(base[:, None] * np.array(_DISCOUNTS)[None, :]).astype(np.int64), 1)
    price = np.array([f"{c // 100}.{c % 100:02d}" for c in levels.ravel()], dtype=object)
    # Zipf-like: a few products get most of the traffic, like a real shop.
    popularity = 1.0 / np.arange(1, PRODUCT_POOL_SIZE + 1) ** 0.9
    arrays = _ProductPool(
        product_id=np.array(ids, dtype=object),
        product_name=np.array(names, dtype=object),
        category=np.array(cats, dtype=object),
        price=price.reshape(levels.shape),
        popularity=popularity / popularity.sum(),
    )
    # The pool is shared through the cache; a caller writing into it would change
    # every later frame generated with the same seed.
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _uuid4_strings(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` lowercase uuid4 strings (object array), built from rng bytes in bulk."""
    b = np.frombuffer(rng.bytes(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40  # version 4
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = np.empty((count, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[b >> 4]
    digits[:, 1::2] = _HEX[b & 0x0F]
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_HEX_POS] = digits
    return text.view("S36").ravel().astype("U36").astype(object)


def _as_utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        # A naive `now` is taken as UTC: the generated timestamps all carry "Z".
        return now.replace(tzinfo=dt.timezone.utc)
    return now.astimezone(dt.timezone.utc)


def _check_rate(invalid_rate: float) -> float:
    try:
        rate = float(invalid_rate)
    except (TypeError, ValueError):
        raise ValueError(f"invalid_rate must be a number in [0, 1], got {invalid_rate!r}") from None
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ValueError(f"invalid_rate must be in [0, 1], got {invalid_rate!r}")
    return rate


def _check_count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if count < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {count}")
    return count


def generate_events(
    n: int,
    *,
    rng: np.random.Generator,
    invalid_rate: float = 0.0,
    now: dt.datetime | None = None,
    faker_seed: int | None = None,
    invalid_count: int | None = None,
) -> pd.DataFrame:
    """``n`` synthetic events as text, in ``contract.COLUMNS`` order, plus ``expected_reason``.

    Valid rows follow every rule of the contract, with timestamps in the 24 hours before
    ``now`` (default: the current UTC time; a naive ``now`` is taken as UTC). Exactly
    ``round(n * invalid_rate)`` rows, at random positions, each break exactly one rule;
    their ``expected_reason`` names it (``""`` for valid rows). Reasons are spread evenly
    over :data:`INVALID_REASONS`. "Too far in the future" timestamps are 7 to 60 days after
    ``now``, so they stay invalid when a file is ingested a few days after it was made.

    The same ``rng`` state, ``faker_seed`` and ``now`` give the same frame. Without
    ``faker_seed`` the product pool's seed is drawn from ``rng``; pass one explicitly to
    reuse a cached pool across calls.
    """
    n = _check_count(n, "n", 0)
    rate = _check_rate(invalid_rate)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    now_utc = _as_utc(now)
    if faker_seed is None:
        faker_seed = int(rng.integers(0, 2**32))
    pool = _product_pool(int(faker_seed))
    sessions = _Sessions.draw(rng, n)
    session_ids = _uuid4_strings(rng, sessions.count)
    user_numbers = rng.integers(1, USER_ID_MAX + 1, size=sessions.count)
    user_ids = np.strings.add("user_", user_numbers.astype("U10")).astype(object)
    timestamps_us = sessions.timestamps_us(rng, now_utc)

    type_p = list(contract.EVENT_TYPE_MIX.values())
    type_codes = rng.choice(len(contract.EVENT_TYPES), size=n, p=type_p)
    product = rng.choice(len(pool.product_id), size=n, p=pool.popularity)
    discount = rng.choice(len(_DISCOUNTS), size=n, p=_DISCOUNT_P)
    quantity = rng.choice(contract.QUANTITY_MAX, size=n, p=_QUANTITY_P) + 1
    row = sessions.of_row
    columns: dict[str, np.ndarray] = {
        "event_id": _uuid4_strings(rng, n),
        "user_id": user_ids[row],
        "session_id": session_ids[row],
        "event_type": np.array(contract.EVENT_TYPES, dtype=object)[type_codes],
        "product_id": pool.product_id[product],
        "product_name": pool.product_name[product],
        "category": pool.category[product],
        "price": pool.price[product, discount],
        "quantity": _QUANTITY_STRINGS[quantity],
        "event_timestamp": format_timestamps(timestamps_us),
    }
    # An explicit count lets a caller spread a rate over many small files exactly.
    n_invalid = int(round(n * rate)) if invalid_count is None else min(_check_count(invalid_count, "invalid_count", 0), n)
    expected = _break_rows(columns, rng, n, n_invalid, now_utc)
    frame = pd.DataFrame({**columns, EXPECTED_REASON: expected}, copy=False)
    return frame


class _Sessions(NamedTuple):
    """Runs of consecutive rows sharing one session_id and one user."""

    count: int
    of_row: np.ndarray  # each row's session
    first_row: np.ndarray  # each session's first and last row
    last_row: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int) -> _Sessions:
        lengths = rng.geometric(1.0 - _SESSION_CONTINUE_P, size=max(n, 1))
        lengths = np.minimum(lengths, _SESSION_MAX_EVENTS)
        ends = np.cumsum(lengths)
        count = int(np.searchsorted(ends, n)) + 1 if n else 0
        lengths = lengths[:count]
        if count:
            lengths[-1] -= ends[count - 1] - n
        first_row = (np.cumsum(lengths) - lengths).astype(np.int64)
        return cls(count, np.repeat(np.arange(count), lengths), first_row, first_row + lengths - 1)

    def timestamps_us(self, rng: np.random.Generator, now: dt.datetime) -> np.ndarray:
        """Each row's time: a session starts late enough in the window that its last event
        is still before ``now``, so every valid timestamp lies in [now - 24h, now)."""
        n = len(self.of_row)
        gaps = np.minimum(rng.exponential(_SESSION_GAP_MEAN_S, size=n), _SESSION_GAP_MAX_S)
        gaps_us = (gaps * US_PER_SECOND).astype(np.int64)
        gaps_us[self.first_row] = 0
        elapsed = np.cumsum(gaps_us)
        offset_in_session = elapsed - elapsed[self.first_row][self.of_row]
        slack = _WINDOW_US - (elapsed[self.last_row] - elapsed[self.first_row])
        window_start = epoch_us(now) - _WINDOW_US
        session_start = window_start + np.floor(rng.random(self.count) * slack).astype(np.int64)
        return session_start[self.of_row] + offset_in_session


def _break_rows(columns: dict[str, np.ndarray], rng: np.random.Generator, n: int, n_invalid: int,
                now: dt.datetime) -> np.ndarray:
    """``n_invalid`` rows at random positions, each made to break one rule; each row's expected reason."""
    expected = np.full(n, "", dtype=object)
    if n_invalid:
        positions = rng.choice(n, size=n_invalid, replace=False)
        # Positions come in random order, so round-robin over them is both even and random;
        # the random start spreads small files' few bad rows over every reason too.
        start = int(rng.integers(len(INVALID_REASONS)))
        assigned = (np.arange(n_invalid) + start) % len(INVALID_REASONS)
        for k, reason in enumerate(INVALID_REASONS):
            rows = positions[assigned == k]
            if len(rows):
                BREAKERS[reason](columns, rows, rng, now)
                expected[rows] = reason
    return expected


def _check_file_name(name: str, what: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
        raise ValueError(f"{what} must be a plain file name, got {name!r}")


def _fsync_dir(directory: pathlib.Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_drop(frame: pd.DataFrame, landing: pathlib.Path, name: str,
               contract_columns: Sequence[str] = contract.COLUMNS) -> pathlib.Path:
    """Write ``frame``'s contract columns (``contract_columns``: user_events' unless another
    feed's are given) as a UTF-8 CSV with header to ``landing/name``.

    The file appears atomically: it is written under a hidden temporary name in the same
    directory (a name the landing directory does not treat as a drop), fsynced, then
    renamed, so a watcher never sees a half-written drop. Contract columns absent from
    ``frame`` are left out (handy for building whole-file rejections); other columns,
    such as ``expected_reason``, are never written. All values must be strings; every
    field is quoted (RFC 4180). A name ending in ``.gz`` or ``.zst`` is written compressed
    (gzip, Zstandard).
    Returns the final path.
    """
    _check_file_name(name, "name")
    columns = [c for c in contract_columns if c in frame.columns]
    if not columns:
        raise ValueError("frame has none of the contract's columns")
    schema = pa.schema([(c, pa.string()) for c in columns])
    table = pa.Table.from_pandas(frame.loc[:, columns], schema=schema, preserve_index=False)

    landing = pathlib.Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    final = landing / name
    tmp = landing / f".{name}.{secrets.token_hex(6)}.tmp"
    # os.open with 0o666 (not mkstemp's 0o600) so the reader, maybe another user or
    # container, can open the drop under the usual umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if name.endswith(".gz"):
                with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as packed:
                    pacsv.write_csv(table, packed, write_options=pacsv.WriteOptions(include_header=True))
            elif name.endswith(".zst"):
                # Arrow's stream closes what it writes to: give it a duplicate of the file
                # descriptor, so ours stays open for the fsync below.
                with (os.fdopen(os.dup(fh.fileno()), "wb") as raw,
                      pa.CompressedOutputStream(pa.PythonFile(raw, mode="w"), "zstd") as packed):
                    pacsv.write_csv(table, packed, write_options=pacsv.WriteOptions(include_header=True))
            else:
                pacsv.write_csv(table, fh, write_options=pacsv.WriteOptions(include_header=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(landing)
    return final


@dataclasses.dataclass
class DropSummary:
    path: pathlib.Path
    rows: int
    invalid_rows: int


def _check_interval(interval) -> float:
    try:
        interval = float(interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}") from None
    if not (0.0 <= interval < math.inf):
        raise ValueError(f"interval must be a finite number of seconds >= 0, got {interval!r}")
    return interval


def _check_prefix(prefix: str) -> None:
    _check_file_name(prefix, "prefix")
    if prefix[0] in "._":
        raise ValueError(f"prefix must not start with '.' or '_' (such files are not drops), got {prefix!r}")


def generate_drops(
    landing: pathlib.Path,
    *,
    events: int,
    batches: int,
    interval: float = 0.0,
    invalid_rate: float = 0.0,
    seed: int | None = None,
    prefix: str | None = None,
    progress: bool = True,
    now: dt.datetime | None = None,
    compress: str | None = None,
    feed: FeedContract | None = None,
) -> list[DropSummary]:
    """Write ``batches`` drops of ``events`` rows each into ``landing``.

    Sleeps ``interval`` seconds between files (not after the last). Names look like
    ``events_20261128T101530_1a2b3c4d_0000.csv`` (another feed's: ``<feed>_...``): the invocation's UTC time and a random
    token keep them unique across invocations (the streaming source ignores a name it
    has seen), the zero-padded index keeps one invocation's files in order. ``seed``
    makes the contents reproducible (so re-running with the same seed re-sends the same
    event_ids: duplicates on purpose); the names stay unique regardless. ``now=None``
    stamps each file's events relative to the moment it is generated. ``compress``
    (``gz``, ``zst``) writes ``*.csv.gz`` or ``*.csv.zst`` drops. ``feed``: drops of another feed than user_events, made from its
    contract alone (``feed_generator``).
    """
    events = _check_count(events, "events", 0)
    batches = _check_count(batches, "batches", 1)
    interval = _check_interval(interval)
    rate = _check_rate(invalid_rate)
    if prefix is None:  # user_events' drops are events_..., another feed's are named after it
        prefix = "events" if feed is None or feed.feed == contract.FEED.feed else feed.feed
    _check_prefix(prefix)
    if compress not in (None, "gz", "zst"):
        raise ValueError(f"compress: gz or zst (or none), got {compress!r}")

    rng = np.random.default_rng(seed)
    # One pool for the whole invocation: built (and cached) once, not once per file.
    faker_seed = int(rng.integers(0, 2**32))
    # The token comes from the OS, not from `rng`: two runs with the same seed must
    # still produce different names.
    run = f"{prefix}_{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}_{secrets.token_hex(4)}"
    width = max(4, len(str(batches - 1)))
    summaries: list[DropSummary] = []
    # A bar redraws itself with carriage returns: in a log (not a terminal) a line per file instead.
    live = progress and sys.stderr.isatty()
    bar = tqdm(total=batches, unit="file", desc="drops", file=sys.stderr, disable=not live)
    with bar:
        for i in range(batches):
            if i and interval:
                time.sleep(interval)
            name = f"{run}_{i:0{width}d}.csv" + (f".{compress}" if compress else "")
            if feed is not None and feed.feed != contract.FEED.feed:
                frame = generate_rows(feed, events, rng=rng, invalid_rate=rate, now=now)
                path = write_drop(frame, landing, name, feed.column_names)
            else:
                frame = generate_events(
                    events, rng=rng, invalid_rate=rate, now=now, faker_seed=faker_seed,
                    # Cumulative rounding: 10 files of 20 rows at 2% still hold 4 bad rows.
                    invalid_count=round((i + 1) * events * rate) - round(i * events * rate),
                )
                path = write_drop(frame, landing, name)
            invalid = int((frame[EXPECTED_REASON] != "").sum())
            summaries.append(DropSummary(path=path, rows=len(frame), invalid_rows=invalid))
            # Running totals: the bar's last line then agrees with the summary printed under it.
            bar.set_postfix(rows=sum(d.rows for d in summaries), invalid=sum(d.invalid_rows for d in summaries),
                            refresh=False)
            bar.update(1)
            if progress and not live:
                print(f"drop {i + 1}/{batches}: {path.name} ({len(frame)} rows, {invalid} invalid)", file=sys.stderr)
    return summaries
