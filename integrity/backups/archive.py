"""Streamed zstd compression and decompression with SHA-256 on both sides.

Never the whole file in memory: 1 MiB chunks in, 1 MiB chunks out. The compressed
bytes are hashed as they are written (what `quick verify` re-reads), the raw bytes as
they are read (what a restore re-creates). zstd frames carry their own content
checksum, so decompressing to the end also proves the content is whole.

An encrypted backup's file (`.age`, integrity.backups.encryption) is age ciphertext of
the compressed bytes: its quick check is the ciphertext's size and SHA-256 only (no key
needed, nothing decompressed); reading its plaintext decrypts with this host's identity
(exit 4 naming the recipients when it has none that fits), then decompresses and checks
the raw SHA-256 as for any file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from integrity.backups.encryption import (
    DecryptionKeyUnavailable,
    OrderedWorker,
    SealedFile,
    decrypt_stream,
    is_sealed,
)
from integrity.backups.repository import BackupCorrupt, FileEntry

CHUNK = 1 << 20


class RemoteFile(Protocol):
    """A data file of a backup on object storage (integrity.backups.object_repository)."""

    def open(self, where: str):
        """A context manager giving (a readable stream, its size); BackupCorrupt when missing."""


@dataclass(frozen=True)
class ArchiveDigest:
    size: int
    sha256: str
    raw_size: int
    raw_sha256: str


class _HashingReader:
    def __init__(self, source: BinaryIO, advance: Callable[[int], object] | None = None):
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        if self.advance is not None:
            self.advance(len(data))
        return data


class _ChunkConsumer:
    """Hashes both sides' bytes and hands the decompressed ones on, in a second thread, in order.

    Decompression is the longest step and stays in the caller's thread; SHA-256 of the
    compressed and of the raw bytes and the sink's writes (a file, pg_restore's stdin)
    run beside it. hashlib, zstd and file writes release the GIL, so the two halves use
    both cores. Hashing the compressed bytes in the caller's thread as well kept a
    restore's staging 14-19% behind `zstd -d` on two cores; beside it, 4%. At most `IN_FLIGHT` chunks wait, so memory stays
    bounded; the first error of the sink is raised in the caller's thread.
    """

    IN_FLIGHT = 4

    def __init__(self, digest, raw_digest, sink):
        self.digest = digest
        self.raw_digest = raw_digest
        self.sink = sink
        self.pending: deque[Future] = deque()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-hash")

    def _consume(self, compressed: bytes, raw: bytes) -> None:
        self.digest.update(compressed)
        if self.raw_digest is not None:
            self.raw_digest.update(raw)
        if self.sink is not None and raw:
            self.sink(raw)

    def put(self, compressed: bytes, raw: bytes) -> None:
        if len(self.pending) >= self.IN_FLIGHT:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._consume, compressed, raw))

    def __enter__(self) -> "_ChunkConsumer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while self.pending:
                future = self.pending.popleft()
                if exc_type is None:
                    future.result()
                else:
                    future.cancel()
        finally:
            self.pool.shutdown(wait=True)


class CompressorOutputWrong(BackupCorrupt):
    """The compressed stream, decompressed as it was written, did not give back the bytes read."""


class _RawInput:
    """What the compressor reads: each chunk is hashed in a thread of its own (so the thread
    feeding zstd's workers never waits for it) and kept until the checker has matched it
    against the decompressed output (at most what zstd holds in flight, a few tens of MB)."""

    def __init__(self, source: BinaryIO, advance: Callable[[int], object] | None):
        self.source = source
        self.advance = advance
        self.digest = hashlib.sha256()
        self.size = 0
        self.unmatched: deque[bytes] = deque()  # appended here, taken by _CheckedOutput's thread
        self.worker = OrderedWorker()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.size += len(data)
        if data:
            self.unmatched.append(data)
            self.worker.submit(self.digest.update, data)
        if self.advance is not None:
            self.advance(len(data))
        return data


class _CheckedOutput:
    """Where the compressor writes: each compressed chunk goes to the file and, in a thread
    of its own, is hashed, decompressed, and the result compared byte for byte with the raw
    chunks read (a comparison, not a second SHA-256 of the raw bytes). The bytes written are
    so proven to decompress to what was read without reading the file back (create's
    read-back then only hashes the file on disk against the SHA-256 of these same bytes,
    integrity.backups.create). zstd only writes what it has read, so the raw chunk is
    always there before its decompressed bytes."""

    def __init__(self, target: BinaryIO, raw: _RawInput):
        self.target = target
        self.raw = raw
        self.offset = 0  # into raw.unmatched[0]
        self.compared = 0
        self.size = 0
        self.digest = hashlib.sha256()
        self.decompressor = zstandard.ZstdDecompressor().decompressobj()
        self.problem: str | None = None
        self.worker = OrderedWorker()

    def _check(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        if self.problem is not None:
            return
        try:
            output = self.decompressor.decompress(chunk)
        except zstandard.ZstdError as exc:
            self.problem = f"it does not decompress ({exc})"
            return
        position, unmatched = 0, self.raw.unmatched
        while position < len(output):
            if not unmatched:
                self.problem = "it decompresses to more bytes than were read"
                return
            front = unmatched[0]
            take = min(len(front) - self.offset, len(output) - position)
            if output[position:position + take] != front[self.offset:self.offset + take]:
                self.problem = f"it decompresses to other bytes than were read (within {take} bytes from raw byte {self.compared})"
                return
            position += take
            self.compared += take
            self.offset += take
            if self.offset == len(front):
                unmatched.popleft()
                self.offset = 0

    def finish(self) -> None:
        self.worker.finish()
        if self.problem is None and not self.decompressor.eof:
            self.problem = "it ends in the middle of a zstd frame"
        if self.problem is None and self.raw.unmatched:
            self.problem = "it decompresses to fewer bytes than were read"

    def write(self, data) -> int:
        chunk = bytes(data)  # python-zstandard hands a new bytes object; a view would be copied once here
        self.size += len(chunk)
        self.worker.submit(self._check, chunk)
        return self.target.write(chunk)

    def flush(self) -> None:
        self.target.flush()


def compress_stream(source: BinaryIO, destination: Path, *, level: int, threads: int = -1,
                    advance: Callable[[int], object] | None = None) -> ArchiveDigest:
    """Compress `source` to its end into `destination` (created, fsynced), proving on the
    way that the compressed bytes decompress to the bytes read (CompressorOutputWrong
    otherwise); `threads`: zstd's own workers (-1: one per core, outside the GIL);
    `advance` is told each raw byte count read (a progress bar).

    Four things run at once: this thread reads and feeds zstd, zstd's workers compress,
    one thread hashes the raw bytes, one hashes, decompresses and compares what zstd gives
    back, so the pass is bound by compression, not by the sum of them."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=threads)
    reader = _RawInput(source, advance)
    with destination.open("xb") as handle:
        writer = _CheckedOutput(handle, reader)
        try:
            compressor.copy_stream(reader, writer, read_size=CHUNK, write_size=CHUNK)
            reader.worker.finish()
            writer.finish()
        finally:
            reader.worker.abandon()
            writer.worker.abandon()
        handle.flush()
        os.fsync(handle.fileno())
    if writer.problem is not None:
        raise CompressorOutputWrong(f"{destination.name}: the compressed stream written is wrong: {writer.problem} "
                                    "(a fault of memory or of the compressor)")
    return ArchiveDigest(writer.size, writer.digest.hexdigest(), reader.size, reader.digest.hexdigest())


def check_stored(path: Path | RemoteFile, entry: FileEntry, *, backup_id: str,
                 advance: Callable[[int], object] | None = None) -> None:
    """The file as stored: its size and the SHA-256 of its bytes, nothing decompressed.
    Enough for create's read-back of a file `compress_stream` wrote: those bytes were
    decompressed as they were written, so the same SHA-256 on disk proves the file
    decompresses whole (BackupCorrupt otherwise)."""
    _stream(path, entry, backup_id=backup_id, sink=None, check_raw=False, advance=advance, decompress=False)


def check_archive(path: Path | RemoteFile, entry: FileEntry, *, backup_id: str, advance: Callable[[int], object] | None = None) -> None:
    """Quick verification of one file: size, SHA-256 of its bytes, decompression to the end.
    `advance` is told each compressed byte count read (a progress bar)."""
    _stream(path, entry, backup_id=backup_id, sink=None, check_raw=False, advance=advance)


def decompress_to(path: Path | RemoteFile, entry: FileEntry, sink: Callable[[bytes], object], *, backup_id: str,
                  advance: Callable[[int], object] | None = None) -> None:
    """Restore a file's raw bytes into `sink`, checking both hashes (raise BackupCorrupt)."""
    _stream(path, entry, backup_id=backup_id, sink=sink, check_raw=True, advance=advance)


def _stream(path: Path | RemoteFile | SealedFile, entry: FileEntry, *, backup_id: str, sink, check_raw: bool,
            advance=None, decompress: bool = True) -> None:
    where = f"backup {backup_id}: {entry.name}"
    identities = None
    plaintext_wanted = check_raw or sink is not None
    if isinstance(path, SealedFile):
        if is_sealed(entry.name) and plaintext_wanted:
            identities = path.identities()  # exit 4 naming the recipients before a byte is read
        path = path.inner
    elif is_sealed(entry.name) and plaintext_wanted:
        raise DecryptionKeyUnavailable(f"{where} is encrypted and was given without a way to its keys "
                                       "(read it through its repository's file_of)")
    if not isinstance(path, Path):  # an object of a repository on object storage
        with path.open(where) as (handle, size):
            _stream_handle(handle, size, entry, where=where, sink=sink, check_raw=check_raw, advance=advance,
                           identities=identities, decompress=decompress)
        return
    try:
        # Never through a symbolic link (a copy elsewhere is not this backup's file) and
        # never blocking on a FIFO: the descriptor's own type is checked before a read.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BackupCorrupt(f"{where} is missing") from None
    except OSError as exc:
        why = "is a symbolic link, not a file of the backup" if os.path.islink(path) else f"cannot be read ({exc.strerror})"
        raise BackupCorrupt(f"{where} {why}") from None
    with os.fdopen(descriptor, "rb") as handle:
        _stream_open(handle, entry, where=where, sink=sink, check_raw=check_raw, advance=advance, identities=identities,
                     decompress=decompress)


def _stream_open(handle: BinaryIO, entry: FileEntry, *, where: str, sink, check_raw: bool, advance=None,
                 identities=None, decompress: bool = True) -> None:
    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode):
        raise BackupCorrupt(f"{where} is not a regular file")
    _stream_handle(handle, info.st_size, entry, where=where, sink=sink, check_raw=check_raw, advance=advance,
                   identities=identities, decompress=decompress)


