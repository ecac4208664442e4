"""A destination in a folder of the local file system (or any mounted file system).

Durability and visibility follow the destination contract:

- A writer streams into a hidden temporary file in the final folder (``.<name>.<32 hex>.partial``), so the
  final rename never crosses file systems. :meth:`list` never shows these files.
- ``commit`` flushes and fsyncs the file, moves it into place and fsyncs the folder. Without ``overwrite``
  the move is ``os.link`` + ``unlink``, which refuses atomically when the final name exists; with
  ``overwrite`` it is ``os.replace``. On file systems without hard links (some FUSE and SMB mounts) the
  no-overwrite move falls back to check-then-rename, which is atomic on the rename but not on the check.
- Nothing is read, written or deleted outside the root: paths are checked by
  :func:`~prefect_db_backup.adapters.destination.validate_path`, and each path's resolved location
  (symbolic links followed) must stay inside the resolved root.
- Backups are created with mode 0600: they hold a database's data.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from prefect_db_backup.adapters.destination import (
    Destination,
    DestinationCapabilities,
    ObjectInfo,
    ObjectWriter,
    validate_object_path,
    validate_path,
)
from prefect_db_backup.errors import (
    BackupError,
    ConfigurationError,
    NotFoundError,
    PermanentError,
    StorageFullError,
)

logger = logging.getLogger(__name__)

#: Matches the temporary names of writers in progress (hidden from listings).
_TEMP_NAME = re.compile(r"^\..*\.[0-9a-f]{32}\.partial$", re.DOTALL)
_FILE_MODE = 0o600
_WRITE_BUFFER = 1 << 20


def _is_temp_name(name: str) -> bool:
    return bool(_TEMP_NAME.match(name))


def _fsync_dir(directory: Path) -> None:
    """Flush a folder's entries to disk (best effort where the platform cannot open folders)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        with contextlib.suppress(OSError):  # some file systems (e.g. certain FUSE mounts) refuse it
            os.fsync(fd)
    finally:
        os.close(fd)


