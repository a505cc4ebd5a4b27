"""Unit tests of reading one dropped CSV file: no database, no Spark."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ecom_ingest_dagster import contract as c
from ecom_ingest_dagster.pipeline import read as csv_drop
from ecom_ingest_dagster.pipeline.read import CsvDrop, FileRejected, count_lines, is_utf8

HEADER = ",".join(c.COLUMNS)
# Small enough that a few rows fill a block, large enough for the header line.
TINY_BLOCK = 256


def event_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def record(i: int, **changes: str) -> dict[str, str]:
    values = {
        "event_id": event_id(i),
        "user_id": f"user_{i}",
        "session_id": "",
        "event_type": "view",
        "product_id": f"prod_{i}",
        "product_name": f"name {i}",
        "category": "cat",
        "price": "1.50",
        "quantity": "1",
        "event_timestamp": "2026-01-01T00:00:00Z",
    }
    values.update(changes)
    return values


def line(i: int, columns=c.COLUMNS, **changes: str) -> str:
    values = record(i, **changes)
    return ",".join(values[name] for name in columns)


def write(tmp_path, data: bytes | str, name: str = "drop.csv"):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read(path, block_bytes: int = 1 << 20):
    """All chunks of a file: (drop, rows of every chunk, malformed of every chunk, chunks)."""
    drop = CsvDrop(path, block_bytes=block_bytes)
    chunks = list(drop)
    frames = [chunk.rows for chunk in chunks]
    rows = pd.concat(frames) if frames else pd.DataFrame()
    malformed = [m for chunk in chunks for m in chunk.malformed]
    return drop, rows, malformed, chunks


def rejection(path, block_bytes: int = 1 << 20) -> FileRejected:
    with pytest.raises(FileRejected) as info:
        list(CsvDrop(path, block_bytes=block_bytes))
    return info.value


# --- columns -------------------------------------------------------------------------


def test_columns_matched_by_name_in_any_order_and_extras_reported(tmp_path):
    columns = ["note", *reversed(c.COLUMNS), "source"]
    text = ",".join(columns) + "\n"
    for i in (1, 2):
        values = {**record(i), "note": f"n{i}", "source": "web"}
        text += ",".join(values[name] for name in columns) + "\n"
    drop, rows, malformed, _ = read(write(tmp_path, text))

    assert drop.extra_columns == ["note", "source"]
    assert sorted(drop.columns) == sorted(c.COLUMNS)
    assert set(rows.columns) == set(c.COLUMNS)  # extras are not handed on
    assert rows.loc[2, "event_id"] == event_id(2)
    assert rows.loc[2, "user_id"] == "user_2"
    assert rows.loc[1, "price"] == "1.50"
    assert malformed == []


def test_optional_columns_may_be_absent(tmp_path):
    columns = list(c.REQUIRED_COLUMNS)
    drop, rows, _, _ = read(write(tmp_path, ",".join(columns) + "\n" + line(1, columns) + "\n"))
    assert list(rows.columns) == columns
    assert drop.extra_columns == []


def test_extra_column_that_looks_numeric_then_text_in_a_later_block(tmp_path):
    # Arrow would type an extra column from the first block; a later block must not
    # turn an ignored column into a whole-file failure.
    text = HEADER + ",note,blank\n"
    text += "".join(line(i) + f",{i},\n" for i in range(1, 60))
    text += line(60) + ",not a number,now text\n"
    drop, rows, malformed, _ = read(write(tmp_path, text), block_bytes=TINY_BLOCK)
    assert len(rows) == 60 and malformed == []
    assert drop.extra_columns == ["note", "blank"]


def test_values_stay_text_exactly_as_sent(tmp_path):
    text = HEADER + "\n" + line(1, price="007.10", quantity="0003", session_id="", category='""', product_name="NULL") + "\n"
    _, rows, _, _ = read(write(tmp_path, text))
    row = rows.loc[1]
    assert (row["price"], row["quantity"]) == ("007.10", "0003")
    # Empty and null-looking values are text, not missing: validation decides.
    assert row["session_id"] == "" and row["category"] == "" and row["product_name"] == "NULL"
    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in rows.dtypes)


# --- encodings and line endings ------------------------------------------------------


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path):
    drop, rows, _, _ = read(write(tmp_path, b"\xef\xbb\xbf" + (HEADER + "\n" + line(1) + "\n").encode()))
    assert drop.columns[0] == "event_id"
    assert drop.extra_columns == []
    assert rows.loc[1, "event_id"] == event_id(1)


@pytest.mark.parametrize(
    "ending",
    [pytest.param(["\r\n"] * 4, id="crlf"), pytest.param(["\n", "\r\n", "\r", "\n"], id="mixed")],
)
def test_line_endings(tmp_path, ending):
    text = HEADER + ending[0] + line(1) + ending[1] + line(2) + ending[2] + line(3) + ending[3]
    drop, rows, malformed, _ = read(write(tmp_path, text))
    assert list(rows.index) == [1, 2, 3]
    assert malformed == [] and drop.records == 3
    # No line end leaks into the last column.
    assert list(rows["event_timestamp"]) == ["2026-01-01T00:00:00Z"] * 3


def test_quoted_fields_rfc4180(tmp_path):
    text = (
        HEADER + "\n"
        + line(1, product_name='"Mug, blue"', category='"Kitchen ""Home"""') + "\n"
        + line(2, product_name='"two\nlines"', category='"crlf\r\ninside"') + "\n"
        + line(3) + "\n"
    )
    _, rows, malformed, _ = read(write(tmp_path, text))
    assert malformed == []
    assert list(rows.index) == [1, 2, 3]  # a record spanning lines is one record
    assert rows.loc[1, "product_name"] == "Mug, blue"
    assert rows.loc[1, "category"] == 'Kitchen "Home"'
    assert rows.loc[2, "product_name"] == "two\nlines"
    assert rows.loc[2, "category"] == "crlf\r\ninside"
    assert rows.loc[3, "event_id"] == event_id(3)