class _Undecompressable(Exception):
    """Plaintext that decrypted but is no zstd stream (raised through pyrage's writer)."""


def _stream_sealed(handle: BinaryIO, entry: FileEntry, *, where: str, sink, identities, advance=None) -> None:
    """An age-encrypted data file. Without identities (quick verification): the
    ciphertext's SHA-256. With them: decrypted as it is read (age authenticates every
    64 KiB chunk), decompressed and the raw bytes hashed beside it, the ciphertext hashed
    as well. A ciphertext that does not decrypt is read to its end first, so that its
    SHA-256 says which it is: damaged or swapped (it does not match), or written wrongly."""
    cipher = _HashingReader(handle, advance)
    if identities is None:
        while cipher.read(CHUNK):
            pass
        _check_stored(cipher, entry, where)
        return
    raw_digest = hashlib.sha256()
    raw_size = 0
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    problem = failure = undecompressable = None
    # Three stages, in order: this thread decrypts (pyrage holds the GIL), `stage`
    # decompresses (zstd releases it), the consumer hashes the raw bytes and feeds the sink.
    stage = OrderedWorker()
    with _ChunkConsumer(hashlib.sha256(), raw_digest, sink) as consumer:
        def decompress(chunk: bytes) -> None:
            nonlocal raw_size
            try:
                output = decompressor.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise _Undecompressable(str(exc)) from None
            raw_size += len(output)
            consumer.put(b"", output)

        try:
            failure = decrypt_stream(cipher, lambda chunk: stage.submit(decompress, chunk), identities)
            stage.finish()
        except _Undecompressable as exc:
            undecompressable = str(exc)
        finally:
            stage.abandon()
        if failure is not None:  # the first cause: what follows a failed chunk is not plaintext
            problem = f"does not decrypt ({failure})"
        elif undecompressable is not None:
            problem = f"decrypts to data that does not decompress ({undecompressable})"
        else:
            tail = decompressor.flush()
            raw_size += len(tail)
            consumer.put(b"", tail)
    if problem is not None:
        while cipher.read(CHUNK):
            pass
    _check_stored(cipher, entry, where)
    if problem is not None:
        raise BackupCorrupt(f"{where} matches its SHA-256 in the manifest but {problem}: it was written wrongly, or "
                            "not to the recipients its manifest names; it cannot be restored")
    if not decompressor.eof:
        raise BackupCorrupt(f"{where} decrypts to a zstd stream that ends in the middle of a frame (truncated)")
    if raw_size != entry.raw_size:
        raise BackupCorrupt(f"{where} decompresses to {raw_size} bytes, the manifest says {entry.raw_size}")
    if raw_digest.hexdigest() != entry.raw_sha256:
        raise BackupCorrupt(f"{where} decompresses to content that does not match the manifest")


