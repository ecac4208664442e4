"""The one interface every stream transformation implements, and the stages that only observe.

A backup of one database is a recipe of stages applied in order to the dump's chunks: count the plain
bytes, compress, encrypt, then hash and count the stored bytes. Restoring runs the inverse recipe
(decrypt, decompress). Each stage reports a small result (sizes, hashes, parameters) that the manifest
records.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO


class Stage(ABC):
    """A streaming transformation: bytes in, bytes out, in bounded memory.

    Callers call :meth:`process` for each chunk, then :meth:`finish` exactly once, then :meth:`result`.
    A stage may return ``b""`` from :meth:`process` (it is buffering) and may return more or fewer bytes
    than it was given; it must never hold more than a bounded amount of data (a chunk or a codec window).
    """

    name: str = "stage"

    @abstractmethod
    def process(self, data: bytes) -> bytes:
        """Transform one chunk and return whatever output is ready."""

    @abstractmethod
    def finish(self) -> bytes:
        """Flush and return the remaining output. Raises on input that turned out invalid."""

    def result(self) -> dict[str, Any]:
        """Facts about the stream worth recording (only valid after :meth:`finish`)."""
        return {}

    def iter_process(self, data: bytes) -> Iterator[bytes]:
        """Like :meth:`process`, but may hand out the output in bounded pieces (decompressors do)."""
        out = self.process(data)
        if out:
            yield out

    def iter_finish(self) -> Iterator[bytes]:
        """Like :meth:`finish`, but may hand out the output in bounded pieces."""
        out = self.finish()
        if out:
            yield out


class CountStage(Stage):
    """Passes bytes through unchanged and counts them."""

    name = "count"

    def __init__(self) -> None:
        self.size = 0

    def process(self, data: bytes) -> bytes:
        """Count ``data`` and return it unchanged."""
        self.size += len(data)
        return data

    def finish(self) -> bytes:
        """Nothing is buffered: return nothing."""
        return b""

    def result(self) -> dict[str, Any]:
        """Report the byte count."""
        return {"size": self.size}


class HashStage(CountStage):
    """Passes bytes through unchanged, counting them and computing their SHA-256."""

    name = "sha256"

    def __init__(self) -> None:
        super().__init__()
        self._hash = hashlib.sha256()

    def process(self, data: bytes) -> bytes:
        """Hash and count ``data``, and return it unchanged."""
        self._hash.update(data)
        return super().process(data)

    @property
    def hexdigest(self) -> str:
        """SHA-256 of every byte seen so far, as lowercase hex."""
        return self._hash.hexdigest()

    def result(self) -> dict[str, Any]:
        """Report the byte count and the SHA-256."""
        return {"size": self.size, "sha256": self.hexdigest}


def apply(stages: Sequence[Stage], data: bytes) -> bytes:
    """Run one chunk through ``stages`` in order."""
    for stage in stages:
        if not data:
            return b""
        data = stage.process(data)
    return data


def finish(stages: Sequence[Stage]) -> bytes:
    """Finish ``stages`` in order, pushing each stage's tail through the stages after it."""
    out = b""
    for stage in stages:
        if out:
            out = stage.process(out)
        out += stage.finish()
    return out


def transform(chunks: Iterable[bytes], stages: Sequence[Stage]) -> Iterable[bytes]:
    """Yield the output of ``stages`` applied to ``chunks``, finishing them at the end."""
    for chunk in chunks:
        out = apply(stages, chunk)
        if out:
            yield out
    tail = finish(stages)
    if tail:
        yield tail


def iter_apply(stages: Sequence[Stage], data: bytes) -> Iterator[bytes]:
    """Run one chunk through ``stages`` lazily, piece by piece, so no stage's whole output is ever held."""
    if not stages:
        if data:
            yield data
        return
    for piece in stages[0].iter_process(data):
        yield from iter_apply(stages[1:], piece)


def iter_finish(stages: Sequence[Stage]) -> Iterator[bytes]:
    """Finish ``stages`` lazily: each stage's tail passes the later stages before they finish."""
    for index, stage in enumerate(stages):
        for piece in stage.iter_finish():
            yield from iter_apply(stages[index + 1 :], piece)


class StageReader:
    """A readable stream that applies stages to another readable stream (for restores and decrypt).

    Output is produced lazily, piece by piece, so memory stays bounded by the stages' piece sizes even when
    a small chunk of input expands enormously (a highly compressible dump).

    Args:
        raw: The stream to read from.
        stages: Stages to apply in order.
        chunk_size: Bytes read from ``raw`` at a time.
    """

    def __init__(self, raw: BinaryIO, stages: Sequence[Stage], chunk_size: int = 1 << 20) -> None:
        self._raw = raw
        self._stages = list(stages)
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._pieces = self._produce()

    def _produce(self) -> Iterator[bytes]:
        while chunk := self._raw.read(self._chunk_size):
            yield from iter_apply(self._stages, chunk)
        yield from iter_finish(self._stages)

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` transformed bytes (all remaining when negative); ``b""`` at the end."""
        while size < 0 or len(self._buffer) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        if size < 0:
            size = len(self._buffer)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def readable(self) -> bool:
        """Return True: the stream can be read."""
        return True

    def close(self) -> None:
        """Close the underlying stream."""
        self._raw.close()

    def __enter__(self) -> StageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