def test_nul_bytes_in_a_value_become_replacement_characters(tmp_path):
    text = HEADER + "\n" + line(1, product_name="a\x00b\x00") + "\n" + "bad\x00,row\n"
    _, rows, malformed, _ = read(write(tmp_path, text))
    assert rows.loc[1, "product_name"] == "a\ufffdb\ufffd"
    assert malformed == [(2, "bad\ufffd,row")]



def test_nul_is_found_only_within_a_columns_own_values():
    # Arrow slices share buffers: a NUL outside the slice is not the slice's.
    import pyarrow as pa

    column = pa.array(["a\x00b", "clean", "also clean", "x\x00"])
    assert csv_drop._holds_nul(column)
    assert not csv_drop._holds_nul(column.slice(1, 2))
    assert csv_drop._holds_nul(column.slice(2, 2))
    assert not csv_drop._holds_nul(pa.array(["", ""]))
    assert not csv_drop._holds_nul(pa.array([], pa.string()))

# --- malformed records ---------------------------------------------------------------


def test_malformed_rows_kept_with_record_numbers_and_text(tmp_path):
    too_many = line(3) + ",surplus"
    text = HEADER + "\n" + "\n".join(["only,three,fields", line(2), too_many, line(4), "x"]) + "\n" + line(6) + "\n"
    drop, rows, malformed, _ = read(write(tmp_path, text))
    assert sorted(malformed) == [(1, "only,three,fields"), (3, too_many), (5, "x")]
    assert list(rows.index) == [2, 4, 6]
    assert rows.index.name == "record_number"
    assert list(rows["event_id"]) == [event_id(2), event_id(4), event_id(6)]
    assert drop.records == 6 == len(rows) + len(malformed)


