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

import difflib
import functools
import re
from decimal import Decimal
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ecom_ingest_dagster.feeds import types

SHIPPED_DIR = Path(__file__).parent
# The column of a feed's table (and quarantine table) holding a row's values of the columns
# its contract does not name, as one JSON object (Auto Loader's rescued data column).
RESCUED = "rescued"
_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
FEED_NAME_RULE = "lower case letters, digits and _, not starting with a digit, at most 63 of them"  # _IDENTIFIER
# ``--feed all`` (status, report): every feed; no feed may be called so.
ALL_FEEDS = "all"
# Names no feed may take: ``all``, and the groups user_events' assets are in (its job
# selects them by group, and a feed's assets are grouped under the feed's name).
RESERVED_FEEDS = (ALL_FEEDS, "ingest", "metrics", "reporting")
# What the platform makes for every feed beside its two tables: its metric assets and its
# report, keyed beside the tables (``orders/data_quality``): no table may take these names.
METRIC_ASSETS = ("ingestion_throughput", "ingestion_latency", "data_quality")
REPORT_ASSET = "performance_report"
# Columns the platform adds to a feed's table: a contract may not name them.
RESERVED_COLUMNS = ("source_file", "batch_id", "created_at", "rescued", "raw_line", "record_number", "reasons",
                    "details", "rejected_at", "replayed_at", "replay_outcome", "id")


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


class GenerateHints(_Strict):
    """How ``ecom-ingest generate`` makes a column's values (it reads nothing else of them)."""

    # How often each of the column's one_of values comes up (relative; a value not named: never);
    # a column without a one_of rule takes its values from these.
    weights: Optional[dict[str, float]] = None
    # A Faker provider (``email``, ``name``, ``country_code``, ...): checked when generating,
    # so that loading a contract does not import Faker.
    faker: Optional[str] = Field(None, pattern=r"^[a-z_][a-z0-9_]*$")

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_are_a_mapping(cls, value: object) -> object:
        if value is not None and not isinstance(value, dict):
            raise ValueError("weights map each one_of value to its share, e.g. {ups: 3, fedex: 1}")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_are_shares(cls, value: Optional[dict[str, float]]) -> Optional[dict[str, float]]:
        if value is not None and (any(w < 0 for w in value.values()) or sum(value.values()) <= 0):
            raise ValueError("weights are shares: none negative, not all 0")
        return value


