"""SMB (Windows share, Samba) destination (smbprotocol's ``smbclient``).

- **Commit.** A writer writes ``.<name>.<uuid>.partial`` in the target folder, then renames it on the
  server with one SMB2 rename: without ReplaceIfExists (fails if the name is taken) when
  ``overwrite=False``, with it when ``overwrite=True``. Either is one atomic server-side operation.
- **Sessions.** ``smbclient`` keeps connections in a process-wide pool unless given a ``connection_cache``;
  each adapter passes its own, so two adapters never share (or close) each other's sessions, and
  :meth:`SMBAdapter.close` logs off exactly its own. Concurrent writers share the one connection
  (smbprotocol is thread-safe); its credit window is widened once so that they never run out of credits.
- **Listing.** ``scandir`` per folder (SMB2 QUERY_DIRECTORY, followed until STATUS_NO_MORE_FILES).

Retries are not done here.
"""

from __future__ import annotations

import errno
import io
import logging
import ntpath
import posixpath
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO, NoReturn, cast

import smbclient
from prefect_db_backup.adapters.destination import (
    Destination,
    ObjectInfo,
    ObjectWriter,
    validate_object_path,
    validate_path,
)
from prefect_db_backup.adapters.destinations._remote import Entry, temp_name, walk_prefix
from prefect_db_backup.errors import (
    AuthenticationError,
    BackupError,
    ConfigurationError,
    ConnectionFailedError,
    NotFoundError,
    PermanentError,
    RetryableError,
    StorageFullError,
    TransientStorageError,
)
from smbclient._io import SMBFileTransaction, SMBRawIO, set_info
from smbprotocol.exceptions import (
    AccessDenied,
    BadNetworkName,
    InsuffServerResources,
    IOTimeout,
    LogonFailure,
    NtStatus,
    ServerUnavailable,
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    WrongPassword,
)
from smbprotocol.file_info import FileRenameInformation
from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask

logger = logging.getLogger(__name__)

