"""Reading one dropped CSV file: header by name, rows as text, bounded memory.

The file is parsed by Arrow's streaming CSV reader block by block, so a file of any
size is read in constant memory. Columns are matched by *name* (the contract lets a
producer order them freely and add extras), every value stays text so validation sees
what was sent, quoted fields may hold newlines (RFC 4180), a UTF-8 BOM is skipped, and
a record whose width differs from the header's is kept, with its line, as malformed.
A drop compressed with gzip (``*.csv.gz``) or Zstandard (``*.csv.zst``) is read as a stream,
decompressed on the way; a damaged one is rejected whole, as any file that cannot be read as CSV.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import io
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.feeds import RESCUED, FeedContract

_TEXT = pd.ArrowDtype(pa.string())


def _quiet_undecodable_malformed_row(unraisable, previous=sys.unraisablehook) -> None:
    """Leave out the traceback Arrow prints when a malformed row is not UTF-8.

    Arrow decodes a malformed row's text before it calls our ``invalid_row_handler``; bytes
    that are not UTF-8 fail that decoding inside Arrow, which cannot raise it through its C++
    reader, so Python prints it as "Exception ignored in ...", then the read fails. That
    failure is ours to report (``file_not_utf8``, every line counted, see ``_classify_fault``):
    the printed traceback only made a handled bad file look like a crash in a user's terminal
    and a run's log. Any other unraisable exception goes to the hook that was there before.
    """
    if isinstance(unraisable.exc_value, UnicodeDecodeError) and \
            getattr(unraisable.object, "__qualname__", "") == "CsvDrop.blocks.<locals>.on_invalid_row":
        return
    previous(unraisable)


sys.unraisablehook = _quiet_undecodable_malformed_row


class FileRejected(Exception):
    """The file cannot be ingested as a whole; ``reason`` is a contract file reason."""

    def __init__(self, reason: str, message: str, *, header_is_data: bool = False):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        # With no recognisable header the first line is data and counts as a row.
        self.header_is_data = header_is_data


@dataclasses.dataclass
class Chunk:
    """Some consecutive records of the file.

    ``rows`` holds the well-formed records (contract columns as Arrow-backed text,
    indexed by record number: 1 is the first record after the header); ``malformed``
    the records of the wrong width as (record number, text of the line).
    """

    rows: pd.DataFrame
    malformed: list[tuple[int, str]]


@dataclasses.dataclass
class Block:
    """A chunk's records as Arrow: the contract columns present (text), the well-formed
    records' numbers, and the malformed records as (record number, text of the line)."""

    columns: dict[str, pa.Array]
    numbers: np.ndarray
    malformed: list[tuple[int, str]]


