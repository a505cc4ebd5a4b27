"""Rows that break one rule of the contract each, on purpose: the generator's invalid rows.

One breaker per reason, each changing only the column its rule is about, so a generated
row is rejected for exactly the reason it was made for (``expected_reason``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from ecom_ingest_dagster import contract

# The reasons a generated row can be built to violate. malformed_row is a property of a
# CSV line, not of a frame's values, and invalid_product_id is left out so product_id stays
# a stable join key in every generated row.
INVALID_REASONS: tuple[str, ...] = (
    contract.INVALID_EVENT_ID,
    contract.INVALID_USER_ID,
    contract.INVALID_EVENT_TYPE,
    contract.MISSING_REQUIRED_FIELD,
    contract.NEGATIVE_PRICE,
    contract.INVALID_PRICE,
    contract.INVALID_QUANTITY,
    contract.INVALID_TIMESTAMP,
    contract.INVALID_SESSION_ID,
    contract.FIELD_TOO_LONG,
)


US_PER_SECOND = 1_000_000


def format_timestamps(us_since_epoch: np.ndarray) -> np.ndarray:
    stamps = us_since_epoch.astype("datetime64[us]")
    return np.datetime_as_string(stamps, unit="us", timezone="UTC").astype(object)


def epoch_us(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return delta // dt.timedelta(microseconds=1)


_Columns = dict[str, np.ndarray]
_Rng = np.random.Generator

# Breakers: each turns the (valid) values of `rows` into values that violate exactly one
# rule. Variants are derived from the row's own value where possible, which keeps them
# unique and realistic ("almost a uuid") rather than a handful of constants.


def _variant(rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
    return rng.integers(0, count, size=len(rows))


def _break_event_id(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    # Never empty: an empty event_id is missing_required_field, not invalid_event_id.
    variants = (
        lambda u: u.replace("-", ""),
        lambda u: u[:-1],
        lambda u: "z" + u[1:],
        lambda u: "{" + u + "}",
        lambda u: "evt-" + u[:8],
    )
    col = cols["event_id"]
    pick = _variant(rng, rows, len(variants))
    col[rows] = [variants[v](col[r]) for r, v in zip(rows, pick)]


def _break_user_id(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    col = cols["user_id"]
    pick = _variant(rng, rows, 6)
    eleven_digits = rng.integers(10**10, 10**11, size=len(rows))
    out = []
    for r, v, big in zip(rows, pick, eleven_digits):
        digits = col[r][len("user_"):]
        out.append((f"usr_{digits}", f"user_{big}", f"customer_{digits}", "user_",
                    f"user_{digits}a", f"user-{digits}")[v])
    col[rows] = out


def _break_event_type(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    # Lower case and without blanks on purpose: "View" or " view" would test the
    # validator's normalisation, not the set of event types.
    wrong = np.array(
        ["click", "checkout", "add-to-cart", "refund", "page_view", "addtocart", "search"],
        dtype=object,
    )
    cols["event_type"][rows] = wrong[_variant(rng, rows, len(wrong))]


def _break_missing(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    # Round-robin from a random start, so even a handful of rows do not always blank
    # the same field.
    fields = contract.REQUIRED_COLUMNS
    which = (np.arange(len(rows)) + rng.integers(len(fields))) % len(fields)
    for k, field in enumerate(fields):
        cols[field][rows[which == k]] = ""


def _break_negative_price(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    # Pool prices are >= 0.01, so the result is never "-0.00" (which is not negative).
    col = cols["price"]
    col[rows] = ["-" + col[r] for r in rows]


def _break_price(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    col = cols["price"]
    pick = _variant(rng, rows, 6)
    too_big = rng.integers(contract.PRICE_MAX + 1, 100 * contract.PRICE_MAX, size=len(rows))
    out = []
    for r, v, big in zip(rows, pick, too_big):
        price = col[r]
        variants = ("abc", f"${price}", price.replace(".", ","), "1000000.01", f"{big}.00",
                    "12.3.4")
        out.append(variants[v])
    col[rows] = out


def _break_quantity(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    wrong = np.array(["0", "1001", "2.5", "x", "-1", "5000", "one", "1e3"], dtype=object)
    cols["quantity"][rows] = wrong[_variant(rng, rows, len(wrong))]


def _break_timestamp(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    col = cols["event_timestamp"]
    pick = _variant(rng, rows, 6)
    day_us = 86_400 * US_PER_SECOND
    ahead_us = rng.integers(7 * day_us, 60 * day_us, size=len(rows))
    future = format_timestamps(epoch_us(now) + ahead_us)
    garbage = ("not-a-timestamp", "yesterday", "28/11/2026 10:15")
    out = []
    for i, (r, v) in enumerate(zip(rows, pick)):
        ts = col[r]  # e.g. 2026-11-28T10:15:30.123456Z
        if v == 0:
            out.append(ts[:-1])  # no offset
        elif v == 1:
            out.append(ts[:19].replace("T", " "))  # no offset, space separator
        elif v == 2:
            out.append(ts[:10])  # date only
        elif v == 3:
            out.append(garbage[i % len(garbage)])
        elif v == 4:
            # Shaped like a timestamp but no calendar has it (month 13 / hour 25).
            out.append(ts[:5] + "13" + ts[7:] if i % 2 else ts[:11] + "25" + ts[13:])
        else:
            out.append(future[i])
    col[rows] = out


def _break_session_id(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    # Never empty: session_id is optional, so an empty one would be valid.
    variants = (
        lambda u: u.replace("-", ""),
        lambda u: "sess_" + u[:8],
        lambda u: u[:-1],
        lambda u: "g" + u[1:],
    )
    col = cols["session_id"]
    pick = _variant(rng, rows, len(variants))
    col[rows] = [variants[v](col[r]) for r, v in zip(rows, pick)]


def _stretch(text: str, length: int) -> str:
    # No leading/trailing blanks, so a validator that strips values still sees the
    # over-long length.
    body = ((text + " / ") * (length // (len(text) + 3) + 1))[:length].rstrip()
    return body + "x" * (length - len(body))


def _break_too_long(cols: _Columns, rows: np.ndarray, rng: _Rng, now: dt.datetime) -> None:
    which = _variant(rng, rows, 2)
    name_limit = contract.MAX_LENGTHS["product_name"]
    cat_limit = contract.MAX_LENGTHS["category"]
    name_rows, cat_rows = rows[which == 0], rows[which == 1]
    name_len = rng.integers(name_limit + 1, 2 * name_limit + 1, size=len(name_rows))
    cat_len = rng.integers(cat_limit + 1, 2 * cat_limit + 1, size=len(cat_rows))
    names, cats = cols["product_name"], cols["category"]
    names[name_rows] = [_stretch(names[r], int(k)) for r, k in zip(name_rows, name_len)]
    cats[cat_rows] = [_stretch(cats[r], int(k)) for r, k in zip(cat_rows, cat_len)]


BREAKERS = {
    contract.INVALID_EVENT_ID: _break_event_id,
    contract.INVALID_USER_ID: _break_user_id,
    contract.INVALID_EVENT_TYPE: _break_event_type,
    contract.MISSING_REQUIRED_FIELD: _break_missing,
    contract.NEGATIVE_PRICE: _break_negative_price,
    contract.INVALID_PRICE: _break_price,
    contract.INVALID_QUANTITY: _break_quantity,
    contract.INVALID_TIMESTAMP: _break_timestamp,
    contract.INVALID_SESSION_ID: _break_session_id,
    contract.FIELD_TOO_LONG: _break_too_long,
}
assert set(BREAKERS) == set(INVALID_REASONS)