def _check_stored(cipher: _HashingReader, entry: FileEntry, where: str) -> None:
    if cipher.size != entry.size:
        raise BackupCorrupt(f"{where} gave {cipher.size} bytes, the manifest says {entry.size} (truncated or replaced)")
    if cipher.digest.hexdigest() != entry.sha256:
        raise BackupCorrupt(f"{where} does not match its SHA-256 in the manifest (damaged or swapped)")


def _stream_handle(handle: BinaryIO, actual_size: int, entry: FileEntry, *, where: str, sink, check_raw: bool,
                   advance=None, identities=None, decompress: bool = True) -> None:
    if actual_size != entry.size:
        raise BackupCorrupt(f"{where} is {actual_size} bytes, the manifest says {entry.size} (truncated or replaced)")
    if is_sealed(entry.name):
        _stream_sealed(handle, entry, where=where, sink=sink, identities=identities, advance=advance)
        return
    if not decompress:
        stored = _HashingReader(handle, advance)
        while stored.read(CHUNK):
            pass
        _check_stored(stored, entry, where)
        return
    digest = hashlib.sha256()
    raw_digest = hashlib.sha256() if check_raw else None
    raw_size = 0
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    with _ChunkConsumer(digest, raw_digest, sink) as consumer:
        try:
            while chunk := handle.read(CHUNK):
                output = decompressor.decompress(chunk)
                raw_size += len(output)
                consumer.put(chunk, output)
                if advance is not None:
                    advance(len(chunk))
            tail = decompressor.flush()
            raw_size += len(tail)
            consumer.put(b"", tail)
        except zstandard.ZstdError as exc:
            raise BackupCorrupt(f"{where} does not decompress: {exc}") from None
    if digest.hexdigest() != entry.sha256:
        raise BackupCorrupt(f"{where} does not match its SHA-256 in the manifest (damaged or swapped)")
    if not decompressor.eof:
        raise BackupCorrupt(f"{where} ends in the middle of a zstd frame (truncated)")
    if raw_size != entry.raw_size:
        raise BackupCorrupt(f"{where} decompresses to {raw_size} bytes, the manifest says {entry.raw_size}")
    if raw_digest is not None and raw_digest.hexdigest() != entry.raw_sha256:
        raise BackupCorrupt(f"{where} decompresses to content that does not match the manifest")
