"""A destination in an S3 bucket (AWS S3 or an S3-compatible server: MinIO, R2, Hetzner, SeaweedFS, ...).

Uploads
    A writer buffers one part (``part_size``, default 8 MiB, raised for large expected sizes). Objects
    smaller than one part are stored with one ``PutObject`` at commit. Larger ones become a multipart
    upload of equal-size parts (the last may be shorter); up to ``upload_concurrency`` full parts upload
    on worker threads while the next part fills, so memory stays at ``(upload_concurrency + 1) *
    part_size`` whatever the object size. On any failure, and on abort, the multipart upload is aborted
    (after parts in flight finish) so no orphan parts remain and cost money. Nothing is visible before
    ``CompleteMultipartUpload``.

Retries
    botocore's own retries are turned off (``total_max_attempts=1``): retries happen in one place, the
    :class:`~prefect_db_backup.adapters.retry.RetryingDestination` wrapper, plus two retries inside the
    writer that are safe because nothing is lost: a failed ``UploadPart`` is resent from the part still in
    memory, and ``CreateMultipartUpload`` holds no data yet. ``PutObject`` and ``CompleteMultipartUpload``
    are not retried: after a timeout the first attempt may have succeeded, and a retry under
    ``If-None-Match`` would then report our own object as a conflict. The bytes of a stream cannot be
    replayed either (a dump in progress cannot rewind), so a failed upload fails, and the caller that can
    restart the dump decides.

No overwrite
    With ``overwrite=False`` commit first checks ``HeadObject`` and then sends ``If-None-Match: *`` on
    ``PutObject``/``CompleteMultipartUpload`` so that a concurrent writer cannot slip in between. Servers
    that answer the header with "not implemented" are detected once; the adapter then relies on the
    ``HeadObject`` check alone (not atomic against a concurrent writer).

Deletion and locks
    ``set_storage_lock`` uses an object lock *legal hold* when the bucket has object lock enabled (which
    implies versioning). On a versioned bucket a plain ``DeleteObject`` would only add a delete marker and
    keep the bytes (and the bill); :meth:`S3Adapter.delete` therefore deletes **every version of that one
    key** (and its delete markers), which is what retention expects. If any version is protected (legal
    hold or retention), nothing is deleted and a :class:`~prefect_db_backup.errors.PermanentError` saying so
    is raised.

Errors are translated at this boundary (see :func:`translate_error`) and never contain the secret key.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal, cast

import boto3
import botocore.exceptions
from botocore.config import Config
from prefect_db_backup.adapters.destination import (
    Destination,
    DestinationCapabilities,
    ObjectInfo,
    ObjectWriter,
    validate_object_path,
    validate_path,
)
from prefect_db_backup.adapters.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry
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
from prefect_db_backup.redaction import scrub

logger = logging.getLogger(__name__)

MiB = 1 << 20
#: S3's smallest allowed part (all but the last).
MIN_PART_SIZE = 5 * MiB
#: S3's largest allowed part.
MAX_PART_SIZE = 5 * 1024 * MiB
#: S3's largest part number: with 8 MiB parts an object can reach 78 GiB, hence ``part_size_for``.
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB

ChecksumMode = Literal["when_supported", "when_required"]
AddressingStyle = Literal["auto", "path", "virtual"]
#: Builds an S3 client from the adapter's botocore ``Config`` (the block passes one based on prefect-aws
#: credentials, so that profiles, role assumption and the default credential chain work too).
ClientFactory = Callable[[Config], Any]

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "Forbidden",
    "403",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "500",
    "502",
    "503",
    "504",
}
_FULL_CODES = {"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage", "507", "StorageFull"}
_NOT_IMPLEMENTED_CODES = {"NotImplemented", "501"}


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    response = exc.response or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def translate_error(
    exc: BaseException, *, action: str, where: str, bucket: str, secrets: tuple[str | None, ...] = ()
) -> BackupError:
    """Turn a boto3/botocore exception into the product's error hierarchy.

    Args:
        exc: The library exception.
        action: What was being done, for example ``"upload job/x.dump"``.
        where: The destination's description (``s3://bucket/prefix``).
        bucket: The bucket name (for a missing-bucket message).
        secrets: Values to scrub from the message (secret key, session token).

    Returns:
        A :class:`BackupError` subclass instance; the caller raises it ``from exc``.
    """
    if isinstance(exc, BackupError):
        return exc
    prefix = f"cannot {action} on {where}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _error_code(exc)
        message = scrub(str(exc.response.get("Error", {}).get("Message", "") or code), secrets)
        detail = f"{code or status}: {message}" if message and message != code else (code or str(status))
        if code == "NoSuchBucket":
            return NotFoundError(
                f"{prefix}: bucket {bucket!r} does not exist", hint="create the bucket or fix its name"
            )
        if code in _FULL_CODES or status == 507:
            return StorageFullError(f"{prefix}: the storage is full or over quota ({detail})")
        if code in _AUTH_CODES or status == 403:
            return AuthenticationError(
                f"{prefix}: the server refused the credentials ({detail})",
                hint="check the access key id and secret access key (and session token), the region, and "
                "that the key may read, write, list and delete in this bucket",
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return NotFoundError(f"{prefix}: not found ({detail})")
        if code in _TRANSIENT_CODES or status in (429,) or status >= 500:
            return TransientStorageError(f"{prefix}: the server answered with a transient error ({detail})")
        if code in ("InvalidBucketName", "InvalidArgument", "InvalidRequest", "KeyTooLongError"):
            return ConfigurationError(f"{prefix}: {detail}")
        return PermanentError(f"{prefix}: {detail}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return AuthenticationError(
            f"{prefix}: no usable credentials were found",
            hint="set an access key id and secret access key in the credentials block",
        )
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ProxyConnectionError,
    ):
        return ConnectionFailedError(
            f"{prefix}: the server cannot be reached ({type(exc).__name__})",
            hint="check the endpoint URL, the network and that the server is running",
        )
    if isinstance(exc, botocore.exceptions.SSLError):
        return ConnectionFailedError(
            f"{prefix}: TLS failed ({type(exc).__name__})",
            hint="check the endpoint's certificate or the verify_tls setting",
        )
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError  # connection closed or reset, read timeout, broken stream
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.IncompleteReadError
        | botocore.exceptions.ResponseStreamingError
        | ConnectionError
        | TimeoutError,
    ):
        return ConnectionFailedError(f"{prefix}: the connection failed or timed out ({type(exc).__name__})")
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return ConfigurationError(f"{prefix}: {scrub(str(exc), secrets)}")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return PermanentError(f"{prefix}: {type(exc).__name__}: {scrub(str(exc), secrets)}")
    return PermanentError(f"{prefix}: {type(exc).__name__}: {scrub(str(exc), secrets)}")


class S3Adapter(Destination):
    """Store objects in an S3 bucket under an optional key prefix.

    Args:
        bucket: Bucket name.
        prefix: Key prefix inside the bucket ('/'-separated, no leading slash); objects are stored under
            ``<prefix>/<path>``.
        region: Region name (``us-east-1`` when unset and no factory is given).
        endpoint_url: Endpoint of an S3-compatible server; None for AWS.
        access_key_id: Access key id (None: the default credential chain, unless a factory is given).
        secret_access_key: Secret access key.
        session_token: Session token of temporary credentials.
        storage_class: Storage class of new objects (``STANDARD``, ``STANDARD_IA``, ``GLACIER_IR``...).
        part_size: Multipart part size in bytes (at least 5 MiB, at most 5 GiB).
        request_checksum_calculation: ``"when_supported"`` (botocore's default, CRC checksums on every
            upload) or ``"when_required"`` for servers that reject the newer checksum headers.
        addressing_style: ``"path"``, ``"virtual"`` or ``"auto"``; defaults to ``"path"`` with a custom
            endpoint (most S3-compatible servers), ``"auto"`` otherwise.
        verify_tls: Verify the server certificate (True), skip verification (False, unsafe) or the path
            of a CA bundle.
        client_factory: Builds the client from the adapter's botocore ``Config`` instead of the plain
            credential values above.
        retry_policy: Policy for retrying one failed part upload.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for data on a connection.
        redact: Further secret values to keep out of error messages (those behind ``client_factory``).
        upload_concurrency: Parts uploaded at once while the next one fills (1 to 16). Memory per upload
            is at most ``(upload_concurrency + 1) * part_size``; 1 uploads each part before filling the next.
    """

    kind = "s3"
    capabilities = DestinationCapabilities(storage_lock=True, atomic_commit=True)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        storage_class: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        request_checksum_calculation: ChecksumMode = "when_supported",
        addressing_style: AddressingStyle | None = None,
        verify_tls: bool | str = True,
        client_factory: ClientFactory | None = None,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        redact: tuple[str, ...] = (),
        upload_concurrency: int = 2,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ConfigurationError(f"bucket {bucket!r} is not a bucket name")
        prefix = prefix.strip("/")
        if prefix:
            validate_path(prefix, field="prefix")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ConfigurationError(
                f"part_size {part_size} is out of range; S3 parts are between 5 MiB and 5 GiB"
            )
        if request_checksum_calculation not in ("when_supported", "when_required"):
            raise ConfigurationError(
                f"request_checksum_calculation {request_checksum_calculation!r} must be "
                "'when_supported' or 'when_required'"
            )
        if addressing_style not in (None, "auto", "path", "virtual"):
            raise ConfigurationError(
                f"addressing_style {addressing_style!r} must be 'auto', 'path' or 'virtual'"
            )
        if (access_key_id is None) != (secret_access_key is None) and client_factory is None:
            raise ConfigurationError("give both access_key_id and secret_access_key, or neither")
        if not 1 <= upload_concurrency <= 16:
            raise ConfigurationError(f"upload_concurrency {upload_concurrency} must be between 1 and 16")
        self.bucket = bucket
        self.prefix = prefix
        self.upload_concurrency = upload_concurrency
        self.storage_class = storage_class
        self.part_size = part_size
        self.retry_policy = retry_policy
        self._secrets: tuple[str | None, ...] = (secret_access_key, session_token, *redact)
        self._config = Config(
            region_name=region,
            s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
            retries={"total_max_attempts": 1, "mode": "standard"},
            request_checksum_calculation=request_checksum_calculation,
            response_checksum_validation=request_checksum_calculation,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=16,
            tcp_keepalive=True,
        )
        if client_factory is None:

            def client_factory(config: Config) -> Any:
                session = boto3.session.Session(
                    aws_access_key_id=access_key_id,
                    aws_secret_access_key=secret_access_key,
                    aws_session_token=session_token,
                    region_name=region or "us-east-1",
                )
                return session.client("s3", endpoint_url=endpoint_url, verify=verify_tls, config=config)

        self._factory: ClientFactory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self._object_lock_enabled: bool | None = None
        self._versioned: bool | None = None
        self._if_none_match_supported = True

    # -- plumbing -------------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use (boto3 clients are thread-safe)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._factory(self._config)
                    except Exception as exc:
                        raise self._error(exc, "create an S3 client") from exc
        return self._client

    def describe(self) -> str:
        """Return ``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"S3Adapter({self.describe()!r})"

    def _error(self, exc: BaseException, action: str) -> BackupError:
        return translate_error(
            exc, action=action, where=self.describe(), bucket=self.bucket, secrets=self._secrets
        )

    def _key(self, path: str, *, field: str = "path") -> str:
        validate_object_path(path, field=field)
        return f"{self.prefix}/{path}" if self.prefix else path

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _call(self, action: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            raise self._error(exc, action) from exc

    # -- contract -------------------------------------------------------------------------------------------

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Start a buffered, multipart-when-large upload of ``path``, in parts of :meth:`part_size_for`."""
        return _S3Writer(self, path, self._key(path), overwrite, self.part_size_for(size_hint))

    def part_size_for(self, size_hint: int | None) -> int:
        """The part size of an upload.

        It is the configured one, raised (to whole MiB) when twice the expected size would need more than
        :data:`MAX_PARTS` parts. Doubling leaves room for a hint that was low.
        """
        if not size_hint:
            return self.part_size
        needed = -(-2 * size_hint // MAX_PARTS)
        needed = -(-needed // MiB) * MiB
        return min(MAX_PART_SIZE, max(self.part_size, needed))

    def open_reader(self, path: str) -> BinaryIO:
        """Stream ``GetObject``'s body."""
        key = self._key(path)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            error = self._error(exc, f"read {path!r}")
            missing_bucket = isinstance(exc, botocore.exceptions.ClientError) and (
                _error_code(exc)[0] == "NoSuchBucket"
            )
            if isinstance(error, NotFoundError) and not missing_bucket:
                error = NotFoundError(f"no backup object {path!r} in {self.describe()}")
            raise error from exc
        return cast(BinaryIO, _S3Reader(response["Body"], self, path))

    def stat(self, path: str) -> ObjectInfo:
        """Describe one object with ``HeadObject``."""
        key = self._key(path)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            error = self._error(exc, f"inspect {path!r}")
            if isinstance(error, NotFoundError):
                error = NotFoundError(f"no backup object {path!r} in {self.describe()}")
            raise error from exc
        return ObjectInfo(path=path, size=int(head["ContentLength"]), modified=_utc(head.get("LastModified")))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """List with ``ListObjectsV2``, following every page (no 1,000-key limit)."""
        validate_path(prefix, field="prefix", allow_empty=True)
        key_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=key_prefix, PaginationConfig={"PageSize": 1000})
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    rel = self._rel(key)
                    if not rel or key.endswith("/"):
                        continue  # folder placeholder objects made by consoles
                    yield ObjectInfo(
                        path=rel, size=int(item["Size"]), modified=_utc(item.get("LastModified"))
                    )
        except BackupError:
            raise
        except Exception as exc:
            raise self._error(exc, f"list {prefix!r}") from exc

    def delete(self, path: str) -> None:
        """Delete the object; on a versioned bucket, every version of this key (refusing if one is locked)."""
        key = self._key(path)
        if not self._is_versioned():
            self._call(f"delete {path!r}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
            return
        versions = self._versions(key, path)
        if not versions:
            return
        if self._has_object_lock():
            for version_id, is_marker in versions:
                if not is_marker:
                    self._refuse_if_locked(key, path, version_id)
        for version_id, _ in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            except Exception as exc:
                error = self._error(exc, f"delete {path!r}")
                if isinstance(error, NotFoundError):
                    continue
                if isinstance(error, AuthenticationError) and self._has_object_lock():
                    raise PermanentError(
                        f"cannot delete {path!r} on {self.describe()}: the storage refused it; the object is "
                        "probably locked (legal hold or object lock retention)",
                        hint="release the lock first if the backup may really be deleted",
                    ) from exc
                raise error from exc

    def set_storage_lock(self, path: str, locked: bool) -> bool:
        """Set or release an object lock legal hold; False if the bucket has no object lock."""
        key = self._key(path)
        if not self._has_object_lock():
            return False
        self._call(
            f"{'lock' if locked else 'unlock'} {path!r}",
            lambda: self.client.put_object_legal_hold(
                Bucket=self.bucket, Key=key, LegalHold={"Status": "ON" if locked else "OFF"}
            ),
        )
        return True

    def close(self) -> None:
        """Close the client's connection pool."""
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    # -- bucket features ------------------------------------------------------------------------------------

    def _has_object_lock(self) -> bool:
        if self._object_lock_enabled is None:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except botocore.exceptions.ClientError as exc:
                code, status = _error_code(exc)
                if code in ("ObjectLockConfigurationNotFoundError", "NotImplemented", "501") or (
                    status == 404 and code != "NoSuchBucket"
                ):
                    enabled = False
                else:
                    raise self._error(exc, "read the bucket's object lock configuration") from exc
            except Exception as exc:
                raise self._error(exc, "read the bucket's object lock configuration") from exc
            self._object_lock_enabled = enabled
        return self._object_lock_enabled

    def _is_versioned(self) -> bool:
        if self._versioned is None:
            try:
                status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except botocore.exceptions.ClientError as exc:
                code, http_status = _error_code(exc)
                if code in ("AccessDenied", "403") or http_status == 403:
                    # Minimal IAM policies often omit s3:GetBucketVersioning: fall back to a plain delete.
                    logger.warning(
                        "cannot read the versioning state of %s (access denied); deleting without "
                        "versions: on a versioned bucket older versions then stay until a lifecycle rule "
                        "removes them (grant s3:GetBucketVersioning and s3:ListBucketVersions to fix)",
                        self.describe(),
                    )
                elif code not in ("NotImplemented", "501"):
                    raise self._error(exc, "read the bucket's versioning state") from exc
                status = None
            except Exception as exc:
                raise self._error(exc, "read the bucket's versioning state") from exc
            # "Suspended" buckets still hold older versions: treat them as versioned too.
            self._versioned = status in ("Enabled", "Suspended")
        return self._versioned

    def _versions(self, key: str, path: str) -> builtins.list[tuple[str, bool]]:
        """Every (version id, is delete marker) of exactly ``key``."""
        found: builtins.list[tuple[str, bool]] = []
        paginator = self.client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
                for item in page.get("Versions", ()):
                    if item["Key"] == key:
                        found.append((item["VersionId"], False))
                for item in page.get("DeleteMarkers", ()):
                    if item["Key"] == key:
                        found.append((item["VersionId"], True))
        except Exception as exc:
            raise self._error(exc, f"list the versions of {path!r}") from exc
        return found

    def _refuse_if_locked(self, key: str, path: str, version_id: str) -> None:
        try:
            hold = self.client.get_object_legal_hold(Bucket=self.bucket, Key=key, VersionId=version_id)
            held = hold.get("LegalHold", {}).get("Status") == "ON"
        except botocore.exceptions.ClientError as exc:
            code, status = _error_code(exc)
            if (
                code in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError")
                or status == 404
            ):
                held = False
            else:
                raise self._error(exc, f"read the legal hold of {path!r}") from exc
        except Exception as exc:
            raise self._error(exc, f"read the legal hold of {path!r}") from exc
        if held:
            raise PermanentError(
                f"cannot delete {path!r} on {self.describe()}: it is locked by an S3 object lock legal hold",
                hint="release the lock (set_storage_lock(path, False)) first if the backup may be deleted",
            )
        try:
            retention = self.client.get_object_retention(Bucket=self.bucket, Key=key, VersionId=version_id)
            until = retention.get("Retention", {}).get("RetainUntilDate")
        except botocore.exceptions.ClientError:
            until = None  # no retention set (or the server does not support reading it)
        except Exception as exc:
            raise self._error(exc, f"read the retention of {path!r}") from exc
        if until is not None and _utc(until) and _utc(until) > datetime.now(UTC):  # type: ignore[operator]
            raise PermanentError(
                f"cannot delete {path!r} on {self.describe()}: it is locked by S3 object lock retention "
                f"until {_utc(until)}"
            )


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class _PartBody(io.RawIOBase):
    """A seekable, read-only view of a part buffer, so botocore can hash and resend it without a copy."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        buffer[:n] = chunk
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        data = bytes(self._view[self._pos : end])
        self._pos = max(self._pos, end)
        return data

    def __len__(self) -> int:
        return len(self._view)


class _S3Writer(ObjectWriter):
    """Buffer parts; PutObject for small objects, equal-size multipart parts for large ones.

    With ``upload_concurrency`` N, up to N full parts upload on worker threads while the next part fills,
    so at most N + 1 part buffers exist (N = 1: one part, uploaded synchronously). Parts keep their
    numbers whatever order they finish in.
    """

    def __init__(self, dest: S3Adapter, path: str, key: str, overwrite: bool, part_size: int) -> None:
        self.path = path
        self._dest = dest
        self._part_size = part_size
        self._key = key
        self._overwrite = overwrite
        # The first buffer grows while the first part fills (small objects stay small); full-size buffers
        # are then reused in place for later parts.
        self._buffer = bytearray()
        self._filled = 0
        self._size = 0
        self._upload_id: str | None = None
        self._next_part = 1
        self._parts: dict[int, dict[str, Any]] = {}
        self._free: builtins.list[bytearray] = []
        self._inflight: dict[Future[dict[str, Any]], bytearray] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._done = False

    def _extra(self) -> dict[str, Any]:
        return {"StorageClass": self._dest.storage_class} if self._dest.storage_class else {}

    def write(self, data: bytes | memoryview) -> None:
        """Copy ``data`` into the part buffer, uploading each part as it fills."""
        if self._done:
            raise ConfigurationError(f"writer for {self.path!r} is already committed or aborted")
        view = memoryview(data).cast("B")
        part_size = self._part_size
        try:
            while view:
                n = min(part_size - self._filled, len(view))
                if self._filled == len(self._buffer):
                    self._buffer += view[:n]  # a growing buffer
                else:
                    self._buffer[self._filled : self._filled + n] = view[:n]  # a reused full-size buffer
                self._filled += n
                self._size += n
                view = view[n:]
                if self._filled == part_size and view:
                    self._flush_part()
        except BaseException:
            self.abort()
            raise

    def _start_multipart(self) -> None:
        """Create the multipart upload, retrying transient failures: it holds no data yet, so it is safe."""
        dest = self._dest
        response = call_with_retry(
            lambda: dest._call(
                f"start uploading {self.path!r}",
                lambda: dest.client.create_multipart_upload(
                    Bucket=dest.bucket, Key=self._key, **self._extra()
                ),
            ),
            policy=dest.retry_policy,
            describe=f"start uploading {self.path!r} to {dest.describe()}",
        )
        self._upload_id = response["UploadId"]

    def _flush_part(self) -> None:
        """Hand the filled buffer to an upload and continue with a free buffer."""
        dest = self._dest
        if self._upload_id is None:
            self._start_multipart()
        number = self._next_part
        if number > MAX_PARTS:
            raise ConfigurationError(
                f"{self.path!r} is too large for {MAX_PARTS} parts of {self._part_size} bytes",
                hint="raise part_size",
            )
        self._next_part += 1
        buffer, filled = self._buffer, self._filled
        if dest.upload_concurrency <= 1:
            self._parts[number] = self._send_part(number, buffer, filled)
            self._filled = 0
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=dest.upload_concurrency, thread_name_prefix="s3-part-upload"
            )
        self._inflight[self._executor.submit(self._send_part, number, buffer, filled)] = buffer
        self._harvest(block=len(self._inflight) >= dest.upload_concurrency)
        self._buffer = self._free.pop() if self._free else bytearray()
        self._filled = 0

    def _harvest(self, *, block: bool, wait_all: bool = False) -> None:
        """Collect finished part uploads (waiting for one, or all); raise the first failure."""
        if not self._inflight:
            return
        if wait_all:
            done, _ = wait(self._inflight)
        elif block:
            done, _ = wait(self._inflight, return_when=FIRST_COMPLETED)
        else:
            done = {f for f in self._inflight if f.done()}
        failure: BaseException | None = None
        for future in done:
            self._free.append(self._inflight.pop(future))
            exc = future.exception()
            if exc is not None:
                failure = failure or exc
            else:
                part = future.result()
                self._parts[part["PartNumber"]] = part
        if failure is not None:
            raise failure

    def _send_part(self, number: int, buffer: bytearray, filled: int) -> dict[str, Any]:
        """Upload one part from memory, retrying transient failures (the bytes are still here)."""
        dest = self._dest
        view = memoryview(buffer)[:filled]

        def send() -> Any:
            return dest._call(
                f"upload part {number} of {self.path!r}",
                lambda: dest.client.upload_part(
                    Bucket=dest.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=_PartBody(view),
                    ContentLength=filled,
                ),
            )

        try:
            response = call_with_retry(
                send,
                policy=dest.retry_policy,
                describe=f"upload part {number} of {self.path!r} to {dest.describe()}",
            )
        finally:
            with contextlib.suppress(BufferError):  # botocore may still hold a slice; then GC frees it
                view.release()
        part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        for name in (
            "ChecksumCRC32",
            "ChecksumCRC32C",
            "ChecksumCRC64NVME",
            "ChecksumSHA1",
            "ChecksumSHA256",
        ):
            if response.get(name):
                part[name] = response[name]
        return part

    def commit(self) -> ObjectInfo:
        """Upload what is left and make the object visible (PutObject or CompleteMultipartUpload)."""
        if self._done:
            raise ConfigurationError(f"writer for {self.path!r} is already committed or aborted")
        dest = self._dest
        try:
            if self._upload_id is not None and self._filled:
                self._flush_part()
            self._harvest(block=True, wait_all=True)
            if not self._overwrite and dest.exists(self.path):
                raise self._exists_error()
            if self._upload_id is None:
                self._put_small()
            else:
                self._complete()
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._release()
        return ObjectInfo(path=self.path, size=self._size, modified=datetime.now(UTC))

    def _release(self) -> None:
        self._buffer = bytearray()
        self._free.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _exists_error(self) -> ConfigurationError:
        return ConfigurationError(
            f"{self.path!r} already exists in {self._dest.describe()}; refusing to overwrite it",
            hint="choose another name or open the writer with overwrite=True",
        )

    def _conditional(self, action: str, fn: Callable[[dict[str, Any]], Any]) -> Any:
        """Call ``fn(extra_args)`` with If-None-Match when needed and supported; detect lack of support."""
        dest = self._dest
        use_condition = not self._overwrite and dest._if_none_match_supported
        try:
            return fn({"IfNoneMatch": "*"} if use_condition else {})
        except botocore.exceptions.ClientError as exc:
            code, status = _error_code(exc)
            if use_condition and (code == "PreconditionFailed" or status == 412):
                raise self._exists_error() from exc
            if use_condition and (code in _NOT_IMPLEMENTED_CODES or status == 501):
                logger.info("%s does not support If-None-Match; relying on HeadObject", dest.describe())
                dest._if_none_match_supported = False
                return dest._call(action, lambda: fn({}))
            raise dest._error(exc, action) from exc
        except Exception as exc:
            raise dest._error(exc, action) from exc

    def _put_small(self) -> None:
        dest = self._dest
        view = memoryview(self._buffer)[: self._filled]
        self._conditional(
            f"upload {self.path!r}",
            lambda extra: dest.client.put_object(
                Bucket=dest.bucket,
                Key=self._key,
                Body=_PartBody(view),
                ContentLength=len(view),
                **self._extra(),
                **extra,
            ),
        )

    def _complete(self) -> None:
        dest = self._dest
        self._conditional(
            f"complete the upload of {self.path!r}",
            lambda extra: dest.client.complete_multipart_upload(
                Bucket=dest.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": [self._parts[n] for n in sorted(self._parts)]},
                **extra,
            ),
        )
        self._upload_id = None  # completed: nothing to abort any more

    def abort(self) -> None:
        """Wait for part uploads in flight, then abort the multipart upload so no parts are left behind."""
        if self._done:
            return
        self._done = True
        # A part still uploading could land after AbortMultipartUpload and stay behind: wait for them first.
        with contextlib.suppress(BaseException):
            self._harvest(block=True, wait_all=True)
        self._inflight.clear()
        self._release()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        dest = self._dest

        def abort_upload() -> None:
            try:
                dest.client.abort_multipart_upload(Bucket=dest.bucket, Key=self._key, UploadId=upload_id)
            except botocore.exceptions.ClientError as exc:
                code, status = _error_code(exc)
                if code == "NoSuchUpload" or status == 404:
                    return
                raise dest._error(exc, f"abort the upload of {self.path!r}") from exc
            except Exception as exc:
                raise dest._error(exc, f"abort the upload of {self.path!r}") from exc

        try:
            call_with_retry(
                abort_upload,
                policy=dest.retry_policy,
                describe=f"abort the upload of {self.path!r} on {dest.describe()}",
            )
        except BackupError as exc:
            logger.error(
                "could not abort multipart upload %s of %r on %s; its parts stay until a bucket lifecycle "
                "rule removes them: %s",
                upload_id,
                self.path,
                dest.describe(),
                exc,
            )


class _S3Reader(io.RawIOBase):
    """GetObject's streaming body with errors translated; reads return at most the requested size."""

    def __init__(self, body: Any, dest: S3Adapter, path: str) -> None:
        super().__init__()
        self._body = body
        self._dest = dest
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size) or b""
        except Exception as exc:
            raise self._dest._error(exc, f"read {self._path!r}") from exc

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3Adapter", "translate_error"]
