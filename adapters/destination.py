"""The storage destination contract.

A destination stores opaque objects under '/'-separated relative paths below its own root (a folder, a
bucket prefix, a share). Every destination implements :class:`Destination`; the conformance suite in
:mod:`prefect_db_backup.adapters.testing.destination_suite` checks each rule below against a real server.

Rules every implementation MUST follow:

- **Visible only when complete.** Bytes written through :meth:`Destination.open_writer` are invisible at
  their final path (to :meth:`~Destination.list`, :meth:`~Destination.stat`, :meth:`~Destination.open_reader`)
  until :meth:`ObjectWriter.commit` returns. A writer that is aborted, or whose process dies, leaves nothing
  visible at the final path; temporary names used on the way are cleaned up by ``abort`` and never start with
  the final name.
- **Unknown length.** A writer accepts any number of ``write`` calls and never needs the total size up
  front; it holds a bounded amount of memory regardless of the object size.
- **No overwrite by accident.** With ``overwrite=False`` (the default) ``commit`` raises
  :class:`~prefect_db_backup.errors.ConfigurationError` rather than replace an existing object.
- **Inside the root.** Paths are validated by :func:`validate_path`; nothing is ever read, written or
  deleted outside the destination's root.
- **Complete listings.** :meth:`Destination.list` returns every committed object under a prefix, following
  pagination to the end; it never returns temporary objects of writers in progress.
- **Idempotent delete.** Deleting a missing object succeeds.
- **Classified errors.** Failures raise :class:`~prefect_db_backup.errors.BackupError` subclasses: a missing
  object :class:`~prefect_db_backup.errors.NotFoundError`; refused credentials
  :class:`~prefect_db_backup.errors.AuthenticationError`; timeouts, dropped connections and 5xx answers
  :class:`~prefect_db_backup.errors.RetryableError` subclasses. Messages never contain secrets.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, ClassVar

from prefect_db_backup.errors import ConfigurationError, IntegrityError, NotFoundError

#: Prefix of the folder that connection tests write their probe objects under.
PROBE_PREFIX = ".prefect-db-backup-probe/"


def validate_path(path: str, *, field: str = "path", allow_empty: bool = False) -> str:
    """Check that a destination path stays inside the destination root.

    Args:
        path: A '/'-separated relative path (or prefix).
        field: Name of the field the path came from, used in the error message.
        allow_empty: Accept the empty string (the root itself, for listing).

    Returns:
        The path, unchanged.

    Raises:
        ConfigurationError: If the path is absolute, contains a NUL byte, a backslash, an empty segment or a
            ``.``/``..`` segment.
    """
    if path == "" and allow_empty:
        return path
    problem = None
    if not path:
        problem = "is empty"
    elif "\x00" in path:
        problem = "contains a NUL byte"
    elif "\\" in path:
        problem = "contains a backslash"
    elif path.startswith("/"):
        problem = "is absolute"
    else:
        segments = path.rstrip("/").split("/")
        if any(seg in ("", ".", "..") for seg in segments):
            problem = "contains an empty, '.' or '..' segment"
    if problem:
        raise ConfigurationError(f"{field} {path!r} {problem}; it must be a relative path inside the root")
    return path


def validate_object_path(path: str, *, field: str = "path") -> str:
    """Check a path that names one object: :func:`validate_path`, and no trailing ``/`` (a folder).

    Raises:
        ConfigurationError: If the path is invalid or ends with ``/``.
    """
    validate_path(path, field=field)
    if path.endswith("/"):
        raise ConfigurationError(f"{field} {path!r} ends with '/'; it must name an object, not a folder")
    return path


@dataclass(frozen=True)
class ObjectInfo:
    """A committed object as a destination lists it.

    Attributes:
        path: Path relative to the destination root.
        size: Size in bytes.
        modified: Last-modified time reported by the storage (UTC), if any. Informational only: retention
            never decides on it.
    """

    path: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class DestinationCapabilities:
    """What a destination can do beyond the contract.

    Attributes:
        storage_lock: The storage itself can protect an object from deletion (S3 object lock / legal hold).
        atomic_commit: Commit is a single atomic operation (rename, S3 CompleteMultipartUpload).
    """

    storage_lock: bool = False
    atomic_commit: bool = True


class ObjectWriter(ABC):
    """A streamed, write-once upload to one path.

    Use as a context manager: leaving the block with an exception, or without calling :meth:`commit`,
    aborts the upload.
    """

    path: str

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """Append bytes. May block while the storage catches up.

        Raises:
            BackupError: On a storage failure; the writer must then be aborted.
        """

    @abstractmethod
    def commit(self) -> ObjectInfo:
        """Finish the upload and make the object visible at its path, atomically where possible.

        Returns:
            The committed object's info; ``size`` is the number of bytes written.

        Raises:
            ConfigurationError: If the object exists and the writer was opened without ``overwrite``.
            BackupError: On a storage failure; nothing is then visible at the path.
        """

    @abstractmethod
    def abort(self) -> None:
        """Discard the upload and clean up temporary state.

        Idempotent; never raises for cleanup problems it can log instead; a no-op after a successful commit.
        """

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class Destination(ABC):
    """A place that stores backups. See the module docstring for the rules every implementation follows.

    Attributes:
        kind: Registry name of the implementation (``local``, ``s3``, ...).
        capabilities: What this destination can do beyond the contract.
    """

    kind: ClassVar[str]
    capabilities: ClassVar[DestinationCapabilities] = DestinationCapabilities()

    @abstractmethod
    def describe(self) -> str:
        """A human-readable location without secrets, such as ``s3://bucket/prefix`` or ``/srv/backups``."""

    @abstractmethod
    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Start a streamed upload of unknown length to ``path``.

        Args:
            path: Where the object will appear once committed.
            overwrite: Replace an existing object at commit (only manifests of locked backups need this).
            size_hint: Expected size in bytes, if known; it may be wrong either way. A destination may use it
                to size buffers or parts (S3 raises its part size so a large object fits in 10,000 parts) and
                must still accept any size.

        Raises:
            ConfigurationError: If the path is invalid.
            BackupError: If the upload cannot be started.
        """

    @abstractmethod
    def open_reader(self, path: str) -> BinaryIO:
        """Open a committed object for streamed reading; the caller closes it.

        Raises:
            NotFoundError: If no object exists at ``path``.
        """

    @abstractmethod
    def stat(self, path: str) -> ObjectInfo:
        """Describe one committed object.

        Raises:
            NotFoundError: If no object exists at ``path``.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every committed object whose path starts with ``prefix``, recursively, in any order."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Delete one object. Deleting a missing object succeeds.

        Raises:
            BackupError: If the object exists and cannot be deleted (for example, it is locked by the
                storage).
        """

    def set_storage_lock(self, path: str, locked: bool) -> bool:
        """Protect (or release) an object at the storage level, where the storage can.

        Returns:
            True if the storage now enforces the requested state; False if this destination cannot lock
            objects (the default), in which case the lock lives only in the manifest.
        """
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The destination must not be used afterwards."""

    # -- conveniences built on the contract ------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes, *, overwrite: bool = False) -> ObjectInfo:
        """Store a small object in one call (manifests, probes)."""
        with self.open_writer(path, overwrite=overwrite) as writer:
            writer.write(data)
            return writer.commit()

    def read_bytes(self, path: str) -> bytes:
        """Read a whole (small) object."""
        with self.open_reader(path) as reader:
            return reader.read()

    def exists(self, path: str) -> bool:
        """Tell whether a committed object exists at ``path``."""
        try:
            self.stat(path)
        except NotFoundError:
            return False
        return True

    def test_connection(self) -> None:
        """Write, read back and delete a small probe object under :data:`PROBE_PREFIX`.

        Raises:
            BackupError: If any of the three steps fails, with the step named in the message.
        """
        path = f"{PROBE_PREFIX}probe-{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes * 4
        self.write_bytes(path, payload)
        try:
            if self.read_bytes(path) != payload:
                raise IntegrityError(f"connection test on {self.describe()}: the probe read back differs")
        finally:
            self.delete(path)

    def __enter__(self) -> Destination:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def iter_chunks(reader: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield a readable stream's content in chunks of at most ``chunk_size`` bytes."""
    while chunk := reader.read(chunk_size):
        yield chunk


__all__ = [
    "PROBE_PREFIX",
    "Destination",
    "DestinationCapabilities",
    "ObjectInfo",
    "ObjectWriter",
    "iter_chunks",
    "validate_path",
]
