"""Built-in MongoDB export and import, for machines without ``mongodump``/``mongorestore``.

The export of one database is ONE tar stream holding the layout ``mongodump --out DIR`` writes::

    <db>/<collection>.metadata.json   indexes, options, uuid, collectionName, type (canonical Extended JSON)
    <db>/<collection>.bson            the documents: raw BSON, concatenated, exactly as the server sent them

so ``tar -x`` followed by ``mongorestore --dir <db> --db <target>`` restores it, and so does
:func:`import_archive` (the built-in importer). Collection names are escaped in file names the way
``mongodump`` does (Go's ``url.PathEscape``: ``/`` becomes ``%2F``). Views get a metadata file only.

**Bounded memory and disk (the segment rule).** A tar member declares its size before its content, and the
size of a collection's documents is only known once they have all been read. Each collection is therefore
read into a spool of at most :data:`SEGMENT_BYTES` (64 MiB; in memory up to 8 MiB, then in a private
temporary file), and written out whenever the spool is full. A collection that fits one segment (the usual
case) becomes exactly ``<collection>.bson``. A larger one becomes several members
``<collection>.bson.part-000000``, ``...part-000001``, in order, each a whole number of documents; the
built-in importer reads them in sequence. Before using ``mongorestore`` on such a dump, join the parts:
``cat c.bson.part-* > c.bson && rm c.bson.part-*``. Memory never exceeds one spool plus one cursor batch,
and the temporary file never exceeds one segment, whatever the collection size.

**Consistency.** Like ``mongodump`` without ``--oplog``, the export reads each collection with its own
cursor: writes made during the export may or may not be included. Time-series collections are refused
(use ``mongodump``). Users, roles and the ``admin``/``local``/``config`` databases are not exported.

The exporter runs as a child process (``python -m prefect_db_backup.adapters.sources.mongo_archive``) so a
dump is one killable process group; its connection settings, password included, arrive in its environment
(``PDB_MONGO_CLIENT``, JSON), never its arguments.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO
from urllib.parse import quote, unquote

from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.database import Database

#: Largest collection segment written as one tar member.
SEGMENT_BYTES = 64 * 1024 * 1024
#: Spool bytes kept in memory before spilling to a private temporary file.
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
#: Environment variable carrying the exporter child's MongoClient settings (JSON).
CLIENT_ENV = "PDB_MONGO_CLIENT"
#: Documents and bytes per insert batch of the importer.
INSERT_BATCH_DOCS = 5000
INSERT_BATCH_BYTES = 8 * 1024 * 1024

_PART = ".bson.part-"
_PATH_SAFE = "-_.~$&+:=@"
_RAW = CodecOptions(document_class=RawBSONDocument)


class ArchiveError(Exception):
    """The export cannot be made, or a stream is not a valid built-in export."""


def escape_collection_name(name: str) -> str:
    """Escape a collection name for a file name as ``mongodump`` does (Go ``url.PathEscape``)."""
    return quote(name, safe=_PATH_SAFE)


def unescape_collection_name(name: str) -> str:
    """Invert :func:`escape_collection_name`."""
    return unquote(name)


def _uuid_hex(info: Mapping[str, Any]) -> str | None:
    """The collection UUID as 32 hex digits (mongodump's form), or None when unknown."""
    value = info.get("uuid")
    if value is None:
        return None
    text = value.hex if hasattr(value, "hex") and not isinstance(value, str | bytes) else str(value)
    text = text.replace("-", "").lower()
    if len(text) != 32 or set(text) == {"0"}:
        return None
    return text


def collection_metadata(db: Database[Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """Build the ``.metadata.json`` content of one collection or view from its listCollections entry."""
    name = str(info["name"])
    kind = str(info.get("type", "collection"))
    metadata: dict[str, Any] = {
        "indexes": [] if kind == "view" else list(db[name].list_indexes()),
        "collectionName": name,
        "type": kind,
        "options": dict(info.get("options") or {}),
    }
    uuid = _uuid_hex(info.get("info") or {})
    if uuid:
        metadata["uuid"] = uuid
    return metadata


def _add_member(tar: tarfile.TarFile, path: str, data: IO[bytes], size: int) -> None:
    member = tarfile.TarInfo(path)
    member.size = size
    member.mode = 0o600
    member.mtime = int(time.time())
    tar.addfile(member, data)


class _Segment:
    """A bounded spool of whole BSON documents."""

    def __init__(self, directory: str) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, dir=directory)  # noqa: SIM115
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.file.write(data)
        self.size += len(data)

    def rewind(self) -> IO[bytes]:
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def _documents(batch: bytes) -> Iterator[memoryview]:
    """Split concatenated BSON documents (one raw cursor batch) without copying."""
    view = memoryview(batch)
    offset = 0
    while offset < len(view):
        size = int.from_bytes(view[offset : offset + 4], "little")
        if size < 5 or offset + size > len(view):
            raise ArchiveError("malformed BSON in a raw cursor batch")
        yield view[offset : offset + size]
        offset += size


def _export_collection(
    tar: tarfile.TarFile, db: Database[Any], name: str, prefix: str, spool_dir: str, segment_bytes: int
) -> None:
    collection = db.get_collection(name, codec_options=_RAW)
    segment = _Segment(spool_dir)
    parts = 0

    def flush(final: bool) -> None:
        nonlocal segment, parts
        suffix = ".bson" if final and parts == 0 else f"{_PART}{parts:06d}"
        _add_member(tar, f"{prefix}{suffix}", segment.rewind(), segment.size)
        segment.close()
        segment = _Segment(spool_dir)
        parts += 1

    try:
        for batch in collection.find_raw_batches(batch_size=1000):
            for document in _documents(batch):
                if segment.size and segment.size + len(document) > segment_bytes:
                    flush(final=False)
                segment.write(document)
        if segment.size or parts == 0:
            flush(final=True)
    finally:
        segment.close()


def export_database(
    client: MongoClient[Any], database: str, out: BinaryIO, *, segment_bytes: int = SEGMENT_BYTES
) -> None:
    """Write the tar export of ``database`` to ``out`` (see the module docstring).

    Raises:
        ArchiveError: If the database holds a collection type the exporter cannot dump faithfully.
        pymongo.errors.PyMongoError: On server or connection errors.
    """
    db = client[database]
    infos = sorted(db.list_collections(), key=lambda info: str(info["name"]))
    spool_dir = tempfile.mkdtemp(prefix="pdb-mongo-")
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for info in infos:
                name = str(info["name"])
                kind = str(info.get("type", "collection"))
                if name.startswith("system."):
                    continue  # system.views and friends are rebuilt from the metadata
                if kind == "timeseries":
                    raise ArchiveError(
                        f"collection {database}.{name} is a time-series collection, which the built-in "
                        "exporter does not support; install mongodump"
                    )
                prefix = f"{database}/{escape_collection_name(name)}"
                metadata = json_util.dumps(
                    collection_metadata(db, info), json_options=json_util.CANONICAL_JSON_OPTIONS
                ).encode("utf-8")
                _add_member(tar, f"{prefix}.metadata.json", io.BytesIO(metadata), len(metadata))
                if kind == "collection":
                    _export_collection(tar, db, name, prefix, spool_dir, segment_bytes)
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)


# -- import ---------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What :func:`import_archive` restored.

    Attributes:
        documents: Documents inserted per collection.
        indexes: Indexes created per collection (``_id_`` excluded).
        views: Views created.
    """

    documents: dict[str, int] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise ArchiveError("truncated BSON document in the export")
        data += chunk
    return data


def iter_bson(stream: IO[bytes]) -> Iterator[bytes]:
    """Yield each raw document of a concatenated-BSON stream.

    Raises:
        ArchiveError: On a malformed or truncated document.
    """
    while True:
        head = stream.read(4)
        if not head:
            return
        head += _read_exact(stream, 4 - len(head)) if len(head) < 4 else b""
        size = int.from_bytes(head, "little")
        if size < 5 or size > 48 * 1024 * 1024:
            raise ArchiveError(f"malformed BSON document length {size} in the export")
        body = _read_exact(stream, size - 4)
        if body[-1:] != b"\x00":
            raise ArchiveError("malformed BSON document (no terminator) in the export")
        yield head + body


def _split_member(path: str) -> tuple[str, str]:
    """``(collection, kind)`` of a member path: kind is ``metadata`` or ``bson``."""
    base = path.rsplit("/", 1)[-1]
    if base.endswith(".metadata.json"):
        return unescape_collection_name(base[: -len(".metadata.json")]), "metadata"
    if base.endswith(".bson"):
        return unescape_collection_name(base[: -len(".bson")]), "bson"
    if _PART in base:
        stem, _, number = base.rpartition(_PART)
        if number.isdigit():
            return unescape_collection_name(stem), "bson"
    raise ArchiveError(f"unexpected file {path!r} in a MongoDB export")


def _create_from_metadata(db: Database[Any], metadata: Mapping[str, Any], result: ImportResult) -> None:
    name = str(metadata["collectionName"])
    options = dict(metadata.get("options") or {})
    if metadata.get("type") == "view":
        db.command({"create": name, **options})
        result.views.append(name)
    else:
        db.command({"create": name, **options})


def _insert(db: Database[Any], name: str, documents: list[RawBSONDocument]) -> None:
    db.get_collection(name, codec_options=_RAW).insert_many(
        documents, ordered=True, bypass_document_validation=True
    )


class _TailReader:
    """Passes reads through, remembering the last bytes, to check the tar's end-of-archive marker."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self.tail = (self.tail + data)[-2 * tarfile.BLOCKSIZE :]
        return data

    def ends_with_marker(self) -> bool:
        """Drain what tarfile left unread; True if the stream ends with two zero blocks."""
        while self.read(1 << 16):
            pass
        return len(self.tail) == 2 * tarfile.BLOCKSIZE and not self.tail.strip(b"\0")


def import_archive(client: MongoClient[Any], stream: IO[bytes], target_database: str) -> ImportResult:
    """Restore a built-in tar export (or a tar of a ``mongodump`` directory) into ``target_database``.

    Collections are created with their options, documents inserted in batches, then indexes rebuilt. The
    target database should be empty: existing collections make the restore fail rather than merge.

    Raises:
        ArchiveError: If the stream is not a valid export.
        pymongo.errors.PyMongoError: On server errors (duplicate keys, existing collections...).
    """
    db = client[target_database]
    result = ImportResult()
    indexes: dict[str, list[dict[str, Any]]] = {}
    reader = _TailReader(stream)
    try:
        tar = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a tar stream: {exc}") from exc
    with tar:
        try:
            for member in tar:
                if not member.isfile():
                    continue
                name, kind = _split_member(member.name)
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                if kind == "metadata":
                    metadata = json_util.loads(handle.read().decode("utf-8"))
                    _create_from_metadata(db, metadata, result)
                    indexes[name] = [dict(spec) for spec in metadata.get("indexes") or []]
                    continue
                batch: list[RawBSONDocument] = []
                batch_bytes = 0
                count = result.documents.get(name, 0)
                for raw in iter_bson(handle):
                    batch.append(RawBSONDocument(raw))
                    batch_bytes += len(raw)
                    count += 1
                    if len(batch) >= INSERT_BATCH_DOCS or batch_bytes >= INSERT_BATCH_BYTES:
                        _insert(db, name, batch)
                        batch, batch_bytes = [], 0
                if batch:
                    _insert(db, name, batch)
                result.documents[name] = count
        except tarfile.TarError as exc:
            raise ArchiveError(f"corrupt tar stream: {exc}") from exc
    # tarfile treats a stream cut at a member boundary as a normal end: insist on the end marker.
    if not reader.ends_with_marker():
        raise ArchiveError("the export is truncated (no end-of-archive marker)")
    for name, specs in indexes.items():
        wanted = []
        for spec in specs:
            if spec.get("name") == "_id_":
                continue
            spec = {k: v for k, v in spec.items() if k not in ("v", "ns")}
            wanted.append(spec)
        if wanted:
            db.command({"createIndexes": name, "indexes": wanted})
        result.indexes[name] = len(wanted)
    return result


# -- child process entry point ------------------------------------------------------------------------


def client_from_env() -> MongoClient[Any]:
    """A MongoClient built from the JSON settings in ``PDB_MONGO_CLIENT``."""
    settings = json.loads(os.environ.get(CLIENT_ENV, "{}"))
    return MongoClient(**settings)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export one MongoDB database as a mongodump-layout tar.")
    parser.add_argument("command", choices=["export"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--segment-bytes", type=int, default=SEGMENT_BYTES)
    args = parser.parse_args(argv)
    from pymongo.errors import PyMongoError

    client = client_from_env()
    try:
        export_database(client, args.db, sys.stdout.buffer, segment_bytes=args.segment_bytes)
        sys.stdout.buffer.flush()
    except (ArchiveError, PyMongoError) as exc:
        print(f"mongodb export of {args.db!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 3
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
