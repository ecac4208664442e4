"""MySQLAdapter against the MariaDB 10.11 on 127.0.0.1:3306 (root, no password)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.sources.mysql import ClientTool, MySQLAdapter, parse_tool_version
from prefect_db_backup.adapters.testing.source_suite import SourceSuite
from prefect_db_backup.errors import (
    AuthenticationError,
    NotFoundError,
    RestoreFailedError,
)

HOST, PORT = "127.0.0.1", 3306
AWKWARD_PASSWORD = "p\"w\\#'x y;=[client]"


def _server_up() -> bool:
    try:
        pymysql.connect(host=HOST, port=PORT, user="root", connect_timeout=2).close()
    except Exception:
        return False
    return shutil.which("mariadb-dump") is not None or shutil.which("mysqldump") is not None


@pytest.fixture(scope="module")
def root() -> Iterator[Any]:
    require_infrastructure(_server_up(), "MariaDB on 127.0.0.1:3306 and mariadb-dump")
    conn = pymysql.connect(host=HOST, port=PORT, user="root", autocommit=True, charset="utf8mb4")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def source(root: Any) -> MySQLAdapter:
    return MySQLAdapter(HOST, PORT, "root", None, connect_timeout=5)


@pytest.fixture
def new_database(root: Any) -> Iterator[Any]:
    created: list[str] = []

    def make() -> str:
        name = f"pdb_t_{uuid.uuid4().hex[:10]}"
        with root.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        created.append(name)
        return name

    yield make
    with root.cursor() as cur:
        for name in created:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="module")
def big_database(root: Any) -> Iterator[str]:
    """A database whose dump is far larger than a pipe buffer (8 MB of random blobs)."""
    name = f"pdb_t_big_{uuid.uuid4().hex[:8]}"
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"CREATE TABLE `{name}`.big (id INT PRIMARY KEY, v LONGBLOB)")
        cur.executemany(
            f"INSERT INTO `{name}`.big VALUES (%s, %s)", [(n, os.urandom(1 << 20)) for n in range(8)]
        )
    yield name
    with root.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def password_user(root: Any) -> Iterator[tuple[str, str]]:
    """A dedicated account with an awkward password (MariaDB checks passwords), dropped afterwards."""
    user = f"pdb_u_{uuid.uuid4().hex[:8]}"
    with root.cursor() as cur:
        for host in ("%", "localhost", "127.0.0.1"):
            quoted_host = host.replace("%", "%%")
            cur.execute(f"CREATE USER '{user}'@'{quoted_host}' IDENTIFIED BY %s", (AWKWARD_PASSWORD,))
            cur.execute(f"GRANT ALL PRIVILEGES ON `pdb\\_t\\_%`.* TO '{user}'@'{host}'")
            cur.execute(f"GRANT SELECT ON mysql.proc TO '{user}'@'{host}'")
    yield user, AWKWARD_PASSWORD
    with root.cursor() as cur:
        for host in ("%", "localhost", "127.0.0.1"):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")


def load_awkward_data(conn: Any, db: str) -> None:
    """Every awkward thing the issue lists, in database ``db``."""
    with conn.cursor() as cur:
        cur.execute(f"USE `{db}`")
        cur.execute(
            """CREATE TABLE awkward (
                id INT AUTO_INCREMENT PRIMARY KEY,
                txt VARCHAR(200) CHARACTER SET utf8mb4,
                bin VARBINARY(256),
                blb LONGBLOB,
                big LONGTEXT,
                dec1 DECIMAL(30,10),
                dt DATETIME(6),
                ts TIMESTAMP(6) NULL,
                js JSON,
                en ENUM('a','b c','ü'),
                st SET('x','y','z'),
                fl DOUBLE,
                bits BIT(7)
            ) ENGINE=InnoDB"""
        )
        rows = [
            (
                "emoji 😀🎉 ünïcødé",
                bytes(range(256)),
                bytes(range(256)) * 4,
                "x",
                "12345678901234567890.0123456789",
                "2024-02-29 23:59:59.123456",
                "2024-01-01 00:00:00.000001",
                '{"k": [1, "😀", null]}',
                "b c",
                "x,z",
                1e308,
                5,
            ),
            (None, None, None, None, None, None, None, None, None, None, None, None),
            (
                "quote ' \" \\ back\\slash\nnewline\ttab\0nul",
                b"\x00",
                b"",
                "",
                "-0.0000000001",
                "1000-01-01 00:00:00.000000",
                None,
                "null",
                "ü",
                "",
                -0.0,
                0,
            ),
        ]
        cur.executemany(
            "INSERT INTO awkward (txt, bin, blb, big, dec1, dt, ts, js, en, st, fl, bits) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        # A few MB in one value (needs a large max_allowed_packet on both sides).
        cur.execute(
            "INSERT INTO awkward (blb, big) VALUES (%s, %s)", (os.urandom(3 * 1024 * 1024), "é" * 500_000)
        )
        # Advance the AUTO_INCREMENT counter past the last row: the position must survive.
        cur.execute("INSERT INTO awkward (txt) VALUES ('to be deleted')")
        cur.execute("DELETE FROM awkward WHERE txt = 'to be deleted'")
        cur.execute("ALTER TABLE awkward AUTO_INCREMENT = 1000")
        for n in range(25):
            cur.execute(f"CREATE TABLE t{n:02d} (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO t{n:02d} VALUES ({n}, 'row {n}')")
        cur.execute("CREATE TABLE parent (id INT PRIMARY KEY) ENGINE=InnoDB")
        cur.execute(
            "CREATE TABLE child (id INT PRIMARY KEY, pid INT, FOREIGN KEY (pid) REFERENCES parent(id)) "
            "ENGINE=InnoDB"
        )
        cur.execute("INSERT INTO parent VALUES (1)")
        cur.execute("INSERT INTO child VALUES (1, 1)")
        cur.execute("CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100))")
        cur.execute("CREATE VIEW v_awkward AS SELECT id, txt FROM awkward WHERE txt IS NOT NULL")
        cur.execute(
            "CREATE PROCEDURE p_add(IN a INT, IN b INT, OUT c INT) BEGIN SET c = a + b; SELECT c; END"
        )
        cur.execute("CREATE FUNCTION f_double(x INT) RETURNS INT DETERMINISTIC RETURN x * 2")
        cur.execute(
            "CREATE TRIGGER tr_parent AFTER INSERT ON parent FOR EACH ROW "
            "INSERT INTO audit (msg) VALUES (CONCAT('parent ', NEW.id))"
        )
        cur.execute(
            "CREATE EVENT ev_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE "
            "DO DELETE FROM audit"
        )


def snapshot(conn: Any, db: str) -> dict[str, Any]:
    """Everything that must survive, with the database name normalised away."""
    out: dict[str, Any] = {}
    with conn.cursor() as cur:
        cur.execute(f"USE `{db}`")
        cur.execute(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s", (db,)
        )
        tables = sorted(cur.fetchall())
        out["tables"] = tables
        for name, kind in tables:
            if kind == "VIEW":
                cur.execute(f"SHOW CREATE VIEW `{name}`")
                out[f"view:{name}"] = cur.fetchone()[1].replace(f"`{db}`.", "")
                continue
            cur.execute(f"SHOW CREATE TABLE `{name}`")
            out[f"ddl:{name}"] = cur.fetchone()[1]
            cur.execute(f"SELECT * FROM `{name}` ORDER BY 1")
            digest = hashlib.sha256()
            for row in cur.fetchall():
                digest.update(repr(row).encode())
            out[f"rows:{name}"] = digest.hexdigest()
        for kind in ("PROCEDURE", "FUNCTION"):
            cur.execute(f"SHOW {kind} STATUS WHERE Db = %s", (db,))
            for row in cur.fetchall():
                cur.execute(f"SHOW CREATE {kind} `{row[1]}`")
                out[f"{kind}:{row[1]}"] = cur.fetchone()[2]
        cur.execute("SHOW TRIGGERS")
        out["triggers"] = sorted((r[0], r[1], r[2], r[3], r[4]) for r in cur.fetchall())
        cur.execute(
            "SELECT EVENT_NAME, EVENT_DEFINITION, INTERVAL_VALUE, INTERVAL_FIELD, STATUS, STARTS "
            "FROM information_schema.EVENTS WHERE EVENT_SCHEMA=%s",
            (db,),
        )
        out["events"] = sorted(cur.fetchall())
        cur.execute(
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA=%s AND TABLE_NAME='awkward'",
            (db,),
        )
        out["auto_increment"] = cur.fetchone()
    return out


def dump_bytes(source: MySQLAdapter, db: str) -> bytes:
    with source.open_dump(source.database_unit(db)) as stream:
        chunks = []
        while chunk := stream.read(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def test_test_connection_reports_flavour_and_versions(source: MySQLAdapter) -> None:
    info = source.test_connection()
    assert info.engine == "mariadb"
    assert "MariaDB" in info.server_version
    assert info.client_version and info.client_version[0].isdigit()


def test_dump_restores_under_any_name(source: MySQLAdapter, root: Any, new_database: Any) -> None:
    """No CREATE DATABASE or USE; the source's name only in comments (the suite does the round trip)."""
    src = new_database()
    with root.cursor() as cur:
        cur.execute(f"CREATE TABLE `{src}`.t (id INT PRIMARY KEY)")
        cur.execute(f"CREATE VIEW `{src}`.v AS SELECT id FROM `{src}`.t")
        cur.execute(f"USE `{src}`")  # definitions that spell out their database keep that name
        cur.execute("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.id = NEW.id + 1")
    data = dump_bytes(source, src)
    assert b"CREATE DATABASE" not in data and b"USE `" not in data
    offending = [line for line in data.splitlines() if src.encode() in line and not line.startswith(b"--")]
    assert offending == []


