"""Codec table: every codec round trips through the Stage API and interoperates with the stock tools."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import zlib
from collections.abc import Iterable

import brotli
import pytest
import zstandard
from conftest import require_infrastructure
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect_db_backup.errors import ConfigurationError, IntegrityError
from prefect_db_backup.pipeline.compression import (
    CODECS,
    DECOMPRESS_PIECE,
    get_codec,
    validate_level,
)
from prefect_db_backup.pipeline.stages import Stage, transform

MiB = 1 << 20
REAL_CODECS = ["gzip", "brotli", "zstd"]
TOOLS = {"gzip": ["gzip"], "zstd": ["zstd"], "brotli": ["brotli"]}


def compressible(size: int, seed: int = 1) -> bytes:
    """Dump-like text: repetitive words and numbers."""
    rnd = random.Random(seed)
    words = [b"INSERT", b"INTO", b"public.orders", b"VALUES", b"NULL", b"2026-11-28", b"'shipped'", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" " + str(rnd.randint(0, 99999)).encode() + b" "
    return bytes(out[:size])


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run(stage: Stage, data: bytes, piece: int = MiB) -> bytes:
    return b"".join(transform(pieces(data, piece), [stage]))


def run_chunks(stage: Stage, chunks: Iterable[bytes]) -> bytes:
    return b"".join(transform(chunks, [stage]))


# --- table and configuration ---------------------------------------------------------------------------


def test_table_names_extensions_and_levels() -> None:
    assert {name: c.extension for name, c in CODECS.items()} == {
        "none": "",
        "gzip": ".gz",
        "brotli": ".br",
        "zstd": ".zst",
    }
    levels = {name: (c.min_level, c.default_level, c.max_level) for name, c in CODECS.items()}
    assert levels == {"none": (0, 0, 0), "gzip": (1, 6, 9), "zstd": (1, 3, 19), "brotli": (0, 3, 11)}
    for name, codec in CODECS.items():
        assert codec.name == name
        assert get_codec(name) is codec


def test_unknown_codec_names_field_and_known_names() -> None:
    with pytest.raises(ConfigurationError) as info:
        get_codec("lz4")
    message = str(info.value)
    assert message.startswith("compression:")
    assert "'lz4'" in message
    for name in CODECS:
        assert name in message


@pytest.mark.parametrize("bad", [0, 20, -1, 3.0, "3", True])
def test_invalid_level_names_field_and_range(bad: object) -> None:
    zstd = get_codec("zstd")
    with pytest.raises(ConfigurationError) as info:
        validate_level(zstd, bad)  # type: ignore[arg-type]
    assert str(info.value).startswith("compression_level:")
    assert "1 to 19" in str(info.value)
    with pytest.raises(ConfigurationError):
        zstd.compressor(bad)  # type: ignore[arg-type]


def test_level_defaults_and_result() -> None:
    for codec in CODECS.values():
        assert validate_level(codec, None) == codec.default_level
        stage = codec.compressor()
        run(stage, b"abc")
        assert stage.result() == {"codec": codec.name, "level": codec.default_level}
    stage = get_codec("gzip").compressor(9)
    run(stage, b"abc")
    assert stage.result() == {"codec": "gzip", "level": 9}


def test_gzip_level_changes_output() -> None:
    data = compressible(200_000)
    fast = run(get_codec("gzip").compressor(1), data)
    best = run(get_codec("gzip").compressor(9), data)
    assert len(best) < len(fast)


# --- round trips ---------------------------------------------------------------------------------------


def _levels() -> list[tuple[str, int]]:
    cases = []
    for name, codec in CODECS.items():
        for level in sorted({codec.min_level, codec.default_level, codec.max_level}):
            cases.append((name, level))
    return cases


@pytest.mark.parametrize(("name", "level"), _levels())
@pytest.mark.parametrize("kind", ["random", "compressible"])
def test_round_trip_every_level(name: str, level: int, kind: str) -> None:
    codec = get_codec(name)
    slow = level == codec.max_level and name in ("brotli", "zstd")
    size = 40_000 if slow else 300_000
    data = os.urandom(size) if kind == "random" else compressible(size)
    packed = run(codec.compressor(level), data, piece=7)
    if kind == "compressible" and name != "none":
        assert len(packed) < len(data) // 2
    for piece in (1, 7, MiB) if size <= 40_000 else (7, MiB):
        assert run(codec.decompressor(), packed, piece=piece) == data


@pytest.mark.parametrize("name", list(CODECS))
def test_round_trip_one_byte_pieces_and_large_chunks(name: str) -> None:
    codec = get_codec(name)
    small = compressible(5000, seed=3) + os.urandom(3000)
    packed = run(codec.compressor(), small, piece=1)
    assert run(codec.decompressor(), packed, piece=1) == small
    big = compressible(3 * MiB, seed=4) + os.urandom(MiB // 2)
    packed = run(codec.compressor(), big, piece=MiB)
    assert run(codec.decompressor(), packed, piece=MiB) == big
    assert run(codec.decompressor(), packed, piece=MiB + 3) == big


@pytest.mark.parametrize("name", list(CODECS))
def test_empty_input_round_trips(name: str) -> None:
    codec = get_codec(name)
    packed = run_chunks(codec.compressor(), [])
    if name == "none":
        assert packed == b""
    else:
        assert packed  # a real (empty) member/frame/stream, which the stock tools accept
    assert run_chunks(codec.decompressor(), pieces(packed, 3)) == b""


# --- damaged input -------------------------------------------------------------------------------------


def _packed(name: str, size: int = 20_000) -> tuple[bytes, bytes]:
    data = compressible(size, seed=9) + os.urandom(500)
    return data, run(get_codec(name).compressor(), data)


@pytest.mark.parametrize("name", REAL_CODECS)
def test_truncation_anywhere_is_detected(name: str) -> None:
    _data, packed = _packed(name)
    sample = random.Random(5).sample(range(len(packed)), 40)
    cuts = sorted({0, 1, 2, len(packed) // 2, len(packed) - 1, *sample})
    for cut in cuts:
        with pytest.raises(IntegrityError):
            run(get_codec(name).decompressor(), packed[:cut], piece=4096)


@pytest.mark.parametrize("name", REAL_CODECS)
def test_truncation_message_says_truncated(name: str) -> None:
    _data, packed = _packed(name)
    with pytest.raises(IntegrityError, match="truncated"):
        run(get_codec(name).decompressor(), packed[: len(packed) - 3])


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_flipped_payload_or_checksum_byte_is_detected(name: str) -> None:
    # gzip (CRC-32) and zstd (xxhash checksum, which we always write) detect any change to the payload.
    _data, packed = _packed(name)
    for pos in (len(packed) // 3, len(packed) // 2, len(packed) - 5, len(packed) - 1):
        damaged = bytearray(packed)
        damaged[pos] ^= 0x10
        with pytest.raises(IntegrityError, match=r"corrupt|truncated"):
            run(get_codec(name).decompressor(), bytes(damaged), piece=1000)


@pytest.mark.parametrize("name", REAL_CODECS)
def test_not_this_format_is_corrupt(name: str) -> None:
    with pytest.raises(IntegrityError):
        run(get_codec(name).decompressor(), b"\xff" * 64 + os.urandom(1000))


@pytest.mark.parametrize("name", REAL_CODECS)
def test_trailing_garbage_is_rejected(name: str) -> None:
    _data, packed = _packed(name)
    for junk in (b"\x00", b"garbage after the end", os.urandom(300)):
        with pytest.raises(IntegrityError):
            run(get_codec(name).decompressor(), packed + junk, piece=999)


@pytest.mark.parametrize("name", REAL_CODECS)
def test_empty_compressed_input_is_truncated(name: str) -> None:
    with pytest.raises(IntegrityError, match="truncated"):
        run_chunks(get_codec(name).decompressor(), [])


def test_concatenated_gzip_members_and_zstd_frames_decode_like_the_tools() -> None:
    a, b = compressible(10_000, seed=1), compressible(7_000, seed=2)
    for name in ("gzip", "zstd"):
        codec = get_codec(name)
        both = run(codec.compressor(), a) + run(codec.compressor(1), b)
        for piece in (1, 13, MiB):
            assert run(codec.decompressor(), both, piece=piece) == a + b
    # members written by other gzip implementations (with a file name in the header)
    member = gzip.compress(a, compresslevel=5, mtime=0) + gzip.compress(b)
    assert run(get_codec("gzip").decompressor(), member, piece=5) == a + b


def test_gzip_decompressor_rejects_zlib_and_raw_deflate() -> None:
    data = compressible(5000)
    for wbits in (15, -15):
        z = zlib.compressobj(6, zlib.DEFLATED, wbits)
        with pytest.raises(IntegrityError):
            run(get_codec("gzip").decompressor(), z.compress(data) + z.flush())


# --- bounded output ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gzip", "brotli"])
def test_decompression_bomb_is_inflated_in_bounded_pieces(name: str) -> None:
    bomb_size = 64 * MiB
    if name == "gzip":
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        packed = z.compress(bytes(bomb_size)) + z.flush()
    else:
        packed = brotli.compress(bytes(bomb_size), quality=5)
    assert len(packed) < 200_000
    stage = get_codec(name).decompressor()
    total = 0
    largest = 0
    for piece in stage.pieces(packed):
        largest = max(largest, len(piece))
        total += len(piece)
    for piece in stage.finish_pieces():
        largest = max(largest, len(piece))
        total += len(piece)
    assert total == bomb_size
    assert largest <= DECOMPRESS_PIECE


# --- stock tools ---------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(TOOLS[name][0])
    require_infrastructure(path is not None, f"the '{TOOLS[name][0]}' command (Debian package {name})")
    assert path is not None
    return path


def _tool_decompress(name: str, packed: bytes) -> bytes:
    tool = _tool(name)
    args = [tool, "-d", "-c"] if name != "brotli" else [tool, "-d", "-c", "-"]
    proc = subprocess.run(args, input=packed, capture_output=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def _tool_compress(name: str, data: bytes) -> bytes:
    tool = _tool(name)
    args = {
        "gzip": [tool, "-6", "-c"],
        "zstd": [tool, "-3", "-c", "-q"],
        "brotli": [tool, "-q", "5", "-c", "-"],
    }
    proc = subprocess.run(args[name], input=data, capture_output=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@pytest.mark.parametrize("name", REAL_CODECS)
@pytest.mark.parametrize("size", [0, 1, 100_000, 2 * MiB + 5])
def test_our_output_decompresses_with_the_stock_tool(name: str, size: int) -> None:
    data = compressible(size, seed=size) if size > 1000 else os.urandom(size)
    codec = get_codec(name)
    packed = run(codec.compressor(), data, piece=65_537)
    assert _tool_decompress(name, packed) == data


@pytest.mark.parametrize("name", REAL_CODECS)
def test_our_max_and_min_levels_decompress_with_the_stock_tool(name: str) -> None:
    data = compressible(30_000, seed=11) + os.urandom(2000)
    codec = get_codec(name)
    for level in (codec.min_level, codec.max_level):
        assert _tool_decompress(name, run(codec.compressor(level), data)) == data


@pytest.mark.parametrize("name", REAL_CODECS)
@pytest.mark.parametrize("size", [0, 1, 100_000, 2 * MiB + 5])
def test_stock_tool_output_decompresses_with_ours(name: str, size: int) -> None:
    data = compressible(size, seed=size) if size > 1000 else os.urandom(size)
    packed = _tool_compress(name, data)
    assert run(get_codec(name).decompressor(), packed, piece=4093) == data


def test_zstd_output_has_a_checksum_and_no_threads() -> None:
    packed = run(get_codec("zstd").compressor(), compressible(10_000))
    params = zstandard.get_frame_parameters(packed)
    assert params.has_checksum


_FUZZ_SOURCE = compressible(3000, seed=21) + bytes(range(256))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(REAL_CODECS),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), max_size=4),
    cut=st.integers(min_value=0, max_value=10_000),
    piece=st.integers(min_value=1, max_value=5000),
)
def test_damaged_input_only_ever_raises_integrity_error(
    name: str, flips: list[tuple[int, int]], cut: int, piece: int
) -> None:
    packed = bytearray(run(get_codec(name).compressor(), _FUZZ_SOURCE))
    for pos, mask in flips:
        packed[pos % len(packed)] ^= mask
    damaged = bytes(packed[: len(packed) - cut % 40])
    try:
        out = run(get_codec(name).decompressor(), damaged, piece=piece)
    except IntegrityError:
        return
    # Only brotli (no checksum) may decode a damaged stream to other bytes; gzip and zstd must not.
    assert out == _FUZZ_SOURCE or name == "brotli"
