"""MongoDBAdapter: the built-in exporter/importer against nx-27017; mongodump command building unit-tested.

nx-27017 is a MongoDB wire-protocol emulator, not mongod: it has no authentication, no Decimal128, its own
index names, and it keeps neither collection options nor views. What is compared here is what it can
represent: documents byte-for-byte (every BSON type it stores), collections, index keys and uniqueness.
mongodump/mongorestore are not installed on this machine: their command lines and config files are checked,
never run.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from conftest import require_infrastructure
from prefect_db_backup.adapters.sources import mongo_archive
from prefect_db_backup.adapters.sources.mongo_archive import (
    ArchiveError,
    escape_collection_name,
    import_archive,
    iter_bson,
    unescape_collection_name,
)
from prefect_db_backup.adapters.sources.mongodb import (
    ARCHIVE_FORMAT,
    MongoDBAdapter,
    escape_namespace,
    redact_uri,
)
from prefect_db_backup.adapters.testing.source_suite import SourceSuite
from prefect_db_backup.errors import NotFoundError, RestoreFailedError
from servers.mongo import MongoServer, available, free_port, mongo_server

BIG = os.urandom(3 * 1024 * 1024)
SUITE_PASSWORD = "mongo suite s3cret"


@pytest.fixture(scope="module")
def server() -> Iterator[MongoServer]:
    require_infrastructure(available(), "nx-27017 (pip install nx-27017)")
    with mongo_server() as srv:
        yield srv


@pytest.fixture
def source(server: MongoServer) -> MongoDBAdapter:
    return MongoDBAdapter(server.uri, connect_timeout=5, use_mongodump="never")


@pytest.fixture
def new_database(server: MongoServer) -> Iterator[Any]:
    created: list[str] = []

    def make() -> str:
        name = f"pdb_t_{uuid.uuid4().hex[:10]}"
        created.append(name)
        return name

    yield make
    client = server.client()
    for name in created:
        client.drop_database(name)
    client.close()


def load_awkward_data(server: MongoServer, db_name: str) -> None:
    client = server.client()
    db = client[db_name]
    db.docs.insert_many(
        [
            {
                "_id": 1,
                "text": "emoji 😀 ünïcødé \x00 nul",
                "bin": bson.Binary(bytes(range(256))),
                "none": None,
                "int64": bson.Int64(2**62),
                "float": 1.5e300,
                "neg_zero": -0.0,
                "date": datetime.datetime(2024, 2, 29, 23, 59, 59, 123000),
                "oid": bson.ObjectId("65f000000000000000000001"),
                "nested": {"list": [1, "two", {"three": [None, True]}], "empty": {}},
                "bool": False,
            },
            {"_id": "string id", "text": ""},
            {"_id": bson.ObjectId(), "big": bson.Binary(BIG)},
        ]
    )
    db.docs.create_index([("text", 1)], unique=True, sparse=True)
    db.docs.create_index([("int64", -1), ("float", 1)])
    for n in range(15):
        db[f"coll_{n:02d}"].insert_many([{"n": n, "i": i} for i in range(50)])
    db.empty_collection.insert_one({"x": 1})
    db.empty_collection.delete_many({})
    client.close()


def snapshot(server: MongoServer, db_name: str) -> dict[str, Any]:
    """Raw documents (bytes, ordered by _id) and index keys/uniqueness per collection."""
    client = server.client()
    db = client[db_name]
    out: dict[str, Any] = {}
    for name in sorted(db.list_collection_names()):
        raw = db.get_collection(name, codec_options=bson.CodecOptions(document_class=RawBSONDocument))
        docs = sorted(bytes(doc.raw) for doc in raw.find())
        indexes = sorted(
            (json.dumps(list(ix["key"].items())), bool(ix.get("unique")), bool(ix.get("sparse")))
            for ix in db[name].list_indexes()
        )
        out[name] = (docs, indexes)
    client.close()
    return out


def dump_bytes(source: MongoDBAdapter, db_name: str) -> bytes:
    with source.open_dump(source.database_unit(db_name)) as stream:
        chunks = []
        while chunk := stream.read(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def test_export_has_the_mongodump_directory_layout(
    server: MongoServer, source: MongoDBAdapter, new_database: Any
) -> None:
    src = new_database()
    load_awkward_data(server, src)
    with tarfile.open(fileobj=io.BytesIO(dump_bytes(source, src))) as tar:
        names = tar.getnames()
        assert f"{src}/docs.bson" in names and f"{src}/docs.metadata.json" in names
        assert f"{src}/empty_collection.bson" in names  # empty collections keep an empty .bson
        metadata = json.loads(tar.extractfile(f"{src}/docs.metadata.json").read())  # type: ignore[union-attr]
        assert metadata["collectionName"] == "docs" and metadata["type"] == "collection"
        assert {"indexes", "options"} <= set(metadata)
        assert metadata["indexes"][0]["v"] == {"$numberInt": "2"}  # canonical Extended JSON, like mongodump
        documents = list(iter_bson(tar.extractfile(f"{src}/docs.bson")))  # type: ignore[arg-type]
    assert len(documents) == 3
    assert bson.decode(documents[0])["text"] == "emoji 😀 ünïcødé \x00 nul"


def test_large_collection_is_written_in_bounded_segments(
    server: MongoServer, source: MongoDBAdapter, new_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = new_database(), new_database()
    client = server.client()
    client[src].blobs.insert_many([{"i": i, "b": bson.Binary(os.urandom(300_000))} for i in range(10)])
    client.close()
    buffer = io.BytesIO()
    with MongoClientFor(server) as mc:
        mongo_archive.export_database(mc, src, buffer, segment_bytes=1_000_000)
    buffer.seek(0)
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        parts = [m for m in tar.getmembers() if ".bson.part-" in m.name]
    assert [m.name.rsplit("-", 1)[1] for m in parts] == ["000000", "000001", "000002", "000003"]
    assert all(m.size <= 1_000_000 for m in parts)
    source.restore(source.database_unit(src), buffer, target_database=dst)
    assert snapshot(server, dst) == snapshot(server, src)


@contextlib.contextmanager
def MongoClientFor(server: MongoServer) -> Iterator[Any]:
    client = server.client()
    try:
        yield client
    finally:
        client.close()


def test_list_and_missing_databases(server: MongoServer, source: MongoDBAdapter, new_database: Any) -> None:
    name = new_database()
    load_awkward_data(server, name)
    assert name in source.list_databases()
    assert "admin" not in source.list_databases()
    with pytest.raises(NotFoundError, match="pdb_missing"):
        source.resolve_databases(include=["pdb_missing"])
    # A database without collections does not exist in MongoDB: it dumps as an empty export.
    empty = dump_bytes(source, "pdb_missing")
    with tarfile.open(fileobj=io.BytesIO(empty)) as tar:
        assert tar.getnames() == []


def test_restore_of_garbage_or_truncated_stream_fails(
    server: MongoServer, source: MongoDBAdapter, new_database: Any
) -> None:
    src, dst, dst2 = new_database(), new_database(), new_database()
    load_awkward_data(server, src)
    unit = source.database_unit(src)
    with pytest.raises(RestoreFailedError):
        source.restore(unit, io.BytesIO(b"not a tar at all" * 100), target_database=dst)
    data = dump_bytes(source, src)
    with pytest.raises(RestoreFailedError):
        source.restore(unit, io.BytesIO(data[: len(data) // 2]), target_database=dst2)
    # Cut exactly after a member: tarfile alone would call that a clean end.
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    boundary = members[-2].offset_data + ((members[-2].size + 511) // 512) * 512
    with pytest.raises(RestoreFailedError, match="truncated"):
        source.restore(unit, io.BytesIO(data[:boundary]), target_database=new_database())


def test_bson_reader_rejects_malformed_input() -> None:
    good = bson.encode({"a": 1})
    assert list(iter_bson(io.BytesIO(good + good))) == [good, good]
    with pytest.raises(ArchiveError):
        list(iter_bson(io.BytesIO(good[:-3])))
    with pytest.raises(ArchiveError):
        list(iter_bson(io.BytesIO(b"\x02\x00\x00\x00")))


def test_collection_name_escaping_matches_mongodump() -> None:
    assert escape_collection_name("a/b c?%") == "a%2Fb%20c%3F%25"
    assert escape_collection_name("x$y:z@w.v-1_~") == "x$y:z@w.v-1_~"
    for name in ("a/b c?%", "ünï/😀", "plain"):
        assert unescape_collection_name(escape_collection_name(name)) == name


def test_import_accepts_a_tar_of_a_mongodump_directory(server: MongoServer, new_database: Any) -> None:
    """A tar of a mongodump-style directory (relaxed JSON metadata, no uuid, leading folder) restores too.

    nx-27017 accepts only alphanumeric collection names, so name escaping is unit-tested separately.
    """
    dst = new_database()
    buffer = io.BytesIO()
    docs = b"".join(bson.encode({"_id": i, "v": f"value {i}"}) for i in range(3))
    metadata = json.dumps(
        {
            "indexes": [
                {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                {"v": 2, "key": {"v": 1}, "name": "v_1", "unique": True},
            ],
            "collectionName": "people_2024",
            "type": "collection",
            "options": {},
        }
    ).encode()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content in (
            ("dump/app/people_2024.metadata.json", metadata),
            ("dump/app/people_2024.bson", docs),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    buffer.seek(0)
    with MongoClientFor(server) as client:
        result = import_archive(client, buffer, dst)
        assert result.documents == {"people_2024": 3}
        assert result.indexes == {"people_2024": 1}
        assert sorted(d["v"] for d in client[dst].people_2024.find()) == ["value 0", "value 1", "value 2"]
        unique = [ix for ix in client[dst].people_2024.list_indexes() if ix.get("unique")]
        assert [list(ix["key"]) for ix in unique] == [["v"]]


# -- mongodump / mongorestore command building (the tools are not installed here: unverified) ---------


def test_mongodump_argv_and_config_keep_secrets_in_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: f"/opt/mongo/bin/{name}")
    adapter = MongoDBAdapter(
        "mongodb://alice:uri%40pass@db1:27017,db2:27017/appdb?replicaSet=rs0",
        password="p@ss:/word",
        use_mongodump="auto",
        connect_timeout=7,
    )
    unit = adapter.database_unit("app")
    assert (unit.extension, unit.format) == ("archive", ARCHIVE_FORMAT)
    argv = adapter.mongodump_argv("app", "/tmp/x/secret.yaml")
    assert argv == [
        "/opt/mongo/bin/mongodump",
        "--config=/tmp/x/secret.yaml",
        "--archive",
        "--db=app",
        "--quiet",
    ]
    config = adapter.tool_config()
    assert config.startswith('uri: "mongodb://alice:p%40ss%3A%2Fword@db1:27017,db2:27017/?')
    assert "authSource=appdb" in config and "replicaSet=rs0" in config
    assert "serverSelectionTimeoutMS=7000" in config
    restore = adapter.mongorestore_argv("app", "app*copy", "/tmp/x/secret.yaml")
    assert restore[:3] == ["/opt/mongo/bin/mongorestore", "--config=/tmp/x/secret.yaml", "--archive"]
    assert "--nsFrom=app.*" in restore and "--nsTo=app\\*copy.*" in restore
    for line in (*argv, *restore):
        assert "p@ss" not in line and "uri%40pass" not in line
    assert "p@ss" not in adapter.describe() and "uri%40pass" not in adapter.describe()
    assert adapter.describe() == "mongodb://alice@db1:27017,db2:27017/appdb?replicaSet=rs0"


def test_mongodump_config_is_private_and_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run a stand-in 'mongodump' that records its config file: mode 0600 during the dump, gone after."""
    fake = tmp_path / "mongodump"
    record = tmp_path / "record"
    fake.write_text(
        "#!/bin/sh\n"
        f'cfg="${{1#--config=}}"; stat -c %a "$cfg" > {record}; cat "$cfg" >> {record}; '
        'echo "$cfg" >> ' + str(record) + "\nprintf 'ARCHIVE'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    adapter = MongoDBAdapter("mongodb://bob@127.0.0.1:1/", password="very-secret", use_mongodump="always")
    monkeypatch.setattr(adapter, "_ping", lambda: None)
    with adapter.open_dump(adapter.database_unit("app")) as stream:
        assert stream.read() == b"ARCHIVE"
    lines = record.read_text().splitlines()
    mode, content, path = lines[0], "\n".join(lines[1:-1]), lines[-1]
    assert mode == "600"
    assert content.startswith('uri: "mongodb://bob:very-secret@127.0.0.1:1/?')
    assert not Path(path).exists()


def test_redact_uri_and_escape_namespace() -> None:
    assert redact_uri("mongodb://u:p@h/") == "mongodb://u@h/"
    assert redact_uri("mongodb+srv://h.example.com/") == "mongodb+srv://h.example.com/"
    assert escape_namespace("a*b$c\\d") == "a\\*b\\$c\\\\d"


def test_block_builds_the_adapter_without_leaking_the_password() -> None:
    from prefect_db_backup.blocks.more_sources import MongoDBSource

    block = MongoDBSource(uri="mongodb://u:inuri@h:27017/", password="blk-secret", use_mongodump="never")
    adapter = block.get_adapter()
    assert isinstance(adapter, MongoDBAdapter)
    assert adapter.client_settings()["password"] == "blk-secret"
    assert block.describe() == adapter.describe() == "mongodb://u@h:27017/"
    assert "blk-secret" not in repr(block)


def test_restore_picks_the_format_from_the_bytes(
    server: MongoServer,
    source: MongoDBAdapter,
    new_database: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A tar restores through the importer even when the unit says archive (mongodump installed since)."""
    src, dst = new_database(), new_database()
    load_awkward_data(server, src)
    data = dump_bytes(source, src)
    archive_unit = source.database_unit(src).__class__(src, "database", "archive", src, ARCHIVE_FORMAT)
    source.restore(archive_unit, io.BytesIO(data), target_database=dst)
    assert snapshot(server, dst) == snapshot(server, src)
    # And archive bytes go to mongorestore (a stand-in recording its arguments and input), renamed.
    record = tmp_path / "stdin"
    fake = tmp_path / "mongorestore"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {record}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    archive = bytes.fromhex("6de29981") + b"rest of an archive" * 1000
    source.restore(archive_unit, io.BytesIO(archive), target_database="copy")
    assert record.read_bytes() == archive
    args = (tmp_path / "args").read_text()
    assert f"--nsFrom={src}.*" in args and "--nsTo=copy.*" in args


# -- the source conformance suite (built-in exporter against nx-27017) -------------------------------------


class TestMongoDBConformance(SourceSuite):
    @pytest.fixture
    def source(self, server: MongoServer) -> MongoDBAdapter:
        return MongoDBAdapter(server.uri, connect_timeout=5, use_mongodump="never")

    @pytest.fixture
    def fresh_database(self, new_database: Any) -> Any:
        return new_database

    @pytest.fixture
    def load_awkward_data(self, server: MongoServer) -> Any:
        return lambda database: load_awkward_data(server, database)

    @pytest.fixture
    def snapshot(self, server: MongoServer) -> Any:
        return lambda database: snapshot(server, database)

    @pytest.fixture
    def password_source(self, server: MongoServer) -> MongoDBAdapter:
        # nx-27017 has no authentication: with a password but no user name, pymongo does not authenticate,
        # so this checks only that the password (carried in the exporter's environment) stays out of argv.
        return MongoDBAdapter(server.uri, password=SUITE_PASSWORD, connect_timeout=5, use_mongodump="never")

    @pytest.fixture
    def unreachable_source(self) -> MongoDBAdapter:
        return MongoDBAdapter(f"mongodb://user:{SUITE_PASSWORD}@127.0.0.1:{free_port()}/", connect_timeout=3)

    @pytest.fixture
    def source_secrets(self) -> list[str]:
        return [SUITE_PASSWORD]

    # nx-27017 has no authentication (a login attempt crashes its handler), and no real mongod can run here:
    # refused credentials are unverified (OperationFailure codes 18/13 map to AuthenticationError, untested).
    test_wrong_password_is_permanent_and_quick = None  # type: ignore[assignment]

    def test_selection_and_missing_database(  # type: ignore[override]
        self, source_for: Any, fresh_database: Any, server: MongoServer
    ) -> None:
        """The suite's rule, on a database with one collection: MongoDB has no empty databases."""

        def non_empty() -> str:
            name = fresh_database()
            with MongoClientFor(server) as client:
                client[name].marker.insert_one({"x": 1})
            return name

        SourceSuite.test_selection_and_missing_database(self, source_for, non_empty)


def test_error_translation_without_a_real_server() -> None:
    """Refused credentials cannot be produced here (nx-27017 has no authentication): check the mapping."""
    from prefect_db_backup.errors import AuthenticationError, ConfigurationError, ConnectionFailedError
    from pymongo import errors as mongo_errors

    adapter = MongoDBAdapter("mongodb://alice:uri-secret@db.example:27017/", password="pw-secret")
    for code in (18, 13):
        error = adapter._translate(
            mongo_errors.OperationFailure("Authentication failed. pw-secret", code=code)
        )
        assert isinstance(error, AuthenticationError)
        assert adapter.describe() in str(error) and "pw-secret" not in str(error)
    timeout = adapter._translate(mongo_errors.ServerSelectionTimeoutError("db.example:27017: timed out"))
    assert isinstance(timeout, ConnectionFailedError) and "uri-secret" not in str(timeout)
    assert isinstance(adapter._translate(mongo_errors.ConfigurationError("bad option")), ConfigurationError)