def test_list_and_resolve_databases(source: MySQLAdapter, new_database: Any) -> None:
    name = new_database()
    listed = source.list_databases()
    assert name in listed
    assert not set(listed) & {"information_schema", "performance_schema", "mysql", "sys"}
    assert source.resolve_databases(include=[name]) == [name]
    assert name not in source.resolve_databases(exclude=[name])
    with pytest.raises(NotFoundError, match="pdb_missing_db"):
        source.resolve_databases(include=[name, "pdb_missing_db"])


def test_missing_database_is_not_found(source: MySQLAdapter) -> None:
    with pytest.raises(NotFoundError, match="pdb_missing_db"):
        source.open_dump(source.database_unit("pdb_missing_db"))
    with pytest.raises(NotFoundError, match="pdb_missing_db"):
        source.restore(source.database_unit("x"), io.BytesIO(b""), target_database="pdb_missing_db")


def test_wrong_password_is_authentication_error_naming_source(password_user: tuple[str, str]) -> None:
    user, _ = password_user
    bad = MySQLAdapter(HOST, PORT, user, "not-the-password", connect_timeout=5)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        bad.test_connection()
    assert f"mysql://{user}@{HOST}:{PORT}" in str(info.value)
    assert "not-the-password" not in str(info.value)
    with pytest.raises(AuthenticationError):
        bad.open_dump(bad.database_unit("test"))
    assert time.monotonic() - started < 10