def test_malformed_record_spanning_lines_keeps_numbering(tmp_path):
    text = HEADER + "\n" + line(1, product_name='"a\nb"') + "\n" + 'bad,"multi\nline"\n' + line(3) + "\n"
    drop, rows, malformed, _ = read(write(tmp_path, text))
    assert [number for number, _ in malformed] == [2]
    assert "multi" in malformed[0][1]
    assert list(rows.index) == [1, 3]
    assert drop.records == 3


def test_malformed_last_line_without_line_end(tmp_path):
    drop, rows, malformed, chunks = read(write(tmp_path, HEADER + "\n" + line(1) + "\nbad,row"))
    assert list(rows.index) == [1]
    assert malformed == [(2, "bad,row")]
    assert drop.records == 2
    for chunk in chunks:
        assert chunk.rows.index.name == "record_number"


@pytest.mark.parametrize("block_bytes", [TINY_BLOCK, 1000, 1 << 20])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_record_numbers_across_many_blocks(tmp_path, block_bytes, seed):
    rng = random.Random(seed)
    n = 400
    bad = {1, n} | set(rng.sample(range(2, n), 40))
    parts = [HEADER]
    for i in range(1, n + 1):
        if i in bad:
            parts.append(rng.choice([f"short,{i}", line(i) + f",extra{i}", f'"quoted\nshort",{i}']))
        elif rng.random() < 0.15:
            parts.append(line(i, product_name=f'"multi\nline, {i}"'))
        else:
            parts.append(line(i))
    drop, rows, malformed, chunks = read(write(tmp_path, "\n".join(parts) + "\n"), block_bytes=block_bytes)

    if block_bytes == TINY_BLOCK:
        assert len(chunks) > 20  # the point: many blocks
    good = [i for i in range(1, n + 1) if i not in bad]
    assert list(rows.index) == good
    # Each row's number is its own record's number, not just the right set.
    assert list(rows["event_id"]) == [event_id(i) for i in good]
    assert rows.index.is_unique and rows.index.dtype == np.int64
    assert sorted(number for number, _ in malformed) == sorted(bad)
    for number, text in malformed:
        assert text.endswith(str(number)) or text.endswith(f"extra{number}")
    assert drop.records == n == len(rows) + len(malformed)
    for chunk in chunks:
        assert chunk.rows.index.name == "record_number"


# --- empty and header-only files -----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEADER + "\n", id="lf"),
        pytest.param(HEADER + "\r\n", id="crlf"),
        pytest.param(HEADER, id="no-line-end"),
        pytest.param("\ufeff" + HEADER, id="bom-no-line-end"),
        pytest.param(HEADER + "\n\n\n", id="trailing-blank-lines"),
    ],
)
def test_header_only_file_is_zero_rows(tmp_path, data):
    drop, rows, malformed, _ = read(write(tmp_path, data))
    assert len(rows) == 0 and malformed == []
    assert drop.records == 0
    assert sorted(drop.columns) == sorted(c.COLUMNS)


def test_zero_byte_file_is_zero_rows(tmp_path):
    drop, rows, malformed, chunks = read(write(tmp_path, b""))
    assert chunks == [] and drop.records == 0


@pytest.mark.parametrize("block_bytes", [TINY_BLOCK, 1 << 20])
@pytest.mark.parametrize("data", [b"\n", b"\n\n\r\n\r", b"\n" * 1000], ids=["one", "mixed", "many"])
def test_blank_lines_only_is_the_empty_signal(tmp_path, data, block_bytes):
    assert rejection(write(tmp_path, data), block_bytes).reason == csv_drop.EMPTY


# --- files rejected whole ------------------------------------------------------------


def test_latin1_header_is_not_utf8(tmp_path):
    data = ("caf\xe9," + HEADER + "\n" + "x," + line(1) + "\n").encode("latin-1")
    assert rejection(write(tmp_path, data)).reason == c.FILE_NOT_UTF8


def test_latin1_in_an_extra_column_is_not_utf8(tmp_path):
    # The contract asks for a UTF-8 file, not only UTF-8 contract columns.
    data = (HEADER + ",note\n" + line(1) + ",caf\xe9\n").encode("latin-1")
    assert rejection(write(tmp_path, data)).reason == c.FILE_NOT_UTF8


