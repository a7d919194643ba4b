"""Encryption at rest: backups sealed to age recipients (issue 17), through pyrage.

With `[backups] encrypt_to` set (age X25519 recipients, `age1...`), `backup create`
replaces each compressed data file by its age ciphertext (`data.db.zst.age`) before the
manifest is written. The manifest keeps what verification needs and nothing more than an
unencrypted one: the ciphertext's size and SHA-256 (`size`, `sha256`: quick verification
needs no key), the plaintext's (`raw_size`, `raw_sha256`: a restore proves it re-created
exactly what was backed up), and `encryption = {"scheme": "age", "recipients": [...]}`
(public keys only). A host that makes backups holds only the recipients: it cannot read
the backups it wrote, nor older ones.

Reading a sealed file (restore, deep verify, drill, diff, dry runs and exports from a
backup) needs `[backups] identity_file`, an age identity file (`age-keygen` output) of one
of the backup's recipients, kept outside the repository and readable by its owner alone.
Which identity fits is decided from the manifest before a byte is read: no identity, or
one that is none of the recipients, is exit 4 naming the recipients and the setting. A
ciphertext that does not decrypt is told apart from a wrong key by its SHA-256: damage is
exit 5.

pyrage's `encrypt_io` / `decrypt_io` run a whole stream through Python file objects in
8 KiB reads and writes (memory stays flat: about 18 MB resident for a 300 MB file here).
Both sides are driven through small adapter objects, so the hashes (ciphertext on one
side, compressed and raw plaintext on the other) are computed as the bytes pass, and
decompression runs in a worker thread (zstd and hashlib release the GIL): no pipe, no
temporary plaintext. pyrage is imported only when a key is used, so `integrity --help`
stays light.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from game_core.errors import PreconditionFailed
from integrity.backups.durable import fsync_directory

SCHEME = "age"
SUFFIX = ".age"
CHUNK = 1 << 20
# An age X25519 recipient: "age1" and 58 bech32 characters (what `age-keygen -y` prints).
RECIPIENT_PATTERN = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
INSTALL_HINT = "install the `encryption` extra: pip install 'typing-game-integrity[encryption]'"
RUNBOOK = "runbooks/lost-decryption-key.md"


class DecryptionKeyUnavailable(PreconditionFailed):
    """This host cannot decrypt a backup: no [backups] identity_file, one that cannot be
    used, or one that is none of the backup's recipients. Never the backup's fault: it is
    not journalled against it."""


class EncryptionUnavailable(PreconditionFailed):
    """New backups cannot be encrypted here (pyrage missing, a recipient refused)."""


def is_sealed(name: str) -> bool:
    """A data file's name says whether it is age ciphertext."""
    return name.endswith(SUFFIX)


# ------------------------------------------------------------------ settings


def recipients_problem(values: tuple[str, ...]) -> str | None:
    """What `[backups] encrypt_to` allows, or None when every value is an age recipient."""
    allowed = "a list of age X25519 recipients (age1..., as `age-keygen -y IDENTITY_FILE` prints them), or [] (unencrypted)"
    for value in values:
        if not RECIPIENT_PATTERN.match(value):
            return f"{allowed}; {value[:70]!r} is not one"
    if len(set(values)) != len(values):
        return f"{allowed}, each once"
    if not values:
        return None
    try:
        from pyrage import x25519
    except ImportError:
        return f"{allowed}, and pyrage to use them ({INSTALL_HINT})"
    for value in values:
        try:
            x25519.Recipient.from_str(value)
        except Exception:  # pyrage.RecipientError: a checksum that does not match
            return f"{allowed}; {value!r} is not a valid one (its checksum does not match: copied wrongly?)"
    return None




def named(recipients: list[str] | tuple[str, ...]) -> str:
    """The recipients as an error message names them (public keys: never a secret)."""
    if len(recipients) == 1:
        return f"the age recipient {recipients[0]}"
    return f"{len(recipients)} age recipients ({', '.join(recipients)})"


