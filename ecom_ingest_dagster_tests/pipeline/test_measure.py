"""Unit tests of the batch metrics, their summary and the JSON logs: no database, no Spark."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from ecom_ingest_dagster.pipeline.measure import MetricsLog, batch_metrics, percentile, summarize

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)


def ledger_row(total, loaded, duplicate, rejected, *, status="ingested", reasons=None, landed=None, committed=None,
               read=1.0, validate=2.0, frame=3.0, write=4.0):
    return {
        "status": status,
        "rows_total": total,
        "rows_loaded": loaded,
        "rows_duplicate": duplicate,
        "rows_rejected": rejected,
        "reason_counts": reasons or {},
        "read_ms": read,
        "validate_ms": validate,
        "frame_ms": frame,
        "write_ms": write,
        "landed_at": landed,
        "committed_at": committed,
    }


def batch(batch_id, files, seconds, *, start=T0):
    return batch_metrics(
        batch_id=batch_id,
        stream_id="s1",
        mode="stream",
        started_at=start,
        finished_at=start + dt.timedelta(seconds=seconds),
        files=files,
    )


# --- batch_metrics -------------------------------------------------------------------


def test_batch_metrics_sums_the_files_of_the_batch():
    files = [
        ledger_row(100, 90, 5, 5, reasons={"invalid_user_id": 3, "negative_price": 2},
                   landed=T0 - dt.timedelta(seconds=3), committed=T0 + dt.timedelta(seconds=1),
                   read=10.5, validate=20.25, frame=1.0, write=30.0),
        ledger_row(50, 0, 0, 50, status="rejected", reasons={"file_not_utf8": 50, "invalid_user_id": 1},
                   landed=T0 - dt.timedelta(seconds=1), committed=T0 + dt.timedelta(seconds=1),
                   read=0.5, validate=0.25, frame=0.0, write=5.0),
    ]
    m = batch(7, files, 2.0)

    assert (m["batch_id"], m["stream_id"], m["mode"]) == (7, "s1", "stream")
    assert m["timestamp"] == (T0 + dt.timedelta(seconds=2)).isoformat()
    assert (m["files"], m["files_rejected"]) == (2, 1)
    assert m["total_records"] == 150
    assert (m["loaded_records"], m["duplicate_records"], m["rejected_records"]) == (90, 5, 55)
    assert m["total_records"] == m["loaded_records"] + m["duplicate_records"] + m["rejected_records"]
    # Duplicates are not errors: they count as valid.
    assert (m["valid_records"], m["invalid_records"]) == (95, 55)
    assert m["reason_counts"] == {"invalid_user_id": 4, "negative_price": 2, "file_not_utf8": 50}
    assert m["read_parse_time_ms"] == 11.0
    assert m["validation_time_ms"] == 20.5
    assert m["dataframe_creation_time_ms"] == 1.0
    assert m["db_write_time_ms"] == 35.0
    assert m["total_processing_time_ms"] == 2000.0
    assert m["records_per_second"] == 75.0
    assert m["validation_success_rate"] == pytest.approx(100 * 95 / 150, abs=1e-4)
    assert m["end_to_end_latency_ms_max"] == 4000.0
    assert m["end_to_end_latency_ms_avg"] == 3000.0
    json.dumps(m)  # stored as JSON as is


def test_batch_metrics_without_landing_times_has_no_end_to_end_latency():
    m = batch(1, [ledger_row(10, 10, 0, 0), ledger_row(5, 5, 0, 0, landed=T0)], 1.0)
    assert m["end_to_end_latency_ms_max"] is None and m["end_to_end_latency_ms_avg"] is None


def test_batch_metrics_of_an_instant_or_empty_batch_do_not_divide_by_zero():
    instant = batch(1, [ledger_row(10, 10, 0, 0)], 0.0)
    assert instant["total_processing_time_ms"] > 0
    assert np.isfinite(instant["records_per_second"])

    empty = batch(2, [], 1.0)
    assert (empty["files"], empty["total_records"], empty["records_per_second"]) == (0, 0, 0.0)
    assert empty["validation_success_rate"] == 100.0


# --- percentile ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 1001])
def test_percentile_matches_numpy(size):
    rng = np.random.default_rng(size)
    for _ in range(10):
        values = rng.lognormal(3, 1, size).tolist()
        for pct in (0, 1, 5, 25, 50, 75, 90, 95, 99, 99.9, 100):
            assert percentile(values, pct) == pytest.approx(np.percentile(values, pct), rel=1e-12, abs=1e-12)


def test_percentile_edge_cases():
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    values = [3.0, 1.0, 2.0]
    assert percentile(values, 50) == 2.0
    assert values == [3.0, 1.0, 2.0]  # the caller's list is not sorted in place
    assert percentile((10, 20), 25) == 12.5


# --- summarize -----------------------------------------------------------------------


def test_summarize_totals_and_weighted_throughput():
    batches = [
        batch(1, [ledger_row(1000, 900, 50, 50, reasons={"negative_price": 50})], 1.0),
        batch(2, [ledger_row(10, 10, 0, 0)], 9.0),
        batch(3, [ledger_row(90, 80, 0, 10, reasons={"invalid_user_id": 4, "negative_price": 6}),
                  ledger_row(3, 0, 0, 3, status="rejected", reasons={"file_no_header": 3})], 2.0,
              start=T0 + dt.timedelta(minutes=5)),
    ]
    s = summarize(batches)

    assert s["total_batches"] == 3
    assert (s["total_files"], s["files_rejected"]) == (4, 1)
    assert s["total_records"] == 1103
    assert (s["loaded_records"], s["duplicate_records"], s["rejected_records"]) == (990, 50, 63)
    assert (s["valid_records"], s["invalid_records"]) == (1040, 63)
    assert s["reason_counts"] == {"file_no_header": 3, "invalid_user_id": 4, "negative_price": 56}
    assert list(s["reason_counts"]) == sorted(s["reason_counts"])
    # Total records over total processing time, not the mean of per-batch rates
    # ((1000 + 1.11 + 46.5) / 3 would be 349).
    assert s["avg_records_per_second"] == pytest.approx(1103 / 12.0, abs=1e-3)
    assert s["peak_records_per_second"] == 1000.0
    assert s["avg_records_per_batch"] == pytest.approx(1103 / 3, abs=1e-3)
    assert s["validation_success_rate"] == pytest.approx(100 * 1040 / 1103, abs=1e-3)

    latencies = [1000.0, 9000.0, 2000.0]
    lat = s["batch_latency_ms"]
    assert (lat["min"], lat["max"]) == (1000.0, 9000.0)
    assert lat["avg"] == pytest.approx(4000.0)
    for key, pct in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert lat[key] == pytest.approx(np.percentile(latencies, pct), abs=1e-3)
    assert s["first_batch_at"] == batches[0]["timestamp"]
    assert s["last_batch_at"] == batches[2]["timestamp"]
    assert s["stage_avg_ms"]["db_write"] == pytest.approx((4 + 4 + 8) / 3, abs=1e-3)
    json.dumps(s)


def test_summarize_end_to_end_latency():
    batches = [
        batch(i, [ledger_row(1, 1, 0, 0, landed=T0, committed=T0 + dt.timedelta(milliseconds=ms))], 1.0)
        for i, ms in enumerate([100, 400, 200, 900])
    ] + [batch(9, [ledger_row(1, 1, 0, 0)], 1.0)]
    e2e = summarize(batches)["end_to_end_latency_ms"]
    assert e2e["max"] == 900.0
    assert e2e["avg"] == 400.0
    assert e2e["p50"] == pytest.approx(np.percentile([100, 400, 200, 900], 50))
    assert e2e["p95"] == pytest.approx(np.percentile([100, 400, 200, 900], 95), abs=1e-3)


def test_summarize_ignores_idle_triggers():
    busy = batch(1, [ledger_row(100, 100, 0, 0)], 2.0)
    idle = batch(2, [], 30.0)
    assert summarize([busy, idle]) == summarize([busy])


@pytest.mark.parametrize("batches", [[], [batch(1, [], 5.0)]], ids=["none", "idle-only"])
def test_summarize_of_nothing(batches):
    s = summarize(iter(batches))  # any iterable, not only a list
    assert s["total_batches"] == 0 and s["total_records"] == 0
    assert s["avg_records_per_second"] == 0.0 and s["peak_records_per_second"] == 0.0
    assert s["validation_success_rate"] == 100.0
    assert set(s["batch_latency_ms"].values()) == {None}
    assert set(s["end_to_end_latency_ms"].values()) == {None}
    assert s["first_batch_at"] is None and s["last_batch_at"] is None
    json.dumps(s)


def test_summarize_reads_back_what_the_log_stored(tmp_path):
    log = MetricsLog(tmp_path / "logs")
    batches = [batch(i, [ledger_row(10 * i, 10 * i, 0, 0)], float(i)) for i in range(1, 4)]
    for m in batches:
        log.append_batch(m)
    assert summarize(log.read_batches()) == summarize(batches)


# --- MetricsLog ----------------------------------------------------------------------


def test_metrics_log_round_trip(tmp_path):
    log = MetricsLog(tmp_path / "not" / "yet")
    assert log.read_batches() == []
    first = batch(1, [ledger_row(5, 4, 1, 0, reasons={"x": 1})], 1.0)
    second = {**batch(2, [], 1.0), "extra": T0}
    log.append_batch(first)
    log.append_batch(second)

    assert log.metrics_path == tmp_path / "not" / "yet" / "performance_metrics.json"
    assert log.metrics_path.read_text().count("\n") == 2  # JSON lines
    stored = log.read_batches()
    assert stored[0] == first
    assert stored[1]["extra"] == str(T0)  # what JSON cannot hold is kept as text
    assert stored[1]["batch_id"] == 2


def test_read_batches_tolerates_blank_lines(tmp_path):
    log = MetricsLog(tmp_path)
    log.metrics_path.write_text('{"batch_id": 1}\n\n  \n{"batch_id": 2}\n')
    assert [b["batch_id"] for b in log.read_batches()] == [1, 2]


def test_write_summary(tmp_path):
    log = MetricsLog(tmp_path / "logs")
    log.write_summary({"total_records": 3, "at": T0})
    assert json.loads(log.summary_path.read_text()) == {"total_records": 3, "at": str(T0)}
    log.write_summary({"total_records": 4})
    assert json.loads(log.summary_path.read_text()) == {"total_records": 4}
    assert sorted(p.name for p in log.dir.iterdir()) == ["performance_summary.json"]


def test_write_summary_is_atomic(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path)
    log.write_summary({"total_records": 1})
    before = log.summary_path.read_text()

    real_write_text = Path.write_text

    def crash_half_way(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", crash_half_way)
    with pytest.raises(OSError):
        log.write_summary({"total_records": 2, "padding": "x" * 1000})
    # A reader never sees a half-written summary: the old one is intact.
    assert log.summary_path.read_text() == before


def test_append_rejections_one_line_per_row(tmp_path):
    log = MetricsLog(tmp_path / "logs")
    rows = [
        {"source_file": "a.csv", "record_number": 3, "batch_id": 1, "event_id": "bad\nid\r",
         "reasons": ["invalid_event_id", "negative_price"], "details": ["event_id: invalid_event_id"],
         "raw_line": 'x,"multi\nline"', "rejected_at": T0},
        {"source_file": "b.csv", "record_number": None, "batch_id": 1, "event_id": None,
         "reasons": ["file_not_utf8"], "details": None, "rejected_at": T0.isoformat()},
    ]
    assert log.append_rejections(rows) == 2
    assert log.append_rejections(iter(rows[:1])) == 1
    assert log.append_rejections([]) == 0

    text_lines = log.errors_log_path.read_text(encoding="utf-8").splitlines()
    assert len(text_lines) == 3
    assert "a.csv#3" in text_lines[0] and "invalid_event_id,negative_price" in text_lines[0]
    assert "b.csv " in text_lines[1] and "#" not in text_lines[1].split()[2]

    json_lines = log.errors_json_path.read_text(encoding="utf-8").splitlines()
    assert len(json_lines) == 3
    parsed = [json.loads(x) for x in json_lines]
    assert parsed[0]["event_id"] == "bad\nid\r"
    assert parsed[0]["raw_line"] == 'x,"multi\nline"'
    assert parsed[0]["rejected_at"] == str(T0)
    assert parsed[1]["reasons"] == ["file_not_utf8"]