def _cmdlines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((entry / "cmdline").read_bytes())
    return found


def test_password_never_in_argv_and_option_file_removed(
    root: Any, new_database: Any, password_user: tuple[str, str], big_database: str
) -> None:
    user, password = password_user
    src, dst = big_database, new_database()
    adapter = MySQLAdapter(HOST, PORT, user, password, connect_timeout=5)
    assert adapter.test_connection().engine == "mariadb"
    stream = adapter.open_dump(adapter.database_unit(src))
    seen: list[bytes] = []
    option_files: list[str] = []
    try:
        for _ in range(3):
            seen += _cmdlines()
            stream.read(1 << 16)
        for line in seen:
            if b"mariadb-dump" in line or b"mysqldump" in line:
                option_files += [
                    a.split("=", 1)[1] for a in line.decode().split("\0") if "defaults-extra" in a
                ]
    finally:
        stream.close()
    assert option_files, "the dump process was not seen running"
    assert not any(password.encode() in line for line in seen)
    assert not any(Path(f).exists() for f in option_files)
    # The awkward password really works in the option file: a full round trip with this account.
    dumped = dump_bytes(adapter, src)
    adapter.restore(adapter.database_unit(src), io.BytesIO(dumped), target_database=dst)
    assert snapshot(root, dst)["rows:big"] == snapshot(root, src)["rows:big"]


def test_restore_failure_is_reported(source: MySQLAdapter, new_database: Any) -> None:
    name = new_database()
    with pytest.raises(RestoreFailedError, match="ERROR"):
        source.restore(source.database_unit(name), io.BytesIO(b"THIS IS NOT SQL;\n"), target_database=name)


# -- flavour detection (no server needed) --------------------------------------------------------------


def test_parse_tool_version() -> None:
    assert parse_tool_version("mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu") == (
        "mariadb",
        "10.11.19",
    )
    assert parse_tool_version("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)") == (
        "mysql",
        "8.0.36",
    )
    assert parse_tool_version("mysqldump  Ver 10.13 Distrib 5.7.44, for Linux (x86_64)") == (
        "mysql",
        "5.7.44",
    )


