"""The backup repository on disk: layout, ids, manifests and the append-only journal.

    <repository>/
      <id>/                    a finished backup, immutable once renamed into place:
        data.<kind>.zst          the data file, zstd-compressed
                                 (data.<kind>.zst.age: then age-encrypted, see encryption.py)
        manifest.json            written last: what the backup holds and every file's hash
        manifest.sha256          the manifest's own hash, `sha256sum -c` format
        manifest.sig             the manifest's Ed25519 signature, when signing is configured
      .tmp-<id>/               a backup being written (or left by a killed run)
      journal.jsonl            what happened later: verifications, pins, failures
      locks/                   writer.lock, backup-<id>.lock and their holder notes

A backup is exactly its directory (a real one, not a symbolic link) holding its manifest,
the manifest's hash and the regular files the manifest lists, nothing else, with a
format this code knows and its own id. Every value of a manifest and of a journal line is
validated when read: a repository is data someone may have damaged or tampered with, and
one bad backup or line must be reported as such, never crash a reader or block the others.

Backup directories never change after the rename; everything learnt later goes to the
journal, one JSON object per line, appended under an flock and fsynced. An append always
starts on a fresh line (a line torn by a crash mid-append never swallows the next event),
and a journal that cannot be read completely says so (`JournalContents.problems`):
readers skip the bad lines and keep the rest, retention refuses to guess.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from game_core.errors import Failure
from integrity.backups.durable import fsync_directory
from integrity.locks import file_lock
from integrity.storage.location import S3Url

from integrity.backups.format import (
    MANIFEST,
    MANIFEST_HASH,
    MANIFEST_SIGNATURE,
    MANIFEST_FORMAT,
    JOURNAL,
    TEMP_PREFIX,
    ID_PATTERN,
    FILE_NAME_PATTERN,
    AGE_RECIPIENT_PATTERN,
    SHA256_PATTERN,
    ENGINES,
    FILE_KINDS,
    PURPOSES,
    POINT_IN_TIME,
    PITR_ENGINES,
    BackupNotFound,
    BackupCorrupt,
    RepositoryUnusable,
    JournalIncomplete,
    new_backup_id,
    backup_time,
    is_backup_id,
    sha256_bytes,
    read_regular_file,
    describe_entry,
    ManifestInvalid,
    aware_time,
    FileEntry,
    Manifest,
    Event,
    EVENTS,
    AuditVerdict,
    JournalEntry,
    parse_journal_line,
    JournalContents,
    validated_manifest,
    unlisted_names,
    stray_text,
    new_journal_entry,
)
from integrity.backups.records import JournalRecords

# The format's names stay importable from here, where they lived before format.py.
__all__ = ["Repository", "JournalRecords", "MANIFEST", "MANIFEST_HASH", "MANIFEST_SIGNATURE", "MANIFEST_FORMAT", "JOURNAL", "TEMP_PREFIX", "ID_PATTERN", "FILE_NAME_PATTERN", "AGE_RECIPIENT_PATTERN", "SHA256_PATTERN", "ENGINES", "FILE_KINDS", "PURPOSES", "POINT_IN_TIME", "PITR_ENGINES", "BackupNotFound", "BackupCorrupt", "RepositoryUnusable", "JournalIncomplete", "new_backup_id", "backup_time", "is_backup_id", "sha256_bytes", "read_regular_file", "describe_entry", "ManifestInvalid", "aware_time", "FileEntry", "Manifest", "Event", "EVENTS", "AuditVerdict", "JournalEntry", "parse_journal_line", "JournalContents", "validated_manifest", "unlisted_names", "stray_text", "new_journal_entry"]


class Repository(JournalRecords):
    """One backup repository directory."""

    def __init__(self, root: Path, *, verifier=None):
        self.root = root
        # integrity.backups.signing.ManifestVerifier when [backups] signing_public_key is set:
        # then every manifest read must carry a valid signature (Repository.of builds it).
        self.verifier = verifier
        self.backups_dir = root
        self.journal_path = root / JOURNAL
        self.locks_dir = root / "locks"

    @classmethod
    def of(cls, settings) -> "Repository":
        """The configured repository, checking manifest signatures when signing is
        configured: this class for a directory, an ObjectRepository (the same interface)
        for `s3://` (integrity.backups.object_repository, which imports boto3 when used)."""
        from integrity.backups.signing import verifier_of

        from integrity.backups.encryption import keyring_of

        verifier = verifier_of(settings.backups)
        if isinstance(settings.backups.repository, S3Url):
            from integrity.backups.object_repository import ObjectRepository

            repository = ObjectRepository.of(settings, verifier=verifier)
        else:
            repository = cls(settings.backups.repository, verifier=verifier)
        repository.keyring = keyring_of(settings)  # loads nothing until a backup is decrypted
        return repository

    # ------------------------------------------------------------- layout

    def ensure(self) -> None:
        try:
            self.backups_dir.mkdir(parents=True, exist_ok=True)
            self.locks_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise RepositoryUnusable(
                f"cannot create the backup repository {self.root}: {exc.strerror}; set [backups] repository "
                "(or INTEGRITY_BACKUPS__REPOSITORY) to a writable directory"
            ) from None
        if not os.access(self.backups_dir, os.W_OK):
            raise RepositoryUnusable(f"backup repository {self.root} is not writable; fix its permissions or set [backups] repository")

    def require_exists(self) -> None:
        if not self.backups_dir.is_dir():
            raise RepositoryUnusable(
                f"backup repository {self.root} does not exist (an unmounted share?); mount it, set [backups] "
                "repository (or INTEGRITY_BACKUPS__REPOSITORY) to the right path, or create it with `integrity init`"
            )

    def path_of(self, backup_id: str) -> Path:
        """The directory of a backup; refuses ids that are not ids (`../x`, absolute paths)."""
        if not is_backup_id(backup_id):
            raise BackupNotFound(
                f"{backup_id!r} is not a backup id (like 20261127T030118Z-a1b2c3); list them with `integrity backup list`"
            )
        return self.backups_dir / backup_id

    def temp_path(self, backup_id: str) -> Path:
        return self.backups_dir / f"{TEMP_PREFIX}{backup_id}"

    def backup_ids(self) -> list[str]:
        """Finished backups (renamed into place), oldest first: every entry named like an id,
        whatever it is, so that one replaced by a file or a symbolic link is listed as damaged
        rather than silently missing."""
        if not self.backups_dir.is_dir():
            return []
        return sorted(p.name for p in self.backups_dir.iterdir() if is_backup_id(p.name))

    def has_backup(self, backup_id: str) -> bool:
        """Something stands under this id (a damaged backup too: reading it says what is wrong)."""
        return os.path.lexists(self.path_of(backup_id))

    def leftovers(self) -> list[Path]:
        """Directories of killed or failed runs; only prune, holding the writer lock, removes them."""
        if not self.backups_dir.is_dir():
            return []
        return sorted(p for p in self.backups_dir.iterdir() if p.name.startswith(TEMP_PREFIX))

    # ------------------------------------------------------------- the storage interface
    # What the rest of the tool uses, the same on a directory and on object storage
    # (integrity.backups.object_repository): a location to show, files to read, a staging
    # place, publishing and removal. Paths never leave this class's kind.

    remote = False

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def journal_location(self) -> str:
        return str(self.journal_path)

    def exists(self) -> bool:
        return self.backups_dir.is_dir()

    def where(self, backup_id: str) -> str:
        return str(self.path_of(backup_id))

    def file_of(self, backup_id: str, name: str) -> Path:
        """A data file of a backup, for integrity.backups.archive to read and check
        (an encrypted one wrapped with its keys: `readable`)."""
        return self.readable(backup_id, name, self.path_of(backup_id) / name)

    def leftover_names(self) -> list[str]:
        return [path.name for path in self.leftovers()]

    def staging(self, backup_id: str) -> Path:
        """Where a new backup is written: `.tmp-<id>` inside the repository, so that
        publishing it is one rename on the same file system."""
        temp = self.temp_path(backup_id)
        temp.mkdir()
        return temp

    def begin_upload(self, backup_id: str, staging: Path, files) -> None:
        """Nothing to send ahead: a directory's backup is published by one rename."""

    def publish(self, backup_id: str, staging: Path, manifest: Manifest) -> None:
        """Make a complete, fsynced and checked backup visible: one rename, then the
        directory fsynced so the rename survives a power cut."""
        os.rename(staging, self.path_of(backup_id))
        fsync_directory(self.backups_dir)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def free_bytes(self) -> int:
        """Free space where new backups are written (for a full disk's message)."""
        return shutil.disk_usage(self.root).free

    def compact_journal(self) -> int:
        """One file already: nothing to fold (see ObjectRepository.compact_journal)."""
        return 0

    def locked_until(self, backup_id: str) -> None:
        """A directory has no Object Lock (see ObjectRepository.locked_until)."""
        return None

    def remove_backup(self, backup_id: str) -> None:
        """Rename out of sight first: a crash mid-delete leaves a leftover, never half a backup."""
        doomed = self.backups_dir / f"{TEMP_PREFIX}pruned-{backup_id}"
        os.rename(self.path_of(backup_id), doomed)
        fsync_directory(self.backups_dir)
        _remove_entry(doomed, strict=True)

    def remove_leftovers(self) -> list[str]:
        """Remove what killed or failed runs left (under the writer lock); the names removed."""
        removed = []
        for leftover in self.leftovers():
            _remove_entry(leftover)
            if not os.path.lexists(leftover):
                removed.append(leftover.name)
        if removed:
            fsync_directory(self.backups_dir)
        return removed

    # ------------------------------------------------------------- manifests

    def read_manifest(self, backup_id: str) -> Manifest:
        """The manifest, after checking it against manifest.sha256 (invariant 4), every value
        in it, and that the backup is exactly its directory's listed regular files."""
        directory = self.path_of(backup_id)
        if not os.path.lexists(directory):
            raise BackupNotFound(f"no backup {backup_id} in {self.root}; list them with `integrity backup list`")
        where = f"backup {backup_id}"
        if os.path.islink(directory):
            raise BackupCorrupt(f"{where} is a symbolic link to {os.readlink(directory)}, not a directory of the "
                                f"repository; it cannot be trusted or restored")
        if not directory.is_dir():
            raise BackupCorrupt(f"{where} is not a directory; it cannot be trusted or restored")
        for name in (MANIFEST, MANIFEST_HASH):
            problem = describe_entry(directory / name)
            if problem == "is missing":
                raise BackupCorrupt(f"{where} has a missing or empty manifest ({name} is missing); it cannot be trusted or restored")
            if problem:
                raise BackupCorrupt(f"{where}: {name} {problem}; it cannot be trusted or restored")
        try:
            data = read_regular_file(directory / MANIFEST)
            recorded = read_regular_file(directory / MANIFEST_HASH)
        except OSError:
            raise BackupCorrupt(f"{where} has a missing or empty manifest; it cannot be trusted or restored") from None
        signature = None
        if self.verifier is not None:
            try:
                signature = (directory / MANIFEST_SIGNATURE).read_bytes()
            except FileNotFoundError:
                pass
            except OSError:
                raise BackupCorrupt(f"backup {backup_id}: {MANIFEST_SIGNATURE} cannot be read; it cannot be trusted "
                                    "or restored") from None
        manifest = validated_manifest(backup_id, data, recorded, verifier=self.verifier, signature=signature)
        self._check_contents(directory, manifest, where)
        return manifest

    def read_manifests(self) -> dict[str, Manifest | Failure]:
        """Every finished backup's manifest, oldest first, or why it cannot be trusted."""
        found: dict[str, Manifest | Failure] = {}
        for backup_id in self.backup_ids():
            try:
                found[backup_id] = self.read_manifest(backup_id)
            except Failure as exc:
                found[backup_id] = exc
        return found

    def manifest_files(self, backup_id: str) -> dict[str, bytes]:
        """The manifest, its hash and its signature (when there is one) exactly as stored:
        what a copy carries over byte for byte (integrity.backups.copy)."""
        directory = self.path_of(backup_id)
        names = (MANIFEST, MANIFEST_HASH, MANIFEST_SIGNATURE)
        return {name: read_regular_file(directory / name) for name in names if (directory / name).exists()}

    def _check_contents(self, directory: Path, manifest: Manifest, where: str) -> None:
        """Exactly the manifest, its hash, an optional signature and the listed files, each a
        regular file: anything else (a stray file, a second data file, a directory, a
        symbolic link to a copy elsewhere) means someone changed a backup that never changes."""
        listed = {entry.name for entry in manifest.files}
        try:
            present = set(os.listdir(directory))
        except OSError as exc:
            raise BackupCorrupt(f"{where} cannot be read ({exc.strerror})") from None
        stray = unlisted_names(manifest, present)
        if stray:
            raise BackupCorrupt(stray_text(where, stray))
        for name in sorted(listed | ({MANIFEST_SIGNATURE} & present)):
            problem = describe_entry(directory / name)
            if problem:
                raise BackupCorrupt(f"{where}: {name} {problem}; it cannot be trusted or restored")

    # ------------------------------------------------------------- journal

    def append(self, backup_id: str, event: Event | str, detail: dict[str, Any] | None = None) -> JournalEntry:
        """Record one event: under an flock on the journal, on a fresh line (a line torn by
        a crash is closed first, so it never swallows this one), every byte written
        (a short write is continued, a failed one raised), then fsynced."""
        entry = new_journal_entry(backup_id, event, detail)
        line = entry.to_line()
        if entry.event not in (Event.PINNED, Event.UNPINNED):  # a person re-pinning starts a lost journal again
            self._refuse_lost_journal(besides=backup_id)
        try:
            descriptor = os.open(self.journal_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._journal_unwritable(exc) from None
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise RepositoryUnusable(self._journal_unwritable_text("it is not a regular file"))
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # released by close; appenders are brief
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line
            _write_all(descriptor, line)
            os.fsync(descriptor)
        except OSError as exc:
            raise self._journal_unwritable(exc) from None
        finally:
            os.close(descriptor)
        return entry

    def _journal_unwritable(self, exc: OSError) -> RepositoryUnusable:
        problem = describe_entry(self.journal_path)
        if exc.errno == errno.ELOOP or (problem and problem != "is missing"):
            return RepositoryUnusable(self._journal_unwritable_text(f"it {problem}"))
        return RepositoryUnusable(self._journal_unwritable_text(exc.strerror or str(exc)))

    def _journal_unwritable_text(self, why: str) -> str:
        return (f"cannot record in the backup journal {self.journal_path}: {why}; events written elsewhere would be "
                "lost (pins among them): make it the regular, writable file it was (move the damaged one aside and "
                "put the journal back), then run again")

    def require_journal_writable(self, *, automatic: bool = True) -> None:
        """Before work whose outcome must be journalled: fail now, not after the work.
        `automatic` work (verify, create) also refuses to start a lost journal again."""
        problem = describe_entry(self.journal_path)
        if problem and problem != "is missing":
            raise RepositoryUnusable(self._journal_unwritable_text(f"it {problem}"))
        if automatic:
            self._refuse_lost_journal(besides=None)

    def _refuse_lost_journal(self, *, besides: str | None) -> None:
        """A journal that vanished or was emptied while backups exist is not started again
        by an automatic event (a scheduled verify): the new one would hold none of the old
        pins, and retention would read that as "nothing pinned". A person re-pinning
        (`backup pin`/`unpin`) starts it again knowingly."""
        try:
            if os.lstat(self.journal_path).st_size > 0:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return  # not a readable file: the caller's own checks say what is wrong
        others = [b for b in self.backup_ids() if b != besides]
        if others:
            raise RepositoryUnusable(self._journal_unwritable_text(
                f"it is missing or empty while the repository holds {len(others)} other backup(s), so their pins "
                "and verifications are lost; put it back if it was moved, otherwise re-pin what must be kept with "
                "`integrity backup pin` (which starts a new journal) before anything else is recorded"
            ))

    def read_journal(self) -> JournalContents:
        """Every readable event, oldest first, and what could not be read: a bad line is
        skipped (the lines after it still count), a journal that is not a regular file is
        not read at all (a symlink to /dev/null reads as empty: every pin gone)."""
        problem = describe_entry(self.journal_path)
        if problem == "is missing":
            count = len(self.backup_ids())
            if not count:
                return JournalContents(())
            return JournalContents((), (f"{JOURNAL} is missing while the repository holds {count} backup(s): their pins and "
                                        "verifications are gone; put it back if it was moved, otherwise re-pin what must be "
                                        "kept with `integrity backup pin` (which starts a new journal)",))
        if problem:
            return JournalContents((), (f"{JOURNAL} {problem}: its events cannot be read; make it the regular file it was",))
        try:
            data = read_regular_file(self.journal_path)
        except OSError as exc:
            return JournalContents((), (f"{JOURNAL} cannot be read: {exc.strerror or exc}",))
        entries, problems = [], []
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            last = number == len(lines)
            if not raw.strip():
                continue
            try:
                entries.append(parse_journal_line(raw))
            except ValueError as exc:
                why = "is incomplete (torn by a crash mid-append)" if last else str(exc)
                problems.append(f"{JOURNAL} line {number} {why}; it was skipped")
        if not entries and not problems and self.backup_ids():
            problems.append(f"{JOURNAL} holds no events while the repository holds {len(self.backup_ids())} backup(s): "
                            "it was emptied; put it back if you can, otherwise re-pin what must be kept with "
                            "`integrity backup pin` (which starts a new journal)")
        return JournalContents(tuple(entries), tuple(problems))

    # ------------------------------------------------------------- locks

    @contextmanager
    def writer_lock(self, *, command: str, wait_seconds: float) -> Iterator[None]:
        """One writer (create, prune, restore) per repository at a time. The repository must
        exist: only `integrity init` creates one (a path on an unmounted share must fail,
        not fill the root file system)."""
        self.require_exists()
        self.require_journal_writable(automatic=False)  # a writer journals what it did (a pin, a safety backup)
        self._make_locks_dir()
        with file_lock(self.locks_dir / "writer.lock", exclusive=True, wait_seconds=wait_seconds,
                       command=command, what=f"backup repository {self.root}"):
            yield

    def _make_locks_dir(self) -> None:
        try:
            self.locks_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise RepositoryUnusable(f"cannot use {self.locks_dir}: {exc.strerror}; it must be a writable directory "
                                     "(move whatever is there aside)") from None

    @contextmanager
    def reading(self, backup_id: str, *, command: str, wait_seconds: float = 0) -> Iterator[None]:
        """A shared hold on one backup: prune skips it while anyone reads it."""
        self._make_locks_dir()
        with file_lock(self.locks_dir / f"backup-{backup_id}.lock", exclusive=False,
                       wait_seconds=wait_seconds, command=command, what=f"backup {backup_id}"):
            yield

    @contextmanager
    def deleting(self, backup_id: str, *, command: str) -> Iterator[None]:
        """An exclusive hold on one backup, taken without waiting (LockHeld when read)."""
        with file_lock(self.locks_dir / f"backup-{backup_id}.lock", exclusive=True,
                       wait_seconds=0, command=command, what=f"backup {backup_id}"):
            yield


def _remove_entry(path: Path, *, strict: bool = False) -> None:
    """A directory tree, or a symbolic link or file as itself: a damaged backup replaced by
    a link to a copy elsewhere loses the link, never what it points at."""
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, ignore_errors=not strict)


def _write_all(descriptor: int, data: bytes) -> None:
    """os.write may write less than asked (a signal, a full disk on the way): continue
    from where it stopped; a write of nothing is an error, never a silent loss."""
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        if written <= 0:
            raise OSError(errno.EIO, "the journal write wrote nothing")
        view = view[written:]
