"""One error hierarchy for the whole product.

Every failure an adapter, a stage or a task raises is a :class:`BackupError`. Its class says whether trying
again can help (:class:`RetryableError`) or not (:class:`PermanentError`); its message says what failed and,
where known, what to fix. Adapters translate library exceptions at their boundary into these classes and
keep the original as ``__cause__``.

Messages never contain secrets: adapters build them from configuration that holds no secret and pass child
process output through :func:`prefect_db_backup.redaction.scrub` first.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base of every error this package raises on purpose.

    Attributes:
        retryable: True when the same operation may succeed if tried again later.
        hint: Optional advice for the operator on what to fix, appended to the message.
    """

    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class PermanentError(BackupError):
    """Trying again without a change of configuration or environment will fail the same way."""


class RetryableError(BackupError):
    """A transient failure (timeout, dropped connection, server-side 5xx): trying again may succeed."""

    retryable = True


class ConfigurationError(PermanentError):
    """Configuration or input is invalid; the message names the offending field."""


class AuthenticationError(PermanentError):
    """The server refused the credentials, or the credentials lack a permission."""


class NotFoundError(PermanentError):
    """The named object, database, bucket or file does not exist."""


class StorageFullError(PermanentError):
    """The destination has no space left, or a quota is exhausted."""


class ConnectionFailedError(RetryableError):
    """The server could not be reached or the connection dropped."""


class TransientStorageError(RetryableError):
    """The storage server answered with a transient error (throttling, 5xx)."""


class DumpFailedError(PermanentError):
    """The dump tool or dump session failed; the message carries the (scrubbed) tail of its stderr."""


class RestoreFailedError(PermanentError):
    """Restoring a backup into a database failed."""


class IntegrityError(PermanentError):
    """Stored bytes do not match what was written, or an encrypted file fails authentication."""


class DecryptionError(IntegrityError):
    """An encrypted file cannot be decrypted: wrong key, tampered, truncated or not our format."""


def is_retryable(exc: BaseException) -> bool:
    """Tell whether an exception is worth retrying.

    Args:
        exc: Any exception.

    Returns:
        True only for :class:`BackupError` instances marked retryable. Unknown exceptions are treated as
        permanent so that a bug never turns into a retry storm.
    """
    return isinstance(exc, BackupError) and exc.retryable
