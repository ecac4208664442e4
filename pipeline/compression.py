"""One table of compression codecs, each a pair of streaming stages.

Every codec writes the stock tool's format, so a user can restore without this package: ``.gz`` output
decompresses with ``gzip -dc``, ``.zst`` with ``zstd -dc`` and ``.br`` with ``brotli -d``. Decompressors
accept what those tools write, including several concatenated gzip members or zstd frames.

Contract of the stages (see :class:`~prefect_db_backup.pipeline.stages.Stage`):

* Compressors hold at most the codec's window; :meth:`Stage.result` reports ``{"codec", "level"}``.
* Decompressors raise :class:`~prefect_db_backup.errors.IntegrityError` on corrupt input, on trailing
  bytes that are not another member/frame, and, at :meth:`Stage.finish`, on input that ends before the
  stream does (truncation). Empty input is truncated input: a valid stream always has at least one frame.
* gzip and brotli decompressors inflate in pieces of at most :data:`DECOMPRESS_PIECE` bytes; their
  :meth:`~Decompressor.pieces` generator lets a consumer keep a "zip bomb" chunk from ever being held in
  memory at once. (``zstandard``'s streaming decompressor offers no output limit: a zstd piece is the
  whole output of one input chunk.)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import brotli
import zstandard
from prefect_db_backup.errors import ConfigurationError, IntegrityError
from prefect_db_backup.pipeline.stages import Stage

#: Largest piece of output a gzip or brotli decompressor produces from one step.
DECOMPRESS_PIECE = 1 << 20

_BROTLI_MIN_BLOCK = 64 << 10
# brotli's output limit is checked per allocation block (blocks double in size), so one call may return up
# to about twice the limit: asking for half a piece keeps every piece within DECOMPRESS_PIECE.
_BROTLI_OUTPUT_LIMIT = DECOMPRESS_PIECE // 2
#: Compressed bytes handed to zstd per call: worst case (run-length blocks of 3-4 bytes per 128 KiB) this
#: bounds one output piece to 32 MiB; for ordinary dumps a piece is a few KiB (smaller slices cost
#: restore throughput: 256 bytes halved it on poorly compressible data).
_ZSTD_INPUT_SLICE = 1024
_GZIP_WBITS = 31  # zlib's "gzip wrapper" mode: a real gzip member (RFC 1952), not a raw or zlib stream.


class Compressor(Stage):
    """A compressing stage; :meth:`result` reports the codec and level."""

    codec: str = "none"

    def __init__(self, level: int) -> None:
        self.name = self.codec
        self.level = level

    def result(self) -> dict[str, Any]:
        """Report the codec and the level used."""
        return {"codec": self.codec, "level": self.level}


class Decompressor(Stage):
    """A decompressing stage that can also hand out its output in bounded pieces.

    :meth:`process` and :meth:`finish` join what :meth:`pieces` and :meth:`finish_pieces` yield; a consumer
    that must bound its memory even for a "zip bomb" iterates those generators instead.
    """

    codec: str = "none"

    def __init__(self) -> None:
        self.name = f"{self.codec}-decompress"

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """Decompress ``data``, yielding the output in bounded pieces.

        Raises:
            IntegrityError: The input is not a valid stream of this codec.
        """
        raise NotImplementedError

    def iter_process(self, data: bytes) -> Iterator[bytes]:
        """Decompress one chunk piece by piece (see :meth:`pieces`)."""
        return self.pieces(data)

    def iter_finish(self) -> Iterator[bytes]:
        """Finish piece by piece (see :meth:`finish_pieces`)."""
        return self.finish_pieces()

    def finish_pieces(self) -> Iterator[bytes]:
        """Yield the remaining output; raise if the stream is incomplete.

        Raises:
            IntegrityError: The input ended before the end of the compressed stream.
        """
        raise NotImplementedError

    def process(self, data: bytes) -> bytes:
        """Decompress one chunk (see :meth:`pieces`)."""
        return b"".join(self.pieces(data))

    def finish(self) -> bytes:
        """Check that the stream is complete and return the remaining output (see :meth:`finish_pieces`)."""
        return b"".join(self.finish_pieces())

    def result(self) -> dict[str, Any]:
        """Report the codec."""
        return {"codec": self.codec}

    def _corrupt(self, detail: str) -> IntegrityError:
        return IntegrityError(
            f"{self.codec} data is corrupt: {detail}",
            hint="the stored file was damaged or is not in this format; restore from another backup",
        )

    def _truncated(self) -> IntegrityError:
        return IntegrityError(
            f"{self.codec} data is truncated: the input ended before the end of the compressed stream",
            hint="the stored file is incomplete (interrupted upload or copy); restore from another backup",
        )


# --- none ----------------------------------------------------------------------------------------------


class _PassThrough(Compressor):
    codec = "none"

    def process(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _PassThroughDecompressor(Decompressor):
    codec = "none"

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def finish_pieces(self) -> Iterator[bytes]:
        return iter(())


# --- gzip ----------------------------------------------------------------------------------------------


class _GzipCompressor(Compressor):
    """Writes one gzip member (RFC 1952) with zlib at the given level."""

    codec = "gzip"

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self._z = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)

    def process(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class _GzipDecompressor(Decompressor):
    """Reads one or more concatenated gzip members, as ``gzip -dc`` does."""

    codec = "gzip"

    def __init__(self) -> None:
        super().__init__()
        self._z = zlib.decompressobj(_GZIP_WBITS)
        self._in_member = False  # True once a member has started and until its trailer is read
        self._seen_member = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        # python-zstandard has no output limit per call, so the input is fed in small slices: a zstd block
        # expands to at most 128 KiB, which bounds one piece even for the most compressible data.
        view = memoryview(data)
        for start in range(0, len(view), _ZSTD_INPUT_SLICE):
            yield from self._decompress(view[start : start + _ZSTD_INPUT_SLICE].tobytes())

    def _decompress(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while pending:
            if self._z.eof:
                self._z = zlib.decompressobj(_GZIP_WBITS)
            self._in_member = True
            self._seen_member = True
            try:
                out = self._z.decompress(pending, DECOMPRESS_PIECE)
                if out:
                    yield out
                # Drain what is buffered for the input already given, one bounded piece at a time.
                while self._z.unconsumed_tail and not self._z.eof:
                    out = self._z.decompress(self._z.unconsumed_tail, DECOMPRESS_PIECE)
                    if out:
                        yield out
            except zlib.error as exc:
                raise self._corrupt(str(exc)) from exc
            if self._z.eof:
                self._in_member = False
                # Bytes after a member's trailer must be another member (checked when it is parsed).
                pending = self._z.unused_data
            else:
                pending = b""

    def finish_pieces(self) -> Iterator[bytes]:
        if self._in_member or not self._seen_member:
            try:
                out = self._z.flush()
            except zlib.error as exc:  # pragma: no cover - flush without input raises nothing in practice
                raise self._corrupt(str(exc)) from exc
            if out:
                yield out
            if not self._z.eof:
                raise self._truncated()


# --- brotli --------------------------------------------------------------------------------------------


class _BrotliCompressor(Compressor):
    """Writes one brotli stream (RFC 7932) at the given quality.

    Input is gathered into blocks of at least :data:`_BROTLI_MIN_BLOCK` bytes: at qualities 0 and 1 the
    encoder compresses each ``process()`` input on its own, so tiny pieces would expand the data.
    """

    codec = "brotli"

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self._b = brotli.Compressor(quality=level)
        self._gather = bytearray()

    def process(self, data: bytes) -> bytes:
        if not self._gather and len(data) >= _BROTLI_MIN_BLOCK:
            return self._b.process(data)
        self._gather += data
        if len(self._gather) < _BROTLI_MIN_BLOCK:
            return b""
        block = bytes(self._gather)
        self._gather.clear()
        return self._b.process(block)

    def finish(self) -> bytes:
        head = self._b.process(bytes(self._gather)) if self._gather else b""
        self._gather.clear()
        return head + self._b.finish()


class _BrotliDecompressor(Decompressor):
    """Reads one brotli stream; bytes after its end are an error."""

    codec = "brotli"

    def __init__(self) -> None:
        super().__init__()
        self._b = brotli.Decompressor()
        self._started = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        if self._b.is_finished():
            raise self._corrupt("unexpected bytes after the end of the brotli stream")
        self._started = True
        try:
            out = self._b.process(data, output_buffer_limit=_BROTLI_OUTPUT_LIMIT)
            # With an output limit the decoder returns one bounded piece per call (about 32 KiB in brotli
            # 1.2) and keeps the rest; can_accept_more_data() alone does not tell whether output is pending
            # (it may say True while more is buffered), so drain until a call yields nothing.
            idle = 0
            while not self._b.is_finished():
                if out:
                    yield out
                    idle = 0
                elif self._b.can_accept_more_data():
                    break  # everything decodable from the input so far has been returned
                else:
                    idle += 1
                    if idle > 2:  # no progress and no room for input: the decoder is wedged
                        raise self._corrupt("the decoder stopped making progress")
                out = self._b.process(b"", output_buffer_limit=_BROTLI_OUTPUT_LIMIT)
            else:
                if out:
                    yield out
        except brotli.error as exc:
            raise self._corrupt("the decoder rejected the input (damaged, or bytes after the end)") from exc

    def finish_pieces(self) -> Iterator[bytes]:
        if not self._started or not self._b.is_finished():
            raise self._truncated()
        return iter(())


# --- zstd ----------------------------------------------------------------------------------------------


class _ZstdCompressor(Compressor):
    """Writes one zstd frame with a content checksum, single-threaded.

    Threads are off on purpose: with two cores the dump takes one, and zstd's worker threads would compete
    with it while adding 70-80 MiB of memory (see docs on performance).
    """

    codec = "zstd"

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self._z = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=0).compressobj()

    def process(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class _ZstdDecompressor(Decompressor):
    """Reads one or more concatenated zstd frames, as ``zstd -dc`` does; checks frame checksums."""

    codec = "zstd"

    def __init__(self) -> None:
        super().__init__()
        self._dctx = zstandard.ZstdDecompressor()
        self._z = self._dctx.decompressobj()
        self._in_frame = False
        self._seen_frame = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        # python-zstandard has no output limit per call, so the input is fed in small slices: a zstd block
        # expands to at most 128 KiB, which bounds one piece even for the most compressible data.
        view = memoryview(data)
        for start in range(0, len(view), _ZSTD_INPUT_SLICE):
            yield from self._decompress(view[start : start + _ZSTD_INPUT_SLICE].tobytes())

    def _decompress(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while pending:
            if self._z.eof:
                self._z = self._dctx.decompressobj()
            self._in_frame = True
            self._seen_frame = True
            try:
                out = self._z.decompress(pending)
            except zstandard.ZstdError as exc:
                raise self._corrupt(str(exc)) from exc
            if out:
                yield out
            if self._z.eof:
                self._in_frame = False
                pending = self._z.unused_data
            else:
                pending = b""

    def finish_pieces(self) -> Iterator[bytes]:
        if self._in_frame or not self._seen_frame:
            raise self._truncated()
        return iter(())


# --- the table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """A compression format: its name, file extension, level range and streaming stages.

    Attributes:
        name: ``none``, ``gzip``, ``brotli`` or ``zstd``.
        extension: Suffix added to a file name (``""``, ``.gz``, ``.br``, ``.zst``).
        default_level: Level used when none is configured.
        min_level: Lowest accepted level.
        max_level: Highest accepted level.
    """

    name: str
    extension: str
    default_level: int
    min_level: int
    max_level: int
    _compress: Callable[[int], Compressor] = field(repr=False, compare=False)
    _decompress: Callable[[], Decompressor] = field(repr=False, compare=False)

    def compressor(self, level: int | None = None) -> Compressor:
        """Return a new compressing stage.

        Args:
            level: Compression level; ``None`` means :attr:`default_level`.

        Raises:
            ConfigurationError: The level is outside ``min_level..max_level``.
        """
        return self._compress(validate_level(self, level))

    def decompressor(self) -> Decompressor:
        """Return a new decompressing stage (raises IntegrityError on corrupt or truncated input)."""
        return self._decompress()


CODECS: dict[str, Codec] = {
    "none": Codec("none", "", 0, 0, 0, _PassThrough, _PassThroughDecompressor),
    # Level 6 is gzip's own default (about 75 MB/s in-process); the `gzip` module's default 9 is much slower.
    "gzip": Codec("gzip", ".gz", 6, 1, 9, _GzipCompressor, _GzipDecompressor),
    # Quality 3, not brotli's 11 nor the habitual 5. Measured on a 2-core machine (Nov 2026), a pg_dump makes
    # 170-230 MB/s, brotli q5 manages about 65 MB/s (the slowest shell pipeline, 38 MB/s) and q11 0.4 MB/s,
    # while q1 reaches 450 MB/s. Quality 4 and up switch to a slower match finder: on dump-like text we
    # measured q3 2.6-2.7x faster than q5 (CPU time, same run) for a compression ratio of 2.20 versus 2.55,
    # which puts q3 near 170 MB/s on that machine, roughly keeping pace with the dump. zstd-3 beats both.
    "brotli": Codec("brotli", ".br", 3, 0, 11, _BrotliCompressor, _BrotliDecompressor),
    # Level 3 is zstd's own default: about 365 MB/s per core, ratio 8.6 on a real dump.
    "zstd": Codec("zstd", ".zst", 3, 1, 19, _ZstdCompressor, _ZstdDecompressor),
}


def get_codec(name: str) -> Codec:
    """Return the codec called ``name``.

    Raises:
        ConfigurationError: ``name`` is not a known codec; the message lists the known names.
    """
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(CODECS))
        raise ConfigurationError(f"compression: unknown codec {name!r}; choose one of: {known}") from None


def validate_level(codec: Codec, level: int | None) -> int:
    """Return the effective level for ``codec``: ``level``, or the codec's default when ``None``.

    Raises:
        ConfigurationError: ``level`` is not an integer in ``codec.min_level..codec.max_level``; the message
            names the field ``compression_level`` and the allowed range.
    """
    if level is None:
        return codec.default_level
    is_int = isinstance(level, int) and not isinstance(level, bool)
    if not is_int or not codec.min_level <= level <= codec.max_level:
        raise ConfigurationError(
            f"compression_level: {level!r} is not valid for {codec.name}; "
            f"use an integer from {codec.min_level} to {codec.max_level} (default {codec.default_level})"
        )
    return level
