"""RedisAdapter against private redis-server processes (never the shared one on 6379)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.sources.redis import RedisAdapter, parse_db_name
from prefect_db_backup.adapters.sources.redis_logical import SelectRewriter, resp_command
from prefect_db_backup.adapters.testing.source_suite import SourceSuite
from prefect_db_backup.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    RestoreFailedError,
)
from servers.redis_server import RedisServer, available, free_port, redis_server

PASSWORD = "redis pa$$ 'word\""
BIG = os.urandom(3 * 1024 * 1024)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[RedisServer, RedisServer, RedisServer]]:
    """(source, restore target, password-protected) servers."""
    require_infrastructure(available(), "redis-server and redis-cli")
    with redis_server() as src, redis_server() as dst, redis_server(PASSWORD) as locked:
        yield src, dst, locked


@pytest.fixture
def source(servers: Any) -> RedisAdapter:
    return RedisAdapter(port=servers[0].port, connect_timeout=3)


@pytest.fixture
def target(servers: Any) -> Iterator[RedisAdapter]:
    yield RedisAdapter(port=servers[1].port, connect_timeout=3)
    servers[1].client().flushall()


def load_awkward(client: Any) -> None:
    """Every awkward kind of key into the database ``client`` is connected to."""
    client.set(b"bin\x00\xff\r\n key", bytes(range(256)))
    client.set("big", BIG)
    client.set("key with spaces", "v")
    client.set("ключ 😀", "значение 😀")
    client.set("empty", b"")
    client.set("int", 12345)
    client.hset("hash", mapping={"a": b"\x00\x01", "ü": "2", "big": BIG[:100_000]})
    client.rpush("list", *[f"item{n}".encode() for n in range(1000)], b"\x00")
    client.sadd("set", "x", "y", b"\xff")
    client.sadd("intset", 1, 2, 3)
    client.zadd("zset", {"a": 1.5, "b": -2, "c": float("inf")})
    for n in range(5):
        client.xadd("stream", {"n": str(n), "bin": b"\x00\xff"})
    client.xgroup_create("stream", "grp", id="0")
    client.set("ttl_key", "expires", px=120_000)
    client.hset("ttl_hash", "f", "v")
    client.pexpire("ttl_hash", 300_000)
    for n in range(600):  # more keys than one SCAN batch
        client.set(f"many:{n}", n)


@pytest.fixture
def awkward(servers: Any) -> Iterator[int]:
    """Awkward data in db 3 of the source server; flushed afterwards."""
    load_awkward(servers[0].client(3))
    yield 3
    servers[0].client().flushall()


def snapshot(client: Any) -> dict[bytes, Any]:
    """Type, value and expiry of every key of one database."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        if kind == b"string":
            value: Any = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = (client.xrange(key), [g["name"] for g in client.xinfo_groups(key)])
        else:
            raise AssertionError(kind)
        out[key] = (kind, value, client.pttl(key) > 0)
    return out


def read_all(stream: Any) -> bytes:
    chunks = []
    while chunk := stream.read(1 << 16):
        chunks.append(chunk)
    stream.close()
    return b"".join(chunks)


def test_logical_round_trip_into_another_database(
    servers: Any, source: RedisAdapter, target: RedisAdapter, awkward: int
) -> None:
    assert source.list_databases() == ["db3"]
    [unit] = source.dump_units(source.resolve_databases())
    assert (unit.name, unit.extension, unit.database) == ("db3", "resp", "db3")
    data = read_all(source.open_dump(unit))
    assert data.startswith(resp_command("SELECT", 3))
    target.restore(unit, io.BytesIO(data), target_database="db7")
    restored = servers[1].client(7)
    original = servers[0].client(3)
    assert snapshot(restored) == snapshot(original)
    assert len(snapshot(restored)) == 600 + 14
    # TTLs are kept (absolute expiry: within a few seconds of the original).
    assert abs(restored.pttl("ttl_key") - original.pttl("ttl_key")) < 5000
    assert abs(restored.pttl("ttl_hash") - original.pttl("ttl_hash")) < 5000
    assert restored.pttl("big") == -1
    assert servers[1].client(3).dbsize() == 0  # nothing went to the source's db number


