"""Unit tests of the Pandera validation: every contract rule, every reason, all at once."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline.validate import validate

from ecom_ingest_dagster_tests.helpers import GOOD_ROW

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
# The shared good row, with microseconds to check the timestamp's precision.
GOOD = {**GOOD_ROW, "event_timestamp": "2026-11-28T10:15:30.123456Z"}


def check(**changes):
    row = {**GOOD, **changes}
    result = validate(pd.DataFrame([row]), now=NOW)
    if len(result.valid):
        return []
    return list(result.rejected["reasons"].iloc[0])


def test_good_row_is_valid_and_normalised():
    result = validate(pd.DataFrame([{**GOOD, "event_id": GOOD["event_id"].upper(), "user_id": " user_42 "}]), now=NOW)
    assert len(result.rejected) == 0
    row = result.valid.iloc[0]
    assert row["event_id"] == GOOD["event_id"]  # UUID semantics: case folded
    assert row["user_id"] == "user_42"
    assert row["event_timestamp"] == int(dt.datetime(2026, 11, 28, 10, 15, 30, 123456, tzinfo=dt.timezone.utc).timestamp() * 1e6)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"event_id": "not-a-uuid"}, c.INVALID_EVENT_ID),
        ({"event_id": "8a3f0c2e1b2d4c5e9f00112233445566"}, c.INVALID_EVENT_ID),
        ({"user_id": "user_"}, c.INVALID_USER_ID),
        ({"user_id": "user_12345678901"}, c.INVALID_USER_ID),
        ({"user_id": "USER_1"}, c.INVALID_USER_ID),
        ({"event_type": "checkout"}, c.INVALID_EVENT_TYPE),
        ({"event_type": "View"}, c.INVALID_EVENT_TYPE),
        ({"product_id": "sku_1"}, c.INVALID_PRODUCT_ID),
        ({"price": "-0.01"}, c.NEGATIVE_PRICE),
        ({"price": "-1000000000"}, c.NEGATIVE_PRICE),
        ({"price": "abc"}, c.INVALID_PRICE),
        ({"price": "1000000.01"}, c.INVALID_PRICE),
        ({"price": "1.234"}, c.INVALID_PRICE),
        ({"price": "1e3"}, c.INVALID_PRICE),
        ({"quantity": "0"}, c.INVALID_QUANTITY),
        ({"quantity": "1001"}, c.INVALID_QUANTITY),
        ({"quantity": "2.5"}, c.INVALID_QUANTITY),
        ({"quantity": "two"}, c.INVALID_QUANTITY),
        ({"event_timestamp": "2026-11-28T10:15:30"}, c.INVALID_TIMESTAMP),  # no offset
        ({"event_timestamp": "yesterday"}, c.INVALID_TIMESTAMP),
        ({"event_timestamp": "2026-13-01T00:00:00Z"}, c.INVALID_TIMESTAMP),
        ({"event_timestamp": "2026-11-29T12:00:01Z"}, c.INVALID_TIMESTAMP),  # > 24 h ahead
        ({"session_id": "session-1"}, c.INVALID_SESSION_ID),
        ({"product_name": "x" * 201}, c.FIELD_TOO_LONG),
        ({"category": "y" * 101}, c.FIELD_TOO_LONG),
    ],
)
def test_each_rule_gives_its_reason(changes, reason):
    assert check(**changes) == [reason]


@pytest.mark.parametrize("column", c.REQUIRED_COLUMNS)
@pytest.mark.parametrize("blank", ["", "   ", None])
def test_missing_required_field_names_the_field(column, blank):
    result = validate(pd.DataFrame([{**GOOD, column: blank}]), now=NOW)
    assert list(result.rejected["reasons"].iloc[0]) == [c.MISSING_REQUIRED_FIELD]
    assert list(result.rejected["details"].iloc[0]) == [f"{column}: {c.MISSING_REQUIRED_FIELD}"]


@pytest.mark.parametrize(
    "changes",
    [
        {"price": "0"}, {"price": "0.00"}, {"price": "1000000"}, {"price": "1000000.00"}, {"price": ".5"},
        {"quantity": "1"}, {"quantity": "1000"}, {"quantity": "007"},
        {"event_timestamp": "2026-11-28T12:00:00+05:30"}, {"event_timestamp": "2026-11-28 09:00:00-0300"},
        {"event_timestamp": "2026-11-29T11:59:59Z"},  # just inside 24 h
        {"session_id": ""}, {"session_id": None}, {"product_name": ""}, {"category": "y" * 100},
        {"product_name": "x" * 200}, {"event_type": "remove_from_cart"}, {"user_id": "user_1234567890"},
    ],
)
def test_boundaries_that_are_valid(changes):
    assert check(**changes) == []


def test_every_reason_of_a_row_is_reported_in_contract_order():
    reasons = check(
        event_id="x", user_id="u", event_type="look", price="-3", quantity="0",
        event_timestamp="soon", session_id="s", product_name="n" * 300, product_id="p",
    )
    assert reasons == [
        c.INVALID_EVENT_ID, c.INVALID_USER_ID, c.INVALID_EVENT_TYPE, c.NEGATIVE_PRICE,
        c.INVALID_QUANTITY, c.INVALID_TIMESTAMP, c.INVALID_SESSION_ID, c.FIELD_TOO_LONG, c.INVALID_PRODUCT_ID,
    ]


def test_unparseable_value_does_not_hide_other_failures_in_the_column():
    # The coerce=True trap: one bad price must not mask the negative one next to it.
    frame = pd.DataFrame([{**GOOD, "price": "abc"}, {**GOOD, "price": "-5"}, GOOD])
    result = validate(frame, now=NOW)
    assert [list(r) for r in result.rejected["reasons"]] == [[c.INVALID_PRICE], [c.NEGATIVE_PRICE]]
    assert len(result.valid) == 1


def test_missing_optional_columns_and_extra_columns():
    frame = pd.DataFrame([{k: v for k, v in GOOD.items() if k not in c.OPTIONAL_COLUMNS} | {"extra": "x"}])
    result = validate(frame, now=NOW)
    assert len(result.valid) == 1 and result.valid["session_id"].isna().all()


def test_rejected_rows_keep_raw_values_and_index():
    frame = pd.DataFrame([GOOD, {**GOOD, "price": " -1 "}], index=[10, 11])
    result = validate(frame, now=NOW)
    assert list(result.rejected.index) == [11]
    assert result.rejected.loc[11, "price"] == " -1 "  # as sent, not trimmed
    assert list(result.valid.index) == [10]
    assert result.reason_counts == {c.NEGATIVE_PRICE: 1}


def test_empty_frame():
    result = validate(pd.DataFrame(columns=list(c.COLUMNS)), now=NOW)
    assert len(result.valid) == 0 and len(result.rejected) == 0


def test_generator_rows_validate_as_the_generator_intended():
    import numpy as np

    from ecom_ingest_dagster.tools.generator import generate_events

    frame = generate_events(5000, rng=np.random.default_rng(7), invalid_rate=0.2, now=NOW)
    result = validate(frame, now=NOW)
    expected_bad = frame.index[frame["expected_reason"] != ""]
    assert sorted(result.rejected.index) == sorted(expected_bad)
    for idx, reasons in result.rejected["reasons"].items():
        assert list(reasons) == [frame.loc[idx, "expected_reason"]]


# -- the stages validate() is made of, and the edges of the typed values -----------------------------

from ecom_ingest_dagster.pipeline import validate as validation  # noqa: E402

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _micros(text: str) -> int:
    return (dt.datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH) // dt.timedelta(microseconds=1)


def test_normalize_keeps_arrow_text_trims_and_blanks_missing():
    raw = pd.DataFrame({"event_id": [" a ", "", "  ", None, "\tb\n"], "extra": ["x"] * 5})
    clean = validation.normalize(raw)
    assert list(clean.columns) == list(c.COLUMNS)
    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in clean.dtypes)
    assert clean["event_id"].tolist() == ["a", pd.NA, pd.NA, pd.NA, "b"]
    assert clean["session_id"].isna().all()  # an absent column is all missing


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-28T12:00:00+05:30", "2026-11-28 09:00:00-0300", "2026-11-28T09:00:00+05", "2026-11-28T10:15Z",
        "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999Z",
        # Far past: beyond what a float64 holds to the microsecond (~1684 and before).
        "1600-06-01T12:00:00.123457Z", "0001-01-01T00:00:00.000001Z",
    ],
)
def test_valid_timestamps_to_the_microsecond(stamp):
    result = validate(pd.DataFrame([{**GOOD, "event_timestamp": stamp}]), now=NOW)
    assert len(result.rejected) == 0
    assert result.valid["event_timestamp"].dtype == "int64"
    assert int(result.valid["event_timestamp"].iloc[0]) == _micros(stamp)


def test_impossible_date_sends_the_block_to_the_slow_parser_with_the_same_answers():
    stamps = ["2026-11-28T12:00:00+05:30", "2026-02-30T00:00:00Z", "2026-11-28T10:15:30.123456789Z", "2026-11-28 09:00:00-0300"]
    result = validate(pd.DataFrame([{**GOOD, "event_timestamp": s} for s in stamps]), now=NOW)
    assert list(result.rejected.index) == [1]
    assert list(result.rejected["reasons"].iloc[0]) == [c.INVALID_TIMESTAMP]
    assert result.valid["event_timestamp"].tolist() == [_micros(stamps[0]), _micros("2026-11-28T10:15:30.123456Z"), _micros(stamps[3])]


def test_optional_fields_missing_and_upper_case_uuids():
    rows = [
        {**GOOD, "session_id": None, "product_name": None, "category": None},
        {**GOOD, "event_id": GOOD["event_id"].upper(), "session_id": GOOD_ROW["session_id"].upper()},
    ]
    result = validate(pd.DataFrame(rows), now=NOW)
    assert len(result.rejected) == 0
    assert result.valid["session_id"].tolist()[0] is pd.NA
    assert result.valid["product_name"].isna().tolist() == [True, False]
    assert result.valid["event_id"].tolist() == [GOOD["event_id"]] * 2  # lower case
    assert result.valid["session_id"].tolist()[1] == GOOD_ROW["session_id"].upper()  # as sent: the COPY reads it as a uuid


@pytest.mark.parametrize("price", ["0", "0.00", "-0", "1000000", "1000000.00", ".5", "+3"])
def test_prices_at_the_edges_are_valid_and_kept_as_sent(price):
    result = validate(pd.DataFrame([{**GOOD, "price": f" {price} "}]), now=NOW)
    assert len(result.rejected) == 0
    assert result.valid["price"].iloc[0] == price


def test_the_schema_alone_gives_the_same_failures_as_validate():
    # build_schema(now) without parsed values: the checks parse the columns themselves.
    frame = pd.DataFrame(
        [GOOD, {**GOOD, "price": "-1", "quantity": "0"}, {**GOOD, "event_timestamp": "2026-12-30T00:00:00Z", "event_id": None},
         {**GOOD, "session_id": "s", "product_name": "x" * 201}],
        index=[5, 6, 7, 8],
    )
    clean = validation.normalize(frame)
    alone = validation.failures_of(validation.failure_cases(validation.build_schema(NOW), clean))
    with_parsed = validation.failures_of(validation.failure_cases(validation.build_schema(NOW, validation.ParsedValues.of(clean)), clean))
    pd.testing.assert_frame_equal(alone, with_parsed)
    assert sorted(zip(alone["index"], alone["detail"])) == [
        (6, "price: negative_price"), (6, "quantity: invalid_quantity"),
        (7, "event_id: missing_required_field"), (7, "event_timestamp: invalid_timestamp"),
        (8, "product_name: field_too_long"), (8, "session_id: invalid_session_id"),
    ]


def test_failure_cases_none_when_every_row_passes():
    clean = validation.normalize(pd.DataFrame([GOOD]))
    assert validation.failure_cases(validation.build_schema(NOW), clean) is None
    assert validation.failures_of(None).empty


def test_a_rows_details_come_in_schema_order_whatever_else_the_block_holds():
    bad = {**GOOD, "event_id": "x", "user_id": "u", "event_type": "look", "price": "-3", "quantity": "0",
           "event_timestamp": "soon", "session_id": "s", "product_name": "n" * 300, "product_id": "p"}
    expected = [
        "event_id: invalid_event_id", "user_id: invalid_user_id", "session_id: invalid_session_id",
        "event_type: invalid_event_type", "product_id: invalid_product_id", "product_name: field_too_long",
        "price: negative_price", "quantity: invalid_quantity", "event_timestamp: invalid_timestamp",
    ]
    for others in (0, 1, 4, 39):
        frame = pd.DataFrame([bad] + [{**bad, "price": None, "category": "c" * 101}] * others + [GOOD] * 3)
        result = validate(frame, now=NOW)
        assert list(result.rejected["details"].iloc[0]) == expected
        if others:
            assert list(result.rejected["details"].iloc[1]) == expected[:6] + [
                "category: field_too_long", "price: missing_required_field", *expected[7:]]


def test_rejected_and_valid_rows_split_by_the_failures():
    frame = pd.DataFrame([GOOD, {**GOOD, "price": "abc", "user_id": None}, GOOD], index=[3, 1, 2])
    clean = validation.normalize(frame)
    parsed = validation.ParsedValues.of(clean)
    failures = validation.failures_of(validation.failure_cases(validation.build_schema(NOW, parsed), clean))
    rejected = validation.rejected_rows(frame, failures)
    assert list(rejected.index) == [1]
    assert list(rejected["reasons"].iloc[0]) == [c.MISSING_REQUIRED_FIELD, c.INVALID_PRICE]  # the contract's order
    assert rejected.loc[1, "user_id"] is None
    valid = validation.valid_rows(clean, parsed, rejected.index)
    assert list(valid.index) == [3, 2] and list(valid.columns) == list(c.COLUMNS) and valid["event_timestamp"].dtype == "int64"
    pd.testing.assert_frame_equal(valid, validate(frame, now=NOW).valid)


def _hostile_frame(seed: int) -> pd.DataFrame:
    """Generated events, a third of them invalid, with rows failing many rules at once mixed in."""
    import numpy as np

    from ecom_ingest_dagster.tools.generator import generate_events

    rng = np.random.default_rng(seed)
    frame = generate_events(300, rng=rng, invalid_rate=0.3, now=NOW).drop(columns="expected_reason")
    many = {**GOOD, "event_id": "x", "user_id": None, "event_type": "look", "price": "-3", "quantity": "0",
            "event_timestamp": "soon", "session_id": "s", "product_name": "n" * 300, "category": " ", "product_id": "p"}
    rows = frame.to_dict("records")
    for at in rng.choice(len(rows), 20, replace=False):
        rows[at] = {k: (v if rng.random() < 0.5 else rows[at][k]) for k, v in many.items()}
    return pd.DataFrame(rows, index=rng.permutation(np.arange(1000, 1000 + len(rows))))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_failures_read_off_the_checks_equal_panderas_own_report(seed):
    # validate() reads the failing rows off the checks' outputs; Pandera's SchemaErrors
    # report of the same schema is the reference it must equal, row for row and in order.
    raw = _hostile_frame(seed)
    clean = validation.normalize(raw)
    schema = validation.build_schema(NOW, validation.ParsedValues.of(clean))
    fast = validation.failures(schema, clean)
    reference = validation.failures_of(validation.failure_cases(schema, clean))
    assert len(fast) > 100  # the frame really fails, in many ways
    assert set(fast["reason"]) == set(c.REJECTION_REASONS) - {c.MALFORMED_ROW}
    triples = lambda f: sorted(zip(f["index"].tolist(), f["reason"], f["detail"]))  # noqa: E731
    assert triples(fast) == triples(reference)
    # and so the same rejected rows, each with its reasons and details in the same order
    pd.testing.assert_frame_equal(validation.rejected_rows(raw, fast), validation.rejected_rows(raw, reference))


def test_failures_empty_when_every_row_passes():
    clean = validation.normalize(pd.DataFrame([GOOD, GOOD]))
    assert validation.failures(validation.build_schema(NOW), clean).empty