# ------------------------------------------------------------------ identities


def identity_path(settings) -> Path | None:
    """`[backups] identity_file` as an absolute path (relative: to the data directory);
    None when this host cannot decrypt."""
    value = settings.backups.identity_file
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (settings.data_dir / path).absolute()


def keyring_of(settings) -> "Keyring":
    repository = settings.backups.repository
    return Keyring(identity_path(settings), repository if isinstance(repository, Path) else None)


@dataclass
class Keyring:
    """The identities this host may decrypt with, loaded on first use (a host that only
    lists or quick-verifies never needs them). Never printed: no repr of the keys."""

    identity_file: Path | None
    repository: Path | None  # a directory repository: an identity inside it is refused
    _loaded: list[tuple[Any, str]] | None = field(default=None, repr=False, compare=False)

    def identities_for(self, recipients: list[str], backup_id: str) -> list[Any]:
        """The identities of this host that are among `recipients` (DecryptionKeyUnavailable when none)."""
        to = named(recipients)
        if self.identity_file is None:
            raise DecryptionKeyUnavailable(
                f"backup {backup_id} is encrypted to {to} and this host has no [backups] identity_file; set "
                "identity_file to the age identity file of one of them (kept outside the repository, mode 0600), "
                f"or see {RUNBOOK} if it is lost"
            )
        loaded = self.load(f"backup {backup_id} is encrypted to {to}")
        matching = [identity for identity, public in loaded if public in recipients]
        if not matching:
            mine = ", ".join(public for _, public in loaded)
            raise DecryptionKeyUnavailable(
                f"backup {backup_id} is encrypted to {to}, not to the identity in [backups] identity_file "
                f"{self.identity_file} (recipient {mine}); set identity_file to the identity of one of those "
                f"recipients (see {RUNBOOK})"
            )
        return matching

    def publics(self) -> list[str]:
        """The recipients this host's identities decrypt for (loads them)."""
        return [public for _, public in self.load(None)]

    def load(self, context: str | None) -> list[tuple[Any, str]]:
        if self._loaded is None:
            self._loaded = load_identities(self.identity_file, repository=self.repository, context=context)
        return self._loaded


