"""Cancelling a running backup (the worker's SIGTERM to the flow process) ends the dump's whole process group
and leaves nothing visible at the destination."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import require_infrastructure
from servers import postgres as pg

pytestmark = pytest.mark.usefixtures("prefect_server")

SCRIPT = textwrap.dedent(
    """
    import sys
    from prefect_db_backup.blocks import BackupJob, LocalDestination, PostgresSource
    from prefect_db_backup.flows.backup import backup_database

    job = BackupJob(
        name="cancel-me",
        source=PostgresSource(host="127.0.0.1", port=5432, user="postgres", databases=[sys.argv[1]]),
        destinations=[LocalDestination(path=sys.argv[2])],
    )
    backup_database(job)
    """
)


def _pg_dumps_of(database: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"pg_dump") and database.encode() in b" ".join(cmdline):
            pids.append(int(pid))
    return pids


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sigterm_to_the_flow_process_ends_the_dump(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    require_infrastructure(pg.available(), "PostgreSQL on 127.0.0.1:5432 with its client tools")
    database = pg.create_database("pdb_cancel")
    blocker = pg.connect(database)
    try:
        blocker.execute("CREATE TABLE held (id int)")
        blocker.autocommit = False
        blocker.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")  # pg_dump now waits for this lock
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, database, str(tmp_path / "dest")], env=env)
        try:
            assert _wait_for(lambda: _pg_dumps_of(database), 120), "pg_dump never started"
            dumps = _pg_dumps_of(database)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert _wait_for(lambda: not _pg_dumps_of(database), 15), "pg_dump outlived the cancelled run"
        for pid in dumps:
            assert not Path(f"/proc/{pid}").exists()
        visible = [p for p in (tmp_path / "dest").rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert visible == []
        assert [p for p in (tmp_path / "dest").rglob("*.partial")] == [], (
            "the aborted upload left its temp file"
        )
    finally:
        blocker.rollback()
        blocker.close()
        pg.drop_database(database)
