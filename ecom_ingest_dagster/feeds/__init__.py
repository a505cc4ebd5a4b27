"""Feeds: each one declared in a contract file that says what its drops hold and where they go.

A contract file is YAML (``feeds/user_events.yaml`` ships): its name, version, target table,
unique key, the columns with their type, whether required, and rules, each rule naming the
rejection reason it gives. YAML because a person writes and reviews it: it takes comments
(JSON does not), nests a list of columns with their rules plainly (TOML's arrays of tables
do not), and it is what the tools users compare us with use for the same thing (the Data
Contract Specification, Frictionless Table Schema, dbt, Dagster's own ``defs.yaml``). It is
read with ``yaml.safe_load`` (no tags, no code) and checked here, field by field, before
anything uses it; a mistake is one line naming the file and the field.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SHIPPED_DIR = Path(__file__).parent
# The column types a contract may use (PostgreSQL's names); numeric takes its precision and scale.
PLAIN_TYPES = ("uuid", "text", "integer", "bigint", "boolean", "date", "timestamptz")
_NUMERIC = re.compile(r"^numeric\((\d{1,2}),\s*(\d{1,2})\)$")
_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"


class FeedError(ValueError):
    """A contract file that cannot be used; the message says which file and which field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """One check of a column's value, and the reason a row that fails it is rejected for."""

    reason: str = Field(pattern=_IDENTIFIER)
    pattern: Optional[str] = None
    one_of: Optional[tuple[str, ...]] = None
    min: Optional[Decimal] = None
    max: Optional[Decimal] = None
    max_length: Optional[int] = Field(None, gt=0)
    not_after_now_seconds: Optional[int] = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        kinds = [k for k in ("pattern", "one_of", "max_length", "not_after_now_seconds") if getattr(self, k) is not None]
        if self.min is not None or self.max is not None:
            kinds.append("min/max")
        if len(kinds) != 1:
            raise ValueError("a rule is one of pattern, one_of, min/max, max_length, not_after_now_seconds"
                             f" (with its reason); this one has {', '.join(kinds) or 'none'}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        return self


class Column(_Strict):
    name: str = Field(pattern=_IDENTIFIER)
    type: str
    required: bool = False
    invalid_reason: Optional[str] = None  # a value that is not of the column's type
    rules: tuple[Rule, ...] = ()
    generate: Optional[dict[str, Any]] = None  # hints for the generator (e.g. value weights)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value in PLAIN_TYPES or _NUMERIC.match(value):
            return value
        raise ValueError(f"unknown type {value!r}: one of {', '.join(PLAIN_TYPES)} or numeric(p,s)")

    @property
    def scale(self) -> int | None:
        """Digits after the point of a numeric(p,s) column."""
        found = _NUMERIC.match(self.type)
        return int(found.group(2)) if found else None

    def rule(self, kind: str) -> Rule | None:
        """The column's first rule of ``kind`` (a Rule field name: pattern, one_of, min, max, ...)."""
        return next((r for r in self.rules if getattr(r, kind) is not None), None)


class FeedContract(_Strict):
    feed: str = Field(pattern=_IDENTIFIER)
    version: int = Field(ge=1)
    table: str = Field(pattern=_IDENTIFIER)
    unique_key: str
    missing_reason: str
    malformed_reason: str
    reasons: tuple[str, ...]  # every row reason, in the order a row's reasons are listed
    columns: tuple[Column, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> FeedContract:
        names = [c.name for c in self.columns]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"column(s) listed twice: {', '.join(doubled)}")
        key = next((c for c in self.columns if c.name == self.unique_key), None)
        if key is None or not key.required:
            raise ValueError(f"unique_key {self.unique_key!r} must be one of the columns, and required")
        if len(set(self.reasons)) != len(self.reasons):
            raise ValueError("a reason is listed twice in reasons")
        given = {self.missing_reason, self.malformed_reason}
        for column in self.columns:
            given.update(r.reason for r in column.rules)
            if column.invalid_reason:
                given.add(column.invalid_reason)
        unlisted = sorted(given - set(self.reasons))
        if unlisted:
            raise ValueError(f"reason(s) given but not listed in reasons: {', '.join(unlisted)}")
        return self

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def load_feed(path: Path) -> FeedContract:
    """The contract in ``path``, checked; ``FeedError`` (one line per mistake) when it cannot be used."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FeedError(f"{path}: cannot read the contract file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise FeedError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise FeedError(f"{path}: a contract file is a mapping (feed:, table:, columns:, ...)")
    try:
        return FeedContract.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {_where(e['loc'], data)}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise FeedError("\n".join(lines)) from None


def _where(loc: tuple, data: dict) -> str:
    """A pydantic error location as a person reads it: columns[price].rules[1].reason."""
    out, node = "", data
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and isinstance(node[part], dict) else None
            out += f"[{name or part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def shipped_feed(name: str) -> FeedContract:
    """A feed whose contract ships with the package (``feeds/<name>.yaml``)."""
    return load_feed(SHIPPED_DIR / f"{name}.yaml")
