"""The backup repository on disk: layout, ids, manifests and the append-only journal.

    <repository>/
      <id>/                    a finished backup, immutable once renamed into place:
        data.<kind>.zst          the data file, zstd-compressed
        manifest.json            written last: what the backup holds and every file's hash
        manifest.sha256          the manifest's own hash, `sha256sum -c` format
      .tmp-<id>/               a backup being written (or left by a killed run)
      journal.jsonl            what happened later: verifications, pins, failures
      locks/                   writer.lock, backup-<id>.lock and their holder notes

Backup directories never change after the rename; everything learnt later goes to the
journal, one JSON object per line, appended and fsynced (a torn last line from a crash
is ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from game_core.errors import PreconditionFailed
from integrity.errors import VerificationFailed
from integrity.locks import file_lock

MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
MANIFEST_FORMAT = 1
TEMP_PREFIX = ".tmp-"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


class BackupNotFound(PreconditionFailed):
    """No backup has that id (or the repository is empty)."""


class BackupCorrupt(VerificationFailed):
    """A manifest or data file does not match its hash, or does not decompress."""


class RepositoryUnusable(PreconditionFailed):
    """The repository is missing, unwritable or full."""


def new_backup_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def backup_time(backup_id: str) -> datetime:
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FileEntry:
    name: str
    kind: str  # "sqlite-db" or "pg-custom"
    size: int  # bytes on disk (compressed)
    sha256: str  # of the bytes on disk
    raw_size: int  # bytes after decompression
    raw_sha256: str  # of the bytes after decompression
    compression: str = "zstd"


@dataclass(frozen=True)
class Manifest:
    id: str
    engine: str
    created_at: str
    label: str | None
    source_url: str  # masked
    source_path: str | None
    source_identity: str | None
    revision: str | None
    tables: dict[str, dict[str, Any]]  # table -> {"rows": n, "aggregates": {...}}
    files: tuple[FileEntry, ...]
    tool: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    # Why the backup looked implausible when it was taken (empty: plausible; None: taken
    # before plausibility was checked). See integrity/backups/plausibility.py.
    suspect_reasons: list[str] | None = None
    # "backup" (made by `backup create` or a job), "safety" (taken by a restore of live
    # before its swap: restored only when named by id), "check" (`backup check`'s test).
    purpose: str = "backup"
    source: dict[str, Any] = field(default_factory=dict)  # host, port, database, system identifier or path

    def to_json(self) -> bytes:
        document = dict(self.__dict__)
        document["files"] = [entry.__dict__ for entry in self.files]
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        document = json.loads(data)
        document["files"] = tuple(FileEntry(**entry) for entry in document["files"])
        return cls(**document)

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    def row_counts(self) -> dict[str, int]:
        return {table: info["rows"] for table, info in self.tables.items()}


@dataclass(frozen=True)
class JournalEntry:
    at: str
    backup_id: str
    event: str  # see EVENTS
    detail: dict[str, Any]


# What the journal records about a backup after it was written.
EVENTS = (
    "intact",  # quick verification passed (hashes, decompression)
    "corrupt",  # quick verification failed
    "deep_verified",  # restored into scratch, engine check, counts, drift passed
    "deep_failed",  # deep verification failed
    "clean",  # the audits passed on the restored copy
    "dirty",  # the audits found error-severity violations
    "pinned",  # kept out of retention (detail: until, or null for ever)
    "unpinned",
    "pruned",  # deleted by retention
    "drilled",  # restored into scratch by `integrity drill` (detail: its summary)
    "failed",  # a restore or drill of it failed verification (never cleared)
    "suspect",  # found implausible after it was written (detail: reasons)
)


class Repository:
    """One backup repository directory."""

    def __init__(self, root: Path):
        self.root = root
        self.backups_dir = root
        self.journal_path = root / "journal.jsonl"
        self.locks_dir = root / "locks"

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
        if not ID_PATTERN.match(backup_id or ""):
            raise BackupNotFound(
                f"{backup_id!r} is not a backup id (like 20261127T030118Z-a1b2c3); list them with `integrity backup list`"
            )
        return self.backups_dir / backup_id

    def temp_path(self, backup_id: str) -> Path:
        return self.backups_dir / f"{TEMP_PREFIX}{backup_id}"

    def backup_ids(self) -> list[str]:
        """Finished backups (renamed into place), oldest first."""
        if not self.backups_dir.is_dir():
            return []
        return sorted(p.name for p in self.backups_dir.iterdir() if p.is_dir() and ID_PATTERN.match(p.name))

    def leftovers(self) -> list[Path]:
        """Directories of killed or failed runs; only prune, holding the writer lock, removes them."""
        if not self.backups_dir.is_dir():
            return []
        return sorted(p for p in self.backups_dir.iterdir() if p.name.startswith(TEMP_PREFIX))

    # ------------------------------------------------------------- manifests

    def read_manifest(self, backup_id: str) -> Manifest:
        """The manifest, after checking it against manifest.sha256 (invariant 4)."""
        directory = self.path_of(backup_id)
        if not directory.is_dir():
            raise BackupNotFound(f"no backup {backup_id} in {self.root}; list them with `integrity backup list`")
        try:
            data = (directory / MANIFEST).read_bytes()
            recorded = (directory / MANIFEST_HASH).read_text(encoding="utf-8").split()[0]
        except (OSError, IndexError):
            raise BackupCorrupt(f"backup {backup_id} has a missing or empty manifest; it cannot be trusted or restored") from None
        if sha256_bytes(data) != recorded:
            raise BackupCorrupt(f"backup {backup_id}: manifest.json does not match manifest.sha256; it was edited or damaged")
        try:
            return Manifest.from_json(data)
        except (ValueError, TypeError, KeyError):
            raise BackupCorrupt(f"backup {backup_id}: manifest.json is not a manifest this tool can read") from None

    # ------------------------------------------------------------- journal

    def append(self, backup_id: str, event: str, detail: dict[str, Any] | None = None) -> JournalEntry:
        assert event in EVENTS, event
        entry = JournalEntry(
            at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            backup_id=backup_id,
            event=event,
            detail=detail or {},
        )
        line = (json.dumps(entry.__dict__, sort_keys=True, default=str) + "\n").encode("utf-8")
        descriptor = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)  # one write of one line: appends do not interleave
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return entry

    def journal(self) -> list[JournalEntry]:
        if not self.journal_path.exists():
            return []
        entries = []
        with self.journal_path.open("rb") as handle:
            for raw in handle:
                try:
                    entries.append(JournalEntry(**json.loads(raw)))
                except (ValueError, TypeError):
                    continue  # a line torn by a crash mid-append
        return entries

    # ------------------------------------------------------------- locks

    @contextmanager
    def writer_lock(self, *, command: str, wait_seconds: float) -> Iterator[None]:
        """One writer (create, prune, restore) per repository at a time. The repository must
        exist: only `integrity init` creates one (a path on an unmounted share must fail,
        not fill the root file system)."""
        self.require_exists()
        self.locks_dir.mkdir(exist_ok=True)
        with file_lock(self.locks_dir / "writer.lock", exclusive=True, wait_seconds=wait_seconds,
                       command=command, what=f"backup repository {self.root}"):
            yield

    @contextmanager
    def reading(self, backup_id: str, *, command: str, wait_seconds: float = 0) -> Iterator[None]:
        """A shared hold on one backup: prune skips it while anyone reads it."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.locks_dir / f"backup-{backup_id}.lock", exclusive=False,
                       wait_seconds=wait_seconds, command=command, what=f"backup {backup_id}"):
            yield

    @contextmanager
    def deleting(self, backup_id: str, *, command: str) -> Iterator[None]:
        """An exclusive hold on one backup, taken without waiting (LockHeld when read)."""
        with file_lock(self.locks_dir / f"backup-{backup_id}.lock", exclusive=True,
                       wait_seconds=0, command=command, what=f"backup {backup_id}"):
            yield