class CsvDrop:
    """Iterate a dropped file's records in chunks; raises FileRejected for whole-file faults."""

    def __init__(self, path: Path, *, block_bytes: int = 16 * 1024 * 1024, feed: FeedContract | None = None):
        self.path = Path(path)
        self.block_bytes = block_bytes
        self.feed = feed or c.FEED
        self.columns: list[str] = []
        self.extra_columns: list[str] = []
        self.records = 0

    def __iter__(self) -> Iterator[Chunk]:
        for block in self.blocks():
            rows = pd.DataFrame({name: values.to_pandas(types_mapper=pd.ArrowDtype) for name, values in block.columns.items()})
            yield Chunk(rows=rows.set_axis(pd.Index(block.numbers, name="record_number"), axis=0), malformed=block.malformed)

    def blocks(self) -> Iterator[Block]:
        """The records as Arrow blocks (no pandas): what a group of small files is built from."""
        if self.path.stat().st_size == 0:
            return  # a zero-byte drop is valid and has no rows
        pending_malformed: list[tuple[int, str]] = []

        def on_invalid_row(row: pacsv.InvalidRow) -> str:
            # Arrow numbers rows from 1 counting the header, when it knows the number.
            number = row.number - 1 if row.number is not None else -1
            pending_malformed.append((number, _clean_text(row.text)))
            return "skip"

        reader, names = self._open(on_invalid_row, pending_malformed)
        wanted = [i for i, name in enumerate(names) if name in self.feed.column_names]
        rescued = [i for i, name in enumerate(names) if name not in self.feed.column_names] if self.feed.rescues else []
        # Arrow parses ahead of the batch it hands out, so a malformed record can be
        # reported with an earlier batch than its own: good rows skip every malformed
        # number seen so far, not only those reported with their batch.
        malformed_ahead: set[int] = set()
        next_number = 1
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise _file_fault(exc, self.path) from exc
            except (OSError, EOFError) as exc:
                if (rejected := _damaged(exc, self.path)) is None:
                    raise
                raise rejected from exc
            malformed, pending_malformed[:] = list(pending_malformed), []
            malformed_ahead.update(number for number, _ in malformed)
            numbers, next_number = _record_numbers(next_number, batch.num_rows, malformed_ahead)
            self.records += batch.num_rows + len(malformed)
            columns = {names[i]: _clean_column(batch.column(i)) for i in wanted}
            if rescued:
                columns[RESCUED] = _rescued_json([names[i] for i in rescued], [batch.column(i) for i in rescued])
            yield Block(columns, numbers, malformed)
        if pending_malformed:  # rows rejected after the last block was handed out
            self.records += len(pending_malformed)
            yield Block({names[i]: pa.array([], pa.string()) for i in wanted}, np.empty(0, dtype=np.int64),
                        list(pending_malformed))

    def _open(self, on_invalid_row, pending_malformed: list) -> tuple[pacsv.CSVStreamingReader, list[str]]:
        """Arrow's streaming reader over the drop, every column as text, and the header's names;
        a file fault (no header, bad bytes in it, missing columns) as ``FileRejected``."""
        whole_file: pa.Buffer | None = None

        def open_csv(text_columns) -> pacsv.CSVStreamingReader:
            return pacsv.open_csv(
                _csv_source(self.path) if whole_file is None else pa.BufferReader(whole_file),
                read_options=pacsv.ReadOptions(block_size=self.block_bytes, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid_row),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in text_columns},
                    include_columns=None,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )

        try:
            try:
                reader = open_csv(self.feed.column_names)
            except pa.ArrowInvalid as exc:
                # Arrow finds no header in a file that is a single line without a line
                # end; such a file fits in one block, so read it with the end supplied.
                # At most a block is read (decompressed, for a .gz: its size on disk says
                # nothing of what it holds).
                if not _is_empty_error(exc):
                    raise
                with open_drop(self.path) as handle:
                    line = handle.read(self.block_bytes + 1)
                if len(line) > self.block_bytes:
                    raise
                whole_file = pa.py_buffer(line + b"\n")
                reader = open_csv(self.feed.column_names)
            # Arrow decodes the header names lazily, so bad bytes there surface here.
            names = reader.schema.names
            self._check_header(names)
            if self.extra_columns:
                # Arrow types an extra column from the first block alone and fails the
                # whole file when a later block disagrees: read it as text too.
                pending_malformed.clear()
                reader = open_csv(names)
                names = reader.schema.names
        except pa.ArrowInvalid as exc:
            raise _file_fault(exc, self.path) from exc
        except UnicodeDecodeError as exc:
            raise FileRejected(c.FILE_NOT_UTF8, "the header is not UTF-8 text") from exc
        except (OSError, EOFError) as exc:
            if (rejected := _damaged(exc, self.path)) is None:
                raise
            raise rejected from exc
        return reader, names

    def _check_header(self, names: list[str]) -> None:
        known = self.feed.column_names
        self.columns = [n for n in names if n in known]
        self.extra_columns = [n for n in names if n not in known]
        # A header of the contract's names in another case (or padded) is a header, not
        # data: the file is refused for its names, with the names it has.
        by_name = {n.strip().lower(): n for n in names}
        near = {name: by_name[name] for name in known if name not in self.columns and name in by_name}
        case_hint = (f" (the header has {', '.join(near.values())}: names are matched exactly, in lower case)"
                     if near else "")
        if not self.columns and near:
            raise FileRejected(c.FILE_NO_HEADER, f"the header names none of the contract's columns{case_hint}")
        if not self.columns:
            raise FileRejected(
                c.FILE_NO_HEADER,
                "the first line names none of the contract's columns",
                header_is_data=True,
            )
        duplicated = sorted({n for n in self.columns if self.columns.count(n) > 1})
        if duplicated:
            raise FileRejected(c.FILE_DUPLICATE_COLUMNS, f"columns named twice: {', '.join(duplicated)}")
        if self.extra_columns and self.feed.extra_columns == "reject":
            raise FileRejected(c.FILE_EXTRA_COLUMNS, f"columns the contract does not name: {', '.join(self.extra_columns)}"
                               f" (feed {self.feed.feed} rejects them: extra_columns: reject)")
        missing = [n for n in self.feed.required_columns if n not in self.columns]
        if missing:
            raise FileRejected(c.FILE_MISSING_COLUMNS, f"required columns missing: {', '.join(missing)}{case_hint}")


def _record_numbers(start: int, good_rows: int, malformed: set[int]) -> tuple[np.ndarray, int]:
    """Record numbers of a block's good rows: the next ones, skipping the malformed ones.

    Numbers below the returned next start are dropped from ``malformed``.
    """
    skipped = [number for number in malformed if number >= start]
    candidates = np.arange(start, start + good_rows + len(skipped), dtype=np.int64)
    if skipped:
        candidates = candidates[~np.isin(candidates, skipped)]
    numbers = candidates[:good_rows]
    next_start = int(numbers[-1]) + 1 if good_rows else start
    malformed.difference_update([number for number in malformed if number < next_start])
    return numbers, next_start


def _rescued_json(names: list[str], columns: list[pa.Array]) -> pa.Array:
    """Each record's values of the columns the contract does not name, as one JSON object
    (a value left empty is left out; a record with none of them is null)."""
    rows = zip(*(column.to_pylist() for column in columns))
    return pa.array([json.dumps(kept, ensure_ascii=False) if (kept := {n: v for n, v in zip(names, values) if v})
                     else None for values in rows], pa.string())


