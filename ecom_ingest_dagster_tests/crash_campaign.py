"""A crash and outage campaign, run by hand: random SIGKILLs and PostgreSQL outages.

    python -m ecom_ingest_dagster_tests.crash_campaign --rounds 20

Each round starts ``ecom-ingest ingest`` or ``ecom-ingest stream`` over a landing
directory that keeps receiving drops, then either SIGKILLs the whole process tree at a
random moment or stops PostgreSQL for a random while (shorter or longer than the retry
window) and starts it again. After every round the invariants that must hold at any
moment are checked (no event id twice, every committed file's accounting identity, no
loaded id that is not a valid generated one); at the end one ordinary ``ingest`` must
leave exactly the valid ids. Progress goes to stderr, the results to a JSON file.

It uses a private PostgreSQL server (pgserver's binaries), so it may stop it freely.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

from ecom_ingest_dagster.tools.generator import generate_events, write_drop

from .helpers import assert_accounting, kill_tree
from ecom_ingest_dagster.tools.bench.private_postgres import PrivatePostgres


@dataclasses.dataclass
class Round:
    number: int
    command: str
    action: str  # "kill" or "outage"
    at_s: float  # seconds after the start
    outage_s: float | None
    exit_code: int | None  # None: killed
    last_line: str  # the run's last line of output
    files_committed_after: int
    rows_loaded_after: int


def _stop(process: subprocess.Popen, timeout: float) -> int | None:
    """Let a run finish (ingest) or ask it to stop (stream); kill it if it will not."""
    if process.poll() is None and process.args[-1] == "stream":
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        return None


def _figures(server: PrivatePostgres) -> tuple[int, int]:
    with psycopg.connect(server.url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.ingest_files')").fetchone()[0] is None:
            return 0, 0
        return (
            conn.execute("SELECT count(*) FROM ingest_files").fetchone()[0],
            conn.execute("SELECT count(*) FROM user_events").fetchone()[0],
        )


def _check_invariants(server: PrivatePostgres, valid_ids: set[str], *, final: bool) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.ingest_files')").fetchone()[0] is None:
            return
        loaded = [r[0] for r in conn.execute("SELECT event_id::text FROM user_events")]
        assert len(loaded) == len(set(loaded)), "an event id is in user_events twice"
        assert set(loaded) <= valid_ids, "user_events holds an id that is not a valid generated one"
        assert_accounting(conn)
        if final:
            missing = valid_ids - set(loaded)
            assert not missing, f"{len(missing)} valid ids were never loaded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--files", type=int, default=30, help="drops in all, arriving over the rounds")
    parser.add_argument("--rows", type=int, default=40_000, help="rows per drop")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--retry-seconds", type=float, default=6.0, help="ECOM_INGEST_DB_RETRY_SECONDS for the runs")
    parser.add_argument("--out", type=Path, default=Path("test-artifacts/crash_campaign.json"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ecom-ingest-campaign-"))
    server = PrivatePostgres(work / "pgdata")
    landing = work / "landing"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOM_INGEST_")}
    env.update({
        "ECOM_INGEST_HOME": str(work / "home"), "ECOM_INGEST_LANDING_DIR": str(landing),
        "ECOM_INGEST_DATABASE_URL": server.url, "ECOM_INGEST_SPARK_MASTER": "local[2]",
        "ECOM_INGEST_MAX_FILES_PER_TRIGGER": "2", "ECOM_INGEST_TRIGGER_SECONDS": "0.5",
        "ECOM_INGEST_DB_RETRY_SECONDS": str(args.retry_seconds),
    })
    print(f"campaign state (run logs, database, landing): {work}", file=sys.stderr)
    valid_ids: set[str] = set()
    dropped = 0

    def drop(count: int) -> None:
        nonlocal dropped
        for _ in range(min(count, args.files - dropped)):
            frame = generate_events(args.rows, rng=rng, invalid_rate=0.02)
            write_drop(frame, landing, f"campaign_{dropped:04d}.csv")
            valid_ids.update(frame.loc[frame["expected_reason"] == "", "event_id"])
            dropped += 1

    drop(max(1, args.files // 3))
    per_round = max(1, (args.files - dropped) // max(1, args.rounds))
    rounds: list[Round] = []
    started = time.monotonic()
    try:
        for number in range(1, args.rounds + 1):
            drop(per_round)
            command = str(rng.choice(["ingest", "stream"]))
            action = "outage" if rng.random() < 0.3 else "kill"
            # Most strikes land once Spark is up (its start-up takes seconds and varies
            # with load), some during start-up itself.
            during_start_up = rng.random() < 0.2
            delay_s = float(rng.uniform(0.0, 5.0 if during_start_up else 10.0))
            outage_s = float(rng.uniform(1.0, 2 * args.retry_seconds)) if action == "outage" else None
            log_path = work / f"round_{number:02d}_{command}.log"
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", command],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            launched = time.monotonic()
            if not during_start_up:
                while process.poll() is None and "spark session ready" not in log_path.read_text(errors="replace"):
                    time.sleep(0.1)
            try:
                process.wait(delay_s)
            except subprocess.TimeoutExpired:
                pass
            at_s = time.monotonic() - launched
            exit_code: int | None
            if action == "kill":
                exit_code = process.poll()
                if exit_code is None:
                    kill_tree(process)
            else:
                server.stop()
                time.sleep(outage_s)
                server.start()
                exit_code = _stop(process, timeout=120)
            committed, loaded = _figures(server)
            lines = log_path.read_text(errors="replace").strip().splitlines()
            rounds.append(Round(number, command, action, round(at_s, 1), round(outage_s, 1) if outage_s else None,
                                exit_code, lines[-1][:300] if lines else "", committed, loaded))
            print(
                f"round {number:2d}: {command:6s} {action:6s} at {at_s:4.1f} s"
                + (f", database down {outage_s:.1f} s" if outage_s else "")
                + f" -> exit {exit_code if exit_code is not None else 'killed'};"
                f" {committed}/{dropped} files committed, {loaded} rows loaded"
                + (f"\n          {rounds[-1].last_line}" if exit_code not in (None, 0) else ""),
                file=sys.stderr, flush=True,
            )
            _check_invariants(server, valid_ids, final=False)

        drop(args.files)  # whatever has not arrived yet
        final = subprocess.run(
            [sys.executable, "-m", "ecom_ingest_dagster.tools.cli", "ingest"], env=env, capture_output=True, text=True
        )
        assert final.returncode == 0, final.stderr[-3000:]
        _check_invariants(server, valid_ids, final=True)
        committed, loaded = _figures(server)
        assert committed == dropped, f"{committed} of {dropped} files in the ledger"
        result = {
            "rounds": [dataclasses.asdict(r) for r in rounds],
            "kills": sum(1 for r in rounds if r.action == "kill" and r.exit_code is None),
            "outages": sum(1 for r in rounds if r.action == "outage"),
            "files": dropped,
            "valid_ids": len(valid_ids),
            "loaded_ids": loaded,
            "exact_id_set": loaded == len(valid_ids),
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(
            f"campaign: {result['kills']} kills, {result['outages']} outages, {dropped} files;"
            f" {loaded} rows loaded = {len(valid_ids)} valid ids, each once: {result['exact_id_set']}"
            f" ({result['elapsed_s']:.0f} s; {args.out})",
            file=sys.stderr,
        )
        return 0
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass


if __name__ == "__main__":
    sys.exit(main())
