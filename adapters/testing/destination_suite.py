# ruff: noqa: D102 - each test method is named for the rule it checks
"""The destination conformance suite: one set of tests that every :class:`Destination` must pass.

A backend wires it in with one test class that provides a fresh, empty destination per test::

    import pytest
    from prefect_db_backup.adapters.testing.destination_suite import DestinationSuite

    class TestLocal(DestinationSuite):
        large_listing = True

        @pytest.fixture
        def destination(self, tmp_path):
            return LocalAdapter(root=tmp_path / "root")

Capabilities are declared as class attributes and gate what is checked, never whether a test runs: a
destination that declares no large listing is still listed with a smaller number of entries, and one that
declares no storage lock must say so through ``set_storage_lock`` returning False. Nothing in this suite
skips, so missing infrastructure shows up as a failure of the backend's own fixture.

Optional fixtures a backend may override:

- ``lock_destination``: a destination on storage where locking is enabled (defaults to ``destination``).
- ``secrets``: secret strings (passwords, keys) that must never appear in ``describe()``.

The suite needs pytest, which is a test dependency only; importing this module without pytest fails.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest
from prefect_db_backup.adapters.destination import (
    PROBE_PREFIX,
    Destination,
    DestinationCapabilities,
    ObjectInfo,
)
from prefect_db_backup.errors import BackupError, ConfigurationError, NotFoundError, PermanentError

MiB = 1 << 20

#: Chunk sizes the suite writes in: odd, mixed small and large, never aligned to a part size.
ODD_CHUNK_SIZES = (1, 7919, 65_537, 3, 1 * MiB + 13, 300_007, 2 * MiB - 1, 17)

#: Paths that every destination must refuse before touching storage.
INVALID_PATHS = ("../x", "/abs", "a//b", "a\x00b", "a/../../b", "./a", "a\\b", "")


class _Failure(Exception):
    """Raised by tests to interrupt an upload half-way."""


class PatternStream(io.RawIOBase):
    """A non-seekable, deterministic byte stream of a given length that hashes what it hands out.

    Reads return odd-sized pieces (cycling :data:`ODD_CHUNK_SIZES`) so that writers see unaligned input.
    Memory use is one small pool, whatever the length.
    """

    _POOL_SIZE = 3 * MiB + 4099  # larger than any piece, so one wrap-around is enough

    def __init__(self, length: int, seed: int = 0) -> None:
        super().__init__()
        self._remaining = length
        self._pool = random.Random(seed).randbytes(self._POOL_SIZE)
        self._offset = seed % self._POOL_SIZE
        self._sizes = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        """Return True: the stream can be read."""
        return True

    def seekable(self) -> bool:
        """Return False: like a pipe, the stream cannot seek."""
        return False

    def read_piece(self) -> bytes:
        """Return the next odd-sized piece, or b"" at the end."""
        if self._remaining <= 0:
            return b""
        size = min(ODD_CHUNK_SIZES[self._sizes % len(ODD_CHUNK_SIZES)], self._remaining)
        self._sizes += 1
        start = self._offset
        end = start + size
        if end <= self._POOL_SIZE:
            piece = self._pool[start:end]
        else:
            piece = self._pool[start:] + self._pool[: end - self._POOL_SIZE]
        self._offset = (self._offset + size * 31 + 7) % self._POOL_SIZE
        self._remaining -= size
        self.sha256.update(piece)
        return piece

    def pieces(self) -> Iterator[bytes]:
        """Yield the whole stream as odd-sized pieces (a generator: no seeking, no length)."""
        while piece := self.read_piece():
            yield piece


def stream_upload(
    destination: Destination, path: str, length: int, *, seed: int = 0
) -> tuple[ObjectInfo, str]:
    """Upload ``length`` pattern bytes from a generator; return the commit info and their SHA-256."""
    stream = PatternStream(length, seed)
    with destination.open_writer(path) as writer:
        for piece in stream.pieces():
            writer.write(piece)
        info = writer.commit()
    return info, stream.sha256.hexdigest()


def stream_digest(destination: Destination, path: str, piece_size: int = 64 * 1024) -> tuple[int, str]:
    """Download ``path`` in small pieces; return its size and SHA-256 (bounded memory)."""
    digest = hashlib.sha256()
    size = 0
    with destination.open_reader(path) as reader:
        while piece := reader.read(piece_size):
            assert len(piece) <= piece_size, "read(n) returned more than n bytes"
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


def listed(destination: Destination, prefix: str = "") -> dict[str, int]:
    """Return ``{path: size}`` of a listing, failing on duplicates."""
    result: dict[str, int] = {}
    for info in destination.list(prefix):
        assert info.path not in result, f"list({prefix!r}) returned {info.path!r} twice"
        result[info.path] = info.size
    return result


class DestinationSuite:
    """Mixin of conformance tests. Subclasses provide the ``destination`` fixture and capabilities.

    Attributes:
        large_listing: The protocol lists more than 1,000 entries cheaply; checked with 1,100 objects
            (otherwise with 120).
        large_object_size: Size of the large streamed upload (default 100 MiB).
        interrupted_upload_size: Bytes written before an upload is interrupted; large enough that
            multipart backends have sent parts (default 11 MiB).
        supports_storage_lock: ``set_storage_lock`` really locks objects on ``lock_destination``.
    """

    large_listing: ClassVar[bool] = False
    large_object_size: ClassVar[int] = 100 * MiB
    interrupted_upload_size: ClassVar[int] = 11 * MiB
    supports_storage_lock: ClassVar[bool] = False

    # -- fixtures a backend provides ----------------------------------------------------------------------

    @pytest.fixture
    def destination(self) -> Destination:
        """A fresh, empty destination for each test. Backends MUST override this fixture."""
        raise NotImplementedError("a DestinationSuite subclass must define the `destination` fixture")

    @pytest.fixture
    def lock_destination(self, destination: Destination) -> Destination:
        """A fresh destination on storage with locking enabled (the plain one unless overridden)."""
        return destination

    @pytest.fixture
    def secrets(self) -> list[str]:
        """Secret values that must never appear in ``describe()``."""
        return []

    @pytest.fixture
    def storage_root(self, destination: Destination) -> Path | None:
        """The local folder in which the server keeps this destination's root, when a test can look there.

        Listings hide temporary names by contract, so only the server's own disk shows whether an aborted
        upload really left nothing behind. Backends whose servers run on this machine return the folder;
        the default (None) checks through :meth:`Destination.list` instead.
        """
        return None

    # -- uploads ------------------------------------------------------------------------------------------

    def test_memory_stays_bounded(self, destination: Destination) -> None:
        moved = 40 * MiB
        destination.write_bytes("memory/warm-up.bin", b"w")  # clients and connections exist before tracing
        assert destination.read_bytes("memory/warm-up.bin") == b"w"
        tracemalloc.start()
        try:
            _, sha = stream_upload(destination, "memory/probe.bin", moved, seed=9)
            assert stream_digest(destination, "memory/probe.bin", piece_size=MiB) == (moved, sha)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 24 * MiB, f"{peak} bytes of Python memory to move {moved} bytes"

    def test_aborted_and_refused_uploads_leave_no_file(
        self, destination: Destination, storage_root: Path | None
    ) -> None:
        writer = destination.open_writer("job/x.dump")
        writer.write(b"x" * (3 * MiB))
        writer.abort()
        refused = destination.open_writer("job/y.dump")
        refused.write(b"y")
        destination.write_bytes("job/y.dump", b"first")
        with pytest.raises(ConfigurationError):
            refused.commit()
        if storage_root is None:
            names = [info.path.rsplit("/", 1)[-1] for info in destination.list("")]
        else:
            names = [p.name for p in storage_root.rglob("*") if p.is_file()]
        assert sorted(names) == ["y.dump"]
        assert destination.read_bytes("job/y.dump") == b"first"

    def test_upload_empty_object(self, destination: Destination) -> None:
        with destination.open_writer("empty.bin") as writer:
            info = writer.commit()
        assert (info.path, info.size) == ("empty.bin", 0)
        assert destination.stat("empty.bin").size == 0
        assert destination.read_bytes("empty.bin") == b""
        assert listed(destination) == {"empty.bin": 0}

    def test_upload_one_byte(self, destination: Destination) -> None:
        with destination.open_writer("one.bin") as writer:
            writer.write(b"\x00")
            info = writer.commit()
        assert info.size == 1
        assert destination.stat("one.bin").size == 1
        assert destination.read_bytes("one.bin") == b"\x00"

    def test_upload_accepts_memoryview(self, destination: Destination) -> None:
        data = bytearray(b"abcdefgh" * 1000)
        with destination.open_writer("mv.bin") as writer:
            writer.write(memoryview(data)[3:5000])
            writer.write(memoryview(data)[5000:])
            writer.commit()
        assert destination.read_bytes("mv.bin") == bytes(data[3:])

    def test_large_streamed_upload_round_trip(self, destination: Destination) -> None:
        size = self.large_object_size
        info, sha = stream_upload(destination, "big/large.dump", size, seed=1)
        assert info.size == size
        assert destination.stat("big/large.dump").size == size
        assert stream_digest(destination, "big/large.dump", piece_size=256 * 1024) == (size, sha)

    def test_commit_returns_written_size_for_unaligned_stream(self, destination: Destination) -> None:
        size = 6 * MiB + 12_345  # more than one S3 part of 5 MiB, not a multiple of anything
        info, sha = stream_upload(destination, "odd.bin", size, seed=2)
        assert info.size == size
        assert stream_digest(destination, "odd.bin") == (size, sha)

    # -- visibility of unfinished uploads -----------------------------------------------------------------

    def _assert_nothing_visible(self, destination: Destination, path: str) -> None:
        assert listed(destination) == {}, "an unfinished upload (or its temporary state) is visible in list"
        with pytest.raises(NotFoundError):
            destination.stat(path)
        with pytest.raises(NotFoundError):
            destination.open_reader(path)
        assert not destination.exists(path)

    def _write_half(self, writer_write: object, size: int) -> None:
        stream = PatternStream(size, seed=3)
        for piece in stream.pieces():
            writer_write(piece)  # type: ignore[operator]

    def test_exception_inside_writer_leaves_nothing(self, destination: Destination) -> None:
        with pytest.raises(_Failure), destination.open_writer("job/interrupted.dump") as writer:
            self._write_half(writer.write, self.interrupted_upload_size)
            assert listed(destination) == {}, "bytes are visible before commit"
            raise _Failure("stop half-way")
        self._assert_nothing_visible(destination, "job/interrupted.dump")

    def test_abort_leaves_nothing_and_is_idempotent(self, destination: Destination) -> None:
        writer = destination.open_writer("job/aborted.dump")
        self._write_half(writer.write, self.interrupted_upload_size)
        writer.abort()
        writer.abort()
        self._assert_nothing_visible(destination, "job/aborted.dump")
        # The path is free for a later upload.
        destination.write_bytes("job/aborted.dump", b"later")
        assert destination.read_bytes("job/aborted.dump") == b"later"

    def test_abort_after_commit_is_a_no_op(self, destination: Destination) -> None:
        writer = destination.open_writer("kept.bin")
        writer.write(b"kept")
        writer.commit()
        writer.abort()
        assert destination.read_bytes("kept.bin") == b"kept"

    def test_interrupted_overwrite_keeps_the_old_object(self, destination: Destination) -> None:
        destination.write_bytes("same.bin", b"old")
        with pytest.raises(_Failure), destination.open_writer("same.bin", overwrite=True) as writer:
            writer.write(b"new bytes that never land")
            raise _Failure
        assert destination.read_bytes("same.bin") == b"old"
        assert listed(destination) == {"same.bin": 3}

    # -- overwrite ----------------------------------------------------------------------------------------

    def test_commit_refuses_to_overwrite(self, destination: Destination) -> None:
        destination.write_bytes("dir/object.bin", b"first")
        with pytest.raises(ConfigurationError), destination.open_writer("dir/object.bin") as writer:
            writer.write(b"second")
            writer.commit()
        assert destination.read_bytes("dir/object.bin") == b"first"
        assert listed(destination) == {"dir/object.bin": 5}, "a refused commit left something visible"

    def test_commit_overwrites_when_asked(self, destination: Destination) -> None:
        destination.write_bytes("dir/object.bin", b"first")
        info = destination.write_bytes("dir/object.bin", b"second!", overwrite=True)
        assert info.size == 7
        assert destination.read_bytes("dir/object.bin") == b"second!"
        assert listed(destination) == {"dir/object.bin": 7}

    # -- listing ------------------------------------------------------------------------------------------

    def test_list_with_prefixes_and_nested_paths(self, destination: Destination) -> None:
        paths = ["a/b/c1", "a/b/c2", "a/bc", "a/x/y/z", "ab", "b", "a/b/c1x/deep"]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: destination.write_bytes(p, p.encode()), paths))
        everything = {p: len(p) for p in paths}
        assert listed(destination) == everything
        assert listed(destination, "") == everything

        def expect(prefix: str) -> dict[str, int]:
            return {p: len(p) for p in paths if p.startswith(prefix)}

        for prefix in (
            "a/",
            "a/b",
            "a/b/",
            "a/b/c",
            "a/b/c1",
            "a/x/y/z",
            "a",
            "ab",
            "b",
            "zz",
            "nope/",
            "a/q/",
        ):
            assert listed(destination, prefix) == expect(prefix), f"list({prefix!r})"

    def test_list_reports_sizes_and_times(self, destination: Destination) -> None:
        destination.write_bytes("t/one", b"12345")
        (info,) = list(destination.list("t/"))
        assert (info.path, info.size) == ("t/one", 5)
        if info.modified is not None:
            assert info.modified.tzinfo is not None, "modified must be timezone-aware (UTC)"

    def test_list_many_entries(self, destination: Destination) -> None:
        count = 1_100 if self.large_listing else 120
        paths = [f"many/{i:05d}.bin" for i in range(count)]
        with ThreadPoolExecutor(8) as pool:
            # overwrite=True only to save an existence check per object: this test is about listing.
            list(pool.map(lambda p: destination.write_bytes(p, b"x", overwrite=True), paths))
        destination.write_bytes("other/outside.bin", b"y")
        assert set(listed(destination, "many/")) == set(paths)
        assert len(listed(destination)) == count + 1

    # -- delete -------------------------------------------------------------------------------------------

    def test_delete_is_idempotent(self, destination: Destination) -> None:
        destination.delete("never/existed.bin")
        destination.write_bytes("gone/soon.bin", b"bye")
        destination.write_bytes("gone/stays.bin", b"hi")
        destination.delete("gone/soon.bin")
        with pytest.raises(NotFoundError):
            destination.stat("gone/soon.bin")
        destination.delete("gone/soon.bin")
        assert listed(destination) == {"gone/stays.bin": 2}

    # -- download -----------------------------------------------------------------------------------------

    def test_download_streams_in_small_pieces(self, destination: Destination) -> None:
        size = 3 * MiB + 5
        _, sha = stream_upload(destination, "stream.bin", size, seed=4)
        with destination.open_reader("stream.bin") as reader:
            first = reader.read(1000)
            assert len(first) == 1000
            rest = hashlib.sha256(first)
            total = len(first)
            while piece := reader.read(4096):
                assert len(piece) <= 4096
                rest.update(piece)
                total += len(piece)
        assert (total, rest.hexdigest()) == (size, sha)

    def test_missing_object_raises_not_found(self, destination: Destination) -> None:
        with pytest.raises(NotFoundError):
            destination.stat("missing/object.bin")
        with pytest.raises(NotFoundError):
            destination.open_reader("missing/object.bin")
        destination.write_bytes("present/object.bin", b"x")
        with pytest.raises(NotFoundError):
            destination.stat("present/object")  # a prefix of a real name is not an object
        with pytest.raises(NotFoundError):
            destination.stat("present")  # nor is a "folder"

    # -- names --------------------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "path",
        ["job 1/bäckup ü 東京.dump", "spaces in name.dump", "weird/name+with=chars&(1)%20'.dump"],
    )
    def test_names_with_spaces_and_non_ascii(self, destination: Destination, path: str) -> None:
        payload = path.encode("utf-8") * 3
        destination.write_bytes(path, payload)
        assert listed(destination) == {path: len(payload)}
        prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else path[:3]
        assert listed(destination, prefix) == {path: len(payload)}
        assert destination.stat(path).size == len(payload)
        assert destination.read_bytes(path) == payload
        destination.delete(path)
        assert listed(destination) == {}

    @pytest.mark.parametrize("path", INVALID_PATHS)
    def test_invalid_paths_are_refused(self, destination: Destination, path: str) -> None:
        with pytest.raises(ConfigurationError):
            destination.open_writer(path)
        with pytest.raises(ConfigurationError):
            destination.open_reader(path)
        with pytest.raises(ConfigurationError):
            destination.stat(path)
        with pytest.raises(ConfigurationError):
            destination.delete(path)
        if path:  # the empty prefix is the whole destination
            with pytest.raises(ConfigurationError):
                list(destination.list(path))
        assert listed(destination) == {}

    # -- concurrency --------------------------------------------------------------------------------------

    def test_concurrent_uploads_land_intact(self, destination: Destination) -> None:
        size = 2 * MiB + 333
        start = threading.Barrier(8)

        def upload(i: int) -> tuple[str, str]:
            start.wait(timeout=60)
            _, sha = stream_upload(destination, f"concurrent/{i}.bin", size, seed=100 + i)
            return f"concurrent/{i}.bin", sha

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(upload, range(8)))
        assert listed(destination) == {path: size for path, _ in results}
        for path, sha in results:
            assert stream_digest(destination, path) == (size, sha)

    # -- connection test, describe, capabilities ----------------------------------------------------------

    def test_connection_test_leaves_nothing(self, destination: Destination) -> None:
        destination.test_connection()
        assert listed(destination, PROBE_PREFIX) == {}
        assert listed(destination) == {}

    def test_describe_contains_no_secret(self, destination: Destination, secrets: list[str]) -> None:
        text = destination.describe()
        assert isinstance(text, str) and text
        for secret in secrets:
            assert secret and secret not in text
            assert secret not in repr(destination)

    def test_capabilities_are_declared(self, destination: Destination) -> None:
        assert isinstance(destination.capabilities, DestinationCapabilities)
        assert isinstance(destination.kind, str) and destination.kind
        assert destination.capabilities.storage_lock == self.supports_storage_lock

    def test_storage_lock(self, lock_destination: Destination) -> None:
        dest = lock_destination
        dest.write_bytes("locked/backup.dump", b"precious")
        if not self.supports_storage_lock:
            assert dest.set_storage_lock("locked/backup.dump", True) is False
            dest.delete("locked/backup.dump")
            assert not dest.exists("locked/backup.dump")
            return
        assert dest.set_storage_lock("locked/backup.dump", True) is True
        with pytest.raises(PermanentError) as caught:
            dest.delete("locked/backup.dump")
        assert "lock" in str(caught.value).lower()
        assert dest.read_bytes("locked/backup.dump") == b"precious"
        assert listed(dest, "locked/") == {"locked/backup.dump": 8}
        assert dest.set_storage_lock("locked/backup.dump", False) is True
        dest.delete("locked/backup.dump")
        assert not dest.exists("locked/backup.dump")
        assert listed(dest, "locked/") == {}

    def test_errors_are_backup_errors(self, destination: Destination) -> None:
        with pytest.raises(BackupError):
            destination.read_bytes("nothing/here")


__all__ = [
    "INVALID_PATHS",
    "ODD_CHUNK_SIZES",
    "DestinationSuite",
    "PatternStream",
    "stream_digest",
    "stream_upload",
]
