"""The S3 destination against a real server (SeaweedFS on loopback): the conformance suite, then S3 rules."""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.destinations.s3 import MIN_PART_SIZE, S3Adapter, translate_error
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
    PermanentError,
    StorageFullError,
    TransientStorageError,
)
from servers.seaweedfs import SeaweedFS

MiB = 1 << 20


def make_adapter(server: SeaweedFS, bucket: str, **kwargs: Any) -> S3Adapter:
    options: dict[str, Any] = {
        "endpoint_url": server.endpoint,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "region": server.region,
        "part_size": MIN_PART_SIZE,
    }
    options.update(kwargs)
    return S3Adapter(bucket, **options)


def multipart_uploads(server: SeaweedFS, bucket: str) -> list[dict[str, Any]]:
    return server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


class TestS3Conformance(DestinationSuite):
    large_listing = True
    supports_storage_lock = True

    @pytest.fixture
    def destination(self, seaweedfs: SeaweedFS) -> Iterator[Destination]:
        with make_adapter(seaweedfs, seaweedfs.new_bucket(), prefix="backups/team a") as adapter:
            yield adapter

    @pytest.fixture
    def lock_destination(self, seaweedfs: SeaweedFS) -> Iterator[Destination]:
        with make_adapter(seaweedfs, seaweedfs.new_bucket(object_lock=True)) as adapter:
            yield adapter

    @pytest.fixture
    def secrets(self, seaweedfs: SeaweedFS) -> list[str]:
        return [seaweedfs.secret_key]


# -- S3-specific behaviour -----------------------------------------------------------------------------------