class LocalAdapter(Destination):
    """Store objects as files below a root folder.

    Args:
        root: Folder that holds the objects. It is created (with its parents) on the first write.

    Example:
        >>> dest = LocalAdapter("/srv/backups")
        >>> with dest.open_writer("job/file.dump") as w:  # doctest: +SKIP
        ...     w.write(b"data")
        ...     w.commit()
    """

    kind = "local"
    capabilities = DestinationCapabilities(storage_lock=False, atomic_commit=True)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not str(root):
            raise ConfigurationError("local destination path is empty; give the folder to store backups in")
        if "\x00" in str(root):
            raise ConfigurationError("local destination path contains a NUL byte")
        self._root_given = Path(root).expanduser()
        self._root = Path(os.path.realpath(self._root_given.absolute()))

    @property
    def root(self) -> Path:
        """The resolved root folder."""
        return self._root

    def describe(self) -> str:
        """Return the root folder."""
        return str(self._root_given)

    # -- path handling ------------------------------------------------------------------------------------

    def _inside_root(self, location: str | Path) -> bool:
        resolved = os.path.realpath(location)
        root = str(self._root)
        return resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep)

    def _target(self, path: str, *, field: str = "path") -> Path:
        """Validate ``path`` and return its location, refusing one that resolves outside the root."""
        validate_object_path(path, field=field)
        target = self._root.joinpath(*path.split("/"))
        if not self._inside_root(target):
            raise ConfigurationError(
                f"{field} {path!r} resolves outside {self.describe()} (through a symbolic link); refusing it"
            )
        return target

    def _os_error(self, exc: OSError, action: str, path: str) -> BackupError:
        """Translate an OSError into the error hierarchy, naming the path and this destination."""
        where = f"{action} {path!r} in {self.describe()}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFullError(
                f"cannot {where}: no space left on the device or quota exhausted",
                hint="free space or move the destination to a larger file system",
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PermanentError(
                f"cannot {where}: permission denied on {exc.filename or path}",
                hint="give the user running the backup write access to the folder",
            )
        if exc.errno == errno.EROFS:
            return PermanentError(f"cannot {where}: the file system is read-only")
        if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
            return ConfigurationError(
                f"cannot {where}: a file and a folder collide on this path ({exc.strerror})"
            )
        return PermanentError(f"cannot {where}: {exc.strerror or exc}")

    def _makedirs(self, directory: Path, path: str) -> None:
        """Create ``directory`` and missing parents, fsyncing each parent whose entries changed."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise ConfigurationError(
                        f"cannot create the folder for {path!r} in {self.describe()}: "
                        f"{folder} exists and is not a folder"
                    ) from None
                continue
            except OSError as exc:
                raise self._os_error(exc, "create the folder for", path) from exc
            _fsync_dir(folder.parent)
        if not self._inside_root(directory):
            raise ConfigurationError(f"path {path!r} resolves outside {self.describe()}; refusing it")

    # -- contract -----------------------------------------------------------------------------------------

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Start writing ``path`` through a hidden temporary file in its final folder."""
        target = self._target(path)
        if _is_temp_name(target.name):
            raise ConfigurationError(f"path {path!r} looks like a temporary upload name; choose another name")
        return _LocalWriter(self, path, target, overwrite)

    def open_reader(self, path: str) -> BinaryIO:
        """Open the file for streamed reading."""
        target = self._target(path)
        try:
            if not target.is_file():
                raise FileNotFoundError(errno.ENOENT, "not a file", str(target))
            return open(target, "rb")  # the caller closes it
        except FileNotFoundError as exc:
            raise NotFoundError(f"no backup object {path!r} in {self.describe()}") from exc
        except OSError as exc:
            raise self._os_error(exc, "read", path) from exc

    def stat(self, path: str) -> ObjectInfo:
        """Describe one file."""
        target = self._target(path)
        try:
            st = target.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError(f"no backup object {path!r} in {self.describe()}") from exc
        except OSError as exc:
            raise self._os_error(exc, "inspect", path) from exc
        if not target.is_file() or _is_temp_name(target.name):
            raise NotFoundError(f"no backup object {path!r} in {self.describe()}")
        return ObjectInfo(path=path, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every committed file whose path starts with ``prefix``, walking folders recursively."""
        validate_path(prefix, field="prefix", allow_empty=True)
        folder_part = prefix.rpartition("/")[0]
        start = self._root.joinpath(*folder_part.split("/")) if folder_part else self._root
        if not start.is_dir() or not self._inside_root(start):
            return
        yield from self._walk(start, prefix)

    def _walk(self, start: Path, prefix: str) -> Iterator[ObjectInfo]:
        def on_error(exc: OSError) -> None:
            raise self._os_error(exc, "list", prefix or "/") from exc

        root_str = str(self._root)
        for dirpath, dirnames, filenames in os.walk(start, onerror=on_error):
            rel_dir = os.path.relpath(dirpath, root_str)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            # Prune folders that cannot hold a match (cheap for deep trees and partial-name prefixes).
            dirnames[:] = [
                d
                for d in dirnames
                if (rel_dir + d + "/").startswith(prefix) or prefix.startswith(rel_dir + d)
            ]
            for name in filenames:
                rel = rel_dir + name
                if not rel.startswith(prefix) or _is_temp_name(name):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    if os.path.islink(full) and not self._inside_root(full):
                        continue
                    st = os.stat(full)
                except FileNotFoundError:
                    continue  # deleted while listing
                except OSError as exc:
                    raise self._os_error(exc, "list", rel) from exc
                if not os.path.isfile(full):
                    continue
                yield ObjectInfo(path=rel, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, path: str) -> None:
        """Delete the file if present, then remove folders it leaves empty (up to the root)."""
        target = self._target(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return
        except IsADirectoryError as exc:
            raise ConfigurationError(
                f"{path!r} in {self.describe()} is a folder, not a backup object"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.EPERM and target.is_dir():
                raise ConfigurationError(
                    f"{path!r} in {self.describe()} is a folder, not a backup object"
                ) from exc
            raise self._os_error(exc, "delete", path) from exc
        _fsync_dir(target.parent)
        self._prune_empty(target.parent)

    def _prune_empty(self, folder: Path) -> None:
        while folder != self._root and self._inside_root(folder):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or in use by a concurrent writer): stop
            folder = folder.parent


class _LocalWriter(ObjectWriter):
    """Write into a hidden temporary file, then move it into place on commit."""

    def __init__(self, dest: LocalAdapter, path: str, target: Path, overwrite: bool) -> None:
        self.path = path
        self._dest = dest
        self._target = target
        self._overwrite = overwrite
        self._size = 0
        self._done = False
        self._temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        # A concurrent delete may prune the folder between creating it and opening the file: retry once.
        for attempt in range(3):
            dest._makedirs(target.parent, path)
            try:
                fd = os.open(
                    self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), _FILE_MODE
                )
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except OSError as exc:
                raise dest._os_error(exc, "start writing", path) from exc
        self._file = os.fdopen(fd, "wb", buffering=_WRITE_BUFFER)

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes to the temporary file."""
        if self._done:
            raise ConfigurationError(f"writer for {self.path!r} is already committed or aborted")
        try:
            self._file.write(data)
        except OSError as exc:
            raise self._dest._os_error(exc, "write", self.path) from exc
        self._size += len(data)

    def commit(self) -> ObjectInfo:
        """Fsync the temporary file, move it into place and fsync the folder."""
        if self._done:
            raise ConfigurationError(f"writer for {self.path!r} is already committed or aborted")
        try:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            except OSError as exc:
                raise self._dest._os_error(exc, "write", self.path) from exc
            self._move_into_place()
            _fsync_dir(self._target.parent)
        except BaseException:
            self.abort()
            raise
        self._done = True
        try:
            mtime = datetime.fromtimestamp(self._target.stat().st_mtime, UTC)
        except OSError:
            mtime = None
        return ObjectInfo(path=self.path, size=self._size, modified=mtime)

    def _exists_error(self) -> ConfigurationError:
        return ConfigurationError(
            f"{self.path!r} already exists in {self._dest.describe()}; refusing to overwrite it",
            hint="choose another name or open the writer with overwrite=True",
        )

    def _move_into_place(self) -> None:
        if self._overwrite:
            try:
                os.replace(self._temp, self._target)
            except OSError as exc:
                raise self._dest._os_error(exc, "commit", self.path) from exc
            return
        try:
            os.link(self._temp, self._target, follow_symlinks=False)
        except FileExistsError as exc:
            raise self._exists_error() from exc
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise self._dest._os_error(exc, "commit", self.path) from exc
            # No hard links here: check, then rename (atomic rename, non-atomic check).
            if os.path.lexists(self._target):
                raise self._exists_error() from exc
            try:
                os.rename(self._temp, self._target)
            except OSError as exc2:
                raise self._dest._os_error(exc2, "commit", self.path) from exc2
            return
        try:
            os.unlink(self._temp)
        except OSError as exc:  # the object is committed; a leftover hidden temp is only clutter
            logger.warning("could not remove temporary file %s after commit: %s", self._temp, exc)

    def abort(self) -> None:
        """Close and remove the temporary file. Idempotent; a no-op after commit."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        try:
            os.unlink(self._temp)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove temporary file %s of an aborted upload: %s", self._temp, exc)
        self._dest._prune_empty(self._target.parent)


__all__ = ["LocalAdapter"]
