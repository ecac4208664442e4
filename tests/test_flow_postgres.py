"""PostgreSQL through the whole backup flow: awkward data restored and compared; no secret leaks anywhere."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.destinations.local import LocalAdapter
from prefect_db_backup.adapters.sources.postgres import PostgresAdapter
from prefect_db_backup.blocks import BackupJob, EncryptionProfile, LocalDestination, PostgresSource
from prefect_db_backup.flows.backup import backup_database
from prefect_db_backup.restore import restore_backup
from servers import postgres as pg
from servers.postgres import load_awkward, snapshot, verify_restored

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def awkward_db() -> Iterator[str]:
    require_infrastructure(pg.available(), "PostgreSQL on 127.0.0.1:5432 with its client tools")
    name = pg.create_database("pdb_flow")
    try:
        load_awkward(name)
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture
def fresh_db() -> Iterator[str]:
    name = pg.create_database("pdb_flow_restore")
    try:
        yield name
    finally:
        pg.drop_database(name)


def test_awkward_database_round_trips_through_the_flow(
    awkward_db: str, fresh_db: str, tmp_path: Path
) -> None:
    key = EncryptionProfile.generate()
    job = BackupJob(
        name="pg-flow",
        source=PostgresSource(
            host=pg.HOST, port=pg.PORT, user="postgres", databases=[awkward_db], include_globals=True
        ),
        destinations=[LocalDestination(path=str(tmp_path))],
        compression="zstd",
        encryption=key,
    )
    state = backup_database(job, return_state=True)
    result = state.result()
    assert result.status == "success"
    artifacts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 2 and all(a.data == 100 for a in progress), progress
    assert any("dumped" in (a.description or "") for a in progress)
    [table] = [a for a in artifacts if a.type == "table"]
    assert awkward_db in str(table.data)
    by_name = {d.name: d for d in result.databases}
    assert set(by_name) == {awkward_db, "globals"}
    assert by_name["globals"].kind == "globals"
    database = by_name[awkward_db]
    assert database.path and database.path.endswith(".dump.zst.enc")
    assert by_name["globals"].path and by_name["globals"].path.endswith(".sql.zst.enc")

    manifest = json.loads((tmp_path / f"{database.path}.meta.json").read_text())
    assert manifest["engine"] == "postgresql" or manifest["engine"].startswith("postgres")
    assert manifest["server_version"].startswith("15")
    assert manifest["client_version"]

    restore_backup(
        LocalAdapter(root=tmp_path),
        database.path,
        PostgresAdapter(pg.HOST, pg.PORT, "postgres", None),
        key=key.key_bytes(),
        target_database=fresh_db,
    )
    assert snapshot(fresh_db) == snapshot(awkward_db)
    verify_restored(awkward_db, fresh_db)
    # server-wide objects restore too, through a source that was not configured to dump them
    restore_backup(
        LocalAdapter(root=tmp_path),
        by_name["globals"].path,
        PostgresAdapter(pg.HOST, pg.PORT, "postgres", None),
        key=key.key_bytes(),
    )


async def _artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


async def _run_records(flow_run_id: Any) -> list[str]:
    """Everything Prefect stored about a flow run and its subflows: logs, artifacts, parameters, states."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    texts: list[str] = []
    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        ids = [r.id for r in runs + children]
        for run in runs + children:
            texts.append(run.model_dump_json())
        logs: list[Any] = []
        for _ in range(30):  # logs reach the API in batches, shortly after the run returns
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200
            )
            if logs:
                break
            await asyncio.sleep(0.5)
        texts += [log.message for log in logs]
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        texts += [artifact.model_dump_json() for artifact in artifacts]
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        texts += [task_run.model_dump_json() for task_run in task_runs]
    assert logs and task_runs, "the scan must have something to scan"
    return texts


def _cmdlines() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(
                    Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                )
            except OSError:
                continue
    return out


def test_password_never_leaks(awkward_db: str, tmp_path: Path) -> None:
    with pg.scram_role() as (role, password):
        job = BackupJob(
            name="pg-secret",
            source=PostgresSource(
                host=pg.HOST, port=pg.PORT, user=role, password=password, databases=[awkward_db]
            ),
            destinations=[LocalDestination(path=str(tmp_path))],
            compression="gzip",
        )
        seen: list[str] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.extend(line for line in _cmdlines() if "pg_dump" in line or password in line)
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            state = backup_database(job, return_state=True)
        finally:
            stop.set()
            watcher.join()
        assert state.is_completed(), state.message
        assert any("pg_dump" in line for line in seen), "the watcher never saw the dump running"
        assert not [line for line in seen if password in line], "password in a process's arguments"

        # a failing run (wrong password) must not leak it either
        bad = job.model_copy(
            update={
                "source": PostgresSource(
                    host=pg.HOST, port=pg.PORT, user=role, password=password + "x", databases=[awkward_db]
                )
            }
        )
        failed = backup_database(bad, return_state=True)
        assert failed.is_failed()
        assert (
            "password" in (failed.message or "").lower() or "authentication" in (failed.message or "").lower()
        )

        assert asyncio.run(_artifacts(state.state_details.flow_run_id)), "the successful run has artifacts"
        for run_state in (state, failed):
            texts = asyncio.run(_run_records(run_state.state_details.flow_run_id))
            leaks = [t for t in texts if password in t or (password + "x") in t]
            assert not leaks, leaks[:1]
        for file in tmp_path.rglob("*"):
            if file.is_file():
                assert password.encode() not in file.read_bytes(), file
        storage = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")) / "storage"
        if storage.exists():
            for file in storage.rglob("*"):
                assert not file.is_file() or password.encode() not in file.read_bytes(), file