def load_identities(path: Path, *, repository: Path | None, context: str | None = None) -> list[tuple[Any, str]]:
    """Every X25519 identity in an age identity file, with its recipient, after checking
    where the file lives and who can read it. Nothing of the file is ever echoed."""
    what = f"[backups] identity_file {path}"
    prefix = f"{context}; " if context else ""
    if repository is not None:
        real, root = Path(os.path.realpath(path)), Path(os.path.realpath(repository))
        if real == root or root in real.parents:
            raise DecryptionKeyUnavailable(
                f"{prefix}{what} is inside the backup repository {repository}: whoever can read the backups could "
                "decrypt them; move it outside (for example /etc/integrity/backup-identity.txt)"
            )
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DecryptionKeyUnavailable(
            f"{prefix}{what} does not exist; restore it from where the identity is kept (see {RUNBOOK}), or set "
            "identity_file to the right path"
        ) from None
    except OSError as exc:
        raise DecryptionKeyUnavailable(f"{prefix}{what} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DecryptionKeyUnavailable(f"{prefix}{what} is not a regular file; set identity_file to an age identity file")
    if info.st_mode & 0o077:
        raise DecryptionKeyUnavailable(
            f"{prefix}{what} is open to others (mode {stat.S_IMODE(info.st_mode):04o}): whoever can read it can read "
            f"every backup encrypted to it; run `chmod 600 {path}` (and re-key if others read it: {RUNBOOK})"
        )
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    try:
        from pyrage import x25519
    except ImportError:
        raise DecryptionKeyUnavailable(f"{prefix}backups are encrypted and pyrage is missing; {INSTALL_HINT}") from None
    loaded = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identity = x25519.Identity.from_str(line)
        except Exception:  # never the library's words: they may quote the line
            loaded = []
            break
        loaded.append((identity, str(identity.to_public())))
    if not loaded:
        raise DecryptionKeyUnavailable(
            f"{prefix}{what} is not an age identity file (AGE-SECRET-KEY-1... lines, as `age-keygen` writes them)"
        )
    return loaded


@dataclass(frozen=True)
class SealedFile:
    """A backup's age-encrypted data file as `Repository.file_of` hands it out: the file
    itself (a Path or an object-storage file) and how to find the keys to open it.
    integrity.backups.archive reads it: a quick check hashes `inner` (no key needed),
    a restore asks `identities()` first."""

    inner: Any
    keyring: Keyring | None
    backup_id: str
    recipients: Callable[[], list[str]]  # the manifest's encryption.recipients, read when needed

    def identities(self) -> list[Any]:
        recipients = list(self.recipients())
        keyring = self.keyring or Keyring(None, None)
        return keyring.identities_for(recipients, self.backup_id)

    @contextmanager
    def open(self, where: str):
        """The ciphertext as it is stored, like an object-storage file's `open`: (a
        readable stream, its size). For readers of the bytes themselves (`backup copy`
        moves ciphertext and needs no key)."""
        if not isinstance(self.inner, Path):
            with self.inner.open(where) as opened:
                yield opened
            return
        from integrity.backups.format import BackupCorrupt

        try:
            descriptor = os.open(self.inner, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise BackupCorrupt(f"{where} cannot be read ({exc.strerror})") from None
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BackupCorrupt(f"{where} is not a regular file")
            yield handle, info.st_size


# ------------------------------------------------------------------ encrypting (backup create)


def recipients_of(values: tuple[str, ...] | list[str]) -> list[Any]:
    try:
        from pyrage import x25519
    except ImportError:
        raise EncryptionUnavailable(f"[backups] encrypt_to is set but pyrage is missing; {INSTALL_HINT}") from None
    try:
        return [x25519.Recipient.from_str(value) for value in values]
    except Exception:
        raise EncryptionUnavailable(
            f"[backups] encrypt_to holds a value that is not an age recipient; {recipients_problem(tuple(values))}"
        ) from None


class OrderedWorker:
    """One thread that runs submitted calls in order, at most `IN_FLIGHT` waiting: hashing
    and decompression beside pyrage's own work in the caller's thread. pyrage holds the
    GIL while it encrypts or decrypts, zstd and hashlib release it: work moved here runs
    beside the cipher on the second core instead of after it."""

    IN_FLIGHT = 4

    def __init__(self):
        self.pending: deque[Future] = deque()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="age-hash")

    def submit(self, function, *args) -> None:
        if len(self.pending) >= self.IN_FLIGHT:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(function, *args))

    def finish(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True)

    def abandon(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)


class _PlaintextReader:
    """What pyrage encrypts: the compressed file, read a chunk at a time; each chunk is
    hashed, and decompressed and the raw bytes hashed in the worker thread, so the file
    encrypted is proven to be the one the capture wrote and to decompress whole."""

    def __init__(self, handle, worker: OrderedWorker, advance=None):
        import zstandard

        self.handle = handle
        self.worker = worker
        self.advance = advance
        self.digest = hashlib.sha256()
        self.raw_digest = hashlib.sha256()
        self.size = 0
        self.raw_size = 0
        self.decompressor = zstandard.ZstdDecompressor().decompressobj()
        self.decompress_error: str | None = None
        self.buffer = memoryview(b"")
        self.error: BaseException | None = None

    def _check(self, chunk: bytes) -> None:
        import zstandard

        if self.decompress_error is not None:
            return
        try:
            raw = self.decompressor.decompress(chunk)
        except zstandard.ZstdError as exc:
            self.decompress_error = str(exc)
            return
        self.raw_size += len(raw)
        self.raw_digest.update(raw)

    def read(self, size: int = -1) -> bytes:
        try:
            if not self.buffer:
                chunk = self.handle.read(CHUNK)
                if not chunk:
                    return b""
                self.size += len(chunk)
                self.digest.update(chunk)  # here: the worker's decompression and raw hash are the longer half
                self.worker.submit(self._check, chunk)
                if self.advance is not None:
                    self.advance(len(chunk))
                self.buffer = memoryview(chunk)
            size = len(self.buffer) if size is None or size < 0 else size
            out, self.buffer = self.buffer[:size], self.buffer[size:]
            return bytes(out)
        except BaseException as exc:  # kept: pyrage would turn it into its own error
            self.error = exc
            raise OSError("reading the plaintext failed") from None


