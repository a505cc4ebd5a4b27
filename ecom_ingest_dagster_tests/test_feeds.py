"""Feed contract files: the shipped user_events feed reproduces the contract the code has
always held drops to, and a contract with a mistake is refused with the file and the field."""

from __future__ import annotations

import textwrap

import pytest

from ecom_ingest_dagster import contract
from ecom_ingest_dagster.feeds import FeedError, load_feed, shipped_feed

UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def test_the_shipped_user_events_feed_is_todays_contract_exactly():
    # The values contract.py held as literals before it read them from the feed file.
    assert contract.COLUMNS == ("event_id", "user_id", "session_id", "event_type", "product_id", "product_name",
                                "category", "price", "quantity", "event_timestamp")
    assert contract.REQUIRED_COLUMNS == ("event_id", "user_id", "event_type", "product_id", "price", "quantity",
                                         "event_timestamp")
    assert contract.SQL_TYPES == {"event_id": "uuid", "user_id": "text", "session_id": "uuid", "event_type": "text",
                                  "product_id": "text", "product_name": "text", "category": "text",
                                  "price": "numeric(12,2)", "quantity": "integer", "event_timestamp": "timestamptz"}
    assert contract.REJECTION_REASONS == (
        "invalid_event_id", "invalid_user_id", "invalid_event_type", "missing_required_field", "negative_price",
        "invalid_price", "invalid_quantity", "invalid_timestamp", "invalid_session_id", "field_too_long",
        "malformed_row", "invalid_product_id")
    assert contract.EVENT_TYPE_MIX == {"view": 0.50, "add_to_cart": 0.20, "purchase": 0.15, "wishlist": 0.10,
                                       "remove_from_cart": 0.05}
    assert contract.UUID_PATTERN == UUID and contract.USER_ID_PATTERN == r"^user_[0-9]{1,10}$"
    assert contract.PRODUCT_ID_PATTERN == r"^prod_[0-9]{1,10}$"
    # numeric(12,2): at most ten digits before the point (a longer one was invalid_price by the max rule before)
    assert contract.PRICE_PATTERN == r"^[+-]?(?:[0-9]{1,10}(?:\.[0-9]{0,2})?|\.[0-9]{1,2})$"
    assert (contract.PRICE_MIN, contract.PRICE_MAX, contract.QUANTITY_MIN, contract.QUANTITY_MAX) == (0, 1_000_000, 1, 1_000)
    assert contract.MAX_FUTURE_SECONDS == 86_400 and contract.MAX_LENGTHS == {"product_name": 200, "category": 100}
    feed = shipped_feed("user_events")
    assert (feed.feed, feed.version, feed.table, feed.unique_key) == ("user_events", 1, "user_events", "event_id")


def _contract(tmp_path, body: str):
    path = tmp_path / "orders.yaml"
    path.write_text(textwrap.dedent(body))
    return path


BASE = """\
    feed: orders
    version: 1
    table: orders
    unique_key: order_id
    missing_reason: missing_required_field
    malformed_reason: malformed_row
    reasons: [missing_required_field, malformed_row, invalid_order_id, invalid_amount]
    columns:
      - name: order_id
        type: uuid
        required: true
        invalid_reason: invalid_order_id
        rules: [{pattern: '^[0-9a-f-]{36}$', reason: invalid_order_id}]
      - name: amount
        type: numeric(10,2)
        required: true
        invalid_reason: invalid_amount
        rules: [{min: 0, reason: invalid_amount}]
"""


def test_a_contract_of_another_shape_loads(tmp_path):
    feed = load_feed(_contract(tmp_path, BASE))
    assert [c.name for c in feed.columns] == ["order_id", "amount"] and feed.column("amount").scale == 2


@pytest.mark.parametrize(("change", "message"), [
    (("type: numeric(10,2)", "type: money"), "orders.yaml: columns[amount].type: unknown type 'money'"),
    (("unique_key: order_id", "unique_key: order_number"), "unique_key 'order_number' must be one of the columns"),
    (("reason: invalid_amount}]", "reason: amount_below_zero}]"), "not listed in reasons: amount_below_zero"),
    (("pattern: '^[0-9a-f-]{36}$'", "pattern: '^[0-9a-f-{36}$'"), "columns[order_id].rules[0]: pattern"),
    (("rules: [{min: 0, reason: invalid_amount}]", "rules: [{min: 0, max_length: 3, reason: invalid_amount}]"),
     "a rule is one of pattern, one_of, min/max, max_length, not_after_now_seconds"),
    (("  - name: amount", "  - name: order_id"), "column(s) listed twice: order_id"),
    (("version: 1", "version: 1\n    owner: me"), "orders.yaml: owner: Extra inputs are not permitted"),
    (("feed: orders", "feed: Orders!"), "orders.yaml: feed: String should match pattern"),
    (("feed: orders", "feed: all"), "'all' is a name of the platform's"),
    (("feed: orders", "feed: metrics"), "'metrics' is a name of the platform's"),
    (("table: orders", "table: data_quality"), "table name(s) data_quality are the feed's metric and report assets"),
    # the generator's hints are checked with the rest, not found wrong when generating
    (("rules: [{min: 0, reason: invalid_amount}]", "rules: [{one_of: [a, b], reason: invalid_amount}]\n"
      "        generate: {weights: {a: 1, c: 2}}"), "columns[amount]: generate.weights: 'c' not among the one_of values (a, b)"),
    (("rules: [{min: 0, reason: invalid_amount}]", "rules: [{min: 0, reason: invalid_amount}]\n        generate: {weights: [4, 3]}"),
     "columns[amount].generate.weights: weights map each one_of value to its share"),
    (("rules: [{min: 0, reason: invalid_amount}]", "rules: [{min: 0, reason: invalid_amount}]\n        generate: {fakr: email}"),
     "columns[amount].generate.fakr: Extra inputs are not permitted"),
])
def test_a_contract_with_a_mistake_is_refused_naming_the_file_and_the_field(tmp_path, change, message):
    old, new = change
    assert old in BASE
    with pytest.raises(FeedError) as refused:
        load_feed(_contract(tmp_path, BASE.replace(old, new)))
    assert message in str(refused.value), str(refused.value)


