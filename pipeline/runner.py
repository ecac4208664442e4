"""Pump one dump through the stages to every destination writer, reading it exactly once.

The recipe for a backup file is ``count plain bytes -> compress -> encrypt -> hash and count stored bytes``;
the stored bytes are written to each destination's
:class:`~prefect_db_backup.adapters.destination.ObjectWriter`.
A reader thread keeps the dump tool's pipe drained while the caller's thread compresses and encrypts, so the
two overlap on two cores. Memory is bounded by ``chunk_size x (prefetch + 2)`` plus codec state.

A writer that fails is aborted and dropped; the others go on. When every writer has failed, the dump is
stopped: there is nobody left to write to.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefect_db_backup.adapters.destination import ObjectWriter
from prefect_db_backup.errors import BackupError
from prefect_db_backup.pipeline.stages import CountStage, HashStage, Stage, apply, finish

DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_PREFETCH = 4


class Readable(Protocol):
    """Anything with ``read(size) -> bytes``."""

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes; ``b""`` at the end."""
        ...


class AllWritersFailedError(BackupError):
    """Every destination writer failed, so the dump was stopped."""


@dataclass
class PumpResult:
    """What one pass of a dump through the pipeline produced.

    Attributes:
        plaintext_size: Bytes read from the dump.
        stored_size: Bytes written to each destination.
        sha256: SHA-256 of the stored bytes.
        stage_results: Each transforming stage's :meth:`~Stage.result`, by stage name.
        failed: Writers that failed, by key, with their error.
        seconds: Wall time of the pass.
    """

    plaintext_size: int
    stored_size: int
    sha256: str
    stage_results: dict[str, dict[str, Any]]
    failed: dict[str, BaseException] = field(default_factory=dict)
    seconds: float = 0.0


class _Prefetcher:
    """Reads chunks on a thread into a bounded queue."""

    _END = object()

    def __init__(self, reader: Readable, chunk_size: int, depth: int) -> None:
        self._reader = reader
        self._chunk_size = chunk_size
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dump-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._reader.read(self._chunk_size)
                if not chunk:
                    break
                self._put(chunk)
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def chunks(self) -> Any:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self._stop.set()


def pump(
    reader: Readable,
    stages: Sequence[Stage],
    writers: Mapping[str, ObjectWriter],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    prefetch: int = DEFAULT_PREFETCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> PumpResult:
    """Read ``reader`` to its end, transform it with ``stages`` and write the result to every writer.

    Writers are neither committed nor aborted here on success: the caller decides. A writer that raises
    is aborted and reported in :attr:`PumpResult.failed`.

    Args:
        reader: The plain dump.
        stages: Transforming stages in order (compress, then encrypt); counting and hashing are added here.
        writers: Destination writers by key (the destination's name).
        chunk_size: Bytes read at a time.
        prefetch: Chunks the reader thread may read ahead (0 reads on the calling thread).
        on_progress: Called after each chunk with (plain bytes so far, stored bytes so far); must be cheap.

    Returns:
        Sizes, hash, stage results and failed writers.

    Raises:
        AllWritersFailedError: If every writer failed (the first error is the cause).
        Exception: Whatever reading the dump or a stage raises.
    """
    started = time.monotonic()
    plain, stored = CountStage(), HashStage()
    chain: list[Stage] = [plain, *stages, stored]
    live = dict(writers)
    failed: dict[str, BaseException] = {}

    def deliver(data: bytes) -> None:
        for key, writer in list(live.items()):
            try:
                writer.write(data)
            except Exception as exc:
                failed[key] = exc
                del live[key]
                writer.abort()
        if not live:
            first = next(iter(failed.values()))
            raise AllWritersFailedError(f"every destination failed; first error: {first}") from first

    prefetcher = _Prefetcher(reader, chunk_size, prefetch) if prefetch > 0 else None
    try:
        chunks = prefetcher.chunks() if prefetcher else iter(lambda: reader.read(chunk_size), b"")
        for chunk in chunks:
            out = apply(chain, chunk)
            if out:
                deliver(out)
            if on_progress is not None:
                on_progress(plain.size, stored.size)
        tail = finish(chain)
        if tail:
            deliver(tail)
    finally:
        if prefetcher is not None:
            prefetcher.stop()
    return PumpResult(
        plaintext_size=plain.size,
        stored_size=stored.size,
        sha256=stored.hexdigest,
        stage_results={stage.name: stage.result() for stage in stages},
        failed=failed,
        seconds=time.monotonic() - started,
    )
