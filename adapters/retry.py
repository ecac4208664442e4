"""Retries for transient storage failures, in one place.

Adapters classify failures (:mod:`prefect_db_backup.errors`); this module decides what to do about them:

- :func:`call_with_retry` runs one operation, retrying only failures for which
  :func:`~prefect_db_backup.errors.is_retryable` is true (timeouts, dropped connections, 5xx, throttling),
  with exponential backoff and full jitter. Permanent failures (bad credentials, missing bucket, disk full,
  a bug) are re-raised at once.
- :class:`RetryingDestination` wraps any :class:`~prefect_db_backup.adapters.destination.Destination` and
  applies the policy to every operation that can be repeated as a whole: ``stat``, ``list`` (restarted from
  the beginning), ``delete``, ``open_reader``, ``set_storage_lock``, ``test_connection`` and the *opening*
  of a writer.

What is deliberately NOT retried here: the bytes of an upload. A writer consumes a stream that cannot be
rewound (a dump in progress), so once bytes have been handed to a failed writer they are gone; retrying
``write`` or ``commit`` from outside would silently lose or duplicate data. The only safe mid-stream retry
is inside an adapter that still holds the failed piece in memory (S3 resends one ``UploadPart`` from its part
buffer, and retries ``CreateMultipartUpload``, with the same policy). A whole-stream retry belongs to the
caller that can restart the dump.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from prefect_db_backup.adapters.destination import (
    Destination,
    DestinationCapabilities,
    ObjectInfo,
    ObjectWriter,
)
from prefect_db_backup.errors import ConfigurationError, is_retryable

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    Attributes:
        attempts: Total attempts including the first (1 means no retry).
        base_delay: Delay in seconds before the first retry; doubled for each further retry.
        max_delay: Upper bound of any single delay in seconds.
    """

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(f"retry attempts must be at least 1 (got {self.attempts})")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("retry delays must not be negative")

    def delay(self, retry: int, *, rng: Callable[[], float] = random.random) -> float:
        """Return the delay before retry number ``retry`` (1-based): full jitter below the exponential cap.

        The cap is ``min(max_delay, base_delay * 2 ** (retry - 1))``; the delay is uniform in
        ``[cap / 2, cap]`` so that retries of many workers spread out without collapsing to zero.
        """
        cap = min(self.max_delay, self.base_delay * (2 ** (retry - 1)))
        return cap / 2 + rng() * cap / 2


#: The policy used when none is given.
DEFAULT_POLICY = RetryPolicy()

#: A policy that never retries (useful in tests and for callers that retry themselves).
NO_RETRY = RetryPolicy(attempts=1, base_delay=0.0, max_delay=0.0)


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    describe: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, retrying retryable failures according to ``policy``.

    Args:
        fn: The operation; it must be safe to repeat as a whole.
        policy: Attempts and backoff.
        describe: What is being done, for the log (for example ``"stat job/x.dump on s3://b/p"``); it must
            hold no secret.
        sleep: Called with each delay; tests pass a fake.

    Returns:
        What ``fn`` returned.

    Raises:
        BackupError: The last retryable failure once attempts are exhausted, or the first permanent one.
        Exception: Anything that is not a retryable :class:`~prefect_db_backup.errors.BackupError`, at once.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_retryable(exc) or attempt >= policy.attempts:
                if is_retryable(exc) and attempt > 1:
                    logger.warning("%s failed after %d attempts: %s", describe, attempt, exc)
                raise
            delay = policy.delay(attempt)
            logger.warning(
                "%s failed (attempt %d of %d), retrying in %.1f s: %s",
                describe,
                attempt,
                policy.attempts,
                delay,
                exc,
            )
            sleep(delay)
            attempt += 1


class RetryingDestination(Destination):
    """A destination wrapper that retries transient failures of whole, repeatable operations.

    Wrapping a :class:`RetryingDestination` again does not stack retries: the inner destination is
    unwrapped and the newer policy applies.

    Args:
        inner: The destination to wrap.
        policy: Attempts and backoff.
        sleep: Called with each delay (tests pass a fake).
    """

    def __init__(
        self,
        inner: Destination,
        policy: RetryPolicy = DEFAULT_POLICY,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        while isinstance(inner, RetryingDestination):
            inner = inner.inner
        self.inner: Destination = inner
        self.policy = policy
        self._sleep = sleep

    # A wrapper forwards these per instance; the base class declares them as class constants.
    @property
    def kind(self) -> str:  # type: ignore[override]
        """The wrapped destination's kind."""
        return self.inner.kind

    @property
    def capabilities(self) -> DestinationCapabilities:  # type: ignore[override]
        """The wrapped destination's capabilities."""
        return self.inner.capabilities

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retry(
            fn, policy=self.policy, describe=f"{what} on {self.describe()}", sleep=self._sleep
        )

    def describe(self) -> str:
        """The wrapped destination's description."""
        return self.inner.describe()

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        """Open a writer, retrying the opening only; writes and commit are never retried from here."""
        return self._call(
            f"open upload of {path!r}",
            lambda: self.inner.open_writer(path, overwrite=overwrite, size_hint=size_hint),
        )

    def open_reader(self, path: str) -> BinaryIO:
        """Open a reader, retrying the opening; reads are not retried (the position is the caller's)."""
        return self._call(f"open {path!r} for reading", lambda: self.inner.open_reader(path))

    def stat(self, path: str) -> ObjectInfo:
        """Describe one object, retrying transient failures."""
        return self._call(f"stat {path!r}", lambda: self.inner.stat(path))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """List objects; a transient failure restarts the listing from scratch.

        The listing is collected before anything is yielded, so that a restart never yields an object
        twice. It holds one :class:`ObjectInfo` per object (small even for many thousands of backups).
        """
        return iter(self._call(f"list {prefix!r}", lambda: list(self.inner.list(prefix))))

    def delete(self, path: str) -> None:
        """Delete one object (idempotent, so safe to repeat)."""
        self._call(f"delete {path!r}", lambda: self.inner.delete(path))

    def set_storage_lock(self, path: str, locked: bool) -> bool:
        """Lock or unlock an object (setting a state is safe to repeat)."""
        return self._call(f"set lock on {path!r}", lambda: self.inner.set_storage_lock(path, locked))

    def test_connection(self) -> None:
        """Run the wrapped destination's connection test, retrying it as a whole."""
        self._call("connection test", self.inner.test_connection)

    def close(self) -> None:
        """Close the wrapped destination."""
        self.inner.close()


def with_retries(destination: Destination, policy: RetryPolicy = DEFAULT_POLICY) -> Destination:
    """Return ``destination`` wrapped in :class:`RetryingDestination` (never wrapped twice)."""
    return RetryingDestination(destination, policy)


__all__ = [
    "DEFAULT_POLICY",
    "NO_RETRY",
    "RetryPolicy",
    "RetryingDestination",
    "call_with_retry",
    "with_retries",
]