def test_a_file_that_is_not_a_contract_says_so(tmp_path):
    with pytest.raises(FeedError, match="not YAML"):
        load_feed(_contract(tmp_path, "feed: [unclosed\n"))
    # A line indented off its block: one line, at the line and column, saying what to look at.
    with pytest.raises(FeedError) as misindented:
        load_feed(_contract(tmp_path, BASE.replace("        required: true\n        invalid_reason: invalid_amount",
                                                   "        required: true\n       invalid_reason: invalid_amount")))
    assert str(misindented.value).startswith(f"{tmp_path / 'orders.yaml'}: not YAML: line 17, column 4: ")
    assert "indented as the lines it belongs with" in str(misindented.value) and "\n" not in str(misindented.value)
    with pytest.raises(FeedError, match="a contract file is a mapping"):
        load_feed(_contract(tmp_path, "- just\n- a list\n"))
    with pytest.raises(FeedError, match="cannot read the contract file"):
        load_feed(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("change", "problem"), [
    (("type: numeric(12,2)", "type: numeric(14,4)"), "types or required flags differ"),
    (("        reason: negative_price", "        reason: invalid_price"), "its rules or their reasons differ"),
    (("invalid_reason: invalid_quantity", "invalid_reason: invalid_price"), "invalid_reason"),
    (("      - min: 1\n", "      - min: 1.5\n"), "not a whole number"),
])
def test_a_change_of_shape_the_user_events_code_cannot_honour_is_refused(tmp_path, change, problem):
    from ecom_ingest_dagster.feeds import SHIPPED_DIR

    text = (SHIPPED_DIR / "user_events.yaml").read_text()
    old, new = change
    assert old in text
    problems = contract.shape_problems(load_feed(_contract(tmp_path, text.replace(old, new, 1))))
    assert any(problem in p for p in problems), problems


def test_a_change_of_rule_values_is_honoured_and_the_shipped_shape_has_no_problem(tmp_path):
    from ecom_ingest_dagster.feeds import SHIPPED_DIR

    assert contract.shape_problems(contract.FEED) == []
    text = (SHIPPED_DIR / "user_events.yaml").read_text().replace("max_length: 200", "max_length: 300")
    assert contract.shape_problems(load_feed(_contract(tmp_path, text))) == []


def test_the_shipped_orders_feed_and_a_new_feeds_template_load(tmp_path):
    from ecom_ingest_dagster.feeds import find_feed, new_contract

    orders = shipped_feed("orders")
    assert (orders.table, orders.rejected_table, orders.unique_key) == ("orders", "orders_rejected", "order_id")
    path = new_contract("refunds", tmp_path)
    assert find_feed("refunds", tmp_path).table == "refunds" and path == tmp_path / "refunds.yaml"
    with pytest.raises(FileExistsError):
        new_contract("refunds", tmp_path)
    with pytest.raises(ValueError, match="shipped feed"):
        new_contract("orders", tmp_path)
    with pytest.raises(FeedError, match="no feed 'nosuch'.*ecom-ingest feed new nosuch"):
        find_feed("nosuch", tmp_path)
    # a near miss is a typo, not a new feed; a name no feed can have is not offered to `feed new`
    with pytest.raises(FeedError, match=r"no feed 'refund'.*known: orders, refunds, user_events\); did you mean 'refunds'\?"):
        find_feed("refund", tmp_path)
    with pytest.raises(FeedError, match="did you mean 'orders'"):
        find_feed("Orders", tmp_path)
    with pytest.raises(FeedError, match="a feed's name is lower case letters") as refused:
        find_feed("Zz-top", tmp_path)
    assert "feed new" not in str(refused.value)
    # a new name near an old one may be either: both are offered
    with pytest.raises(FeedError, match=r"did you mean 'refunds'\?; `ecom-ingest feed new refund_lines` writes a new one"):
        find_feed("refund_lines", tmp_path)
    with pytest.raises(FeedError, match="'metrics' is a name of the platform's") as reserved:
        find_feed("metrics", tmp_path)
    assert "feed new" not in str(reserved.value)
    (tmp_path / "misnamed.yaml").write_text(path.read_text())
    with pytest.raises(FeedError, match="differs from the file's name"):
        find_feed("misnamed", tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    (("        invalid_reason: invalid_amount\n        rules: [{min: 0, reason: invalid_amount}]",
      "        rules: [{min: 0, reason: invalid_amount}]"), "a numeric(10,2) column needs invalid_reason"),
    (("      - name: amount\n        type: numeric(10,2)", "      - name: amount\n        type: text"),
     "min/max compare numbers"),
    (("  - name: amount", "  - name: batch_id"), "column name 'batch_id' is the platform's own"),
    (("table: orders", "table: orders\n    quarantine_table: orders"), "quarantine_table must differ from table"),
])
def test_rules_must_fit_their_column_and_names_must_not_clash(tmp_path, change, message):
    old, new = change
    assert old in BASE
    with pytest.raises(FeedError) as refused:
        load_feed(_contract(tmp_path, BASE.replace(old, new)))
    assert message in str(refused.value), str(refused.value)
