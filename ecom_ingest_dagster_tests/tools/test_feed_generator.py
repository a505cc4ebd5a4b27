"""Drops of any feed from its contract alone: the validator agrees with what the generator meant."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ecom_ingest_dagster.feeds import FeedContract, load_feed, new_contract, shipped_feed
from ecom_ingest_dagster.pipeline.validate import validate
from ecom_ingest_dagster.tools.feed_generator import generate_rows

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("which", ["orders", "user_events", "a new feed's template"])
def test_every_row_is_judged_as_the_generator_meant_it(tmp_path, which):
    feed = load_feed(new_contract("refunds", tmp_path)) if which.startswith("a new") else shipped_feed(which)
    frame = generate_rows(feed, 3000, rng=np.random.default_rng(len(which)), invalid_rate=0.15, now=NOW)
    assert list(frame.columns) == [*feed.column_names, "expected_reason"]
    result = validate(frame.drop(columns="expected_reason"), now=NOW, feed=feed)
    meant_bad = set(np.flatnonzero(frame["expected_reason"].to_numpy() != ""))
    assert set(result.rejected.index) == meant_bad and 300 < len(meant_bad) < 600
    for index, reasons in result.rejected["reasons"].items():
        assert frame.at[index, "expected_reason"] in reasons
    # every way to break a row came up: each reason the contract can give, but malformed_row (a CSV matter)
    given = {r for reasons in result.rejected["reasons"] for r in reasons}
    assert given == set(feed.reasons) - {feed.malformed_reason}


def test_values_follow_the_generator_hints_and_the_rules():
    orders = shipped_feed("orders")
    frame = generate_rows(orders, 2000, rng=np.random.default_rng(3), now=NOW)
    assert (frame["expected_reason"] == "").all()
    share = frame["currency"].value_counts(normalize=True)
    assert 0.45 < share["EUR"] < 0.55 and set(share.index) <= {"EUR", "USD", "GBP", "CHF", "SEK"}
    assert frame["customer_email"].str.contains("@").all()  # Faker's email provider
    lines = frame["line_count"].astype(int)
    assert lines.between(1, 500).all()
    assert (frame["gift"].isin(["true", "false", ""])).all()


def test_a_faker_provider_that_does_not_exist_is_named_before_anything_is_generated(tmp_path):
    from ecom_ingest_dagster.feeds import FeedError, SHIPPED_DIR

    path = tmp_path / "orders.yaml"
    path.write_text((SHIPPED_DIR / "orders.yaml").read_text().replace("generate: {faker: email}",
                                                                      "generate: {faker: shipment_code}"))
    with pytest.raises(FeedError, match=r"orders: columns\[customer_email\]\.generate\.faker: Faker has no provider"
                                        r" 'shipment_code'"):
        generate_rows(load_feed(path), 10, rng=np.random.default_rng(1), now=NOW)


def test_weights_without_a_one_of_rule_are_the_values_to_make():
    # A contract loosened (currency's one_of rule dropped) keeps generating the currencies it weighs.
    orders = shipped_feed("orders")
    columns = [c.model_dump() for c in orders.columns]
    next(c for c in columns if c["name"] == "currency")["rules"] = ()
    loose = FeedContract.model_validate({**orders.model_dump(), "version": 2, "columns": tuple(columns)})
    frame = generate_rows(loose, 500, rng=np.random.default_rng(2), now=NOW)
    assert set(frame["currency"]) <= {"EUR", "USD", "GBP", "CHF", "SEK"} and (frame["currency"] == "EUR").mean() > 0.4