#: Client-side write buffer: small writes are coalesced into requests of up to this size.
WRITE_BUFFER = 1 << 20
#: Read buffer of a reader.
READ_BUFFER = 1 << 20
_FULL = {NtStatus.STATUS_DISK_FULL, 0xC0000044}  # 0xC0000044: STATUS_QUOTA_EXCEEDED
_DIRECTORY_ATTRIBUTE = 0x10
#: SMB2 credits an adapter keeps available on its connection (a 1 MiB write spends 16).
CREDITS = 512
_LOGON = {
    NtStatus.STATUS_LOGON_FAILURE,
    NtStatus.STATUS_WRONG_PASSWORD,
    NtStatus.STATUS_PASSWORD_EXPIRED,
    0xC0000072,  # STATUS_ACCOUNT_DISABLED
    0xC0000234,  # STATUS_ACCOUNT_LOCKED_OUT
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield an exception and its causes/contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class SMBAdapter(Destination):
    r"""Stores objects below a folder of an SMB share.

    Args:
        server: Server name or address.
        share: Share name.
        username: User name (``DOMAIN\\user`` or ``user@domain`` for a domain account).
        password: Its password.
        root: Folder inside the share that holds the objects ('/'-separated); created on the first upload.
        port: SMB port (445).
        encrypt: Require SMB3 encryption of the session.
        timeout: Seconds for connecting.
    """

    kind = "smb"

    def __init__(
        self,
        server: str,
        share: str,
        *,
        username: str | None = None,
        password: str | None = None,
        root: str = "",
        port: int = 445,
        encrypt: bool = False,
        timeout: float = 30.0,
    ) -> None:
        if not server:
            raise ConfigurationError("SMB server must not be empty")
        if not share or any(c in share for c in "/\\"):
            raise ConfigurationError(f"SMB share {share!r} must be a bare share name")
        self.server = server
        self.share = share
        self.username = username
        self.port = port
        self.root = root.strip("/")
        if self.root:
            validate_path(self.root, field="root")
        self._cache: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._known_dirs: set[str] = set()  # folders (relative to root) known to exist
        self._credited: Any = None  # the connection that was given a larger credit window
        self._kwargs: dict[str, Any] = {
            "username": username,
            "password": password,
            "port": port,
            "connection_timeout": timeout,
            "connection_cache": self._cache,
        }
        if encrypt:
            self._kwargs["encrypt"] = True

    def describe(self) -> str:
        """Return ``smb://user@server:port/share/root``."""
        user = f"{self.username}@" if self.username else ""
        root = f"/{self.root}" if self.root else ""
        return f"smb://{user}{self.server}:{self.port}/{self.share}{root}"

    def close(self) -> None:
        """Log off this adapter's sessions and close its connections (never other adapters')."""
        with self._lock:
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)

    # -- paths and errors ----------------------------------------------------------------------------------

    def _unc(self, rel: str) -> str:
        path = "/".join(p for p in (self.root, rel) if p)
        unc = f"\\\\{self.server}\\{self.share}"
        return ntpath.join(unc, path.replace("/", "\\")) if path else unc

    def _raise(self, exc: BaseException, action: str, path: str | None = None) -> NoReturn:
        where = f"{self.describe()}/{path}" if path else self.describe()
        if isinstance(exc, BackupError):
            raise exc
        status = getattr(exc, "ntstatus", None) or getattr(exc, "status", None)
        if isinstance(exc, (SMBAuthenticationError, LogonFailure, WrongPassword)) or status in _LOGON:
            raise AuthenticationError(
                f"SMB {action} on {where}: the server refused the login of {self.username!r}",
                hint="check the username and password",
            ) from exc
        if any(
            isinstance(e, BadNetworkName) or getattr(e, "ntstatus", None) == NtStatus.STATUS_BAD_NETWORK_NAME
            for e in _chain(exc)
        ):  # smbclient reports a missing share as STATUS_NOT_FOUND after a DFS lookup; the cause says why
            raise ConfigurationError(
                f"SMB {action}: share {self.share!r} does not exist on {self.server}"
            ) from exc
        if isinstance(exc, AccessDenied) or status == NtStatus.STATUS_ACCESS_DENIED:
            raise AuthenticationError(
                f"SMB {action} on {where}: access denied", hint=f"grant {self.username!r} write access"
            ) from exc
        if status in _FULL:
            raise StorageFullError(f"SMB {action} on {where}: no space left on the share") from exc
        if isinstance(exc, SMBOSError) and exc.errno == errno.ENOENT:
            raise NotFoundError(f"SMB {action}: {where} does not exist") from exc
        if isinstance(exc, (InsuffServerResources, ServerUnavailable, IOTimeout)):
            raise TransientStorageError(f"SMB {action} on {where} failed: {exc}") from exc
        if isinstance(exc, (SMBConnectionClosed, ConnectionError, TimeoutError, EOFError)) or (
            isinstance(exc, ValueError) and "Failed to connect" in str(exc)
        ):
            raise ConnectionFailedError(f"SMB {action} on {where} failed: {exc}") from exc
        if isinstance(exc, OSError) and not isinstance(exc, SMBOSError):
            raise ConnectionFailedError(f"SMB {action} on {where} failed: {exc}") from exc
        raise PermanentError(f"SMB {action} on {where} failed: {exc}") from exc

    def _call(self, action: str, path: str | None, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            self._ensure_credits()
            return func(*args, **kwargs, **self._kwargs)
        except (SMBException, OSError, ValueError) as exc:
            try:
                self._raise(exc, action, path)
            except RetryableError:
                # A dropped connection can still look connected: forget it, so a retry reconnects.
                self.close()
                raise

    def _ensure_credits(self) -> None:
        """Widen the connection's SMB2 credit window once, so concurrent requests never run out.

        smbprotocol asks the server for exactly the credits each request spends, so a fresh connection
        keeps the handful granted at logon and fails (rather than waits) when threads send more requests
        at once. One ECHO asking for :data:`CREDITS` more fixes that for the connection's lifetime.
        """
        key = f"{self.server.lower()}:{self.port}"  # smbclient's cache key
        connection = self._cache.get(key)
        if connection is not None and connection is self._credited and connection.transport.connected:
            return
        # Connect under the lock: smbclient's register_session is not safe against concurrent first
        # connects (each thread would open its own connection and overwrite the cache entry).
        with self._lock:
            session = smbclient.register_session(
                self.server,
                username=self._kwargs["username"],
                password=self._kwargs["password"],
                port=self.port,
                encrypt=self._kwargs.get("encrypt"),
                connection_timeout=self._kwargs["connection_timeout"],
                connection_cache=self._cache,
            )
            connection = session.connection
            if connection is self._credited:
                return
            window = connection.sequence_window["high"] - connection.sequence_window["low"]
            if connection.supports_multi_credit and window < CREDITS:
                connection.echo(sid=session.session_id, credit_request=CREDITS - window)
            self._credited = connection

    def _server_rename(self, src_rel: str, dst_rel: str, *, replace: bool) -> None:
        """Rename within the share with one SMB2 SET_INFO (FileRenameInformation).

        ``smbclient.rename``/``replace`` first open the destination asking for FILE_EXECUTE, which Samba
        refuses (ACCESS_DENIED) for an existing file without an execute bit, hiding the name collision. This
        sends the rename directly; DFS links inside the share are not resolved.
        """
        with (
            SMBRawIO(
                self._unc(src_rel),
                mode="r",
                share_access="rwd",
                desired_access=FilePipePrinterAccessMask.DELETE,
                create_options=CreateOptions.FILE_OPEN_REPARSE_POINT,
                **self._kwargs,
            ) as raw,
            SMBFileTransaction(raw) as transaction,
        ):
            info = FileRenameInformation()
            info["replace_if_exists"] = replace
            info["file_name"] = "\\".join(p for p in (*self.root.split("/"), *dst_rel.split("/")) if p)
            set_info(transaction, info)

    def _list_dir(self, rel: str) -> Sequence[Entry] | None:
        try:
            entries = []
            self._ensure_credits()
            items = list(smbclient.scandir(self._unc(rel), **self._kwargs))
            for item in items:
                info = item.smb_info
                is_dir = bool(info.file_attributes & _DIRECTORY_ATTRIBUTE)
                modified = info.last_write_time
                if modified is not None and modified.tzinfo is None:
                    modified = modified.replace(tzinfo=UTC)
                entries.append(Entry(name=item.name, is_dir=is_dir, size=info.end_of_file, modified=modified))
        except SMBOSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            self._raise(exc, "list", rel or None)
        except (SMBException, OSError, ValueError) as exc:
            self._raise(exc, "list", rel or None)
        return entries

    # -- the contract ------------------------------------------------------------------------------------

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Create a temporary file next to ``path`` and return a writer for it."""
        validate_object_path(path)
        return _SMBWriter(self, path, overwrite)

    def open_reader(self, path: str) -> BinaryIO:
        """Open ``path`` for buffered, streamed reading."""
        validate_path(path)
        info = self.stat(path)
        handle = self._call(
            "read", path, smbclient.open_file, self._unc(path), mode="rb", buffering=READ_BUFFER
        )
        return cast(BinaryIO, _SMBReader(self, handle, path, info.size))

    def stat(self, path: str) -> ObjectInfo:
        """Describe ``path``; folders raise NotFoundError."""
        validate_path(path)
        result = self._call("stat", path, smbclient.stat, self._unc(path))
        if result.st_file_attributes & _DIRECTORY_ATTRIBUTE:
            raise NotFoundError(f"SMB stat: {self.describe()}/{path} is a folder, not an object")
        return ObjectInfo(
            path=path, size=result.st_size, modified=datetime.fromtimestamp(result.st_mtime, UTC)
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the folders under ``prefix``."""
        validate_path(prefix, field="prefix", allow_empty=True)
        return walk_prefix(prefix, self._list_dir)

    def delete(self, path: str) -> None:
        """Remove the file; a missing file is not an error."""
        validate_path(path)
        try:
            self._ensure_credits()
            smbclient.remove(self._unc(path), **self._kwargs)
        except SMBOSError as exc:
            if exc.errno == errno.ENOENT:
                return
            self._raise(exc, "delete", path)
        except (SMBException, OSError, ValueError) as exc:
            self._raise(exc, "delete", path)


class _SMBWriter(ObjectWriter):
    """Buffered writes to a temporary file, renamed into place on commit."""

    def __init__(self, dest: SMBAdapter, path: str, overwrite: bool) -> None:
        self.path = path
        self._dest = dest
        self._overwrite = overwrite
        self._temp_rel = temp_name(path)
        self._size = 0
        self._done = False
        parent = posixpath.dirname(path)
        remembered = parent in dest._known_dirs
        if not remembered and (dest.root or parent):
            dest._call("create folder", parent or None, smbclient.makedirs, dest._unc(parent), exist_ok=True)
        dest._known_dirs.add(parent)
        try:
            self._file: Any = self._create()
        except NotFoundError:
            if not remembered:
                raise
            # The folder was created earlier but removed since: create it again, once.
            dest._known_dirs.discard(parent)
            dest._call("create folder", parent or None, smbclient.makedirs, dest._unc(parent), exist_ok=True)
            self._file = self._create()

    def _create(self) -> Any:
        return self._dest._call(
            "start upload",
            self.path,
            smbclient.open_file,
            self._dest._unc(self._temp_rel),
            mode="xb",
            buffering=WRITE_BUFFER,
        )

    def write(self, data: bytes | memoryview) -> None:
        """Write bytes (buffered up to :data:`WRITE_BUFFER`)."""
        if self._file is None:
            raise ConfigurationError(f"SMB writer for {self.path} is closed")
        try:
            self._file.write(data)
        except (SMBException, OSError, ValueError) as exc:
            self._dest._raise(exc, "upload", self.path)
        self._size += len(data)

    def commit(self) -> ObjectInfo:
        """Flush, verify the size, then rename into place."""
        if self._file is None:
            raise ConfigurationError(f"SMB writer for {self.path} is closed")
        dest = self._dest
        try:
            handle, self._file = self._file, None
            try:
                handle.close()  # flushes the buffer; errors surface here
            except (SMBException, OSError, ValueError) as exc:
                dest._raise(exc, "upload", self.path)
            # No separate size check: every SMB2 WRITE response states the bytes the server wrote, and
            # the buffered writer re-sends any shortfall or fails.
            try:
                dest._server_rename(self._temp_rel, self.path, replace=self._overwrite)
            except SMBOSError as exc:
                if exc.errno == errno.EEXIST or exc.ntstatus == NtStatus.STATUS_OBJECT_NAME_COLLISION:
                    raise ConfigurationError(
                        f"SMB commit: {dest.describe()}/{self.path} already exists",
                        hint="backups are never overwritten by accident; pass overwrite=True to replace",
                    ) from exc
                dest._raise(exc, "commit", self.path)
            except (SMBException, OSError, ValueError) as exc:
                dest._raise(exc, "commit", self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return ObjectInfo(path=self.path, size=self._size, modified=datetime.now(UTC))

    def abort(self) -> None:
        """Close and delete the temporary file (problems are logged, not raised)."""
        if self._done:
            return
        self._done = True
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                logger.debug("closing %s failed", self._temp_rel, exc_info=True)
            self._file = None
        for attempt in (1, 2):
            try:
                self._dest.delete(self._temp_rel)
                return
            except RetryableError:
                if attempt == 1:
                    continue  # the failed call dropped the dead connection: the second one reconnects
            except Exception:
                pass
            logger.warning("could not remove temporary file %s on %s", self._temp_rel, self._dest.describe())
            return


class _SMBReader(io.RawIOBase):
    """Wraps smbclient's buffered file: translates errors and checks the byte count at the end."""

    def __init__(self, dest: SMBAdapter, handle: Any, path: str, size: int) -> None:
        self._dest = dest
        self._handle = handle
        self._path = path
        self._expected = size
        self._received = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        try:
            data = self._handle.read(size)
        except (SMBException, OSError, ValueError) as exc:
            self._dest._raise(exc, "read", self._path)
        self._received += len(data)
        if not data and size and self._received != self._expected:
            raise ConnectionFailedError(
                f"SMB read of {self._dest.describe()}/{self._path}: got {self._received} bytes, "
                f"expected {self._expected}"
            )
        return cast(bytes, data)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        memoryview(b)[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._handle.close()
            except Exception:
                logger.debug("closing SMB reader failed", exc_info=True)
        super().close()


__all__ = ["SMBAdapter"]