def _clean_column(column: pa.StringArray) -> pa.Array:
    # PostgreSQL text cannot hold NUL; keep the rest of the value and show where it was.
    return pc.replace_substring(column, "\x00", "\ufffd") if _holds_nul(column) else column


def _holds_nul(column: pa.StringArray) -> bool:
    """Whether any value holds a NUL: a count over the text bytes, some 30x cheaper than the
    replacement itself (which copied every column of every block)."""
    offsets_buffer, data = column.buffers()[1:3]
    if data is None or not len(column):
        return False
    offsets = np.frombuffer(offsets_buffer, np.int32, count=len(column) + 1, offset=column.offset * 4)
    text = np.frombuffer(data, np.uint8, count=int(offsets[-1] - offsets[0]), offset=int(offsets[0]))
    return np.count_nonzero(text) < text.size


def _clean_text(text: str) -> str:
    return text.replace("\x00", "\ufffd")


# A compressed drop's suffix and its codec (Arrow's name); Arrow ships both codecs, so
# Zstandard costs no dependency of ours.
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}


def compression(path: Path) -> str | None:
    """The codec of a drop sent compressed (``*.csv.gz``, ``*.csv.zst``), None for a plain one."""
    return COMPRESSIONS.get(path.suffix)


def is_compressed(path: Path) -> bool:
    """A drop sent compressed: read through its codec, archived as it came."""
    return compression(path) is not None


def _csv_source(path: Path):
    """What Arrow's CSV reader reads: the file itself, or its stream decompressed."""
    return pa.input_stream(str(path), compression=compression(path)) if is_compressed(path) else path


def open_drop(path: Path):
    """The drop's bytes as a binary file, decompressed if it came compressed."""
    codec = compression(path)
    if codec == "gzip":
        return gzip.open(path, "rb")
    return pa.input_stream(str(path), compression=codec) if codec else open(path, "rb")


def _damaged(exc: BaseException, path: Path) -> FileRejected | None:
    """A compressed drop whose stream is damaged (truncated, not of its codec) is not CSV:
    rejected whole. Any other OSError (unreadable, vanished) is the loader's to judge: None."""
    if not is_compressed(path) or not path.is_file():
        return None
    return FileRejected(c.FILE_UNPARSEABLE, f"the {compression(path)} stream is damaged: "
                                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def _file_fault(exc: Exception, path: Path) -> FileRejected:
    try:
        return _classify_fault(exc, path)
    except (OSError, EOFError) as damage:  # re-reading a compressed drop found its stream damaged further on
        if (rejected := _damaged(damage, path)) is None:
            raise
        return rejected


def _classify_fault(exc: Exception, path: Path) -> FileRejected:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # Arrow says "empty" also when the first block holds no line end; only a file of
    # blank lines is really empty.
    if _is_empty_error(exc) and _is_blank(path):
        return FileRejected(EMPTY, "only blank lines")
    # Arrow reports bytes that are not UTF-8 in several ways (a conversion error, a
    # failed row callback, a width error on garbage): ask the bytes themselves.
    if not is_utf8(path):
        return FileRejected(c.FILE_NOT_UTF8, "the file is not valid UTF-8 text")
    return FileRejected(c.FILE_UNPARSEABLE, message[:500])


# Not a rejection: a file of blank lines is a valid drop with zero rows.
EMPTY = ""


def _is_empty_error(exc: Exception) -> bool:
    return "Empty CSV file" in str(exc)


def _is_blank(path: Path) -> bool:
    with open_drop(path) as handle:
        while block := handle.read(1 << 20):
            if block.strip():
                return False
    return True


def is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open_drop(path) as handle:
        try:
            while block := handle.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _lines_until_damage(handle, compressed: bool) -> Iterator[str]:
    """A text file's lines; for a damaged compressed stream, the lines before the damage (any
    other read error is the caller's, as for a plain file)."""
    try:
        yield from handle
    except (EOFError, OSError):
        if not compressed:
            raise


def count_lines(path: Path, *, skip_header: bool) -> list[tuple[int, str]]:
    """The non-blank physical lines of a file rejected whole, as (number, text) pairs.

    Bytes that are not UTF-8 are kept visible as backslash escapes.
    """
    lines: list[tuple[int, str]] = []
    number = 0
    # Universal newlines: a line ends where the CSV reader ends it (LF, CRLF or CR).
    with io.TextIOWrapper(open_drop(path), encoding="utf-8", errors="surrogateescape", newline=None) as handle:
        for line in _lines_until_damage(handle, is_compressed(path)):
            text = line.rstrip("\n").lstrip("\ufeff")
            if not text.strip():
                continue
            if skip_header:
                # The header is the first non-blank line, as for the CSV reader.
                skip_header = False
                continue
            number += 1
            visible = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
            lines.append((number, _clean_text(visible)))
    return lines
