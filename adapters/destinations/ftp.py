"""FTP and explicit-TLS FTPS destination (ftplib).

- **Commit.** ``STOR`` to ``.<name>.<uuid>.partial`` in the target folder, check the stored size with
  ``SIZE`` (where supported), then ``RNFR``/``RNTO``. FTP has no "rename unless the target exists": with
  ``overwrite=False`` the adapter checks that the final name is free just before renaming, so two writers
  racing for the same name within that instant could both succeed (backup names are unique in practice).
  A server whose ``RNTO`` refuses to replace a file gets remove-then-rename when ``overwrite=True``.
- **Listing.** ``MLSD`` when the server announces ``MLST`` in ``FEAT`` (exact sizes and UTC times), else
  ``LIST`` parsed in the Unix ``ls -l`` format most servers use. Limits of the ``LIST`` fallback: no
  modification times, names must not start with a space, symbolic links are skipped, and servers that hide
  dot files from ``LIST`` (vsftpd without ``force_dot_files``) hide dot folders such as the connection-test
  folder from root listings. Windows/IIS "DOS" listings are not parsed.
- **TLS.** ``tls=True`` does explicit TLS (``AUTH TLS``, ``PROT P``) with certificate verification (system
  CAs or ``ca_file``); data connections reuse the control connection's TLS session, which servers such as
  vsftpd require. Closing a TLS data connection on which no application data flowed (an empty folder, an
  empty file) can fail with OpenSSL's ``SHUTDOWN_WHILE_IN_INIT`` (seen at random against pyftpdlib). That
  one error is tolerated only when the result is confirmed another way: the server's ``226`` reply plus zero
  bytes for a listing, the expected byte count for a download, or the ``SIZE`` check for an upload.
- **Connections.** ftplib connections carry one transfer at a time, so each writer and reader takes its
  own logged-in connection from a small pool; metadata commands borrow one too. A connection that saw an
  error is discarded, never reused. Retries are not done here.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import logging
import posixpath
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO, NoReturn, cast

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
    StorageFullError,
    TransientStorageError,
)

logger = logging.getLogger(__name__)

#: Idle logged-in connections kept for reuse.
POOL_SIZE = 8
#: A pooled connection idle for longer than this is checked with NOOP before reuse.
IDLE_CHECK_SECONDS = 10.0
_LIST_RE = re.compile(
    r"^(?P<type>[-dlbcps])\S*\s+\d+\s+\S+\s+\S+\s+(?P<size>\d+)\s+"
    r"\w{3}\s+\d{1,2}\s+(?:\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$"
)


class _FTPTLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = getattr(self.sock, "session", None)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def _is_shutdown_in_init(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLError) and "SHUTDOWN_WHILE_IN_INIT" in str(exc)


def _close_data(sock: socket.socket, *, tolerate_init_shutdown: bool) -> None:
    """End a data connection cleanly (TLS close_notify first), then close it."""
    try:
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.unwrap()
            except ssl.SSLError as exc:
                if not (tolerate_init_shutdown and _is_shutdown_in_init(exc)):
                    raise
                logger.debug("tolerated %s on an FTPS data connection without data", exc)
    finally:
        sock.close()


def _code(exc: BaseException) -> str:
    return str(exc)[:3]


class FTPAdapter(Destination):
    """Stores objects below a folder of an FTP or FTPS server.

    Args:
        host: Server name or address.
        port: Control port.
        username: Login name.
        password: Password.
        root: Folder that holds the objects, absolute or relative to the login folder. Created on the first
            upload.
        tls: Use explicit TLS (``AUTH TLS``) for the control and data connections.
        ca_file: CA bundle (PEM) to verify the server certificate with, instead of the system CAs.
        verify_tls: Verify the server certificate and host name (turn off only for tests).
        passive: Use passive mode (the client opens data connections), which works through NAT.
        use_mlsd: Force ``MLSD`` (True) or ``LIST`` (False) listings; None detects ``MLST`` support.
        timeout: Seconds for connecting and for each network operation.
    """

    kind = "ftp"

    def __init__(
        self,
        host: str,
        *,
        port: int = 21,
        username: str = "anonymous",
        password: str = "",
        root: str = "",
        tls: bool = False,
        ca_file: str | None = None,
        verify_tls: bool = True,
        passive: bool = True,
        use_mlsd: bool | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not host:
            raise ConfigurationError("FTP host must not be empty")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.root = root.rstrip("/") if root not in ("", "/") else root
        self.tls = tls
        self.passive = passive
        self.use_mlsd = use_mlsd
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if tls:
            self._context = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
                logger.warning("FTPS certificate verification is DISABLED for %s", self.describe())
        self._lock = threading.Lock()
        self._idle: list[tuple[ftplib.FTP, float]] = []
        self._known_dirs: set[str] = set()
        self._mlst: bool | None = None
        self._closed = False

    def describe(self) -> str:
        """Return ``ftp(s)://user@host:port/root``."""
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.root.lstrip('/')}"

    # -- connections ---------------------------------------------------------------------------------------

    def _connect(self) -> ftplib.FTP:
        ftp: ftplib.FTP = (
            _FTPTLS(context=self._context, timeout=self.timeout, encoding="utf-8")
            if self.tls
            else ftplib.FTP(timeout=self.timeout, encoding="utf-8")
        )
        try:
            ftp.connect(self.host, self.port)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
            ftp.login(self.username, self._password)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(self.passive)
            ftp.voidcmd("TYPE I")
            if self._mlst is None:
                self._mlst = self._detect_mlst(ftp) if self.use_mlsd is None else self.use_mlsd
        except BaseException as exc:
            with contextlib.suppress(Exception):
                ftp.close()
            if isinstance(exc, ftplib.error_perm) and _code(exc) in ("530", "331", "332"):
                raise AuthenticationError(
                    f"FTP login to {self.describe()} refused for user {self.username!r}",
                    hint="check the username and password",
                ) from exc
            if isinstance(exc, ftplib.error_perm) and re.search(r"TLS|SSL", str(exc)):
                raise ConfigurationError(
                    f"FTP login to {self.describe()} refused: {exc}", hint="the server requires tls=True"
                ) from exc
            if isinstance(exc, Exception):
                self._raise(exc, "connect")
            raise
        return ftp

    @staticmethod
    def _detect_mlst(ftp: ftplib.FTP) -> bool:
        try:
            features = ftp.sendcmd("FEAT")
        except ftplib.error_perm:
            return False
        return any(line.strip().upper().startswith("MLST") for line in features.splitlines()[1:])

    def _acquire(self) -> ftplib.FTP:
        with self._lock:
            if self._closed:
                raise ConfigurationError(f"{self.describe()} is closed")
            conn, last_used = self._idle.pop() if self._idle else (None, 0.0)
        if conn is not None:
            try:
                if time.monotonic() - last_used > IDLE_CHECK_SECONDS:  # servers drop idle sessions
                    conn.voidcmd("NOOP")
                return conn
            except Exception:
                with contextlib.suppress(Exception):
                    conn.close()
        return self._connect()

    def _release(self, conn: ftplib.FTP) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < POOL_SIZE:
                self._idle.append((conn, time.monotonic()))
                return
        self._discard(conn)

    @staticmethod
    def _discard(conn: ftplib.FTP) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[ftplib.FTP]:
        """Lend a connection; it goes back to the pool only if the block raised nothing."""
        conn = self._acquire()
        try:
            yield conn
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)

    def close(self) -> None:
        """Log out of every pooled connection."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                conn.quit()
            self._discard(conn)

    # -- errors --------------------------------------------------------------------------------------------

    def _raise(self, exc: BaseException, action: str, path: str | None = None) -> NoReturn:
        where = f"{self.describe()}/{path}" if path else self.describe()
        if isinstance(exc, BackupError):
            raise exc
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise AuthenticationError(
                f"FTPS {action} on {where}: the server certificate is not trusted ({exc.verify_message})",
                hint="set ca_file to the CA that signed it",
            ) from exc
        if isinstance(exc, ftplib.error_perm):
            code = _code(exc)
            if code == "530":
                raise AuthenticationError(f"FTP {action} on {where}: not logged in ({exc})") from exc
            if code == "552" or code == "452":
                raise StorageFullError(f"FTP {action} on {where}: no space left ({exc})") from exc
            if code == "550" and action in ("stat", "read"):
                raise NotFoundError(f"FTP {action}: {where} does not exist") from exc
            raise PermanentError(f"FTP {action} on {where} failed: {exc}") from exc
        if isinstance(exc, ftplib.error_temp):
            if _code(exc) == "452":
                raise StorageFullError(f"FTP {action} on {where}: no space left ({exc})") from exc
            raise TransientStorageError(f"FTP {action} on {where} failed: {exc}") from exc
        if isinstance(exc, (OSError, EOFError, ftplib.error_reply, ftplib.error_proto)):
            raise ConnectionFailedError(f"FTP {action} on {where} failed: {exc}") from exc
        raise PermanentError(f"FTP {action} on {where} failed: {exc}") from exc

    # -- paths and commands --------------------------------------------------------------------------------

    def _full(self, rel: str) -> str:
        if not rel:
            return self.root or "."
        return posixpath.join(self.root, rel) if self.root else rel

    def _mkdirs(self, conn: ftplib.FTP, rel_path: str, *, trust_cache: bool = True) -> None:
        """Create the folders above ``rel_path`` (the root included), skipping those made before."""
        parent = posixpath.dirname(self._full(rel_path))
        if parent in ("", "/", "."):
            return
        parts = parent.split("/")
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if not folder or (trust_cache and folder in self._known_dirs):
                continue
            # 550/521 when it exists already; a real failure shows up on STOR.
            with contextlib.suppress(ftplib.error_perm):
                conn.mkd(folder)
            self._known_dirs.add(folder)

    def _stat_full(self, conn: ftplib.FTP, full: str) -> Entry | None:
        """Describe a path, or None if it does not exist."""
        if self._mlst:
            try:
                reply = conn.sendcmd(f"MLST {full}")
            except ftplib.error_perm as exc:
                if _code(exc) == "550":
                    return None
                raise
            lines = reply.splitlines()
            if len(lines) < 2:
                raise ftplib.error_proto(f"unexpected MLST reply: {reply[:200]}")
            return _parse_mlsx(lines[1].lstrip())
        try:
            size = conn.size(full)
        except ftplib.error_perm as exc:
            if _code(exc) != "550":
                raise
            # Not a file: a folder (CWD works) or nothing.
            try:
                pwd = conn.pwd()
                conn.cwd(full)
                conn.cwd(pwd)
            except ftplib.error_perm:
                return None
            return Entry(name=posixpath.basename(full), is_dir=True)
        return Entry(name=posixpath.basename(full), is_dir=False, size=size or 0)

    def _retr_text(self, conn: ftplib.FTP, cmd: str) -> list[str]:
        """Run a listing command and return its lines (tolerating the FTPS empty-listing quirk)."""
        sock = conn.transfercmd(cmd)
        data = bytearray()
        try:
            while chunk := sock.recv(65536):
                data += chunk
        finally:
            _close_data(sock, tolerate_init_shutdown=not data)
        conn.voidresp()
        return data.decode(conn.encoding, errors="surrogateescape").splitlines()

    def _list_dir(self, rel: str) -> Sequence[Entry] | None:
        full = self._full(rel)
        try:
            with self._borrow() as conn:
                try:
                    if self._mlst:
                        lines = self._retr_text(conn, f"MLSD {full}")
                        parsed = [_parse_mlsx(line) for line in lines if line.strip()]
                    else:
                        lines = self._retr_text(conn, f"LIST {full}")
                        parsed = [_parse_list(line) for line in lines]
                except ftplib.error_perm:
                    # Servers answer a missing folder with 550, or 501 (pyftpdlib): check which it is.
                    if self._stat_full(conn, full) is None:
                        return None
                    raise
        except Exception as exc:
            self._raise(exc, "list", rel or None)
        return [entry for entry in parsed if entry is not None]

    # -- the contract ------------------------------------------------------------------------------------

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Start a ``STOR`` to a temporary name next to ``path``."""
        validate_object_path(path)
        return _FTPWriter(self, path, overwrite)

    def open_reader(self, path: str) -> BinaryIO:
        """Start a ``RETR`` of ``path`` on a connection of its own."""
        validate_path(path)
        conn = self._acquire()
        try:
            entry = self._stat_full(conn, self._full(path))
            if entry is None or entry.is_dir:
                raise NotFoundError(f"FTP read: {self.describe()}/{path} does not exist")
            sock = conn.transfercmd(f"RETR {self._full(path)}")
        except BaseException as exc:
            if isinstance(exc, NotFoundError):
                self._release(conn)
                raise
            self._discard(conn)
            if isinstance(exc, Exception):
                self._raise(exc, "read", path)
            raise
        return cast(BinaryIO, _FTPReader(self, conn, sock, path, entry.size))

    def stat(self, path: str) -> ObjectInfo:
        """Describe ``path`` (``MLST``, or ``SIZE`` without it); folders raise NotFoundError."""
        validate_path(path)
        try:
            with self._borrow() as conn:
                entry = self._stat_full(conn, self._full(path))
        except Exception as exc:
            self._raise(exc, "stat", path)
        if entry is None or entry.is_dir:
            raise NotFoundError(f"FTP stat: {self.describe()}/{path} does not exist")
        return ObjectInfo(path=path, size=entry.size, modified=entry.modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the folders under ``prefix`` (see the module docstring for ``LIST`` limits)."""
        validate_path(prefix, field="prefix", allow_empty=True)
        return walk_prefix(prefix, self._list_dir)

    def delete(self, path: str) -> None:
        """``DELE`` the file; a missing file is not an error."""
        validate_path(path)
        full = self._full(path)
        try:
            with self._borrow() as conn:
                try:
                    conn.delete(full)
                except ftplib.error_perm as exc:
                    if _code(exc) == "550" and self._stat_full(conn, full) is None:
                        return
                    raise
        except Exception as exc:
            self._raise(exc, "delete", path)


def _parse_mlsx(line: str) -> Entry | None:
    facts_text, _, name = line.partition(" ")
    facts: dict[str, str] = {}
    for fact in facts_text.rstrip(";").split(";"):
        key, _, value = fact.partition("=")
        facts[key.lower()] = value
    kind = facts.get("type", "").lower()
    name = posixpath.basename(name.rstrip("/")) or name
    if kind in ("cdir", "pdir"):
        return None
    modified = None
    if modify := facts.get("modify"):
        with contextlib.suppress(ValueError):
            modified = datetime.strptime(modify[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    if kind == "dir":
        return Entry(name=name, is_dir=True, modified=modified)
    if kind == "file":
        return Entry(name=name, is_dir=False, size=int(facts.get("size", "0") or 0), modified=modified)
    return None  # links, devices, OS-specific types


def _parse_list(line: str) -> Entry | None:
    match = _LIST_RE.match(line)
    if match is None:
        return None
    kind = match["type"]
    if kind == "d":
        return Entry(name=match["name"], is_dir=True)
    if kind == "-":
        return Entry(name=match["name"], is_dir=False, size=int(match["size"]))
    return None


class _FTPWriter(ObjectWriter):
    """A ``STOR`` data connection to a temporary name, renamed into place on commit."""

    def __init__(self, dest: FTPAdapter, path: str, overwrite: bool) -> None:
        self.path = path
        self._dest = dest
        self._overwrite = overwrite
        self._temp = dest._full(temp_name(path))
        self._final = dest._full(path)
        self._size = 0
        self._done = False
        self._sock: socket.socket | None = None
        self._conn: ftplib.FTP | None = dest._acquire()
        try:
            dest._mkdirs(self._conn, path)
            try:
                self._sock = self._conn.transfercmd(f"STOR {self._temp}")
            except ftplib.error_perm:
                # A folder remembered as created may have been removed since: create again, once.
                dest._mkdirs(self._conn, path, trust_cache=False)
                self._sock = self._conn.transfercmd(f"STOR {self._temp}")
        except BaseException as exc:
            self._cleanup(discard=True)
            if isinstance(exc, Exception):
                dest._raise(exc, "start upload", path)
            raise

    def write(self, data: bytes | memoryview) -> None:
        """Send bytes on the data connection (blocks while the server catches up)."""
        if self._sock is None:
            raise ConfigurationError(f"FTP writer for {self.path} is closed")
        try:
            self._sock.sendall(data)
        except Exception as exc:
            self._dest._raise(exc, "upload", self.path)
        self._size += len(data)

    def commit(self) -> ObjectInfo:
        """Finish the transfer, verify the size, then rename into place."""
        if self._sock is None or self._conn is None:
            raise ConfigurationError(f"FTP writer for {self.path} is closed")
        conn, dest = self._conn, self._dest
        try:
            sock, self._sock = self._sock, None
            _close_data(sock, tolerate_init_shutdown=True)  # verified by 226 + SIZE below
            conn.voidresp()
            self._verify_size(conn)
            if not self._overwrite:
                existing = dest._stat_full(conn, self._final)
                if existing is not None:
                    raise ConfigurationError(
                        f"FTP commit: {dest.describe()}/{self.path} already exists",
                        hint="backups are never overwritten by accident; pass overwrite=True to replace",
                    )
            self._rename(conn)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, Exception):
                dest._raise(exc, "commit", self.path)
            raise
        self._done = True
        self._conn = None
        dest._release(conn)
        return ObjectInfo(path=self.path, size=self._size, modified=datetime.now(UTC))

    def _verify_size(self, conn: ftplib.FTP) -> None:
        try:
            stored = conn.size(self._temp)
        except ftplib.error_perm as exc:
            if _code(exc) in ("500", "502", "504"):  # SIZE not supported
                return
            raise
        if stored is not None and stored != self._size:
            raise ConnectionFailedError(
                f"FTP upload to {self._dest.describe()}/{self.path}: the server stored {stored} bytes of "
                f"{self._size}"
            )

    def _rename(self, conn: ftplib.FTP) -> None:
        try:
            conn.rename(self._temp, self._final)
        except ftplib.error_perm:
            if not self._overwrite or self._dest._stat_full(conn, self._final) is None:
                raise
            logger.warning(
                "%s refuses to rename over %s: replacing by delete + rename (not atomic)",
                self._dest.describe(),
                self.path,
            )
            conn.delete(self._final)
            conn.rename(self._temp, self._final)

    def abort(self) -> None:
        """Drop the transfer and delete the temporary file (problems are logged, not raised)."""
        if self._done:
            return
        self._done = True
        self._cleanup(discard=False)

    def _cleanup(self, *, discard: bool) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._sock.close()
            self._sock = None
            # The server answers the cut transfer (226 or 426); read it so the connection stays in step.
            if self._conn is not None:
                try:
                    self._conn.voidresp()
                except ftplib.Error:
                    pass
                except Exception:
                    self._dest._discard(self._conn)
                    self._conn = None
        conn, self._conn = self._conn, None
        for attempt in range(2):  # the second time on a fresh connection
            try:
                if conn is None:
                    conn = self._dest._acquire()
                with contextlib.suppress(ftplib.error_perm):
                    conn.delete(self._temp)
                break
            except Exception:
                if conn is not None:
                    self._dest._discard(conn)
                    conn = None
                if attempt:
                    logger.warning(
                        "could not remove temporary file %s on %s", self._temp, self._dest.describe()
                    )
                    return
        assert conn is not None
        if discard:
            self._dest._discard(conn)
        else:
            self._dest._release(conn)


class _FTPReader(io.RawIOBase):
    """A ``RETR`` data connection read as a stream; checks the byte count at the end."""

    def __init__(self, dest: FTPAdapter, conn: ftplib.FTP, sock: socket.socket, path: str, size: int) -> None:
        self._dest = dest
        self._conn: ftplib.FTP | None = conn
        self._sock: socket.socket | None = sock
        self._path = path
        self._expected = size
        self._received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._sock is None:
            return 0
        try:
            n = self._sock.recv_into(b)
        except Exception as exc:
            self._abandon()
            self._dest._raise(exc, "read", self._path)
        if n:
            self._received += n
            return n
        self._finish()
        return 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def _finish(self) -> None:
        sock, self._sock = self._sock, None
        conn, self._conn = self._conn, None
        assert sock is not None and conn is not None
        complete = self._received == self._expected
        try:
            _close_data(sock, tolerate_init_shutdown=complete)
            conn.voidresp()
        except Exception as exc:
            self._dest._discard(conn)
            self._dest._raise(exc, "read", self._path)
        self._dest._release(conn)
        if not complete:
            raise ConnectionFailedError(
                f"FTP read of {self._dest.describe()}/{self._path}: got {self._received} bytes, "
                f"expected {self._expected}"
            )

    def _abandon(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._sock.close()
            self._sock = None
        if self._conn is not None:
            self._dest._discard(self._conn)  # mid-transfer: the connection is out of step
            self._conn = None

    def close(self) -> None:
        if not self.closed:
            self._abandon()
        super().close()


__all__ = ["FTPAdapter"]
