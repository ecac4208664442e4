"""WebDAV destination (httpx).

- **Commit.** A writer streams a chunked ``PUT`` of ``.<name>.<uuid>.partial`` in the target collection
  (the request body is a generator fed from a bounded queue, so memory stays flat), checks the stored size
  with ``PROPFIND``, then moves it (``MOVE``) to the final name with ``Overwrite: F`` (the server refuses with
  412 if the name is taken; atomic on the server side) or ``Overwrite: T`` when asked.
- **Folders.** Missing collections are created with ``MKCOL``, parents first.
- **Listing.** ``PROPFIND`` with ``Depth: 1``, folder by folder (``Depth: infinity`` is disabled on most
  servers). A multistatus answer is the whole folder: there is no pagination to follow.
- **Errors.** 401/403 :class:`AuthenticationError`, 404 :class:`NotFoundError` (reads and stats; a delete
  of a missing file succeeds), 507 :class:`StorageFullError`, 5xx and 429 :class:`TransientStorageError`,
  transport failures :class:`ConnectionFailedError`, other 4xx :class:`PermanentError`.

One ``httpx.Client`` (thread-safe, pooled connections) per adapter. Retries are not done here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import posixpath
import queue
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO, NoReturn, cast
from urllib.parse import quote, unquote, urlsplit

import httpx
from prefect_db_backup.adapters.destination import (
    Destination,
    ObjectInfo,
    ObjectWriter,
    validate_object_path,
    validate_path,
)
from prefect_db_backup.adapters.destinations._remote import Entry, parent_dirs, temp_name, walk_prefix
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

#: Chunks a writer may queue ahead of the network (each at most one ``write`` call's size).
QUEUE_CHUNKS = 4
_DAV = "{DAV:}"
_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:resourcetype/><d:getcontentlength/><d:getlastmodified/></d:prop></d:propfind>"
)
_END = object()


class _Aborted(Exception):
    """Ends a streamed PUT body when the writer is aborted."""


class WebDAVAdapter(Destination):
    """Stores objects below a collection of a WebDAV server.

    Args:
        url: Base URL of the WebDAV share (``https://host/remote.php/dav/files/me/``).
        username: Basic-auth user (None for no authentication).
        password: Its password.
        root: Collection below ``url`` that holds the objects; created on the first upload.
        verify_tls: Verify the server certificate (True), or a CA bundle path.
        timeout: Seconds for connecting and for each read or write on the network.
    """

    kind = "webdav"

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        root: str = "",
        verify_tls: bool | str = True,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"WebDAV url {url!r} must be an http:// or https:// URL")
        if parts.username or parts.password:
            raise ConfigurationError("WebDAV url must not contain credentials; use username and password")
        self.url = url if url.endswith("/") else url + "/"
        self.root = root.strip("/")
        if self.root:
            validate_path(self.root, field="root")
        self.username = username
        auth = httpx.BasicAuth(username, password or "") if username is not None else None
        self._client = httpx.Client(
            auth=auth,
            timeout=httpx.Timeout(timeout),
            verify=verify_tls,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._base_path = urlsplit(self.url).path

    def describe(self) -> str:
        """Return the collection URL with the user name, without the password."""
        parts = urlsplit(self.url)
        user = f"{self.username}@" if self.username else ""
        return f"{parts.scheme}://{user}{parts.netloc}{parts.path}{self.root}"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # -- paths and requests --------------------------------------------------------------------------------

    def _rel_to_root(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root and rel else self.root or rel

    def _url(self, rel: str, *, folder: bool = False) -> str:
        return self._url_from_base(self._rel_to_root(rel), folder=folder)

    def _url_from_base(self, path: str, *, folder: bool = False) -> str:
        encoded = "/".join(quote(seg, safe="") for seg in path.split("/")) if path else ""
        if folder and encoded:
            encoded += "/"
        return self.url + encoded

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self._raise_transport(exc, method, url)

    def _raise_transport(self, exc: BaseException, method: str, url: str) -> NoReturn:
        what = f"WebDAV {method} {unquote(url)}"
        if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise AuthenticationError(
                f"{what}: the server certificate is not trusted", hint="set verify_tls to its CA bundle"
            ) from exc
        if isinstance(exc, httpx.TransportError | httpx.StreamError):
            raise ConnectionFailedError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
        raise PermanentError(f"{what} failed: {exc}") from exc

    def _raise_status(self, response: httpx.Response, action: str, rel: str | None = None) -> NoReturn:
        raise self._status_error(response, action, rel)

    def _status_error(
        self, response: httpx.Response, action: str, rel: str | None, *, where: str | None = None
    ) -> BackupError:
        """Classify an unexpected HTTP status (see the module docstring)."""
        if where is None:
            where = f"{self.describe()}/{rel}" if rel else self.describe()
        status = response.status_code
        message = f"WebDAV {action} on {where}: HTTP {status} {response.reason_phrase}"
        if status in (401, 403):
            return AuthenticationError(message, hint="check the username, password and permissions")
        if status == 404:
            return NotFoundError(f"WebDAV {action}: {where} does not exist")
        if status == 507:
            return StorageFullError(message, hint="free space or raise the quota on the server")
        if status >= 500 or status in (408, 429):
            return TransientStorageError(message)
        return PermanentError(message)

    def _mkcols(self, rel_path: str) -> None:
        """Create the collections above ``rel_path`` (the root included), parents first when needed."""
        folders = parent_dirs(self._rel_to_root(rel_path))
        if not folders:
            return
        # Usually the parent exists or only it is missing: one request.
        if self._mkcol(folders[-1]):
            return
        for folder in folders:
            if not self._mkcol(folder):
                raise PermanentError(f"WebDAV create folder {folder!r} under {self.url}: parent missing")

    def _mkcol(self, folder: str) -> bool:
        """MKCOL one collection (path from the base URL); False when its parent is missing (409).

        A collection that exists already (405), or that a concurrent writer created at the same moment
        (some servers then answer 500), is success.
        """
        url = self._url_from_base(folder, folder=True)
        response = self._request("MKCOL", url)
        if response.status_code in (201, 405):
            return True
        if response.status_code == 409:
            return False
        existing = self._stat_url(url, "create folder", folder)
        if existing is not None and existing.is_dir:
            return True
        raise self._status_error(response, "create folder", None, where=f"{self.url}{folder}")

    def _propfind(self, url: str, depth: str) -> httpx.Response:
        return self._request(
            "PROPFIND",
            url,
            headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
            content=_PROPFIND_BODY,
        )

    def _parse_multistatus(self, response: httpx.Response) -> list[tuple[str, Entry]]:
        """Return ``(decoded path, entry)`` for every response element."""
        try:
            tree = ET.fromstring(response.content)
        except ET.ParseError as exc:
            raise TransientStorageError(f"WebDAV listing on {self.describe()}: malformed XML") from exc
        result = []
        for item in tree.iter(f"{_DAV}response"):
            href = item.findtext(f"{_DAV}href") or ""
            path = unquote(urlsplit(href).path)
            is_dir = size = modified = None
            for propstat in item.iter(f"{_DAV}propstat"):
                status = propstat.findtext(f"{_DAV}status") or ""
                if " 200 " not in status and not status.endswith(" 200"):
                    continue
                prop = propstat.find(f"{_DAV}prop")
                if prop is None:
                    continue
                rtype = prop.find(f"{_DAV}resourcetype")
                if rtype is not None:
                    is_dir = rtype.find(f"{_DAV}collection") is not None
                if (length := prop.findtext(f"{_DAV}getcontentlength")) is not None:
                    size = int(length.strip() or 0)
                if lastmod := prop.findtext(f"{_DAV}getlastmodified"):
                    with contextlib.suppress(TypeError, ValueError):
                        modified = parsedate_to_datetime(lastmod).astimezone(UTC)
            name = posixpath.basename(path.rstrip("/"))
            result.append((path, Entry(name=name, is_dir=bool(is_dir), size=size or 0, modified=modified)))
        return result

    def _list_dir(self, rel: str) -> Sequence[Entry] | None:
        url = self._url(rel, folder=True)
        response = self._propfind(url, "1")
        if response.status_code == 404:
            return None
        if response.status_code != 207:
            self._raise_status(response, "list", rel or None)
        own = unquote(urlsplit(url).path).rstrip("/")
        return [entry for path, entry in self._parse_multistatus(response) if path.rstrip("/") != own]

    def _stat_url(self, url: str, action: str, rel: str) -> Entry | None:
        response = self._propfind(url, "0")
        if response.status_code == 404:
            return None
        if response.status_code != 207:
            self._raise_status(response, action, rel)
        entries = self._parse_multistatus(response)
        return entries[0][1] if entries else None

    # -- the contract ------------------------------------------------------------------------------------

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Start a chunked ``PUT`` to a temporary name next to ``path``."""
        validate_object_path(path)
        return _WebDAVWriter(self, path, overwrite)

    def open_reader(self, path: str) -> BinaryIO:
        """Start a streamed ``GET`` of ``path``."""
        validate_path(path)
        url = self._url(path)
        request = self._client.build_request("GET", url)
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._raise_transport(exc, "GET", url)
        if response.status_code != 200:
            response.close()
            self._raise_status(response, "read", path)
        return cast(BinaryIO, _WebDAVReader(self, response, path))

    def stat(self, path: str) -> ObjectInfo:
        """Describe ``path`` (``PROPFIND`` depth 0); collections raise NotFoundError."""
        validate_path(path)
        entry = self._stat_url(self._url(path), "stat", path)
        if entry is None or entry.is_dir:
            raise NotFoundError(f"WebDAV stat: {self.describe()}/{path} does not exist")
        return ObjectInfo(path=path, size=entry.size, modified=entry.modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the collections under ``prefix`` with ``PROPFIND`` depth 1."""
        validate_path(prefix, field="prefix", allow_empty=True)
        return walk_prefix(prefix, self._list_dir)

    def delete(self, path: str) -> None:
        """``DELETE`` the file; 404 is success."""
        validate_path(path)
        response = self._request("DELETE", self._url(path))
        if response.status_code in (200, 202, 204, 404):
            return
        if response.status_code == 423:
            raise PermanentError(f"WebDAV delete: {self.describe()}/{path} is locked on the server")
        self._raise_status(response, "delete", path)


class _WebDAVWriter(ObjectWriter):
    """A chunked PUT running on a thread, fed through a bounded queue; MOVE on commit."""

    def __init__(self, dest: WebDAVAdapter, path: str, overwrite: bool) -> None:
        self.path = path
        self._dest = dest
        self._overwrite = overwrite
        self._temp = temp_name(path)
        self._size = 0
        self._done = False
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._response: httpx.Response | None = None
        self._error: BaseException | None = None
        dest._mkcols(path)
        self._thread = threading.Thread(target=self._put, name=f"webdav-put {path}", daemon=True)
        self._thread.start()

    def _body(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if item is _Aborted:
                raise _Aborted
            yield cast(bytes, item)

    def _put(self) -> None:
        try:
            self._response = self._dest._client.put(
                self._dest._url(self._temp),
                content=self._body(),
                headers={"Content-Type": "application/octet-stream"},
            )
        except BaseException as exc:  # reported by write/commit on the caller's thread
            self._error = exc

    def _offer(self, item: object) -> None:
        """Queue an item, giving up if the PUT thread has ended (it failed or the server answered)."""
        while True:
            if not self._thread.is_alive():
                self._raise_put_failure()
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _raise_put_failure(self) -> NoReturn:
        dest = self._dest
        if self._error is not None and not isinstance(self._error, _Aborted):
            if isinstance(self._error, httpx.HTTPError):
                dest._raise_transport(self._error, "PUT", dest._url(self._temp))
            raise PermanentError(f"WebDAV upload to {dest.describe()}/{self.path} failed") from self._error
        if self._response is not None and self._response.status_code not in (200, 201, 204):
            dest._raise_status(self._response, "upload", self.path)
        raise ConnectionFailedError(f"WebDAV upload to {dest.describe()}/{self.path} ended early")

    def write(self, data: bytes | memoryview) -> None:
        """Hand bytes to the PUT (blocks while the queue is full)."""
        if self._done:
            raise ConfigurationError(f"WebDAV writer for {self.path} is closed")
        if not data:
            return
        try:
            self._offer(bytes(data))
        except BaseException:
            self.abort()
            raise
        self._size += len(data)

    def commit(self) -> ObjectInfo:
        """Finish the PUT, check the stored size, then MOVE into place."""
        if self._done:
            raise ConfigurationError(f"WebDAV writer for {self.path} is closed")
        dest = self._dest
        try:
            self._offer(_END)
            self._thread.join()
            if (
                self._error is not None
                or self._response is None
                or self._response.status_code
                not in (
                    200,
                    201,
                    204,
                )
            ):
                self._raise_put_failure()
            entry = dest._stat_url(dest._url(self._temp), "commit", self.path)
            if entry is None or entry.size != self._size:
                raise ConnectionFailedError(
                    f"WebDAV upload to {dest.describe()}/{self.path}: the server stored "
                    f"{entry.size if entry else 'nothing'} of {self._size} bytes"
                )
            response = dest._request(
                "MOVE",
                dest._url(self._temp),
                headers={"Destination": dest._url(self.path), "Overwrite": "T" if self._overwrite else "F"},
            )
            if response.status_code == 412:
                raise ConfigurationError(
                    f"WebDAV commit: {dest.describe()}/{self.path} already exists",
                    hint="backups are never overwritten by accident; pass overwrite=True to replace",
                )
            if response.status_code not in (201, 204):
                dest._raise_status(response, "commit", self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return ObjectInfo(path=self.path, size=self._size, modified=entry.modified)

    def abort(self) -> None:
        """Cut the PUT and delete the temporary file (problems are logged, not raised)."""
        if self._done:
            return
        self._done = True
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                # Unblock the body generator: it raises, httpx drops the request.
                while True:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        break
                self._queue.put(_Aborted, timeout=1)
            self._thread.join(timeout=30)
        try:
            self._dest.delete(self._temp)
        except Exception:
            logger.warning(
                "could not remove temporary file %s on %s", self._temp, self._dest.describe(), exc_info=True
            )


class _WebDAVReader(io.RawIOBase):
    """A streamed GET response read as a file; checks Content-Length at the end when sent."""

    def __init__(self, dest: WebDAVAdapter, response: httpx.Response, path: str) -> None:
        self._dest = dest
        self._response = response
        self._path = path
        self._chunks = response.iter_raw(1 << 20)
        self._buffer = b""
        self._pos = 0
        self._received = 0
        length = response.headers.get("Content-Length")
        self._expected = int(length) if length and length.isdigit() else None

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        try:
            chunk = next(self._chunks, b"")
        except httpx.HTTPError as exc:
            self._dest._raise_transport(exc, "GET", str(self._response.url))
        if not chunk:
            if self._expected is not None and self._received != self._expected:
                raise ConnectionFailedError(
                    f"WebDAV read of {self._dest.describe()}/{self._path}: got {self._received} bytes, "
                    f"expected {self._expected}"
                )
            return False
        self._received += len(chunk)
        self._buffer, self._pos = chunk, 0
        return True

    def readinto(self, b: Any) -> int:
        if self._pos >= len(self._buffer) and not self._fill():
            return 0
        n = min(len(b), len(self._buffer) - self._pos)
        memoryview(b)[:n] = self._buffer[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._pos >= len(self._buffer) and not self._fill():
            return b""
        out = self._buffer[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


__all__ = ["WebDAVAdapter"]
