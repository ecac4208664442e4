"""SFTP destination (paramiko).

Uploads go to ``.<name>.<uuid>.partial`` in the target folder through pipelined writes, then are renamed
into place: with ``overwrite=False`` by the plain SFTP rename, which refuses to replace an existing file
(OpenSSH implements it with ``link()``), and with ``overwrite=True`` by the ``posix-rename@openssh.com``
extension, which replaces atomically. On a server without that extension an overwrite falls back to
remove-then-rename (not atomic; logged).

The server's host key is verified by default against a known_hosts file (``known_hosts``, else the user's
``~/.ssh/known_hosts``) or a pinned key (``host_key``: an OpenSSH public key line or a ``SHA256:``
fingerprint). ``insecure_skip_host_key_check=True`` accepts any key and logs a warning.

One SSH connection per adapter, opened on first use and reopened if it dropped. Every operation, writer and
reader borrows an SFTP channel of its own on that connection (idle channels are kept for reuse), so
concurrent uploads from threads never share SFTP state; each open channel takes a session slot (OpenSSH
allows 10 per connection by default). Retries are not done here (see :mod:`prefect_db_backup.adapters.retry`).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import logging
import posixpath
import socket
import stat as stat_mod
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NoReturn, cast

import paramiko
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
    TransientStorageError,
)

logger = logging.getLogger(__name__)

#: Bytes a reader fetches ahead (in parallel 32 KiB requests); also its memory bound.
READ_WINDOW = 4 << 20
#: Idle SFTP channels kept open for reuse (each is an SSH session; OpenSSH allows 10 by default).
CHANNEL_POOL = 4
_NET_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EPIPE, errno.ECONNRESET}


def _load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    errors: list[str] = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException as exc:
            raise ConfigurationError("the SFTP private key is encrypted", hint="set its passphrase") from exc
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(type(exc).__name__)
    raise ConfigurationError(
        "the SFTP private key cannot be read (wrong passphrase, or not an OpenSSH/PEM RSA, ECDSA or "
        "Ed25519 key)"
    )


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Accept the server only if its key matches a pinned fingerprint."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint.rstrip("=")

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        actual = _fingerprint(key)
        if actual != self.fingerprint:
            raise paramiko.SSHException(f"host key mismatch: server presented {actual}")


class _InsecurePolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        logger.warning(
            "SFTP host key check is DISABLED: accepting %s key %s for %s without verification",
            key.get_name(),
            _fingerprint(key),
            hostname,
        )


class SFTPAdapter(Destination):
    """Stores objects below a folder of an SFTP server.

    Args:
        host: Server name or address.
        port: SSH port.
        username: Login name.
        password: Password (used if no key is given, or if key login fails).
        private_key: Private key text (OpenSSH or PEM; RSA, ECDSA or Ed25519).
        private_key_passphrase: Passphrase of an encrypted ``private_key``.
        root: Folder that holds the objects: absolute, or relative to the login folder. Created on the
            first upload.
        known_hosts: Path of a known_hosts file to verify the host key against.
        host_key: Pinned host key: an OpenSSH public key line (``ssh-ed25519 AAAA...``, optionally
            preceded by host names) or a ``SHA256:...`` fingerprint as ``ssh-keygen -lf`` prints it.
        insecure_skip_host_key_check: Accept any host key (logged as a warning). Never use in production.
        timeout: Seconds for connecting and for each network operation.

    Raises:
        ConfigurationError: On missing credentials, an unreadable key, or a malformed ``host_key``.
    """

    kind = "sftp"

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        username: str,
        password: str | None = None,
        private_key: str | None = None,
        private_key_passphrase: str | None = None,
        root: str = "",
        known_hosts: str | Path | None = None,
        host_key: str | None = None,
        insecure_skip_host_key_check: bool = False,
        timeout: float = 30.0,
    ) -> None:
        if not host:
            raise ConfigurationError("SFTP host must not be empty")
        if not username:
            raise ConfigurationError("SFTP username must not be empty")
        if password is None and private_key is None:
            raise ConfigurationError("SFTP needs a password or a private key")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self._pkey = _load_private_key(private_key, private_key_passphrase) if private_key else None
        self.root = root.rstrip("/") if root not in ("", "/") else root
        self.known_hosts = Path(known_hosts) if known_hosts else None
        self.insecure = insecure_skip_host_key_check
        self.timeout = timeout
        self._pinned_line: tuple[str, paramiko.PKey] | None = None
        self._pinned_fp: str | None = None
        if host_key:
            self._parse_host_key(host_key.strip())
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._idle: list[paramiko.SFTPClient] = []

    # -- connection ----------------------------------------------------------------------------------

    def _parse_host_key(self, value: str) -> None:
        if value.startswith("SHA256:"):
            self._pinned_fp = value
            return
        parts = value.split()
        for i in range(len(parts) - 1):
            try:
                key = paramiko.PKey.from_type_string(parts[i], base64.b64decode(parts[i + 1]))
            except Exception:
                continue
            self._pinned_line = (parts[i], key)
            return
        raise ConfigurationError(
            "SFTP host_key is neither an OpenSSH public key line nor a SHA256: fingerprint",
            hint="use the output of `ssh-keyscan -t ed25519 HOST` or `ssh-keygen -lf KEYFILE`",
        )

    def describe(self) -> str:
        """Return ``sftp://user@host:port/root`` (relative roots as ``/~/root``)."""
        root = self.root if self.root.startswith("/") else f"/~/{self.root}" if self.root else "/~"
        return f"sftp://{self.username}@{self.host}:{self.port}{root}"

    def _host_key_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.insecure:
            client.set_missing_host_key_policy(_InsecurePolicy())
        elif self._pinned_line is not None:
            keytype, key = self._pinned_line
            client.get_host_keys().add(self._host_key_name(), keytype, key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        elif self._pinned_fp is not None:
            client.set_missing_host_key_policy(_PinnedHostKeyPolicy(self._pinned_fp))
        else:
            try:
                if self.known_hosts is not None:
                    client.load_host_keys(str(self.known_hosts))
                else:
                    client.load_system_host_keys()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read the known_hosts file for {self.describe()}: {exc.strerror}"
                ) from exc
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=self._password,
                pkey=self._pkey,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except BaseException as exc:
            client.close()
            if isinstance(exc, Exception):
                self._raise(exc, "connect")
            raise
        return client

    def _transport(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is None or not transport.is_active():
                    self._drop()
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _drop(self) -> None:
        idle, self._idle = self._idle, []
        for sftp in idle:
            _quiet_close(sftp)
        if self._client is not None:
            self._client.close()
            self._client = None

    def _open_channel(self) -> paramiko.SFTPClient:
        client = self._transport()
        try:
            try:
                sftp = client.open_sftp()
            except paramiko.ChannelException:
                # The server's per-connection session limit (OpenSSH MaxSessions, 10 by default) is
                # reached: give back the idle channels and try once more.
                with self._lock:
                    idle, self._idle = self._idle, []
                for old in idle:
                    _quiet_close(old)
                sftp = client.open_sftp()
        except paramiko.ChannelException as exc:
            # Not a dead connection: other channels on it are still working, so do not drop it.
            raise TransientStorageError(
                f"SFTP on {self.describe()}: the server refused another session on this connection ({exc})",
                hint="raise MaxSessions in sshd_config or upload to this server with fewer writers at once",
            ) from exc
        except Exception as exc:
            self._raise(exc, "open an SFTP channel")
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(self.timeout)
        return sftp

    def _acquire(self) -> paramiko.SFTPClient:
        """Take an idle SFTP channel of the current connection, or open one."""
        with self._lock:
            self._transport()  # reconnects (and forgets idle channels) if the connection dropped
            if self._idle:
                return self._idle.pop()
        return self._open_channel()

    def _release(self, sftp: paramiko.SFTPClient, *, healthy: bool) -> None:
        """Give a channel back for reuse, or close it if it saw a failure or the pool is full."""
        with self._lock:
            channel = sftp.get_channel()
            transport = self._client.get_transport() if self._client is not None else None
            if (
                healthy
                and channel is not None
                and not channel.closed
                and transport is not None
                and channel.get_transport() is transport
                and len(self._idle) < CHANNEL_POOL
            ):
                self._idle.append(sftp)
                return
        _quiet_close(sftp)

    @contextlib.contextmanager
    def _channel(self) -> Iterator[paramiko.SFTPClient]:
        """Borrow a channel for one metadata operation."""
        sftp = self._acquire()
        healthy = False
        try:
            yield sftp
            healthy = True
        except OSError as exc:
            # A status reply (no such file, permission denied) leaves the channel usable.
            healthy = isinstance(exc, (FileNotFoundError, PermissionError)) or (
                type(exc) is OSError and exc.errno is None
            )
            raise
        finally:
            self._release(sftp, healthy=healthy)

    def close(self) -> None:
        """Close the SSH connection."""
        with self._lock:
            self._drop()

    # -- error translation ---------------------------------------------------------------------------

    def _raise(self, exc: BaseException, action: str, path: str | None = None) -> NoReturn:
        where = f"{self.describe()}/{path}" if path else self.describe()
        if isinstance(exc, BackupError):
            raise exc
        if isinstance(exc, paramiko.BadHostKeyException):
            raise AuthenticationError(
                f"SFTP {action} on {where}: the server's host key does not match the expected key",
                hint="check known_hosts or host_key; the server may have been replaced or intercepted",
            ) from exc
        if isinstance(exc, paramiko.AuthenticationException):
            raise AuthenticationError(
                f"SFTP {action} on {where}: the server refused the login of user {self.username!r}",
                hint="check the username, password or private key",
            ) from exc
        if isinstance(exc, paramiko.SSHException) and (
            "not found in known_hosts" in str(exc) or "host key mismatch" in str(exc)
        ):
            raise AuthenticationError(
                f"SFTP {action} on {where}: the server's host key is not trusted ({exc})",
                hint="add it to known_hosts or set host_key (insecure_skip_host_key_check only for tests)",
            ) from exc
        if isinstance(exc, FileNotFoundError):
            raise NotFoundError(f"SFTP {action}: {where} does not exist") from exc
        if isinstance(exc, PermissionError):
            raise AuthenticationError(
                f"SFTP {action} on {where}: permission denied",
                hint=f"grant user {self.username!r} access to the folder",
            ) from exc
        if isinstance(exc, socket.gaierror):
            raise ConnectionFailedError(f"SFTP {action}: cannot resolve host {self.host!r}") from exc
        if isinstance(
            exc,
            (
                paramiko.SSHException,
                paramiko.ssh_exception.NoValidConnectionsError,
                EOFError,
                TimeoutError,
                ConnectionError,
            ),
        ) or (isinstance(exc, OSError) and (exc.errno in _NET_ERRNOS or str(exc) == "Socket is closed")):
            with self._lock:
                self._drop()
            raise ConnectionFailedError(f"SFTP {action} on {where} failed: {exc}") from exc
        raise PermanentError(f"SFTP {action} on {where} failed: {exc}") from exc

    # -- paths -----------------------------------------------------------------------------------------

    def _full(self, rel: str) -> str:
        if not rel:
            return self.root or "."
        return posixpath.join(self.root, rel) if self.root else rel

    @staticmethod
    def _is_dir(sftp: paramiko.SFTPClient, folder: str) -> bool:
        try:
            return stat_mod.S_ISDIR(sftp.stat(folder).st_mode or 0)
        except FileNotFoundError:
            return False

    def _mkdirs(self, sftp: paramiko.SFTPClient, rel_path: str) -> None:
        """Create the folders above ``rel_path``, the root included (mkdir -p)."""
        parent = posixpath.dirname(self._full(rel_path))
        if parent in ("", "/", ".") or self._is_dir(sftp, parent):
            return
        parts = parent.split("/")
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if not folder or self._is_dir(sftp, folder):
                continue
            try:
                sftp.mkdir(folder)
            except OSError:
                if not self._is_dir(sftp, folder):  # not merely created concurrently by another writer
                    raise

    # -- the contract ------------------------------------------------------------------------------------

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Start an upload to a temporary file next to ``path`` (see the module docstring)."""
        validate_object_path(path)
        return _SFTPWriter(self, path, overwrite)

    def open_reader(self, path: str) -> BinaryIO:
        """Open ``path`` for streamed reading with a bounded read-ahead window."""
        validate_path(path)
        sftp = self._acquire()
        try:
            full = self._full(path)
            attrs = sftp.stat(full)
            if stat_mod.S_ISDIR(attrs.st_mode or 0):
                raise NotFoundError(f"SFTP read: {self.describe()}/{path} is a folder, not an object")
        except BaseException as exc:
            self._release(sftp, healthy=isinstance(exc, (FileNotFoundError, NotFoundError)))
            if isinstance(exc, Exception):
                self._raise(exc, "open for reading", path)
            raise
        return cast(BinaryIO, _SFTPReader(self, sftp, full, attrs))

    def stat(self, path: str) -> ObjectInfo:
        """Describe ``path``; a folder or a missing file raises NotFoundError."""
        validate_path(path)
        try:
            with self._channel() as sftp:
                attrs = sftp.stat(self._full(path))
        except Exception as exc:
            self._raise(exc, "stat", path)
        if stat_mod.S_ISDIR(attrs.st_mode or 0):
            raise NotFoundError(f"SFTP stat: {self.describe()}/{path} is a folder, not an object")
        return ObjectInfo(path=path, size=attrs.st_size or 0, modified=_mtime(attrs))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the folders under ``prefix`` (SFTP READDIR pages are followed to the end)."""
        validate_path(prefix, field="prefix", allow_empty=True)
        return walk_prefix(prefix, self._list_dir)

    def _list_dir(self, rel: str) -> Sequence[Entry] | None:
        try:
            with self._channel() as sftp:
                attrs = sftp.listdir_attr(self._full(rel))
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._raise(exc, "list", rel or None)
        return [
            Entry(
                name=a.filename,
                is_dir=stat_mod.S_ISDIR(a.st_mode or 0),
                size=a.st_size or 0,
                modified=_mtime(a),
            )
            for a in attrs
            if stat_mod.S_ISDIR(a.st_mode or 0) or stat_mod.S_ISREG(a.st_mode or 0)
        ]

    def delete(self, path: str) -> None:
        """Remove ``path``; a missing file is not an error."""
        validate_path(path)
        try:
            with self._channel() as sftp:
                sftp.remove(self._full(path))
        except FileNotFoundError:
            return
        except Exception as exc:
            self._raise(exc, "delete", path)


def _quiet_close(sftp: paramiko.SFTPClient) -> None:
    try:
        sftp.close()
    except Exception:
        logger.debug("closing SFTP channel failed", exc_info=True)


def _mtime(attrs: paramiko.SFTPAttributes) -> datetime | None:
    return datetime.fromtimestamp(attrs.st_mtime, tz=UTC) if attrs.st_mtime is not None else None


class _SFTPWriter(ObjectWriter):
    """Pipelined upload to a temporary file, renamed into place on commit."""

    def __init__(self, dest: SFTPAdapter, path: str, overwrite: bool) -> None:
        self.path = path
        self._dest = dest
        self._overwrite = overwrite
        self._temp = dest._full(temp_name(path))
        self._final = dest._full(path)
        self._size = 0
        self._done = False
        self._sftp = dest._acquire()
        try:
            dest._mkdirs(self._sftp, path)
            self._file: paramiko.SFTPFile | None = self._sftp.open(self._temp, "wb")
            self._file.set_pipelined(True)
        except BaseException as exc:
            dest._release(self._sftp, healthy=False)
            if isinstance(exc, Exception):
                dest._raise(exc, "start upload", path)
            raise

    def write(self, data: bytes | memoryview) -> None:
        """Send bytes (pipelined: errors surface on a later write or on commit)."""
        if self._file is None:
            raise ConfigurationError(f"SFTP writer for {self.path} is closed")
        try:
            self._file.write(bytes(data))
        except Exception as exc:
            self._dest._raise(exc, "upload", self.path)
        self._size += len(data)

    def commit(self) -> ObjectInfo:
        """Wait for every write to be acknowledged, then rename into place."""
        if self._file is None:
            raise ConfigurationError(f"SFTP writer for {self.path} is closed")
        dest = self._dest
        try:
            self._file.close()
            self._file = None
            attrs = self._sftp.stat(self._temp)
            if attrs.st_size != self._size:
                raise PermanentError(
                    f"SFTP upload to {dest.describe()}/{self.path}: the server stored {attrs.st_size} bytes "
                    f"of {self._size}"
                )
            self._rename()
        except Exception as exc:
            self.abort()
            dest._raise(exc, "commit", self.path)
        self._done = True
        dest._release(self._sftp, healthy=True)
        return ObjectInfo(path=self.path, size=self._size, modified=_mtime(attrs))

    def _rename(self) -> None:
        sftp = self._sftp
        if not self._overwrite:
            try:
                sftp.rename(self._temp, self._final)
            except OSError as exc:
                if self._exists(self._final):
                    raise ConfigurationError(
                        f"SFTP commit: {self._dest.describe()}/{self.path} already exists",
                        hint="backups are never overwritten by accident; pass overwrite=True to replace",
                    ) from exc
                raise
            return
        try:
            sftp.posix_rename(self._temp, self._final)
        except OSError as exc:
            if "unsupported" not in str(exc).lower():
                raise
            logger.warning(
                "%s lacks posix-rename: replacing %s by remove + rename (not atomic)",
                self._dest.describe(),
                self.path,
            )
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(self._final)
            sftp.rename(self._temp, self._final)

    def _exists(self, full: str) -> bool:
        try:
            self._sftp.stat(full)
        except OSError:
            return False
        return True

    def abort(self) -> None:
        """Close the upload and remove the temporary file (problems are logged, not raised)."""
        if self._done:
            return
        self._done = True
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                logger.debug("closing %s failed", self._temp, exc_info=True)
            self._file = None
        try:
            self._sftp.remove(self._temp)
        except FileNotFoundError:
            pass
        except Exception:
            # The channel or the connection may be gone: try once more through a fresh one.
            try:
                with self._dest._channel() as sftp, contextlib.suppress(FileNotFoundError):
                    sftp.remove(self._temp)
            except Exception:
                logger.warning("could not remove temporary file %s on %s", self._temp, self._dest.describe())
        self._dest._release(self._sftp, healthy=False)


class _SFTPReader(io.RawIOBase):
    """Streams a remote file in windows of :data:`READ_WINDOW` bytes fetched by parallel requests.

    Each window is read through a handle of its own (opened, ``readv``, closed). paramiko's prefetch can
    mark itself done while its request thread is still sending requests; replies that then arrive are kept
    in the handle's prefetch buffer and never consumed, so one long-lived handle would grow without bound.
    A handle per window frees them with it. Every new handle is checked to still show the size and
    modification time seen at open, so a file replaced mid-read fails instead of mixing two versions.
    """

    def __init__(
        self, dest: SFTPAdapter, sftp: paramiko.SFTPClient, full: str, attrs: paramiko.SFTPAttributes
    ) -> None:
        self._dest = dest
        self._sftp = sftp
        self._full = full
        self._healthy = True
        self._size = attrs.st_size or 0
        self._mtime = attrs.st_mtime
        self._offset = 0
        self._buffer = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        remaining = self._size - self._offset
        if remaining <= 0:
            return
        length = min(READ_WINDOW, remaining)
        self._buffer, self._pos = b"", 0  # let the previous window go before fetching the next
        try:
            with self._sftp.open(self._full, "rb") as handle:
                now = handle.stat()
                if now.st_size != self._size or now.st_mtime != self._mtime:
                    raise ConnectionFailedError(
                        f"SFTP read of {self._dest.describe()}: {self._full} changed while being read"
                    )
                chunk = b"".join(handle.readv([(self._offset, length)]))
        except BackupError:
            raise
        except Exception as exc:
            self._healthy = False
            self._dest._raise(exc, "read", None)
        if len(chunk) != length:
            raise ConnectionFailedError(
                f"SFTP read of {self._full} on {self._dest.describe()}: got {len(chunk)} bytes at offset "
                f"{self._offset}, expected {length}"
            )
        self._offset += len(chunk)
        self._buffer = chunk
        self._pos = 0

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos >= len(self._buffer):
            self._fill()
            if self._pos >= len(self._buffer):
                return 0
        n = min(len(b), len(self._buffer) - self._pos)
        memoryview(b)[:n] = self._buffer[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._pos >= len(self._buffer):
            self._fill()
        out = self._buffer[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def close(self) -> None:
        if not self.closed:
            self._buffer = b""
            self._dest._release(self._sftp, healthy=self._healthy)
        super().close()


__all__ = ["SFTPAdapter"]