def test_latin1_single_line_without_line_end_is_not_utf8(tmp_path):
    assert rejection(write(tmp_path, "caf\xe9,bar".encode("latin-1"))).reason == c.FILE_NOT_UTF8


@pytest.mark.parametrize(
    "bad_values, extra",
    [
        pytest.param({"product_name": "caf\xe9"}, None, id="in-a-good-row"),
        pytest.param({"event_id": "caf\xe9", "user_id": "short"}, None, id="in-a-malformed-row"),
        pytest.param({}, "caf\xe9", id="in-an-extra-column"),
    ],
)
# pyarrow fails to decode such a row's text before our handler runs and reports that
# as an unraisable exception; the file is still rejected, which is what is checked.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_invalid_bytes_deep_in_the_file_after_valid_blocks(tmp_path, bad_values, extra):
    suffix = "," if extra is not None else ""
    header = HEADER + (",note" if extra is not None else "")
    good = "".join(line(i) + suffix + "\n" for i in range(1, 300))
    if "user_id" in bad_values:
        bad = ",".join(bad_values.values())
    else:
        bad = line(300, **bad_values) + ("," + extra if extra is not None else "")
    data = (header + "\n" + good).encode() + bad.encode("latin-1") + ("\n" + line(301) + suffix + "\n").encode()
    drop = CsvDrop(write(tmp_path, data), block_bytes=TINY_BLOCK)
    seen = 0
    with pytest.raises(FileRejected) as info:
        for chunk in drop:
            seen += len(chunk.rows)
    assert info.value.reason == c.FILE_NOT_UTF8
    assert seen > 0  # several blocks went through before the bad bytes were met


