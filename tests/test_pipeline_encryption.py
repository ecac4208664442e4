"""Chunked AES-256-GCM: round trips, every kind of tampering, wrong keys, and the documented test vector."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require_infrastructure
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect_db_backup.errors import ConfigurationError, DecryptionError, IntegrityError
from prefect_db_backup.pipeline.compression import get_codec
from prefect_db_backup.pipeline.encryption import (
    HEADER_SIZE,
    MAGIC,
    MAX_CHUNK_SIZE,
    TAG_SIZE,
    DecryptStage,
    EncryptStage,
    is_encrypted,
    read_header,
)
from prefect_db_backup.pipeline.keys import key_from_text, key_id, key_to_text
from prefect_db_backup.pipeline.stages import transform

FORMAT_DOC = Path(__file__).resolve().parent.parent / "docs" / "format.md"
KEY = bytes(range(7, 39))
OTHER_KEY = bytes(range(40, 72))
MiB = 1 << 20


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def encrypt(data: bytes, chunk_size: int = 16, piece: int = 7, key: bytes = KEY, **kw: Any) -> bytes:
    return b"".join(transform(pieces(data, piece), [EncryptStage(key, chunk_size, **kw)]))


def decrypt(blob: bytes, piece: int = 5, key: bytes = KEY) -> bytes:
    return b"".join(transform(pieces(blob, piece), [DecryptStage(key)]))


def expected_size(n: int, chunk: int) -> int:
    chunks = max(1, -(-n // chunk))
    return HEADER_SIZE + n + TAG_SIZE * chunks


def assert_no_key_material(message: str, key: bytes = KEY) -> None:
    text = key_to_text(key)
    for secret in (text, text[6:], text[6:20], key.hex(), key.hex()[:16]):
        assert secret not in message


def rejects(blob: bytes, key: bytes = KEY, piece: int = 5) -> DecryptionError:
    """Decrypting ``blob`` must fail with DecryptionError whose message holds no key material."""
    with pytest.raises(DecryptionError) as info:
        decrypt(blob, piece=piece, key=key)
    assert_no_key_material(str(info.value), key)
    return info.value


# --- round trips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 16, 1000])
def test_round_trip_at_chunk_boundaries(chunk: int) -> None:
    for n in sorted({0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 3 * chunk + 5}):
        data = os.urandom(n)
        for piece in (1, 7, 4096):
            if piece == 1 and n > 3000:
                continue
            blob = encrypt(data, chunk, piece)
            assert len(blob) == expected_size(n, chunk), (n, piece)
            assert decrypt(blob, piece=piece) == data
            assert decrypt(blob, piece=len(blob) + 1) == data


def test_round_trip_default_chunk_size_large_pieces() -> None:
    data = os.urandom(3 * MiB + 12345)
    for piece in (MiB, MiB + 16, 3 * MiB, 65_536 + 3):
        blob = encrypt(data, MiB, piece)
        assert len(blob) == expected_size(len(data), MiB)
        assert decrypt(blob, piece=piece) == data
    assert read_header(blob).chunk_size == MiB
    assert EncryptStage(KEY).chunk_size == MiB


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3000),
    chunk=st.integers(min_value=1, max_value=700),
    piece_in=st.integers(min_value=1, max_value=900),
    piece_out=st.integers(min_value=1, max_value=900),
)
def test_round_trip_random_sizes(size: int, chunk: int, piece_in: int, piece_out: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data, chunk, piece_in)
    assert len(blob) == expected_size(size, chunk)
    assert decrypt(blob, piece=piece_out) == data


def test_mutable_input_buffers_may_be_reused_by_the_caller() -> None:
    data = os.urandom(5000)
    stage = EncryptStage(KEY, 1000)
    out = []
    buffer = bytearray(700)
    for i in range(0, len(data), 700):
        piece = data[i : i + 700]
        buffer[: len(piece)] = piece
        out.append(stage.process(memoryview(buffer)[: len(piece)]))  # type: ignore[arg-type]
        buffer[:] = b"\xee" * 700  # the caller overwrites its buffer
    out.append(stage.finish())
    assert decrypt(b"".join(out)) == data


def test_encrypt_streams_with_one_chunk_of_buffering() -> None:
    chunk = 1000
    stage = EncryptStage(KEY, chunk)
    emitted = 0
    for k in range(1, 9):
        emitted += len(stage.process(os.urandom(chunk)))
        # everything except the last chunk seen has been emitted (the header with the first chunk)
        assert emitted == (0 if k == 1 else HEADER_SIZE + (k - 1) * (chunk + TAG_SIZE))
    emitted += len(stage.finish())
    assert emitted == expected_size(8 * chunk, chunk)


def test_decrypt_streams_and_holds_back_one_chunk() -> None:
    chunk = 1000
    blob = encrypt(os.urandom(8 * chunk), chunk)
    stage = DecryptStage(KEY)
    out = stage.process(blob[: HEADER_SIZE + 5 * (chunk + TAG_SIZE)])
    assert len(out) == 4 * chunk  # the fifth chunk may be the last: held until more bytes arrive
    out += stage.process(blob[HEADER_SIZE + 5 * (chunk + TAG_SIZE) :])
    out += stage.finish()
    assert len(out) == 8 * chunk


def test_same_input_encrypts_differently_each_time() -> None:
    data = b"same plaintext" * 10
    a, b = encrypt(data), encrypt(data)
    assert a != b
    ha, hb = read_header(a), read_header(b)
    assert ha.salt != hb.salt
    assert ha.nonce_prefix != hb.nonce_prefix
    assert ha.key_id == hb.key_id == key_id(KEY)


def test_header_and_results() -> None:
    blob = encrypt(b"x" * 100, chunk_size=32)
    header = read_header(blob)
    assert header.format_version == 1
    assert header.algorithm == "AES-256-GCM"
    assert header.chunk_size == 32
    assert header.key_id == key_id(KEY)
    assert header.raw == blob[:HEADER_SIZE]
    assert is_encrypted(blob[:8])
    assert is_encrypted(blob)
    assert not is_encrypted(b"\x28\xb5\x2f\xfd" + b"\x00" * 10)
    assert not is_encrypted(b"")

    stage = EncryptStage(KEY, 32)
    b"".join(transform([b"abc"], [stage]))
    expected = {"algorithm": "AES-256-GCM", "key_id": key_id(KEY), "chunk_size": 32, "format_version": 1}
    assert stage.result() == expected
    dec = DecryptStage(KEY)
    b"".join(transform([blob], [dec]))
    assert dec.result() == expected


def test_encrypt_stage_configuration_errors() -> None:
    for bad_key in (b"", b"k" * 16, b"k" * 33):
        with pytest.raises(ConfigurationError, match=r"^key:"):
            EncryptStage(bad_key)
        with pytest.raises(ConfigurationError, match=r"^key:"):
            DecryptStage(bad_key)
    for bad_chunk in (0, -1, MAX_CHUNK_SIZE + 1, True, 1.5):
        with pytest.raises(ConfigurationError, match=r"^chunk_size:"):
            EncryptStage(KEY, bad_chunk)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        EncryptStage(KEY, salt=b"short")
    with pytest.raises(ConfigurationError):
        EncryptStage(KEY, nonce_prefix=b"12345678")


# --- tampering -----------------------------------------------------------------------------------------

CHUNK = 16
PLAIN = bytes(range(50))  # chunks of 16, 16, 16 and a final 2 bytes
FRAME = CHUNK + TAG_SIZE


@pytest.fixture(scope="module")
def blob() -> bytes:
    data = encrypt(PLAIN, CHUNK)
    assert len(data) == HEADER_SIZE + 3 * FRAME + 2 + TAG_SIZE
    return data


def chunks_of(blob: bytes) -> tuple[bytes, list[bytes]]:
    return blob[:HEADER_SIZE], pieces(blob[HEADER_SIZE:], FRAME)


def test_every_flipped_byte_is_detected(blob: bytes) -> None:
    # Every position: each header field, each chunk's ciphertext and tag, the last byte.
    for pos in range(len(blob)):
        for bit in (0x01, 0x80):
            damaged = bytearray(blob)
            damaged[pos] ^= bit
            rejects(bytes(damaged))


def test_flipped_byte_in_an_empty_file_is_detected() -> None:
    empty = encrypt(b"")
    assert decrypt(empty) == b""
    for pos in range(len(empty)):
        damaged = bytearray(empty)
        damaged[pos] ^= 0x04
        rejects(bytes(damaged))


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "not an encrypted"),  # magic
        (7, "not an encrypted"),
        (8, "unsupported encrypted format version"),
        (9, "unsupported encryption algorithm"),
        (11, "unsupported encryption algorithm"),  # reserved
        (16, "key id"),  # key id: reported as a wrong key before any decryption
        (24, "failed authentication"),  # salt: a different subkey
        (56, "failed authentication"),  # nonce prefix
        (14, "failed authentication"),  # chunk size 16 -> another valid size
    ],
)
def test_header_damage_messages(blob: bytes, offset: int, message: str) -> None:
    damaged = bytearray(blob)
    damaged[offset] ^= 0x20
    assert message in str(rejects(bytes(damaged)))


def test_chunk_size_out_of_range_is_rejected_before_allocating(blob: bytes) -> None:
    for size in (0, MAX_CHUNK_SIZE + 1, 0xFFFFFFFF):
        damaged = bytearray(blob)
        damaged[12:16] = size.to_bytes(4, "big")
        assert "invalid chunk size" in str(rejects(bytes(damaged)))


def test_dropped_chunks_are_detected(blob: bytes) -> None:
    header, chunks = chunks_of(blob)
    for i in range(len(chunks)):
        rejects(header + b"".join(chunks[:i] + chunks[i + 1 :]))


def test_swapped_chunks_are_detected(blob: bytes) -> None:
    header, chunks = chunks_of(blob)
    for i in range(len(chunks)):
        for j in range(i + 1, len(chunks)):
            swapped = list(chunks)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            rejects(header + b"".join(swapped))


def test_duplicated_chunks_are_detected(blob: bytes) -> None:
    header, chunks = chunks_of(blob)
    for i in range(len(chunks)):
        rejects(header + b"".join([*chunks[: i + 1], chunks[i], *chunks[i + 1 :]]))
    rejects(blob + chunks[-1])


def test_chunks_from_another_file_are_detected(blob: bytes) -> None:
    other = encrypt(PLAIN, CHUNK)  # same key, same plaintext, other salt
    header, chunks = chunks_of(blob)
    _, foreign = chunks_of(other)
    for i in range(len(chunks)):
        mixed = list(chunks)
        mixed[i] = foreign[i]
        rejects(header + b"".join(mixed))


def test_truncation_at_every_length_is_detected(blob: bytes) -> None:
    for cut in range(len(blob)):
        error = rejects(blob[:cut], piece=3)
        if cut >= HEADER_SIZE and (cut - HEADER_SIZE) % FRAME == 0 and cut > HEADER_SIZE:
            assert "truncated" in str(error) and "final chunk" in str(error), cut
        if 0 < cut < HEADER_SIZE:
            assert "truncated" in str(error), cut


def test_truncation_at_chunk_boundary_of_full_chunks() -> None:
    data = os.urandom(4 * CHUNK)  # the final chunk is a full one
    blob = encrypt(data, CHUNK)
    assert decrypt(blob) == data
    for k in range(1, 4):
        error = rejects(blob[: HEADER_SIZE + k * FRAME])
        assert "without its final chunk" in str(error)


def test_trailing_bytes_are_detected(blob: bytes) -> None:
    for junk in (b"\x00", b"x" * 15, b"x" * TAG_SIZE, os.urandom(FRAME), os.urandom(3 * FRAME + 1)):
        rejects(blob + junk)


def test_trailing_bytes_after_a_full_final_chunk_are_named() -> None:
    blob = encrypt(os.urandom(3 * CHUNK), CHUNK)
    error = rejects(blob + os.urandom(20))
    assert "after the final chunk" in str(error)


def test_stream_without_chunks_and_empty_input() -> None:
    blob = encrypt(b"abc")
    assert "truncated" in str(rejects(blob[:HEADER_SIZE]))
    assert "empty" in str(rejects(b""))


def test_not_encrypted_input_fails_at_once() -> None:
    packed = b"".join(transform([b"hello" * 100], [get_codec("zstd").compressor()]))
    stage = DecryptStage(KEY)
    with pytest.raises(DecryptionError, match="not an encrypted"):
        stage.process(packed[:3])  # detected from the first bytes, not at the end
    assert isinstance(DecryptionError("x"), IntegrityError)


# --- keys ----------------------------------------------------------------------------------------------


def test_wrong_key_names_both_key_ids_and_no_key_material(blob: bytes) -> None:
    stage = DecryptStage(OTHER_KEY)
    with pytest.raises(DecryptionError) as info:
        stage.process(blob[:HEADER_SIZE])  # the key id is checked as soon as the header is complete
    message = str(info.value)
    assert key_id(KEY) in message and key_id(OTHER_KEY) in message
    assert f"encrypted with key id {key_id(KEY)}, but the key given has id {key_id(OTHER_KEY)}" in message
    assert_no_key_material(message, KEY)
    assert_no_key_material(message, OTHER_KEY)


def test_a_key_with_a_forged_key_id_still_fails_authentication(blob: bytes) -> None:
    # Copying the right key id into the header does not help an attacker: the header is authenticated.
    damaged = bytearray(blob)
    damaged[16:24] = bytes.fromhex(key_id(OTHER_KEY))
    error = rejects(bytes(damaged), key=OTHER_KEY)
    assert "failed authentication" in str(error)


# --- layering with compression -------------------------------------------------------------------------


def test_compress_then_encrypt_round_trip_and_stock_zstd() -> None:
    data = b"INSERT INTO t VALUES (1, 'row');\n" * 20_000
    codec = get_codec("zstd")
    stored = b"".join(transform(pieces(data, 65_536), [codec.compressor(), EncryptStage(KEY, 4096)]))
    assert len(stored) < len(data) // 10
    plain = b"".join(transform(pieces(stored, 10_000), [DecryptStage(KEY), codec.decompressor()]))
    assert plain == data
    zstd = shutil.which("zstd")
    require_infrastructure(zstd is not None, "the 'zstd' command (Debian package zstd)")
    assert zstd is not None
    compressed = decrypt(stored)
    proc = subprocess.run([zstd, "-dc"], input=compressed, capture_output=True, check=True, timeout=60)
    assert proc.stdout == data


# --- the documented format and test vector -------------------------------------------------------------


def _doc() -> str:
    return FORMAT_DOC.read_text(encoding="utf-8")


def _vector() -> dict[str, str]:
    section = _doc().split("## 5. Test vector", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block, "test vector block missing from docs/format.md"
    fields: dict[str, str] = {}
    current = None
    for line in block.group(1).splitlines():
        if line.startswith("  ") and current:
            fields[current] += line.strip()
            continue
        name, _, value = line.partition(":")
        current = name.strip()
        fields[current] = value.strip()
    return fields


def _reference_decryptor() -> dict[str, Any]:
    doc = _doc()
    block = re.search(r"<!-- reference-decryptor -->\n```python\n(.*?)```", doc, re.S)
    assert block, "reference decryptor missing from docs/format.md"
    namespace: dict[str, Any] = {"__name__": "reference_decryptor"}
    exec(compile(block.group(1), "docs/format.md", "exec"), namespace)
    return namespace


def test_vector_encrypts_to_exactly_the_documented_bytes() -> None:
    v = _vector()
    key = key_from_text(v["key"])
    assert key == bytes.fromhex(v["key hex"])
    assert key_id(key) == v["key id"]
    plaintext = v["plaintext"].encode("ascii")
    salt, prefix = bytes.fromhex(v["salt"]), bytes.fromhex(v["nonce prefix"])
    stage = EncryptStage(key, int(v["chunk size"]), salt=salt, nonce_prefix=prefix)
    encrypted = b"".join(transform(pieces(plaintext, 5), [stage]))
    assert encrypted.hex() == v["encrypted"]
    assert len(encrypted) == expected_size(len(plaintext), int(v["chunk size"]))


def test_vector_decrypts_to_the_documented_plaintext() -> None:
    v = _vector()
    key = key_from_text(v["key"])
    encrypted = bytes.fromhex(v["encrypted"])
    assert decrypt(encrypted, key=key) == v["plaintext"].encode("ascii")
    header = read_header(encrypted)
    assert header.key_id == v["key id"]
    assert header.salt.hex() == v["salt"]
    assert header.nonce_prefix.hex() == v["nonce prefix"]
    assert header.raw[: len(MAGIC)] == MAGIC


def test_vector_subkey_matches_hkdf() -> None:
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    v = _vector()
    subkey = HKDF(SHA256(), 32, bytes.fromhex(v["salt"]), b"prefect-db-backup file key v1").derive(
        key_from_text(v["key"])
    )
    assert subkey.hex() == v["subkey"]


def test_reference_decryptor_in_the_doc_reads_our_files() -> None:
    ref = _reference_decryptor()
    v = _vector()
    out = io.BytesIO()
    ref["decrypt"](ref["parse_key"](v["key"]), io.BytesIO(bytes.fromhex(v["encrypted"])), out)
    assert out.getvalue() == v["plaintext"].encode("ascii")
    for size, chunk in ((0, 16), (1, 16), (16, 16), (17, 16), (5000, 1000), (100_000, 4096)):
        data = os.urandom(size)
        out = io.BytesIO()
        ref["decrypt"](ref["parse_key"](key_to_text(KEY)), io.BytesIO(encrypt(data, chunk, 4096)), out)
        assert out.getvalue() == data


def test_reference_decryptor_in_the_doc_rejects_damage(blob: bytes) -> None:
    ref = _reference_decryptor()
    key = ref["parse_key"](KEY.hex())
    header, chunks = chunks_of(blob)
    for bad in (blob[:-1], blob[: HEADER_SIZE + FRAME], header + b"".join(chunks[1:]), blob + b"x"):
        with pytest.raises((InvalidTag, ValueError)):
            ref["decrypt"](key, io.BytesIO(bad), io.BytesIO())
    with pytest.raises(ValueError, match="wrong key"):
        ref["decrypt"](OTHER_KEY, io.BytesIO(blob), io.BytesIO())


# --- the documented command line -----------------------------------------------------------------------


def _cli() -> str:
    path = Path(sys.executable).parent / "prefect-db-backup"
    require_infrastructure(path.exists(), "the prefect-db-backup console script (pip install -e .)")
    return str(path)


def _documented_decrypt_commands() -> list[list[str]]:
    section = _doc().split("## 4. Decrypting a backup", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "decrypt commands missing from docs/format.md"
    commands = [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]
    assert commands and all(c[:2] == ["prefect-db-backup", "decrypt"] for c in commands)
    return commands


def test_documented_decrypt_commands_work(tmp_path: Path) -> None:
    cli = _cli()
    data = b"COPY public.orders (id, state) FROM stdin;\n" + b"1\tshipped\n" * 50_000
    key_file = tmp_path / "backup.key"
    key_file.write_text(key_to_text(KEY) + "\n")
    stored = b"".join(transform(pieces(data, MiB), [get_codec("zstd").compressor(), EncryptStage(KEY)]))
    (tmp_path / "orders.sql.zst.enc").write_bytes(stored)
    outputs = []
    for command in _documented_decrypt_commands():
        args = [cli, *command[1:]]
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        outputs.append(tmp_path / command[-1])
    compressed, plain = outputs
    assert plain.read_bytes() == data
    packed = compressed.read_bytes()
    assert b"".join(transform([packed], [get_codec("zstd").decompressor()])) == data


def test_decrypt_command_refuses_a_wrong_key_or_damaged_file(tmp_path: Path) -> None:
    cli = _cli()
    (tmp_path / "right.key").write_text(key_to_text(KEY))
    (tmp_path / "wrong.key").write_text(key_to_text(OTHER_KEY))
    stored = encrypt(os.urandom(100_000), 4096, 65_536)
    (tmp_path / "x.enc").write_bytes(stored)
    damaged = bytearray(stored)
    damaged[len(stored) // 2] ^= 1
    (tmp_path / "bad.enc").write_bytes(bytes(damaged))

    def run(key: str, src: str) -> subprocess.CompletedProcess[bytes]:
        args = [cli, "decrypt", "--key-file", key, src, "out"]
        return subprocess.run(args, cwd=tmp_path, capture_output=True, timeout=120, check=False)

    proc = run("wrong.key", "x.enc")
    message = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0
    assert key_id(KEY) in message and key_id(OTHER_KEY) in message
    assert_no_key_material(message, KEY)
    assert_no_key_material(message, OTHER_KEY)
    proc = run("right.key", "bad.enc")
    assert proc.returncode != 0
    assert "authentication" in proc.stderr.decode(errors="replace")
    assert not (tmp_path / "out").exists()  # nothing unauthenticated is left behind