class Recorder:
    """Records the S3 operations (and their parameters) a client sends."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        client.meta.events.register("provide-client-params.s3.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def params(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.new_bucket()


def test_small_object_is_one_put_and_large_is_equal_parts(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket)
    recorder = Recorder(adapter.client)
    adapter.write_bytes("small.bin", b"x" * 1000)
    assert "CreateMultipartUpload" not in recorder.names()
    assert [p["ContentLength"] for p in recorder.params("PutObject")] == [1000]

    size = 3 * MIN_PART_SIZE + 12_345
    info, sha = stream_upload(adapter, "large.bin", size, seed=7)
    parts = recorder.params("UploadPart")
    assert [p["PartNumber"] for p in parts] == [1, 2, 3, 4]
    assert [p["ContentLength"] for p in parts] == [MIN_PART_SIZE] * 3 + [12_345]
    assert info.size == size
    assert stream_digest(adapter, "large.bin") == (size, sha)


def test_object_of_exactly_one_part(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket)
    for size in (MIN_PART_SIZE, 2 * MIN_PART_SIZE):
        info, sha = stream_upload(adapter, f"exact-{size}.bin", size, seed=size)
        assert info.size == size
        assert stream_digest(adapter, f"exact-{size}.bin") == (size, sha)
    assert multipart_uploads(seaweedfs, bucket) == []


@pytest.mark.parametrize("how", ["exception", "abort", "refused-overwrite"])
def test_interrupted_multipart_upload_leaves_no_parts(seaweedfs: SeaweedFS, bucket: str, how: str) -> None:
    adapter = make_adapter(seaweedfs, bucket)
    recorder = Recorder(adapter.client)
    if how == "refused-overwrite":
        adapter.write_bytes("job/x.dump", b"existing")
    writer = adapter.open_writer("job/x.dump")
    for piece in PatternStream(2 * MIN_PART_SIZE + 100).pieces():
        writer.write(piece)
    assert len(recorder.params("UploadPart")) == 2
    assert len(multipart_uploads(seaweedfs, bucket)) == 1, "the upload should be in progress"
    if how == "exception":
        with pytest.raises(RuntimeError), writer:
            raise RuntimeError("interrupted")
    elif how == "abort":
        writer.abort()
    else:
        with pytest.raises(ConfigurationError, match="already exists"):
            writer.commit()
    assert multipart_uploads(seaweedfs, bucket) == []
    assert "AbortMultipartUpload" in recorder.names()
    expected = {"job/x.dump": 8} if how == "refused-overwrite" else {}
    assert {i.path: i.size for i in adapter.list()} == expected


def test_two_writers_of_one_path_have_one_winner(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket)
    recorder = Recorder(adapter.client)
    first = adapter.open_writer("race.bin")
    second = adapter.open_writer("race.bin")
    for writer in (first, second):
        for piece in PatternStream(MIN_PART_SIZE + 10).pieces():
            writer.write(piece)
    first.commit()
    with pytest.raises(ConfigurationError, match="already exists"):
        second.commit()
    assert all(p.get("IfNoneMatch") == "*" for p in recorder.params("CompleteMultipartUpload"))
    assert multipart_uploads(seaweedfs, bucket) == []


def test_if_none_match_precondition_failure_is_already_exists(seaweedfs: SeaweedFS, bucket: str) -> None:
    """Skip the HeadObject pre-check to show the server-side condition alone refuses the overwrite."""
    adapter = make_adapter(seaweedfs, bucket)
    adapter.write_bytes("p.bin", b"one")
    writer = adapter.open_writer("p.bin")
    writer.write(b"two")
    adapter.exists = lambda path: False  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="already exists"):
        writer.commit()
    del adapter.exists
    assert adapter.read_bytes("p.bin") == b"one"


def test_server_without_if_none_match_falls_back(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket)
    client = adapter.client

    def refuse_condition(params: dict[str, Any], **_: Any) -> None:
        if "IfNoneMatch" in params:
            from botocore.exceptions import ClientError

            raise ClientError(
                {
                    "Error": {"Code": "NotImplemented", "Message": "not implemented"},
                    "ResponseMetadata": {"HTTPStatusCode": 501},
                },
                "PutObject",
            )

    client.meta.events.register("provide-client-params.s3.PutObject", refuse_condition)
    client.meta.events.register("provide-client-params.s3.CompleteMultipartUpload", refuse_condition)
    adapter.write_bytes("a.bin", b"1")
    assert adapter._if_none_match_supported is False
    stream_upload(adapter, "b.bin", MIN_PART_SIZE + 1)
    with pytest.raises(ConfigurationError, match="already exists"):
        adapter.write_bytes("a.bin", b"2")  # the HeadObject check still refuses
    assert adapter.read_bytes("a.bin") == b"1"


def test_prefix_maps_to_keys(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket, prefix="/team/nightly/")
    assert adapter.describe() == f"s3://{bucket}/team/nightly"
    adapter.write_bytes("job/a.dump", b"a")
    keys = [o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["team/nightly/job/a.dump"]
    seaweedfs.client().put_object(Bucket=bucket, Key="team/nightly-other/b", Body=b"b")
    assert [i.path for i in adapter.list()] == ["job/a.dump"]
    with pytest.raises(ConfigurationError):
        make_adapter(seaweedfs, bucket, prefix="a/../b")


def test_wrong_secret_is_authentication_error_without_secret(seaweedfs: SeaweedFS, bucket: str) -> None:
    wrong = "wrong-secret-" + "s" * 20
    adapter = make_adapter(seaweedfs, bucket, secret_access_key=wrong)
    for operation in (
        lambda: adapter.write_bytes("x", b"1"),
        lambda: list(adapter.list()),
        lambda: adapter.stat("x"),
        adapter.test_connection,
    ):
        with pytest.raises(AuthenticationError) as caught:
            operation()
        assert wrong not in str(caught.value)
        assert "access key" in str(caught.value)
        assert not caught.value.retryable


def test_missing_bucket_is_not_found(seaweedfs: SeaweedFS) -> None:
    adapter = make_adapter(seaweedfs, "no-such-bucket-pdb")
    with pytest.raises(NotFoundError, match="bucket 'no-such-bucket-pdb' does not exist"):
        list(adapter.list())
    with pytest.raises(NotFoundError, match="does not exist"):
        adapter.write_bytes("x", b"1")
    with pytest.raises(NotFoundError, match="bucket 'no-such-bucket-pdb' does not exist"):
        adapter.open_reader("x")


def test_unreachable_endpoint_is_retryable_connection_failure() -> None:
    from servers.seaweedfs import _free_ports

    (port,) = _free_ports(1)
    adapter = S3Adapter(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id="a",
        secret_access_key="b",
        connect_timeout=1,
    )
    with pytest.raises(ConnectionFailedError) as caught:
        adapter.stat("x")
    assert caught.value.retryable


def test_when_required_checksums(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket, request_checksum_calculation="when_required")
    recorder = Recorder(adapter.client)
    info, sha = stream_upload(adapter, "c.bin", MIN_PART_SIZE + 7)
    assert stream_digest(adapter, "c.bin") == (info.size, sha)
    assert recorder.params("UploadPart")


def test_object_path_with_trailing_slash_is_refused() -> None:
    adapter = S3Adapter("b", access_key_id="a", secret_access_key="s")
    with pytest.raises(ConfigurationError, match="ends with '/'"):
        adapter.open_writer("folder/")
    with pytest.raises(ConfigurationError, match="ends with '/'"):
        adapter.stat("folder/")


def test_constructor_validation() -> None:
    with pytest.raises(ConfigurationError, match="part_size"):
        S3Adapter("b", part_size=MIN_PART_SIZE - 1)
    with pytest.raises(ConfigurationError, match="request_checksum_calculation"):
        S3Adapter("b", request_checksum_calculation="always")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        S3Adapter("b", access_key_id="only-the-id")
    with pytest.raises(ConfigurationError):
        S3Adapter("")


def test_versioned_bucket_delete_removes_every_version(seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket(object_lock=True)  # object lock implies versioning
    adapter = make_adapter(seaweedfs, bucket)
    adapter.write_bytes("v.bin", b"1")
    adapter.write_bytes("v.bin", b"22", overwrite=True)
    adapter.write_bytes("v.bin.meta.json", b"{}")
    versions = seaweedfs.client().list_object_versions(Bucket=bucket, Prefix="v.bin")
    assert len([v for v in versions["Versions"] if v["Key"] == "v.bin"]) == 2
    adapter.delete("v.bin")
    versions = seaweedfs.client().list_object_versions(Bucket=bucket, Prefix="v.bin")
    assert [v["Key"] for v in versions.get("Versions", [])] == ["v.bin.meta.json"]
    assert [m for m in versions.get("DeleteMarkers", []) if m["Key"] == "v.bin"] == []
    adapter.delete("v.bin")


def test_locked_object_refuses_delete_and_leaves_no_delete_marker(seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket(object_lock=True)
    adapter = make_adapter(seaweedfs, bucket)
    adapter.write_bytes("locked.dump", b"keep me")
    assert adapter.set_storage_lock("locked.dump", True) is True
    with pytest.raises(PermanentError, match="legal hold"):
        adapter.delete("locked.dump")
    versions = seaweedfs.client().list_object_versions(Bucket=bucket)
    assert versions.get("DeleteMarkers", []) == []
    assert adapter.read_bytes("locked.dump") == b"keep me"
    adapter.set_storage_lock("locked.dump", False)
    adapter.delete("locked.dump")


def test_lock_without_object_lock_bucket_returns_false(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket)
    adapter.write_bytes("a", b"1")
    assert adapter.set_storage_lock("a", True) is False


@pytest.mark.parametrize("concurrency", [1, 2])
def test_streamed_upload_memory_is_bounded(seaweedfs: SeaweedFS, bucket: str, concurrency: int) -> None:
    """200 MiB through 16 MiB parts: Python allocations stay at (concurrency + 1) parts plus a little."""
    part = 16 * MiB
    size = 200 * MiB
    adapter = make_adapter(seaweedfs, bucket, part_size=part, upload_concurrency=concurrency)
    adapter.write_bytes("warm-up", b"x")  # create the client before measuring
    tracemalloc.start()
    try:
        started = time.monotonic()
        info, sha = stream_upload(adapter, "big.dump", size, seed=9)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"\n200 MiB streamed upload, {concurrency} part(s) in flight: peak traced memory "
        f"{peak / MiB:.1f} MiB, {size / MiB / elapsed:.0f} MiB/s"
    )
    assert info.size == size
    budget = (concurrency + 1) * part + 8 * MiB  # part buffers + the test's 3 MiB pattern + boto3 requests
    assert peak < budget, f"peak {peak / MiB:.1f} MiB for {part / MiB:.0f} MiB parts"
    assert stream_digest(adapter, "big.dump", piece_size=1 * MiB) == (size, sha)
    assert multipart_uploads(seaweedfs, bucket) == []


def _client_error(code: str, status: int, message: str = "msg") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("exc", "expected", "retryable"),
    [
        (_client_error("NoSuchKey", 404), NotFoundError, False),
        (_client_error("404", 404, "Not Found"), NotFoundError, False),
        (_client_error("NoSuchBucket", 404), NotFoundError, False),
        (_client_error("InvalidAccessKeyId", 403), AuthenticationError, False),
        (_client_error("SignatureDoesNotMatch", 403), AuthenticationError, False),
        (_client_error("AccessDenied", 403), AuthenticationError, False),
        (_client_error("403", 403, "Forbidden"), AuthenticationError, False),
        (_client_error("SlowDown", 503), TransientStorageError, True),
        (_client_error("InternalError", 500), TransientStorageError, True),
        (_client_error("Whatever", 502), TransientStorageError, True),
        (_client_error("TooManyRequests", 429), TransientStorageError, True),
        (_client_error("QuotaExceeded", 403), StorageFullError, False),
        (_client_error("XMinioStorageFull", 507), StorageFullError, False),
        (_client_error("InvalidPart", 400), PermanentError, False),
    ],
)
def test_error_translation(exc: Exception, expected: type[Exception], retryable: bool) -> None:
    error = translate_error(exc, action="upload x", where="s3://b/p", bucket="b")
    assert type(error) is expected
    assert error.retryable is retryable
    assert "s3://b/p" in str(error)


def test_error_translation_of_network_failures_and_secrets() -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ReadTimeoutError

    conn = translate_error(
        EndpointConnectionError(endpoint_url="http://h"), action="list", where="s3://b", bucket="b"
    )
    assert isinstance(conn, ConnectionFailedError) and "endpoint URL" in str(conn)
    timeout = translate_error(
        ReadTimeoutError(endpoint_url="http://h"), action="read", where="s3://b", bucket="b"
    )
    assert isinstance(timeout, ConnectionFailedError)
    creds = translate_error(NoCredentialsError(), action="list", where="s3://b", bucket="b")
    assert isinstance(creds, AuthenticationError)
    leaky = _client_error("SignatureDoesNotMatch", 403, "signature for secret TOPSECRET123 did not match")
    error = translate_error(leaky, action="list", where="s3://b", bucket="b", secrets=("TOPSECRET123",))
    assert "TOPSECRET123" not in str(error)


# -- the block ----------------------------------------------------------------------------------------------


def test_registry_knows_s3() -> None:
    from prefect_db_backup.adapters.registry import destination_class

    assert destination_class("s3") is S3Adapter


def test_block_with_minio_credentials_and_endpoint_in_client_parameters(
    seaweedfs: SeaweedFS, bucket: str
) -> None:
    from prefect_aws import MinIOCredentials
    from prefect_aws.client_parameters import AwsClientParameters
    from prefect_db_backup.blocks import S3Destination

    block = S3Destination(
        bucket=bucket,
        prefix="/nightly/",
        credentials=MinIOCredentials(
            minio_root_user=seaweedfs.access_key,
            minio_root_password=seaweedfs.secret_key,
            aws_client_parameters=AwsClientParameters(endpoint_url=seaweedfs.endpoint),
        ),
        part_size_mib=5,
        request_checksum_calculation="when_required",
    )
    assert block.prefix == "nightly"
    assert block.describe() == f"s3://{bucket}/nightly at {seaweedfs.endpoint}"
    assert seaweedfs.secret_key not in block.describe()
    adapter = block.get_adapter()
    assert adapter.kind == "s3" and adapter.capabilities.storage_lock
    assert adapter.describe() == f"s3://{bucket}/nightly"
    adapter.test_connection()
    info, sha = stream_upload(adapter, "job/a.dump", MIN_PART_SIZE + 3)
    assert stream_digest(adapter, "job/a.dump") == (info.size, sha)
    keys = [o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["nightly/job/a.dump"]


def test_block_with_aws_credentials_and_endpoint_field(seaweedfs: SeaweedFS, bucket: str) -> None:
    from prefect_aws import AwsCredentials
    from prefect_db_backup.blocks import S3Destination

    good = S3Destination(
        bucket=bucket,
        endpoint_url=seaweedfs.endpoint,
        credentials=AwsCredentials(
            aws_access_key_id=seaweedfs.access_key, aws_secret_access_key=seaweedfs.secret_key
        ),
    )
    good.get_adapter().write_bytes("x", b"1")
    wrong_secret = "wrong-" + seaweedfs.secret_key[::-1]
    bad = S3Destination(
        bucket=bucket,
        endpoint_url=seaweedfs.endpoint,
        credentials=AwsCredentials(
            aws_access_key_id=seaweedfs.access_key, aws_secret_access_key=wrong_secret
        ),
    )
    with pytest.raises(AuthenticationError) as caught:
        bad.get_adapter().read_bytes("x")
    assert wrong_secret not in str(caught.value)


@pytest.mark.parametrize("field,value", [("prefix", "../up"), ("prefix", "a//b"), ("bucket", "a/b")])
def test_block_refuses_escaping_names(field: str, value: str) -> None:
    from prefect_db_backup.blocks import S3Destination
    from pydantic import ValidationError

    options = {"bucket": "b", field: value}
    with pytest.raises(ValidationError, match=field):
        S3Destination(**options)


def test_part_size_grows_with_the_expected_size(seaweedfs: SeaweedFS, bucket: str) -> None:
    adapter = make_adapter(seaweedfs, bucket, part_size=8 * MiB)
    assert adapter.part_size_for(None) == adapter.part_size == 8 * MiB
    assert adapter.part_size_for(10 * 1024 * MiB) == 8 * MiB  # 10 GiB: 20 GiB in 8 MiB parts fits
    big = 500 * 1024 * MiB  # 500 GiB expected: twice that in 10,000 parts needs 103 MiB parts
    part = adapter.part_size_for(big)
    assert part % MiB == 0 and part * 10_000 >= 2 * big and part < 2 * big / 10_000 + MiB
    # the writer really uses it: a 12 MiB object with a large hint is one part, not two
    recorder = []
    client = adapter.client
    client.meta.events.register("before-call.s3.UploadPart", lambda params, **_: recorder.append(params))
    with adapter.open_writer("hinted", size_hint=100 * 1024 * MiB) as writer:
        writer.write(os.urandom(12 * MiB))
        writer.commit()
    assert recorder == []
    assert adapter.stat("hinted").size == 12 * MiB