def test_logical_dump_replays_with_stock_redis_cli(servers: Any, source: RedisAdapter, awkward: int) -> None:
    data = read_all(source.open_dump(source.database_unit("db3")))
    with redis_server() as fresh:
        result = subprocess.run(
            ["redis-cli", "-p", str(fresh.port), "--pipe"], input=data, capture_output=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert snapshot(fresh.client(3)) == snapshot(servers[0].client(3))


def test_expired_keys_are_not_resurrected(servers: Any, source: RedisAdapter, target: RedisAdapter) -> None:
    client = servers[0].client(4)
    client.set("short", "x", px=300)
    client.set("long", "y")
    try:
        data = read_all(source.open_dump(source.database_unit("db4")))
        time.sleep(0.5)
        target.restore(source.database_unit("db4"), io.BytesIO(data), target_database="db4")
        assert servers[1].client(4).keys() == [b"long"]
    finally:
        client.flushdb()


def test_configured_db_only(servers: Any, awkward: int) -> None:
    adapter = RedisAdapter(port=servers[0].port, db=5)
    assert adapter.list_databases() == ["db5"]  # even when empty
    data = read_all(adapter.open_dump(adapter.database_unit("db5")))
    assert data == resp_command("SELECT", 5)


def test_rdb_snapshot_is_valid_and_restore_is_refused(
    servers: Any, source: RedisAdapter, awkward: int, tmp_path: Path
) -> None:
    require_infrastructure(shutil.which("redis-check-rdb") is not None, "redis-check-rdb")
    adapter = RedisAdapter(port=servers[0].port, mode="rdb")
    [unit] = adapter.dump_units(["db3"])
    assert (unit.name, unit.kind, unit.extension) == ("server", "globals", "rdb")
    data = read_all(adapter.open_dump(unit))
    assert data.startswith(b"REDIS")
    path = tmp_path / "dump.rdb"
    path.write_bytes(data)
    check = subprocess.run(["redis-check-rdb", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "RDB looks OK" in check.stdout
    # The snapshot holds the data: a server started on it has every key.
    directory = Path(tempfile.mkdtemp(prefix="pdb-redis-rdb-"))
    try:
        (directory / "dump.rdb").write_bytes(data)
        port = free_port()
        proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(directory),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            import redis

            loaded = redis.Redis(port=port, db=3)
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(redis.ConnectionError, redis.exceptions.BusyLoadingError):
                    if loaded.ping():
                        break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert snapshot(loaded) == snapshot(servers[0].client(3))
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    with pytest.raises(RestoreFailedError, match="redis-check-rdb"):
        adapter.restore(unit, io.BytesIO(data))


def test_missing_database_is_not_found(source: RedisAdapter, awkward: int) -> None:
    with pytest.raises(NotFoundError, match="db9"):
        source.resolve_databases(include=["db3", "db9"])
    with pytest.raises(NotFoundError):
        source.database_unit("app")
    with pytest.raises(NotFoundError):
        parse_db_name("db")


def test_wrong_password_is_authentication_error(servers: Any) -> None:
    locked = servers[2]
    for password in ("wrong", None):
        adapter = RedisAdapter(port=locked.port, password=password, connect_timeout=3)
        started = time.monotonic()
        with pytest.raises(AuthenticationError) as info:
            adapter.test_connection()
        assert f"redis://127.0.0.1:{locked.port}" in str(info.value)
        with pytest.raises(AuthenticationError):
            adapter.open_dump(adapter.database_unit("db0"))
        assert time.monotonic() - started < 5
    good = RedisAdapter(port=locked.port, password=PASSWORD)
    assert good.test_connection().server_version


def _cmdlines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((entry / "cmdline").read_bytes())
    return found


@pytest.mark.parametrize("mode", ["logical", "rdb"])
def test_password_never_in_argv_with_acl_user(servers: Any, mode: str) -> None:
    locked = servers[2]
    admin = locked.client()
    admin.execute_command("ACL", "SETUSER", "backup", "on", ">acl secret", "~*", "+@all")
    admin.set("k", BIG)
    try:
        adapter = RedisAdapter(port=locked.port, username="backup", password="acl secret", mode=mode)  # type: ignore[arg-type]
        [unit] = adapter.dump_units(adapter.resolve_databases())
        stream = adapter.open_dump(unit)
        marker = b"redis_logical" if mode == "logical" else b"--rdb"
        seen: list[bytes] = []
        chunks = []
        while True:  # look at every process's arguments while the dump runs
            if len(chunks) < 4:
                seen += _cmdlines()
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        stream.close()
        data = b"".join(chunks)
        assert len(data) > len(BIG)
        assert any(marker in line for line in seen), "the dump process was not seen running"
        assert not any(b"acl secret" in line or PASSWORD.encode() in line for line in seen)
        if mode == "logical":
            with redis_server() as fresh:
                RedisAdapter(port=fresh.port).restore(unit, io.BytesIO(data))
                assert fresh.client().get("k") == BIG
    finally:
        admin.execute_command("ACL", "DELUSER", "backup")
        admin.flushall()


def test_restore_rejects_a_stream_that_is_not_a_logical_dump(target: RedisAdapter) -> None:
    with pytest.raises(RestoreFailedError, match="SELECT"):
        target.restore(target.database_unit("db0"), io.BytesIO(b"REDIS0010garbage"))


def test_restore_reports_failed_commands(target: RedisAdapter) -> None:
    bad = resp_command("SELECT", 0) + resp_command("RESTORE", "k", 0, b"not a dump payload", "REPLACE")
    with pytest.raises(RestoreFailedError, match="checksum are wrong"):
        target.restore(target.database_unit("db0"), io.BytesIO(bad))


def test_select_rewriter() -> None:
    body = resp_command("SET", "a", "b")
    rewritten = SelectRewriter(io.BytesIO(resp_command("SELECT", 12) + body), 4)
    out = b""
    while chunk := rewritten.read(3):
        out += chunk
    assert out == resp_command("SELECT", 4) + body


def test_block_builds_the_adapter_without_leaking_the_password() -> None:
    from prefect_db_backup.blocks.more_sources import RedisSource

    block = RedisSource(port=6380, username="u", password="blk-secret", mode="rdb", databases=["db1"])
    adapter = block.get_adapter()
    assert isinstance(adapter, RedisAdapter)
    assert (adapter.port, adapter.username, adapter.password, adapter.mode) == (
        6380,
        "u",
        "blk-secret",
        "rdb",
    )
    assert block.describe() == adapter.describe() == "redis://u@127.0.0.1:6380"
    assert "blk-secret" not in repr(block)


# -- the source conformance suite ------------------------------------------------------------------------
# Databases are logical databases db1..db15 of one password-protected private server.


@pytest.fixture(scope="module")
def suite_server() -> Iterator[RedisServer]:
    require_infrastructure(available(), "redis-server and redis-cli")
    with redis_server(PASSWORD) as server:
        yield server


class TestRedisConformance(SourceSuite):
    @pytest.fixture
    def source(self, suite_server: RedisServer) -> RedisAdapter:
        return RedisAdapter(port=suite_server.port, password=PASSWORD, connect_timeout=3)

    @pytest.fixture
    def fresh_database(self, suite_server: RedisServer) -> Iterator[Any]:
        taken: list[int] = []

        def make() -> str:
            keyspace = suite_server.client().info("keyspace")
            used = {int(name[2:]) for name in keyspace} | set(taken)
            number = min(n for n in range(1, 16) if n not in used)
            taken.append(number)
            return f"db{number}"

        yield make
        for number in taken:
            suite_server.client(number).flushdb()

    @pytest.fixture
    def load_awkward_data(self, suite_server: RedisServer) -> Any:
        return lambda database: load_awkward(suite_server.client(parse_db_name(database)))

    @pytest.fixture
    def snapshot(self, suite_server: RedisServer) -> Any:
        return lambda database: snapshot(suite_server.client(parse_db_name(database)))

    @pytest.fixture
    def verify_restored(self, suite_server: RedisServer) -> Any:
        def verify(original: str, restored: str) -> None:
            before = suite_server.client(parse_db_name(original))
            after = suite_server.client(parse_db_name(restored))
            for key in ("ttl_key", "ttl_hash"):
                assert abs(after.pttl(key) - before.pttl(key)) < 5000
            assert after.xinfo_groups("stream")[0]["name"] == b"grp"

        return verify

    @pytest.fixture
    def password_source(self, source: RedisAdapter) -> RedisAdapter:
        return source

    @pytest.fixture
    def wrong_password_source(self, suite_server: RedisServer) -> RedisAdapter:
        return RedisAdapter(port=suite_server.port, password="definitely-wrong", connect_timeout=3)

    @pytest.fixture
    def unreachable_source(self) -> RedisAdapter:
        return RedisAdapter(port=free_port(), password="some-password", connect_timeout=3)

    @pytest.fixture
    def source_secrets(self) -> list[str]:
        return [PASSWORD, "definitely-wrong"]

    def test_selection_and_missing_database(  # type: ignore[override]
        self, source_for: Any, fresh_database: Any, suite_server: RedisServer
    ) -> None:
        """The suite's rule, on a database holding one key: Redis lists only non-empty logical databases."""

        def non_empty() -> str:
            name = fresh_database()
            suite_server.client(parse_db_name(name)).set("k", "v")
            return name

        SourceSuite.test_selection_and_missing_database(self, source_for, non_empty)


@pytest.mark.parametrize("mode", ["logical", "rdb"])
def test_tls_dump_and_restore(mode: str) -> None:
    require_infrastructure(available(), "redis-server and redis-cli")
    with redis_server(PASSWORD, tls=True) as server:
        assert server.ca_file is not None
        server.client(2).set("tls key", BIG)
        adapter = RedisAdapter(
            port=server.port,
            password=PASSWORD,
            mode=mode,
            tls=True,
            tls_ca_file=str(server.ca_file),  # type: ignore[arg-type]
        )
        assert adapter.describe() == f"rediss://127.0.0.1:{server.port}"
        assert adapter.test_connection().server_version
        [unit] = adapter.dump_units(adapter.resolve_databases())
        data = read_all(adapter.open_dump(unit))
        if mode == "rdb":
            assert data.startswith(b"REDIS") and BIG[:1000] in data
            return
        adapter.restore(unit, io.BytesIO(data), target_database="db5")
        assert server.client(5).get("tls key") == BIG
        # Without the CA the server's certificate is refused, as a permanent configuration error.
        untrusted = RedisAdapter(port=server.port, password=PASSWORD, tls=True, connect_timeout=3)
        with pytest.raises(ConfigurationError, match="tls_ca_file"):
            untrusted.test_connection()