@pytest.mark.parametrize(
    ("tool", "server", "expected"),
    [
        (ClientTool("/x/mariadb-dump", "mariadb", "10.11.19"), ("mariadb", "10.11.6-MariaDB", ""), []),
        (ClientTool("/x/mariadb-dump", "mariadb", "10.11.19"), ("mysql", "8.0.36", ""), []),
        (
            ClientTool("/x/mysqldump", "mysql", "8.0.36"),
            ("mysql", "8.0.36", ""),
            ["--set-gtid-purged=OFF"],
        ),
        (
            ClientTool("/x/mysqldump", "mysql", "8.0.36"),
            ("mariadb", "10.11.6-MariaDB", ""),
            ["--column-statistics=0"],
        ),
        (
            ClientTool("/x/mysqldump", "mysql", "8.0.36"),
            ("mysql", "5.7.44", ""),
            ["--set-gtid-purged=OFF", "--column-statistics=0"],
        ),
        (ClientTool("/x/mysqldump", "mysql", "5.7.44"), ("mysql", "5.7.44", ""), ["--set-gtid-purged=OFF"]),
    ],
)
def test_flavour_specific_options_only_where_they_exist(
    tool: ClientTool, server: tuple[str, str, str], expected: list[str]
) -> None:
    adapter = MySQLAdapter(password="s3cret")
    adapter.__dict__["_server"] = server
    adapter.__dict__["dump_tool"] = tool
    argv = adapter.dump_argv("app", "/tmp/opt.cnf")
    assert argv[1] == "--defaults-extra-file=/tmp/opt.cnf"
    assert argv[-2:] == ["--", "app"]
    assert [a for a in argv if a in ("--set-gtid-purged=OFF", "--column-statistics=0")] == expected
    assert "s3cret" not in " ".join(argv)
    for required in ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob"):
        assert required in argv


def test_option_file_escapes_password() -> None:
    text = MySQLAdapter(user="u", password=AWKWARD_PASSWORD)._option_file()
    assert 'password="p\\"w\\\\#\'x y;=[client]"' in text
    assert text.startswith("[client]\n")


def test_threads_do_not_leak() -> None:
    # Every stderr drain thread of the dumps above has finished.
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "stderr-tail" and t.is_alive()]


def test_block_builds_the_adapter_without_leaking_the_password(source: MySQLAdapter) -> None:
    from prefect_db_backup.blocks.more_sources import MySQLSource

    block = MySQLSource(host=HOST, port=PORT, user="root", password="blk-secret", databases=["test"])
    adapter = block.get_adapter()
    assert isinstance(adapter, MySQLAdapter)
    assert (adapter.host, adapter.port, adapter.user, adapter.password) == (HOST, PORT, "root", "blk-secret")
    assert "blk-secret" not in block.describe() and "blk-secret" not in repr(block)
    assert block.describe() == adapter.describe()
    with pytest.raises(ValueError, match="databases"):
        MySQLSource(databases=["../etc"])


# -- the source conformance suite ------------------------------------------------------------------------


class TestMySQLConformance(SourceSuite):
    @pytest.fixture
    def source(self, root: Any) -> MySQLAdapter:
        return MySQLAdapter(HOST, PORT, "root", None, connect_timeout=5)

    @pytest.fixture
    def fresh_database(self, new_database: Any) -> Any:
        return new_database

    @pytest.fixture
    def load_awkward_data(self, root: Any) -> Any:
        return lambda database: load_awkward_data(root, database)

    @pytest.fixture
    def snapshot(self, root: Any) -> Any:
        return lambda database: snapshot(root, database)

    @pytest.fixture
    def verify_restored(self, root: Any) -> Any:
        def verify(original: str, restored: str) -> None:
            with root.cursor() as cur:
                cur.execute(f"CALL `{restored}`.p_add(20, 22, @c)")
                cur.fetchall()
                cur.execute("SELECT @c")
                assert cur.fetchone() == (42,)
                cur.execute(f"INSERT INTO `{restored}`.parent VALUES (7)")
                cur.execute(f"SELECT msg FROM `{restored}`.audit")
                assert cur.fetchall() == (("parent 7",),)
                cur.execute(f"INSERT INTO `{restored}`.awkward (txt) VALUES ('next')")
                cur.execute("SELECT LAST_INSERT_ID()")
                assert cur.fetchone() == (1000,)  # the AUTO_INCREMENT counter continued

        return verify

    @pytest.fixture
    def password_source(self, password_user: tuple[str, str]) -> MySQLAdapter:
        user, password = password_user
        return MySQLAdapter(HOST, PORT, user, password, connect_timeout=5)

    @pytest.fixture
    def wrong_password_source(self, password_user: tuple[str, str]) -> MySQLAdapter:
        return MySQLAdapter(HOST, PORT, password_user[0], "definitely-wrong", connect_timeout=5)

    @pytest.fixture
    def unreachable_source(self) -> MySQLAdapter:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return MySQLAdapter(HOST, port, "root", "some-password", connect_timeout=3)

    @pytest.fixture
    def source_secrets(self, password_user: tuple[str, str]) -> list[str]:
        return [password_user[1], "definitely-wrong"]