def test_a_malformed_row_that_is_not_utf8_prints_no_traceback(tmp_path):
    # Outside pytest (which installs its own hook for such errors): what a user's terminal shows.
    path = write(tmp_path, (HEADER + "\n" + line(1) + "\n").encode() + "caf\xe9,x\n".encode("latin-1"))
    script = (
        "import sys\n"
        "from ecom_ingest_dagster.pipeline.read import CsvDrop, FileRejected\n"
        "try:\n"
        "    list(CsvDrop(sys.argv[1]))\n"
        "except FileRejected as exc:\n"
        "    print(exc.reason)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == c.FILE_NOT_UTF8, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_first_line_with_no_contract_column_is_data(tmp_path):
    path = write(tmp_path, line(1) + "\n" + line(2) + "\n")
    error = rejection(path)
    assert error.reason == c.FILE_NO_HEADER
    assert error.header_is_data is True
    assert len(count_lines(path, skip_header=not error.header_is_data)) == 2


def test_single_data_line_without_line_end_is_no_header(tmp_path):
    # One line and no newline: it is a row, not an empty file.
    error = rejection(write(tmp_path, line(1)))
    assert error.reason == c.FILE_NO_HEADER and error.header_is_data


@pytest.mark.parametrize("line_end", ["\n", ""])
def test_missing_required_columns_are_named(tmp_path, line_end):
    columns = [n for n in c.COLUMNS if n not in ("price", "quantity")]
    error = rejection(write(tmp_path, ",".join(columns) + line_end))
    assert error.reason == c.FILE_MISSING_COLUMNS
    assert error.header_is_data is False
    assert "price" in error.message and "quantity" in error.message
    assert "event_id" not in error.message


def test_missing_optional_and_required_names_only_required(tmp_path):
    error = rejection(write(tmp_path, "event_id,user_id,product_name\n"))
    assert error.reason == c.FILE_MISSING_COLUMNS
    assert "product_name" not in error.message and "session_id" not in error.message


def test_a_header_in_another_case_is_refused_naming_the_names_it_has(tmp_path):
    # Names are matched exactly (the contract: lower case); a header of them in capitals is
    # still a header, not a first row of data, and the reason says what differs.
    some = rejection(write(tmp_path, HEADER.replace("event_id", "Event_ID").replace("price", " PRICE") + "\n" + line(1) + "\n"))
    assert some.reason == c.FILE_MISSING_COLUMNS and not some.header_is_data
    assert some.message == ("required columns missing: event_id, price"
                            " (the header has Event_ID,  PRICE: names are matched exactly, in lower case)")
    every = rejection(write(tmp_path, HEADER.upper() + "\n" + line(1) + "\n", name="upper.csv"))
    assert every.reason == c.FILE_NO_HEADER and not every.header_is_data  # no header of ours; not a row either
    assert every.message.startswith("the header names none of the contract's columns (the header has EVENT_ID, USER_ID")


def test_duplicate_contract_columns(tmp_path):
    error = rejection(write(tmp_path, HEADER + ",user_id\n" + line(1) + ",user_9\n"))
    assert error.reason == c.FILE_DUPLICATE_COLUMNS
    assert "user_id" in error.message


def test_duplicate_extra_columns_are_not_a_fault(tmp_path):
    drop, rows, _, _ = read(write(tmp_path, HEADER + ",note,note\n" + line(1) + ",a,b\n"))
    assert len(rows) == 1 and drop.extra_columns == ["note", "note"]


def test_file_rejected_carries_reason_and_message():
    error = FileRejected(c.FILE_NOT_UTF8, "bad bytes")
    assert (error.reason, error.message, error.header_is_data) == (c.FILE_NOT_UTF8, "bad bytes", False)
    assert c.FILE_NOT_UTF8 in str(error)


# --- helpers for files rejected whole ------------------------------------------------


def test_is_utf8(tmp_path):
    assert is_utf8(write(tmp_path, "h\ncafé ☕\n", "a.csv"))
    assert is_utf8(write(tmp_path, b"", "b.csv"))
    assert not is_utf8(write(tmp_path, "caf\xe9".encode("latin-1"), "c.csv"))
    # A multi-byte character cut off at the end of the file is not UTF-8.
    assert not is_utf8(write(tmp_path, "ok ☕".encode()[:-1], "d.csv"))
    # Invalid bytes beyond the decoder's first read are found too.
    assert not is_utf8(write(tmp_path, b"a" * (1 << 20) + b"\xff\n", "e.csv"))


def test_count_lines_with_and_without_header(tmp_path):
    path = write(tmp_path, "h1,h2\n\na,1\r\n  \nb,2\n\n")
    assert count_lines(path, skip_header=True) == [(1, "a,1"), (2, "b,2")]
    assert count_lines(path, skip_header=False) == [(1, "h1,h2"), (2, "a,1"), (3, "b,2")]


def test_count_lines_header_is_first_non_blank_line(tmp_path):
    # The CSV reader skips leading blank lines to find the header; so must the count.
    path = write(tmp_path, "\n\nh1,h2\na,1\n")
    assert count_lines(path, skip_header=True) == [(1, "a,1")]


def test_count_lines_escapes_non_utf8_and_strips_bom_and_nul(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfh\ncaf\xe9,\xff\nn\x00ul\nlast")
    assert count_lines(path, skip_header=False) == [(1, "h"), (2, "caf\\xe9,\\xff"), (3, "n\ufffdul"), (4, "last")]


def test_count_lines_cr_only_line_ends(tmp_path):
    # The CSV reader ends a line at a lone CR; the rows of a rejected file must match.
    path = write(tmp_path, b"h\ra\r\nb\rc\n")
    assert count_lines(path, skip_header=True) == [(1, "a"), (2, "b"), (3, "c")]


def test_count_lines_of_empty_file(tmp_path):
    assert count_lines(write(tmp_path, b""), skip_header=True) == []
    assert count_lines(write(tmp_path, b"\n\n", "b.csv"), skip_header=False) == []


# --- compressed drops -------------------------------------------------------------------


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def _zstd(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


# A compressed drop's suffix, how it is made, and the codec its rejection names.
PACKINGS = {"gz": (_gzip, "gzip"), "zst": (_zstd, "zstd")}


@pytest.mark.parametrize("suffix", PACKINGS)
@pytest.mark.parametrize("block_bytes", [TINY_BLOCK, 1 << 20])
def test_a_compressed_drop_reads_exactly_as_the_plain_file(tmp_path, block_bytes, suffix):
    text = HEADER + "\n" + "\n".join(line(i) for i in range(200)) + "\nonly,two\n" + line(200) + "\n"
    plain = read(write(tmp_path, text), block_bytes)
    packed = read(write(tmp_path, PACKINGS[suffix][0](text.encode()), f"drop.csv.{suffix}"), block_bytes)
    pd.testing.assert_frame_equal(packed[1], plain[1])
    assert packed[2] == plain[2] and packed[0].records == plain[0].records == 202


@pytest.mark.parametrize("suffix", PACKINGS)
@pytest.mark.parametrize("damage", ["not compressed", "truncated"])
def test_a_damaged_compressed_drop_is_rejected_whole_saying_so(tmp_path, damage, suffix):
    pack, codec = PACKINGS[suffix]
    text = (HEADER + "\n" + "\n".join(line(i) for i in range(20000)) + "\n").encode()
    data = b"plain text, not compressed\n" if damage == "not compressed" else pack(text)[:40_000]
    name = f"drop.csv.{suffix}"
    rejected = rejection(write(tmp_path, data, name), TINY_BLOCK * 64)
    assert rejected.reason == c.FILE_UNPARSEABLE and f"the {codec} stream is damaged" in rejected.message
    # The lines it did hold are kept with the rejection (as for any file rejected whole).
    lines = count_lines(tmp_path / name, skip_header=True)
    assert (lines == []) if damage == "not compressed" else (0 < len(lines) < 20000)


@pytest.mark.parametrize("suffix", PACKINGS)
def test_a_compressed_drop_of_latin1_is_not_utf8_and_its_lines_are_counted(tmp_path, suffix):
    data = HEADER.encode() + b"\n" + line(1).encode().replace(b"name 1", b"caf\xe9") + b"\n"
    path = write(tmp_path, PACKINGS[suffix][0](data), f"drop.csv.{suffix}")
    assert rejection(path).reason == c.FILE_NOT_UTF8 and not is_utf8(path)
    assert [n for n, _ in count_lines(path, skip_header=True)] == [1]


def test_drop_names_are_csv_csv_gz_or_csv_zst():
    assert c.is_drop_name("a.csv") and c.is_drop_name("a.csv.gz") and c.is_drop_name("a.csv.zst")
    assert not any(c.is_drop_name(n) for n in ("a.gz", "a.zst", "a.csv.gz.tmp", ".a.csv.gz", "_a.csv.zst", "a.tsv.gz",
                                               "a.csv.bz2"))


def test_a_gzip_drop_damaged_past_a_bad_first_block_is_still_rejected_whole(tmp_path):
    # Classifying the first block's fault re-reads the stream, which then meets the damage.
    rows = [line(1).replace("name 1", "caf\udce9")] + [line(i) for i in range(2, 5000)]  # < 1 MB: one re-read
    text = (HEADER + "\n" + "\n".join(rows) + "\n").encode("utf-8", errors="surrogateescape")
    packed = _gzip(text)
    path = write(tmp_path, packed[: len(packed) * 4 // 5], "drop.csv.gz")
    rejected = rejection(path, 4096)  # a FileRejected, not an EOFError that fails the whole batch
    assert rejected.reason == c.FILE_UNPARSEABLE and "damaged" in rejected.message


def test_a_gzip_drop_of_one_long_line_without_line_end_is_rejected_whole(tmp_path):
    # (The read is bounded to a block; this checks the outcome, not the memory.)
    path = write(tmp_path, _gzip(b"x" * 50_000), "drop.csv.gz")  # 50 kB of one line, ~100 bytes on disk
    assert rejection(path, TINY_BLOCK).reason in (c.FILE_NO_HEADER, c.FILE_UNPARSEABLE)
