"""AES-256-GCM encryption of a stream in authenticated chunks (format specified in docs/format.md).

An encrypted file is a 63-byte header followed by chunks. Each chunk is one AES-256-GCM ciphertext of up to
``chunk_size`` plaintext bytes plus its 16-byte tag, under a per-file subkey (HKDF-SHA256 of the master key
and a random salt) and the nonce ``nonce_prefix || chunk counter || final flag`` (the STREAM construction).
The whole header is the associated data of every chunk. Hence any change, loss, reordering, duplication or
truncation of bytes or chunks, including a cut exactly at a chunk boundary, fails authentication; only the
last chunk carries the final flag, and an empty plaintext is one empty final chunk.

Both stages hold at most one chunk (plus the input they are given) in memory; the reader rejects headers that
announce chunks larger than :data:`MAX_CHUNK_SIZE`, so a hostile file cannot make it allocate more.

Errors never contain key material: wrong keys are named by their key ids only.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from prefect_db_backup.errors import ConfigurationError, DecryptionError
from prefect_db_backup.pipeline.keys import KEY_ID_SIZE, key_id_bytes
from prefect_db_backup.pipeline.stages import Stage

MAGIC = b"\x89PDBENC\n"
"""First 8 bytes of every encrypted file."""

FORMAT_VERSION = 1
ALGORITHM_AES_256_GCM = 1
ALGORITHM_NAME = "AES-256-GCM"

SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
"""Largest chunk a writer may use and a reader accepts (bounds the reader's memory)."""

MAX_CHUNKS = 1 << 32
"""The chunk counter is 32 bits: a file holds at most 2**32 chunks (4 PiB at the default chunk size)."""

HKDF_INFO = b"prefect-db-backup file key v1"

# magic, version (u8), algorithm (u8), reserved (u16, zero), chunk size (u32), key id, salt, nonce prefix.
_HEADER = struct.Struct(f">8sBBHI{KEY_ID_SIZE}s{SALT_SIZE}s{NONCE_PREFIX_SIZE}s")
HEADER_SIZE = _HEADER.size
"""Bytes in the header (63)."""

_COUNTER_FLAG = struct.Struct(">IB")


@dataclass(frozen=True)
class EncryptionHeader:
    """The parsed header of an encrypted file (nothing in it is secret).

    Attributes:
        format_version: Format version (1).
        algorithm: Algorithm name (``AES-256-GCM``).
        chunk_size: Plaintext bytes per chunk (the last chunk may hold fewer).
        key_id: Id of the key that encrypted the file (16 hex characters, see ``keys.key_id``).
        salt: 32 random bytes from which the file's subkey is derived.
        nonce_prefix: 7 random bytes that start every chunk's nonce.
        raw: The header's 63 bytes exactly as stored (the associated data of every chunk).
    """

    format_version: int
    algorithm: str
    chunk_size: int
    key_id: str
    salt: bytes
    nonce_prefix: bytes
    raw: bytes


def is_encrypted(first_bytes: bytes) -> bool:
    """Tell whether data starting with ``first_bytes`` (at least 8 bytes) looks like our encrypted format."""
    return bytes(first_bytes[: len(MAGIC)]) == MAGIC


def read_header(data: bytes) -> EncryptionHeader:
    """Parse the header at the start of ``data`` (at least :data:`HEADER_SIZE` bytes) without decrypting.

    Raises:
        DecryptionError: ``data`` is too short, is not our format, or uses an unsupported version,
            algorithm or chunk size.
    """
    if 0 < len(data) < len(MAGIC) and MAGIC.startswith(bytes(data)):
        raise DecryptionError(
            f"encrypted file is truncated: its header needs {HEADER_SIZE} bytes, only {len(data)} present"
        )
    if len(data) < len(MAGIC) or not is_encrypted(data):
        raise DecryptionError(
            "not an encrypted prefect-db-backup file: the magic bytes are missing",
            hint="check that this is the .enc file, and that it was not altered",
        )
    if len(data) < HEADER_SIZE:
        raise DecryptionError(
            f"encrypted file is truncated: its header needs {HEADER_SIZE} bytes, only {len(data)} present"
        )
    raw = bytes(data[:HEADER_SIZE])
    _magic, version, algorithm, reserved, chunk_size, kid, salt, prefix = _HEADER.unpack(raw)
    if version != FORMAT_VERSION:
        raise DecryptionError(
            f"unsupported encrypted format version {version} (this version reads {FORMAT_VERSION})",
            hint="use a newer prefect-db-backup to decrypt this file",
        )
    if algorithm != ALGORITHM_AES_256_GCM or reserved != 0:
        raise DecryptionError(
            f"unsupported encryption algorithm id {algorithm} (reserved field {reserved})",
            hint="use a newer prefect-db-backup to decrypt this file, or check that it was not altered",
        )
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionError(
            f"invalid chunk size {chunk_size} in the encrypted file's header (allowed 1..{MAX_CHUNK_SIZE})"
        )
    return EncryptionHeader(
        format_version=version,
        algorithm=ALGORITHM_NAME,
        chunk_size=chunk_size,
        key_id=kid.hex(),
        salt=salt,
        nonce_prefix=prefix,
        raw=raw,
    )


def _file_cipher(key: bytes, salt: bytes) -> AESGCM:
    subkey = HKDF(algorithm=SHA256(), length=32, salt=salt, info=HKDF_INFO).derive(key)
    return AESGCM(subkey)


def _nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    return prefix + _COUNTER_FLAG.pack(counter, 1 if final else 0)


class _Framer:
    """Splits a stream into frames of ``size`` bytes, holding back the last 1..size bytes.

    A frame is released only once a byte after it has been seen, so the frame still held at the end is the
    last one. Frames lying inside one input are memoryviews of it (no copy). The held-back tail of an
    immutable ``bytes`` input is kept by reference while it is the only thing held; otherwise held bytes are
    copied once into a reusable buffer of ``size`` bytes, so memory stays at one frame plus the caller's
    input, and no memory is allocated per frame.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._ref: memoryview | None = None  # held by reference (an immutable input's tail)
        self._buf: bytearray | None = None  # reusable assembly buffer, allocated on first need
        self._len = 0  # bytes held in _buf (when _ref is None)

    @property
    def held(self) -> int:
        """Bytes held back."""
        return len(self._ref) if self._ref is not None else self._len

    def _hold(self, piece: memoryview, immutable: bool) -> None:
        if not piece:
            return
        if immutable and self.held == 0:
            self._ref = piece
            return
        if self._buf is None:
            self._buf = bytearray(self.size)
        if self._ref is not None:
            self._buf[: len(self._ref)] = self._ref
            self._len = len(self._ref)
            self._ref = None
        self._buf[self._len : self._len + len(piece)] = piece
        self._len += len(piece)

    def take_held(self) -> memoryview:
        """Return and forget the held-back bytes; the view is valid until the next call on this framer."""
        if self._ref is not None:
            out, self._ref = self._ref, None
            return out
        out = memoryview(self._buf if self._buf is not None else b"")[: self._len]
        self._len = 0
        return out

    def frames(self, data: bytes) -> Iterator[memoryview]:
        """Yield every frame of held bytes plus ``data`` that is known not to be the last.

        Each frame must be used before the generator is resumed.
        """
        size = self.size
        immutable = type(data) is bytes  # a mutable input may be reused by the caller: copy what we hold
        view = memoryview(data)  # not released here: a held slice of it outlives this call
        if self.held + len(view) <= size:
            self._hold(view, immutable)
            return
        pos = 0
        if self.held:
            pos = size - self.held
            self._hold(view[:pos], False)
            yield self.take_held()
        end = len(view)
        while end - pos > size:
            yield view[pos : pos + size]
            pos += size
        self._hold(view[pos:], immutable)


class EncryptStage(Stage):
    """Encrypts a stream with AES-256-GCM in authenticated chunks (see the module docstring).

    The header is emitted with the first output. At most one chunk of plaintext is buffered.

    Args:
        key: The 32-byte master key.
        chunk_size: Plaintext bytes per chunk, 1 to 64 MiB (default 1 MiB).
        salt: For tests and test vectors only: a fixed 32-byte salt instead of a random one.
        nonce_prefix: For tests and test vectors only: a fixed 7-byte nonce prefix instead of a random one.

    Raises:
        ConfigurationError: The key is not 32 bytes, or the chunk size, salt or prefix is invalid.
    """

    name = "encrypt"

    def __init__(
        self,
        key: bytes,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        salt: bytes | None = None,
        nonce_prefix: bytes | None = None,
    ) -> None:
        kid = key_id_bytes(key)  # validates the key's length
        is_int = isinstance(chunk_size, int) and not isinstance(chunk_size, bool)
        if not is_int or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigurationError(f"chunk_size: must be an integer from 1 to {MAX_CHUNK_SIZE}")
        salt = os.urandom(SALT_SIZE) if salt is None else bytes(salt)
        nonce_prefix = os.urandom(NONCE_PREFIX_SIZE) if nonce_prefix is None else bytes(nonce_prefix)
        if len(salt) != SALT_SIZE or len(nonce_prefix) != NONCE_PREFIX_SIZE:
            raise ConfigurationError(
                f"salt and nonce_prefix must be {SALT_SIZE} and {NONCE_PREFIX_SIZE} bytes long"
            )
        self.chunk_size = chunk_size
        self.key_id = kid.hex()
        self._header = _HEADER.pack(
            MAGIC, FORMAT_VERSION, ALGORITHM_AES_256_GCM, 0, chunk_size, kid, salt, nonce_prefix
        )
        self._aead = _file_cipher(bytes(key), salt)
        self._prefix = nonce_prefix
        self._framer = _Framer(chunk_size)
        self._counter = 0
        self._header_sent = False
        self._finished = False

    def _seal(self, plaintext: bytes | bytearray | memoryview, final: bool) -> bytes:
        if self._counter >= MAX_CHUNKS:
            raise ConfigurationError(
                f"chunk_size: the stream exceeds {MAX_CHUNKS} chunks of {self.chunk_size} bytes; "
                "use a larger chunk size"
            )
        out = self._aead.encrypt(_nonce(self._prefix, self._counter, final), plaintext, self._header)
        self._counter += 1
        return out

    def _with_header(self, parts: list[bytes]) -> bytes:
        if not self._header_sent and parts:
            self._header_sent = True
            parts.insert(0, self._header)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def process(self, data: bytes) -> bytes:
        """Encrypt every complete chunk that is known not to be the last; buffer the rest."""
        if self._finished:
            raise RuntimeError("EncryptStage.process() called after finish()")
        parts = [self._seal(frame, final=False) for frame in self._framer.frames(data)]
        return self._with_header(parts)

    def finish(self) -> bytes:
        """Encrypt the buffered rest as the final chunk (empty when the stream was empty)."""
        if self._finished:
            raise RuntimeError("EncryptStage.finish() called twice")
        self._finished = True
        last = self._seal(self._framer.take_held(), final=True)
        return self._with_header([last])

    def result(self) -> dict[str, Any]:
        """Report algorithm, key id, chunk size and format version (no secrets)."""
        return {
            "algorithm": ALGORITHM_NAME,
            "key_id": self.key_id,
            "chunk_size": self.chunk_size,
            "format_version": FORMAT_VERSION,
        }


class DecryptStage(Stage):
    """Decrypts and authenticates a stream written by :class:`EncryptStage`.

    Output is released one authenticated chunk at a time; the stream as a whole is only known to be
    complete when :meth:`finish` returns (it raises if the final chunk is missing). Consumers must therefore
    treat output as provisional until then, and discard it if :meth:`finish` raises.

    Args:
        key: The 32-byte master key.

    Raises:
        ConfigurationError: The key is not 32 bytes.
    """

    name = "decrypt"

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)
        self._key_id = key_id_bytes(key).hex()  # validates the key's length
        self._head = bytearray()
        self.header: EncryptionHeader | None = None
        self._aead: AESGCM | None = None
        self._framer: _Framer | None = None
        self._counter = 0
        self._finished = False

    def _start(self, header: EncryptionHeader) -> None:
        if header.key_id != self._key_id:
            raise DecryptionError(
                f"the file was encrypted with key id {header.key_id}, "
                f"but the key given has id {self._key_id}",
                hint=f"decrypt with the key whose id is {header.key_id}",
            )
        self.header = header
        self._aead = _file_cipher(self._key, header.salt)
        self._framer = _Framer(header.chunk_size + TAG_SIZE)

    def _open(self, frame: bytes | bytearray | memoryview, final: bool) -> bytes:
        assert self._aead is not None and self.header is not None
        aad = self.header.raw
        prefix = self.header.nonce_prefix
        try:
            out = self._aead.decrypt(_nonce(prefix, self._counter, final), frame, aad)
        except InvalidTag:
            # Tell the likely cause where a second try can: that costs nothing on the success path.
            if not final:
                try:
                    self._aead.decrypt(_nonce(prefix, self._counter, True), frame, aad)
                except InvalidTag:
                    pass
                else:
                    raise DecryptionError(
                        f"unexpected data after the final chunk (chunk {self._counter}) "
                        "of the encrypted file",
                        hint="the file has trailing bytes appended; it was altered after it was written",
                    ) from None
            elif len(frame) == self.header.chunk_size + TAG_SIZE:
                try:
                    self._aead.decrypt(_nonce(prefix, self._counter, False), frame, aad)
                except InvalidTag:
                    pass
                else:
                    raise DecryptionError(
                        f"the encrypted file is truncated: it ends after chunk {self._counter} without its "
                        "final chunk",
                        hint="the stored file is incomplete (interrupted upload or copy)",
                    ) from None
            raise DecryptionError(
                f"chunk {self._counter} of the encrypted file failed authentication",
                hint="the file was altered, truncated, reordered, or its header changed",
            ) from None
        self._counter += 1
        return out

    def process(self, data: bytes) -> bytes:
        """Parse the header, then decrypt every complete chunk that is known not to be the last."""
        if self._finished:
            raise RuntimeError("DecryptStage.process() called after finish()")
        if self._framer is None:
            need = HEADER_SIZE - len(self._head)
            self._head += data[:need]
            if not MAGIC.startswith(bytes(self._head[: len(MAGIC)])):
                read_header(bytes(self._head))  # raises: not our format
            if len(self._head) < HEADER_SIZE:
                return b""
            self._start(read_header(bytes(self._head)))
            data = data[need:]
        assert self._framer is not None
        parts = [self._open(frame, final=False) for frame in self._framer.frames(data)]
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def finish(self) -> bytes:
        """Authenticate the final chunk and return its plaintext.

        Raises:
            DecryptionError: The stream is truncated (no final chunk, or cut inside the header or a chunk),
                or the last chunk fails authentication.
        """
        if self._finished:
            raise RuntimeError("DecryptStage.finish() called twice")
        self._finished = True
        if self._framer is None:
            if not self._head:
                raise DecryptionError("the encrypted file is empty", hint="the stored file is incomplete")
            read_header(bytes(self._head))  # raises: not ours, or truncated header
            raise AssertionError("unreachable: a complete header starts the framer")  # pragma: no cover
        last = self._framer.take_held()
        if len(last) < TAG_SIZE:
            raise DecryptionError(
                f"the encrypted file is truncated: it ends inside chunk {self._counter}",
                hint="the stored file is incomplete (interrupted upload or copy)",
            )
        return self._open(last, final=True)

    def result(self) -> dict[str, Any]:
        """Report algorithm, key id, chunk size and format version read from the header."""
        if self.header is None:
            return {}
        return {
            "algorithm": self.header.algorithm,
            "key_id": self.header.key_id,
            "chunk_size": self.header.chunk_size,
            "format_version": self.header.format_version,
        }
