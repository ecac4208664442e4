"""The pump: one read of the dump reaches every writer; failing writers are dropped; memory is bounded."""

from __future__ import annotations

import hashlib
import io
import random
import tracemalloc
from pathlib import Path

import pytest
from prefect_db_backup.adapters.destinations.local import LocalAdapter
from prefect_db_backup.errors import TransientStorageError
from prefect_db_backup.pipeline.compression import get_codec
from prefect_db_backup.pipeline.encryption import DecryptStage, EncryptStage
from prefect_db_backup.pipeline.keys import generate_key
from prefect_db_backup.pipeline.runner import AllWritersFailedError, pump
from prefect_db_backup.pipeline.stages import StageReader, transform


class _Generated(io.RawIOBase):
    """A non-seekable stream of ``size`` pseudo-random but compressible bytes, counting reads."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.reads = 0
        self._block = (random.Random(7).randbytes(512) * 64)[:32768]

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        n = self.remaining if n < 0 else min(n, self.remaining)
        out = (self._block * (n // len(self._block) + 1))[:n]
        self.remaining -= n
        return out


class _FailingWriter:
    def __init__(self, after: int) -> None:
        self.after = after
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.after -= len(data)
        if self.after < 0:
            raise TransientStorageError("injected failure")

    def commit(self) -> None:
        raise AssertionError("never committed")

    def abort(self) -> None:
        self.aborted = True


def _read_back(dest: LocalAdapter, path: str, key: bytes) -> bytes:
    stages = [DecryptStage(key), get_codec("zstd").decompressor()]
    with StageReader(dest.open_reader(path), stages) as reader:
        return reader.read()


@pytest.mark.parametrize("prefetch", [0, 4])
def test_pump_fans_out_to_every_writer(tmp_path: Path, prefetch: int) -> None:
    key = generate_key()
    a, b = LocalAdapter(root=tmp_path / "a"), LocalAdapter(root=tmp_path / "b")
    source = _Generated(5 * (1 << 20) + 123)
    expected = _Generated(5 * (1 << 20) + 123).read(-1)
    writers = {"a": a.open_writer("x/file.zst.enc"), "b": b.open_writer("x/file.zst.enc")}
    stages = [get_codec("zstd").compressor(3), EncryptStage(key, chunk_size=65536)]
    result = pump(source, stages, writers, chunk_size=1 << 20, prefetch=prefetch)
    for writer in writers.values():
        writer.commit()
    assert result.plaintext_size == len(expected)
    assert result.failed == {}
    for dest in (a, b):
        stored = dest.read_bytes("x/file.zst.enc")
        assert len(stored) == result.stored_size
        assert hashlib.sha256(stored).hexdigest() == result.sha256
        assert _read_back(dest, "x/file.zst.enc", key) == expected


def test_failing_writer_is_aborted_and_others_continue(tmp_path: Path) -> None:
    good = LocalAdapter(root=tmp_path / "good")
    bad = _FailingWriter(after=100_000)
    writers = {"good": good.open_writer("f"), "bad": bad}
    result = pump(_Generated(3 << 20), [get_codec("none").compressor()], writers)  # type: ignore[dict-item]
    writers["good"].commit()
    assert bad.aborted
    assert set(result.failed) == {"bad"}
    assert good.stat("f").size == 3 << 20


def test_all_writers_failing_stops_the_dump() -> None:
    source = _Generated(64 << 20)
    bad = _FailingWriter(after=0)
    with pytest.raises(AllWritersFailedError):
        pump(source, [], {"bad": bad}, prefetch=0)  # type: ignore[dict-item]
    assert bad.aborted
    assert source.remaining > 0, "the dump must stop once nobody is left to write to"


def test_memory_stays_bounded_for_a_large_stream(tmp_path: Path) -> None:
    dest = LocalAdapter(root=tmp_path)
    tracemalloc.start()
    try:
        with dest.open_writer("big") as writer:
            pump(
                _Generated(256 << 20),
                [get_codec("zstd").compressor(1), EncryptStage(generate_key())],
                {"w": writer},
            )
            writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"peak traced memory {peak} bytes for a 256 MiB stream"


def test_stage_reader_keeps_memory_bounded_for_extreme_compression_ratios() -> None:
    """512 MiB of zeros compress to a few KiB; reading them back must never hold the expansion at once."""
    key = generate_key()
    compressed = b"".join(
        transform((bytes(1 << 20) for _ in range(512)), [get_codec("zstd").compressor(3), EncryptStage(key)])
    )
    assert len(compressed) < 1 << 20
    tracemalloc.start()
    try:
        total = 0
        reader = StageReader(io.BytesIO(compressed), [DecryptStage(key), get_codec("zstd").decompressor()])
        while chunk := reader.read(1 << 20):
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 512 << 20
    # one zstd piece is at most 32 MiB (see pipeline.compression); the 512 MiB are never held at once
    assert peak < 100 << 20, f"peak traced memory {peak} bytes"