class Column(_Strict):
    name: str = Field(pattern=_IDENTIFIER)
    type: str
    required: bool = False
    invalid_reason: Optional[str] = None  # a value that is not of the column's type
    rules: tuple[Rule, ...] = ()
    generate: Optional[GenerateHints] = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if not types.is_known(value):
            raise ValueError(f"unknown type {value!r}: one of {', '.join(types.PLAIN_TYPES)} or numeric(p,s)")
        if (ps := types.numeric_scale(value)) is not None and not (1 <= ps[0] <= 38 and ps[1] <= ps[0]):
            raise ValueError(f"{value}: numeric(p,s) needs 1 <= p <= 38 and s <= p")
        return value

    @model_validator(mode="after")
    def _rules_fit_the_type(self) -> Column:
        if self.name in RESERVED_COLUMNS:
            raise ValueError(f"column name {self.name!r} is the platform's own: {', '.join(RESERVED_COLUMNS)}")
        if self.type != "text" and not self.invalid_reason:
            raise ValueError(f"a {self.type} column needs invalid_reason: the reason of a value that is not a {self.type}")
        for rule in self.rules:
            if (rule.min is not None or rule.max is not None) and not types.compares_numbers(self.type):
                raise ValueError(f"min/max compare numbers: integer, bigint or numeric columns, not {self.type}")
            if rule.not_after_now_seconds is not None and self.type not in types.TIME_TYPES:
                raise ValueError(f"not_after_now_seconds applies to timestamptz or date columns, not {self.type}")
        one_of = self.rule("one_of")
        if self.generate is not None and self.generate.weights is not None and one_of is not None:
            if unknown := sorted(set(self.generate.weights) - set(one_of.one_of)):
                raise ValueError(f"generate.weights: {', '.join(map(repr, unknown))} not among the one_of values"
                                 f" ({', '.join(one_of.one_of)})")
        return self

    @property
    def scale(self) -> int | None:
        """Digits after the point of a numeric(p,s) column."""
        ps = types.numeric_scale(self.type)
        return ps[1] if ps else None

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
    # Where rejected rows go (default: <table>_rejected).
    quarantine_table: Optional[str] = Field(None, pattern=_IDENTIFIER)
    # A drop's columns the contract does not name: kept per row in the table's ``rescued``
    # jsonb column (rescue), dropped and listed in the ledger (ignore), or the file rejected
    # whole (reject).
    extra_columns: Literal["rescue", "ignore", "reject"] = "rescue"
    description: Optional[str] = None

    @property
    def rescues(self) -> bool:
        """True when a drop's unnamed columns are kept per row (the tables' ``rescued`` jsonb column)."""
        return self.extra_columns == "rescue"

    @property
    def carried_columns(self) -> tuple[str, ...]:
        """What a row carries through a load: the contract's columns, and ``rescued`` when the feed keeps it."""
        return (*self.column_names, *((RESCUED,) if self.rescues else ()))

    @model_validator(mode="after")
    def _consistent(self) -> FeedContract:
        if self.feed in RESERVED_FEEDS:
            raise ValueError(f"feed: {self.feed!r} is a name of the platform's ({', '.join(RESERVED_FEEDS)};"
                             f" {ALL_FEEDS!r} means every feed to `status --feed`): choose another name")
        taken = sorted({self.table, self.rejected_table} & {*METRIC_ASSETS, REPORT_ASSET})
        if taken:
            raise ValueError(f"table name(s) {', '.join(taken)} are the feed's metric and report assets: choose another")
        names = [c.name for c in self.columns]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"column(s) listed twice: {', '.join(doubled)}")
        key = next((c for c in self.columns if c.name == self.unique_key), None)
        if key is None or not key.required:
            raise ValueError(f"unique_key {self.unique_key!r} must be one of the columns, and required")
        if self.rejected_table == self.table:
            raise ValueError("quarantine_table must differ from table")
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

    @property
    def rejected_table(self) -> str:
        return self.quarantine_table or f"{self.table}_rejected"

    @property
    def column_names(self) -> tuple[str, ...]:
        """In the contract's order: the order of the table and of written files."""
        return tuple(col.name for col in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(col.name for col in self.columns if col.required)

    @property
    def sql_types(self) -> dict[str, str]:
        return {col.name: col.type for col in self.columns}


def load_feed(path: Path) -> FeedContract:
    """The contract in ``path``, checked; ``FeedError`` (one line per mistake) when it cannot be used."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FeedError(f"{path}: cannot read the contract file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise FeedError(f"{path}: not YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise FeedError(f"{path}: a contract file is a mapping (feed:, table:, columns:, ...)")
    try:
        return FeedContract.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {_where(e['loc'], data)}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise FeedError("\n".join(lines)) from None


def _yaml_problem(exc: Exception) -> str:
    """A YAML error in one line, at the line and column where it was found (PyYAML's own text
    spans several lines, with carets under the offending text and no file name)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")
    if "block" in problem or "indent" in problem:  # what such a message nearly always means
        text += "; is this line indented as the lines it belongs with?"
    return text


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


def known_feeds(feeds_dir: Path | None) -> list[str]:
    """Every feed's name: those shipped and those in ``feeds_dir``, sorted."""
    own = {p.stem for p in feeds_dir.glob("*.yaml")} if feeds_dir is not None and feeds_dir.is_dir() else set()
    return sorted({p.stem for p in SHIPPED_DIR.glob("*.yaml")} | own)


def find_feed(name: str, feeds_dir: Path | None) -> FeedContract:
    """The feed called ``name``: ``<feeds_dir>/<name>.yaml`` when there is one, else the shipped
    contract of that name; ``FeedError`` when neither exists or the file has a mistake."""
    if feeds_dir is not None and (feeds_dir / f"{name}.yaml").is_file():
        path = feeds_dir / f"{name}.yaml"
    elif (SHIPPED_DIR / f"{name}.yaml").is_file():
        path = SHIPPED_DIR / f"{name}.yaml"
    else:
        known = known_feeds(feeds_dir)
        close = difflib.get_close_matches(name.lower(), known, n=1)
        hints = [f"did you mean {close[0]!r}?"] if close else []
        if name in RESERVED_FEEDS:
            hints.append(f"{name!r} is a name of the platform's ({', '.join(RESERVED_FEEDS)}), not a feed's")
        elif re.match(_IDENTIFIER, name):
            hints.append(f"`ecom-ingest feed new {name}` writes a new one to start from")
        elif not close:
            hints.append(f"a feed's name is {FEED_NAME_RULE}")
        hint = "; ".join(hints)
        raise FeedError(f"no feed {name!r}: no {feeds_dir}/{name}.yaml and none shipped"
                        f" (known: {', '.join(known)}); {hint}")
    feed = _load_unchanged(path, path.stat().st_mtime_ns)
    if feed.feed != name:
        raise FeedError(f"{path}: feed: {feed.feed!r} differs from the file's name ({name!r})")
    return feed


@functools.lru_cache(maxsize=64)
def _load_unchanged(path: Path, mtime_ns: int) -> FeedContract:
    """``load_feed``, read again only when the file changed (a run asks for it per batch)."""
    return load_feed(path)


def new_contract(name: str, feeds_dir: Path) -> Path:
    """Write ``<feeds_dir>/<name>.yaml`` from the template: a contract to edit (it loads as it is)."""
    if not re.match(_IDENTIFIER, name):
        raise ValueError(f"feed name {name!r}: {FEED_NAME_RULE}")
    if name in RESERVED_FEEDS:
        raise ValueError(f"{name!r} is a name of the platform's ({', '.join(RESERVED_FEEDS)}): choose another name")
    if (SHIPPED_DIR / f"{name}.yaml").exists():
        raise ValueError(f"{name} is a shipped feed: choose another name")
    path = feeds_dir / f"{name}.yaml"
    if path.exists():
        raise FileExistsError(f"{path} exists: edit it, or remove it first")
    import yaml

    text = (SHIPPED_DIR / "templates" / "new_feed.yaml").read_text().replace("__NAME__", name)
    FeedContract.model_validate(yaml.safe_load(text))  # the template itself loads as it is
    feeds_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
