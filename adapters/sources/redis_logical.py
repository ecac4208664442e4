"""Logical Redis dumps: every key of one logical database as a ``redis-cli --pipe`` command stream.

Format (plain RESP, the wire protocol ``redis-cli --pipe`` replays):

- First command: ``SELECT <n>``, the logical database the keys came from.
- Then one ``RESTORE <key> <ttl> <payload> REPLACE [ABSTTL]`` per key: ``payload`` is the server's ``DUMP``
  serialization (type, value and encoding, so every type round-trips: strings, hashes, lists, sets, sorted
  sets, streams, modules' types); ``ttl`` is 0 for keys without expiry, otherwise the ABSOLUTE expiry time
  in Unix milliseconds of the server's clock (``ABSTTL``), like an RDB snapshot, so a key expires at the
  same moment whenever the dump is restored (an old backup's expired keys are not resurrected).

How it is produced: ``SCAN`` over the database in batches; ``DUMP`` + ``PTTL`` pipelined for
:data:`PIPELINE_KEYS` keys at a time, so memory is bounded by that many values. Keys deleted or expired
between ``SCAN`` and ``DUMP`` are skipped. SCAN's guarantees apply: a key present for the whole dump is
included; keys written during it may or may not be; there is no point-in-time snapshot (use the RDB mode
for that). ``DUMP`` payloads carry the RDB version of the server: restore into the same or a newer Redis.

Replay by hand: ``REDISCLI_AUTH=... redis-cli -h HOST --pipe < db0.resp``.

The exporter runs as a child process (``python -m prefect_db_backup.adapters.sources.redis_logical``)
so that a dump is one process group like every other dump: killable, abortable, password in its
environment (``PDB_REDIS_PASSWORD``), never in its arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Keys requested per SCAN call.
SCAN_BATCH = 200
#: Keys whose DUMP payloads are fetched per pipeline round trip (bounds memory to this many values).
PIPELINE_KEYS = 16
#: Environment variable through which the exporter child receives the password.
PASSWORD_ENV = "PDB_REDIS_PASSWORD"


def resp_command(*args: bytes | str | int) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def export_commands(client: Redis, db: int, batch: int = SCAN_BATCH) -> Iterator[bytes]:
    """Yield the RESP command stream of one logical database (see the module docstring).

    Args:
        client: A client connected to database ``db`` with ``decode_responses=False``.
        db: The logical database number, written as the leading ``SELECT``.
        batch: Keys per SCAN and pipeline round trip.
    """
    yield resp_command("SELECT", db)
    seconds, micros = client.time()
    # Offset between the server's clock and ours: expiry times are written in the server's clock.
    offset_ms = (seconds * 1000 + micros // 1000) - int(time.time() * 1000)
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=batch)
        # DUMP payloads are as large as the values: fetch them a few keys per round trip so memory stays
        # bounded by PIPELINE_KEYS values, not by a whole SCAN batch.
        for start in range(0, len(keys), PIPELINE_KEYS):
            group = keys[start : start + PIPELINE_KEYS]
            pipe = client.pipeline(transaction=False)
            for key in group:
                pipe.dump(key)
                pipe.pttl(key)
            results = pipe.execute()
            now_ms = int(time.time() * 1000) + offset_ms
            for index, key in enumerate(group):
                payload, pttl = results[2 * index], results[2 * index + 1]
                if payload is None or pttl == -2:
                    continue  # deleted or expired since SCAN
                if pttl is None or pttl < 0:
                    yield resp_command("RESTORE", key, 0, payload, "REPLACE")
                else:
                    yield resp_command("RESTORE", key, now_ms + pttl, payload, "REPLACE", "ABSTTL")
        if int(cursor) == 0:
            return


class SelectRewriter:
    """A readable stream that replaces a logical dump's leading ``SELECT <n>`` with ``SELECT <target>``.

    Args:
        stream: The logical dump.
        target_db: Database number to restore into.

    Raises:
        ValueError: On the first read, if the stream does not start with a ``SELECT`` command.
    """

    def __init__(self, stream: BinaryIO, target_db: int) -> None:
        self._stream = stream
        self._target = target_db
        self._head: bytes | None = None

    def _read_line(self) -> bytes:
        line = b""
        while not line.endswith(b"\r\n"):
            char = self._stream.read(1)
            if not char or len(line) > 64:
                raise ValueError("not a logical Redis dump: it does not start with a SELECT command")
            line += char
        return line[:-2]

    def _read_header(self) -> bytes:
        if self._read_line() != b"*2":
            raise ValueError("not a logical Redis dump: it does not start with a SELECT command")
        values = []
        for _ in range(2):
            size_line = self._read_line()
            if not size_line.startswith(b"$") or not size_line[1:].isdigit() or int(size_line[1:]) > 32:
                raise ValueError("not a logical Redis dump: malformed leading SELECT command")
            size = int(size_line[1:])
            value = self._stream.read(size + 2)
            if len(value) != size + 2 or not value.endswith(b"\r\n"):
                raise ValueError("not a logical Redis dump: truncated leading SELECT command")
            values.append(value[:-2])
        if values[0].upper() != b"SELECT" or not values[1].isdigit():
            raise ValueError("not a logical Redis dump: it does not start with a SELECT command")
        return resp_command("SELECT", self._target)

    def read(self, size: int = -1) -> bytes:
        """Read the rewritten stream."""
        if self._head is None:
            self._head = self._read_header()
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._stream.read(size)


def _main(argv: list[str] | None = None) -> int:
    """Child process entry point: write the logical dump of one database to stdout."""
    import redis

    parser = argparse.ArgumentParser(description="Export one Redis logical database as a RESP stream.")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=int, required=True)
    parser.add_argument("--username")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--tls-ca-file")
    parser.add_argument("--tls-insecure", action="store_true")
    args = parser.parse_args(argv)
    client = redis.Redis(
        host=args.host,
        port=args.port,
        db=args.db,
        username=args.username,
        password=os.environ.get(PASSWORD_ENV) or None,
        socket_connect_timeout=args.timeout,
        socket_timeout=max(60.0, args.timeout),
        ssl=args.tls,
        ssl_ca_certs=args.tls_ca_file,
        ssl_cert_reqs="none" if args.tls_insecure else "required",
        decode_responses=False,
        # No silent retries: redis-py retries refused credentials and lost connections by default, which
        # turns one wrong password into seconds of retry storm; the backup flow decides about retries.
        retry=Retry(NoBackoff(), 0),
    )
    out = sys.stdout.buffer
    try:
        for command in export_commands(client, args.db):
            out.write(command)
        out.flush()
    except redis.RedisError as exc:
        print(f"redis logical export of db {args.db} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 3
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
