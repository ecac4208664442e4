"""The resolved plan of one backup run, shared by the backup tasks in one process.

It holds live adapters and the key, so it is never persisted or sent to the Prefect API: tasks run with
``NO_CACHE`` and ``persist_result=False``, and its ``repr`` shows no secret.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.source import DumpUnit, Source, SourceInfo
from prefect_db_backup.pipeline.compression import Codec


@dataclass
class Target:
    """One destination of the run.

    Attributes:
        key: Stable key within the run (``d1``, ``d2``...).
        adapter: The destination adapter (already wrapped with retries).
        description: Human-readable location without secrets.
        kind: Destination kind (``local``, ``s3``...).
    """

    key: str
    adapter: Destination = field(repr=False)
    description: str
    kind: str


@dataclass
class BackupPlan:
    """Everything the dump and upload steps need, resolved and checked by ``initialize``."""

    job_name: str
    job_id: str | None
    run_id: str
    stamp: str
    started_at: datetime
    source: Source = field(repr=False)
    source_kind: str
    source_name: str | None
    source_description: str
    source_info: SourceInfo
    units: list[DumpUnit]
    targets: list[Target]
    codec: Codec
    level: int | None
    key: bytes | None = field(default=None, repr=False)
    key_id: str | None = None
    chunk_size: int = 1 << 20
    verify: str = "checksum"
    lock: bool = False
    retention: object | None = field(default=None, repr=False)
    estimates: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        """Release the source's and destinations' connections."""
        with contextlib.suppress(Exception):
            self.source.close()
        for target in self.targets:
            with contextlib.suppress(Exception):
                target.adapter.close()
