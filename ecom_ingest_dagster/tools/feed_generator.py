"""Drops for any feed, made from its contract alone: types, rules and generator hints.

Each column gets values of its type within its rules: ``one_of`` picks (with the column's
``generate.weights`` when given), ``min``/``max`` bound numbers, ``max_length`` bounds
text, ``pattern`` is honoured by generating text from the regular expression itself
(``rstr``), and a column whose ``generate.faker`` names a Faker provider (``email``,
``name``, ``country_code``...) gets that provider's values. Optional columns are left
blank now and then. A share of rows (``invalid_rate``) breaks exactly one thing each (a
required value left out, a value not of its type, or one rule), and says which in
``expected_reason``. The user_events feed keeps its own, richer generator (sessions,
product catalogue); ``generator.generate_drops`` writes the drops of both.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from typing import Callable

import numpy as np
import pandas as pd

from ecom_ingest_dagster.feeds import Column, FeedContract, FeedError, GenerateHints, Rule, types

_OPTIONAL_BLANK_SHARE = 0.1
_NO_PATTERN = "\u00a7?"  # what few patterns accept: a pattern rule is broken with it, unless it accepts it


class _Values:
    """Valid text values for one column of ``n`` rows."""

    def __init__(self, rng: np.random.Generator, now: dt.datetime):
        from faker import Faker
        import rstr

        seed = int(rng.integers(0, 2**31))
        self.rng, self.now = rng, now
        self.faker = Faker()
        self.faker.seed_instance(seed)
        self.rstr = rstr.Rstr(random.Random(seed))

    def of(self, column: Column, n: int) -> np.ndarray:
        hints = column.generate or GenerateHints()
        one_of = column.rule("one_of")
        if one_of is not None or hints.weights:
            choices = one_of.one_of if one_of is not None else tuple(hints.weights)
            p = np.array([hints.weights.get(v, 0.0) for v in choices]) if hints.weights else None
            return self.rng.choice(np.array(choices, dtype=object), size=n, p=None if p is None else p / p.sum())
        if hints.faker is not None:
            provider: Callable[[], object] = getattr(self.faker, hints.faker)
            values = np.array([str(provider()) for _ in range(n)], dtype=object)
        elif column.rule("pattern") is not None:
            values = np.array([self.rstr.xeger(column.rule("pattern").pattern) for _ in range(n)], dtype=object)
        else:
            values = self._typed(column, n)
        limit = column.rule("max_length")
        if limit is not None:
            values = np.array([v[: limit.max_length] for v in values], dtype=object)
        return values

    def _bounds(self, column: Column) -> tuple[float, float]:
        low = max((float(r.min) for r in column.rules if r.min is not None), default=0.0)
        high = min((float(r.max) for r in column.rules if r.max is not None), default=low + 1000.0)
        return low, high

    def _typed(self, column: Column, n: int) -> np.ndarray:
        sql_type = column.type
        if sql_type == "uuid":
            return np.array([str(uuid.UUID(bytes=self.rng.bytes(16), version=4)) for _ in range(n)], dtype=object)
        if sql_type in ("integer", "bigint"):
            low, high = self._bounds(column)
            return self.rng.integers(int(np.ceil(low)), int(np.floor(high)) + 1, size=n).astype(str).astype(object)
        if (ps := types.numeric_scale(sql_type)) is not None:
            low, high = self._bounds(column)
            high = min(high, 10.0 ** (ps[0] - ps[1]) - 1)
            return np.array([f"{v:.{ps[1]}f}" for v in self.rng.uniform(low, high, size=n)], dtype=object)
        if sql_type == "boolean":
            return self.rng.choice(np.array(["true", "false"], dtype=object), size=n)
        if sql_type == "date":
            days = self.rng.integers(0, 365, size=n)
            return np.array([(self.now.date() - dt.timedelta(days=int(d))).isoformat() for d in days], dtype=object)
        if sql_type == "timestamptz":
            seconds = self.rng.uniform(0, 30 * 86400, size=n)
            return np.array([(self.now - dt.timedelta(seconds=float(s))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                             for s in seconds], dtype=object)
        return np.array([self.faker.word() for _ in range(n)], dtype=object)


def _breakers(feed: FeedContract, now: dt.datetime) -> list[tuple[str, str, Callable[[str], str]]]:
    """Every way a row can be broken: (column, the reason it gives, value -> broken value)."""
    out = []
    for column in feed.columns:
        if column.required:
            out.append((column.name, feed.missing_reason, lambda v: ""))
        if column.type != "text":
            out.append((column.name, column.invalid_reason, lambda v, t=column.type: f"not a {t}"))
        for rule in column.rules:
            if (broken := _rule_breaker(column, rule, now)) is not None:
                out.append((column.name, rule.reason, broken))
    return out


def _rule_breaker(column: Column, rule: Rule, now: dt.datetime) -> Callable[[str], str] | None:
    scale = column.scale or 0
    if rule.one_of is not None:
        return lambda v: "none_of_these"
    if rule.max_length is not None:
        return lambda v: "x" * (rule.max_length + 1)
    if rule.min is not None:
        return lambda v: f"{float(rule.min) - 1:.{scale}f}"
    if rule.max is not None:
        return lambda v: f"{float(rule.max) + 1:.{scale}f}"
    if rule.not_after_now_seconds is not None:
        later = now + dt.timedelta(seconds=rule.not_after_now_seconds + 86400)
        return (lambda v: later.date().isoformat()) if column.type == "date" else (lambda v: later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if rule.pattern is not None and re.search(rule.pattern, _NO_PATTERN) is None:
        return lambda v: _NO_PATTERN
    return None


def generate_rows(feed: FeedContract, n: int, *, rng: np.random.Generator, invalid_rate: float = 0.0,
                  now: dt.datetime | None = None) -> pd.DataFrame:
    """``n`` rows of ``feed`` as text, in its column order, with ``expected_reason`` ("" when valid)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    values = _Values(rng, now)
    for column in feed.columns:
        if column.generate is not None and column.generate.faker is not None \
                and not callable(getattr(values.faker, column.generate.faker, None)):
            raise FeedError(f"{feed.feed}: columns[{column.name}].generate.faker: Faker has no provider"
                            f" {column.generate.faker!r} (email, name, country_code, ...:"
                            " https://faker.readthedocs.io/en/master/providers.html)")
    frame = pd.DataFrame({column.name: values.of(column, n) for column in feed.columns})
    for column in feed.columns:
        if not column.required:
            blank = rng.random(n) < _OPTIONAL_BLANK_SHARE
            frame.loc[blank, column.name] = ""
    frame["expected_reason"] = ""
    breakers = _breakers(feed, now)
    broken = np.flatnonzero(rng.random(n) < invalid_rate) if breakers else np.array([], dtype=int)
    for row in broken:
        name, reason, breaker = breakers[int(rng.integers(len(breakers)))]
        frame.at[row, name] = breaker(frame.at[row, name])
        frame.at[row, "expected_reason"] = reason
    return frame