class _HashingWriter:
    """Where pyrage writes the ciphertext (8 KiB at a time): gathered into 1 MiB chunks,
    each hashed and written at once (hashlib and the write release the GIL for a chunk
    that size, not for 8 KiB)."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self.buffer = bytearray()
        self.error: BaseException | None = None

    def write(self, data) -> int:
        try:
            self.buffer += data
            if len(self.buffer) >= CHUNK:
                self._drain()
            return len(data)
        except BaseException as exc:
            self.error = exc
            raise OSError("writing the ciphertext failed") from None

    def _drain(self) -> None:
        chunk = bytes(self.buffer)
        self.buffer.clear()
        self.digest.update(chunk)
        self.size += len(chunk)
        self.handle.write(chunk)

    def flush(self) -> None:
        pass  # the whole of it is written by `close`: pyrage flushes more often than that pays

    def close(self) -> None:
        if self.buffer:
            self._drain()
        self.handle.flush()


def seal_file(directory: Path, entry, recipients: tuple[str, ...] | list[str], *,
              advance: Callable[[int], object] | None = None):
    """Encrypt a finished compressed data file of a backup being written in `directory`
    to `recipients`: `<name>.age` created and fsynced, the plaintext proven to be exactly
    what the capture wrote (its SHA-256) and to decompress to the raw bytes of `entry`,
    then removed. Returns the FileEntry of the ciphertext (size and sha256 the
    ciphertext's, raw_size and raw_sha256 unchanged)."""
    import pyrage

    from integrity.backups.format import BackupCorrupt

    parsed = recipients_of(recipients)
    source_path = directory / entry.name
    target_path = directory / f"{entry.name}{SUFFIX}"
    worker = OrderedWorker()
    try:
        with source_path.open("rb") as source, target_path.open("xb") as target:
            reader = _PlaintextReader(source, worker, advance)
            writer = _HashingWriter(target)
            try:
                pyrage.encrypt_io(reader, writer, parsed)
            except (pyrage.EncryptError, OSError) as exc:
                for error in (reader.error, writer.error):
                    if error is not None:
                        raise error
                raise BackupCorrupt(f"encrypting {entry.name} failed: {exc}") from None
            writer.close()
            os.fsync(target.fileno())
        worker.finish()
    except BaseException:
        worker.abandon()
        target_path.unlink(missing_ok=True)
        raise
    where = f"{entry.name} (before encryption)"
    problem = None
    if reader.size != entry.size or reader.digest.hexdigest() != entry.sha256:
        problem = f"{where} changed on disk after it was written (its SHA-256 no longer matches)"
    elif reader.decompress_error is not None or not reader.decompressor.eof:
        problem = f"{where} does not decompress: {reader.decompress_error or 'it ends in the middle of a zstd frame'}"
    elif reader.raw_size != entry.raw_size or reader.raw_digest.hexdigest() != entry.raw_sha256:
        problem = f"{where} decompresses to content that does not match the captured data"
    if problem:
        target_path.unlink(missing_ok=True)
        raise BackupCorrupt(problem + "; nothing was published")
    source_path.unlink()  # the plaintext never reaches the repository
    fsync_directory(directory)
    return replace(entry, name=target_path.name, size=writer.size, sha256=writer.digest.hexdigest())


def manifest_field(recipients: tuple[str, ...] | list[str]) -> dict:
    return {"scheme": SCHEME, "recipients": list(recipients)}


# ------------------------------------------------------------------ decrypting (archive's reads)


class _CiphertextSource:
    """What pyrage decrypts from: the caller's reader (which hashes the ciphertext), read
    1 MiB at a time and handed out in the 8 KiB pieces pyrage asks for; its own errors kept
    and raised as they were."""

    def __init__(self, reader):
        self.reader = reader
        self.buffer = memoryview(b"")
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            if not self.buffer:
                self.buffer = memoryview(self.reader.read(CHUNK))
            size = len(self.buffer) if size is None or size < 0 else size
            out, self.buffer = self.buffer[:size], self.buffer[size:]
            return bytes(out)
        except BaseException as exc:
            self.error = exc
            raise OSError("reading the ciphertext failed") from None


class _PlaintextSink:
    """What pyrage writes the plaintext to, in 8 KiB pieces: gathered into 1 MiB chunks
    for the caller's `write` (decompression); its errors kept and raised as they were."""

    def __init__(self, write: Callable[[bytes], object]):
        self.write_chunk = write
        self.buffer = bytearray()
        self.error: BaseException | None = None

    def write(self, data) -> int:
        try:
            self.buffer += data
            if len(self.buffer) >= CHUNK:
                chunk = bytes(self.buffer)
                self.buffer.clear()
                self.write_chunk(chunk)
            return len(data)
        except BaseException as exc:
            self.error = exc
            raise OSError("the plaintext's consumer failed") from None

    def flush(self) -> None:
        pass


def decrypt_stream(reader, write: Callable[[bytes], object], identities: list[Any]) -> str | None:
    """Decrypt everything `reader` gives into `write` (1 MiB chunks). Returns None when the
    ciphertext decrypted and authenticated to its end, else why not (pyrage's words: a
    damaged chunk, a header no identity opens). Errors of `reader` or `write` themselves
    are raised as they were."""
    import pyrage

    source = _CiphertextSource(reader)
    sink = _PlaintextSink(write)
    try:
        pyrage.decrypt_io(source, sink, identities)
    except (pyrage.DecryptError, OSError) as exc:
        for error in (source.error, sink.error):
            if error is not None:
                raise error
        return str(exc) or type(exc).__name__
    if sink.buffer:
        write(bytes(sink.buffer))
    return None


# ------------------------------------------------------------------ backup check


def encryption_finding(settings) -> tuple[str, str]:
    """`backup check`'s word on encryption: (state, detail), state ok, warn or fail."""
    recipients = settings.backups.encrypt_to
    path = identity_path(settings)
    if not recipients:
        return "warn", (
            "unencrypted repository: whoever can read it (a bucket's other users, a stolen disk) reads every "
            "player's data; set [backups] encrypt_to to age recipients (`age-keygen`), two of them, one kept offline"
        )
    to = f"encrypted to {len(recipients)} recipient{'s' if len(recipients) != 1 else ''}"
    if path is None:
        return "ok", (
            f"age, {to}; this host cannot decrypt (no [backups] identity_file): restore, deep verify and drills "
            "need it on the hosts that run them"
        )
    keyring = keyring_of(settings)
    try:
        publics = keyring.publics()
    except DecryptionKeyUnavailable as exc:
        return "fail", str(exc)
    fitting = [public for public in publics if public in recipients]
    if not fitting:
        return "warn", (
            f"age, {to}; this host cannot decrypt new backups: [backups] identity_file {path} holds "
            f"{', '.join(publics)}, none of encrypt_to (older backups encrypted to it still open)"
        )
    return "ok", f"age, {to}; this host can decrypt ([backups] identity_file {path} holds {fitting[0]})"
