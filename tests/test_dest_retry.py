"""Retries: the policy, the destination wrapper, and S3 part retries under injected faults (moto server)."""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse
from prefect_db_backup.adapters.destination import Destination, ObjectInfo, ObjectWriter
from prefect_db_backup.adapters.destinations.local import LocalAdapter
from prefect_db_backup.adapters.destinations.s3 import MIN_PART_SIZE, S3Adapter
from prefect_db_backup.adapters.retry import (
    NO_RETRY,
    RetryingDestination,
    RetryPolicy,
    call_with_retry,
    with_retries,
)
from prefect_db_backup.adapters.testing.destination_suite import (
    DestinationSuite,
    PatternStream,
    stream_digest,
    stream_upload,
)
from prefect_db_backup.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    NotFoundError,
    TransientStorageError,
)

FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002)


# -- the policy ---------------------------------------------------------------------------------------------


class Flaky:
    """Fails with the given exceptions in order, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retryable_failures_are_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    fn = Flaky(TransientStorageError("503 one"), ConnectionFailedError("reset two"))
    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=30.0)
    with caplog.at_level(logging.WARNING, logger="prefect_db_backup.adapters.retry"):
        assert call_with_retry(fn, policy=policy, describe="stat x on s3://b", sleep=sleeps.append) == "ok"
    assert fn.calls == 3
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "stat x on s3://b failed (attempt 1 of 4)" in messages[0] and "503 one" in messages[0]
    assert "attempt 2 of 4" in messages[1]


@pytest.mark.parametrize(
    "failure",
    [AuthenticationError("denied"), NotFoundError("gone"), ConfigurationError("bad"), ValueError("bug")],
)
def test_permanent_and_unknown_failures_are_not_retried(failure: BaseException) -> None:
    sleeps: list[float] = []
    fn = Flaky(failure)
    with pytest.raises(type(failure)):
        call_with_retry(fn, policy=FAST, describe="op", sleep=sleeps.append)
    assert fn.calls == 1
    assert sleeps == []


def test_attempts_are_bounded_and_last_error_is_raised() -> None:
    sleeps: list[float] = []
    fn = Flaky(*(TransientStorageError(f"fail {i}") for i in range(10)))
    with pytest.raises(TransientStorageError, match="fail 3"):
        call_with_retry(fn, policy=RetryPolicy(attempts=4), describe="op", sleep=sleeps.append)
    assert fn.calls == 4
    assert len(sleeps) == 3


def test_delays_grow_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_delay=5.0)
    assert [policy.delay(n, rng=lambda: 1.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert [policy.delay(n, rng=lambda: 0.0) for n in range(1, 4)] == [0.5, 1.0, 2.0]
    with pytest.raises(ConfigurationError):
        RetryPolicy(attempts=0)


def test_no_retry_policy_calls_once() -> None:
    fn = Flaky(TransientStorageError("x"))
    with pytest.raises(TransientStorageError):
        call_with_retry(fn, policy=NO_RETRY, describe="op", sleep=lambda s: None)
    assert fn.calls == 1


# -- the wrapper --------------------------------------------------------------------------------------------


class FlakyDestination(Destination):
    """A destination over a local one that fails each operation with queued errors first."""

    kind = "flaky"

    def __init__(self, inner: Destination) -> None:
        self.inner = inner
        self.failures: dict[str, list[BaseException]] = {}
        self.calls: dict[str, int] = {}

    def fail(self, op: str, *errors: BaseException) -> None:
        self.failures.setdefault(op, []).extend(errors)

    def _maybe_fail(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.failures.get(op):
            raise self.failures[op].pop(0)

    def describe(self) -> str:
        return "flaky:" + self.inner.describe()

    def open_writer(
        self, path: str, *, overwrite: bool = False, size_hint: int | None = None
    ) -> ObjectWriter:
        self._maybe_fail("open_writer")
        return self.inner.open_writer(path, overwrite=overwrite)

    def open_reader(self, path: str) -> Any:
        self._maybe_fail("open_reader")
        return self.inner.open_reader(path)

    def stat(self, path: str) -> ObjectInfo:
        self._maybe_fail("stat")
        return self.inner.stat(path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.calls["list"] = self.calls.get("list", 0) + 1
        for n, info in enumerate(self.inner.list(prefix)):
            if n == 2 and self.failures.get("list"):
                raise self.failures["list"].pop(0)
            yield info

    def delete(self, path: str) -> None:
        self._maybe_fail("delete")
        self.inner.delete(path)


@pytest.fixture
def flaky(tmp_path: Path) -> FlakyDestination:
    return FlakyDestination(LocalAdapter(tmp_path / "root"))


def test_wrapper_retries_whole_operations(flaky: FlakyDestination) -> None:
    sleeps: list[float] = []
    dest = RetryingDestination(flaky, FAST, sleep=sleeps.append)
    dest.write_bytes("a", b"1")
    flaky.fail("stat", TransientStorageError("503"), ConnectionFailedError("reset"))
    assert dest.stat("a").size == 1
    assert flaky.calls["stat"] == 3
    flaky.fail("delete", TransientStorageError("503"))
    flaky.fail("open_reader", ConnectionFailedError("reset"))
    assert dest.read_bytes("a") == b"1"
    dest.delete("a")
    assert not dest.exists("a")
    assert len(sleeps) == 4


def test_wrapper_restarts_a_listing_from_scratch(flaky: FlakyDestination) -> None:
    dest = RetryingDestination(flaky, FAST, sleep=lambda s: None)
    for i in range(5):
        flaky.inner.write_bytes(f"f{i}", b"x")
    flaky.fail("list", ConnectionFailedError("dropped after two entries"))
    paths = [info.path for info in dest.list()]
    assert sorted(paths) == [f"f{i}" for i in range(5)]  # no duplicates from the first, failed attempt
    assert flaky.calls["list"] == 2


def test_wrapper_retries_opening_a_writer_but_never_its_bytes(flaky: FlakyDestination) -> None:
    dest = RetryingDestination(flaky, FAST, sleep=lambda s: None)
    flaky.fail("open_writer", TransientStorageError("503"))
    with dest.open_writer("w") as writer:
        writer.write(b"data")
        writer.commit()
    assert flaky.calls["open_writer"] == 2
    assert dest.read_bytes("w") == b"data"


def test_wrapper_does_not_retry_permanent_errors(flaky: FlakyDestination) -> None:
    sleeps: list[float] = []
    dest = RetryingDestination(flaky, FAST, sleep=sleeps.append)
    flaky.fail("stat", AuthenticationError("denied"))
    with pytest.raises(AuthenticationError):
        dest.stat("a")
    assert flaky.calls["stat"] == 1 and sleeps == []


def test_wrapping_twice_does_not_stack_retries(flaky: FlakyDestination) -> None:
    once = with_retries(flaky, FAST)
    twice = with_retries(once, RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001))
    assert isinstance(twice, RetryingDestination) and twice.inner is flaky
    flaky.fail("stat", *(TransientStorageError(str(i)) for i in range(5)))
    with pytest.raises(TransientStorageError):
        twice.stat("a")
    assert flaky.calls["stat"] == 2
    assert twice.kind == "flaky" and twice.describe() == flaky.describe()


class TestRetryingLocalConformance(DestinationSuite):
    """The wrapper itself follows the destination contract."""

    large_listing = True
    large_object_size = 8 * MIN_PART_SIZE

    @pytest.fixture
    def destination(self, tmp_path: Path) -> Destination:
        return RetryingDestination(LocalAdapter(tmp_path / "root"), FAST)


# -- S3 under injected faults (moto server) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(params=[1, 2], ids=["sequential-parts", "concurrent-parts"])
def s3(moto_endpoint: str, request: pytest.FixtureRequest) -> Iterator[S3Adapter]:
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    adapter = S3Adapter(
        "faults",
        endpoint_url=moto_endpoint,
        access_key_id="testing",
        secret_access_key="testing-secret",
        region="us-east-1",
        part_size=MIN_PART_SIZE,
        retry_policy=FAST,
        upload_concurrency=request.param,
    )
    adapter.client.create_bucket(Bucket="faults")
    yield adapter
    adapter.close()


class FaultInjector:
    """Answers chosen S3 operations with canned failures before they reach the server.

    A plan is called with (attempt, request, part number): for UploadPart the attempt counts that part's
    attempts (parts upload concurrently, so a global count would be racy); otherwise the operation's.
    """

    def __init__(self, client: Any) -> None:
        self.attempts: dict[str, int] = {}
        self.part_attempts: dict[int, int] = {}
        self._plans: dict[str, Callable[[int, Any, int | None], AWSResponse | None]] = {}
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.*", self._before_send)

    def plan(self, operation: str, fn: Callable[[int, Any, int | None], AWSResponse | None]) -> None:
        self._plans[operation] = fn

    def _before_send(self, request: Any, **kwargs: Any) -> AWSResponse | None:
        operation = kwargs["event_name"].rsplit(".", 1)[-1]
        part: int | None = None
        with self._lock:
            self.attempts[operation] = self.attempts.get(operation, 0) + 1
            attempt = self.attempts[operation]
            if operation == "UploadPart":
                part = int(parse_qs(urlsplit(request.url).query)["partNumber"][0])
                self.part_attempts[part] = self.part_attempts.get(part, 0) + 1
                attempt = self.part_attempts[part]
        plan = self._plans.get(operation)
        return plan(attempt, request, part) if plan else None


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def error_response(request: Any, status: int, code: str, message: str) -> AWSResponse:
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message>"
    body += "</Error>"
    return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body.encode()))


def uploads_in_progress(adapter: S3Adapter) -> list[Any]:
    return adapter.client.list_multipart_uploads(Bucket="faults").get("Uploads", [])


def test_transient_500s_on_upload_part_are_retried(s3: S3Adapter, caplog: pytest.LogCaptureFixture) -> None:
    faults = FaultInjector(s3.client)
    # Part 2 fails twice with 500, then goes through.
    faults.plan(
        "UploadPart",
        lambda n, req, part: (
            error_response(req, 500, "InternalError", "try again") if part == 2 and n <= 2 else None
        ),
    )
    size = 3 * MIN_PART_SIZE + 1000
    with caplog.at_level(logging.WARNING, logger="prefect_db_backup.adapters.retry"):
        info, sha = stream_upload(s3, "job/big.dump", size)
    assert info.size == size
    assert faults.part_attempts == {1: 1, 2: 3, 3: 1, 4: 1}
    assert stream_digest(s3, "job/big.dump") == (size, sha)
    assert uploads_in_progress(s3) == []
    retries = [r.getMessage() for r in caplog.records if "upload part 2" in r.getMessage()]
    assert len(retries) == 2 and all("testing-secret" not in m for m in retries)


def test_connection_reset_on_upload_part_is_retried(s3: S3Adapter) -> None:
    faults = FaultInjector(s3.client)

    def reset(n: int, request: Any, part: int | None) -> None:
        if part == 1 and n == 1:
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)

    faults.plan("UploadPart", reset)
    info, sha = stream_upload(s3, "reset.dump", 2 * MIN_PART_SIZE + 5)
    assert stream_digest(s3, "reset.dump") == (info.size, sha)
    assert faults.part_attempts == {1: 2, 2: 1, 3: 1}


def test_access_denied_fails_at_once_and_aborts(s3: S3Adapter) -> None:
    faults = FaultInjector(s3.client)
    faults.plan("UploadPart", lambda n, req, part: error_response(req, 403, "AccessDenied", "Access Denied"))
    writer = s3.open_writer("denied.dump")
    with pytest.raises(AuthenticationError, match="refused the credentials"), writer:
        for piece in PatternStream(2 * MIN_PART_SIZE + 5).pieces():
            writer.write(piece)
    assert set(faults.part_attempts.values()) == {1}, "a permanent failure must not be retried"
    assert faults.attempts.get("AbortMultipartUpload") == 1
    assert uploads_in_progress(s3) == []
    assert list(s3.list()) == []


def test_exhausted_retries_fail_and_leave_no_parts(s3: S3Adapter) -> None:
    faults = FaultInjector(s3.client)
    faults.plan(
        "UploadPart",
        lambda n, req, part: error_response(req, 503, "SlowDown", "reduce your rate") if part == 2 else None,
    )
    with pytest.raises(TransientStorageError, match="SlowDown"), s3.open_writer("slow.dump") as writer:
        for piece in PatternStream(3 * MIN_PART_SIZE).pieces():
            writer.write(piece)
        writer.commit()
    assert faults.part_attempts[1] == 1 and faults.part_attempts[2] == FAST.attempts
    assert uploads_in_progress(s3) == []
    assert not s3.exists("slow.dump")


def test_failure_on_complete_aborts_the_upload(s3: S3Adapter) -> None:
    faults = FaultInjector(s3.client)
    faults.plan(
        "CompleteMultipartUpload", lambda n, req, part: error_response(req, 500, "InternalError", "boom")
    )
    with pytest.raises(TransientStorageError), s3.open_writer("c.dump") as writer:
        for piece in PatternStream(MIN_PART_SIZE + 1).pieces():
            writer.write(piece)
        writer.commit()
    assert faults.attempts["CompleteMultipartUpload"] == 1, "a whole-stream commit is never retried"
    assert uploads_in_progress(s3) == []
    assert not s3.exists("c.dump")


def test_retrying_destination_over_s3_retries_throttled_head(s3: S3Adapter) -> None:
    s3.write_bytes("h.bin", b"hello")
    faults = FaultInjector(s3.client)
    faults.plan(
        "HeadObject", lambda n, req, part: error_response(req, 503, "SlowDown", "slow") if n <= 2 else None
    )
    sleeps: list[float] = []
    dest = RetryingDestination(s3, FAST, sleep=sleeps.append)
    assert dest.stat("h.bin").size == 5
    assert faults.attempts["HeadObject"] == 3 and len(sleeps) == 2


def test_delete_without_permission_to_read_versioning_falls_back(
    s3: S3Adapter, caplog: pytest.LogCaptureFixture
) -> None:
    s3.write_bytes("d.bin", b"x")
    faults = FaultInjector(s3.client)
    faults.plan("GetBucketVersioning", lambda n, req, part: error_response(req, 403, "AccessDenied", "no"))
    with caplog.at_level(logging.WARNING):
        s3.delete("d.bin")
    assert not s3.exists("d.bin")
    assert "s3:GetBucketVersioning" in caplog.text


def test_transient_failure_creating_the_multipart_upload_is_retried(s3: S3Adapter) -> None:
    faults = FaultInjector(s3.client)
    faults.plan(
        "CreateMultipartUpload",
        lambda n, req, part: error_response(req, 503, "ServiceUnavailable", "later") if n == 1 else None,
    )
    info, sha = stream_upload(s3, "created.dump", MIN_PART_SIZE + 9)
    assert faults.attempts["CreateMultipartUpload"] == 2
    assert stream_digest(s3, "created.dump") == (info.size, sha)
    assert uploads_in_progress(s3) == []
