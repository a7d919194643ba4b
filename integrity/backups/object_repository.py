"""A backup repository on S3-compatible object storage: the same backups, manifests,
journal and guarantees as a directory (integrity.backups.repository), on objects.

    <prefix>/
      repository.json              written by `integrity init`: this prefix is a repository
      <id>/data.<kind>.zst           uploaded first (multipart, a SHA-256 per part)
      <id>/manifest.sha256           then the manifest's hash (and manifest.sig)
      <id>/manifest.json             created last and create-only: the backup's commit
      journal/<time>-<random>-<sha256>.json   one immutable object per event (its hash's start in its name)
      journal/segment-<time>-<random>-<sha256>.jsonl   events folded together by prune
      locks/writer.json              the writer lease; locks/read-<id>-<random>.json read leases

Object storage has no rename, so the manifest is the commit: a backup exists exactly
when its `manifest.json` does, and it is created with `If-None-Match: *`, so no run ever
overwrites a backup (two hosts with the same id: one wins, the other fails). Objects under
an id without a manifest are an upload in progress or killed; listings leave them out and
prune removes them (and aborts incomplete multipart uploads) under the writer lease.
Everything read is checked as on a directory: the manifest against its hash and
signature, exactly its listed objects, every data object's SHA-256 as it streams.

New backups are written in a local staging directory under the state directory (the
engines write files); their upload runs while create reads them back to check them, and
the manifest is created only after both.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from game_core.errors import Failure
from integrity.backups.format import (
    JOURNAL,
    MANIFEST,
    MANIFEST_HASH,
    MANIFEST_SIGNATURE,
    TEMP_PREFIX,
    BackupCorrupt,
    BackupNotFound,
    Event,
    JournalContents,
    JournalEntry,
    Manifest,
    RepositoryUnusable,
    is_backup_id,
    new_journal_entry,
    parse_journal_line,
    stray_text,
    unlisted_names,
    validated_manifest,
)
from integrity.backups.records import JournalRecords
from integrity.crashpoints import crash_point
from integrity.storage import leases
from integrity.storage.location import S3Url
from integrity.storage.s3 import ObjectExists, ObjectLocked, ObjectMissing, ObjectStore, Retention, StoredObject

MARKER = "repository.json"
MARKER_FORMAT = 1
JOURNAL_DIR = "journal/"
LOCKS_DIR = "locks/"
WRITER_LEASE = f"{LOCKS_DIR}writer.json"
READ_WORKERS = 8  # journal events and manifests are small: latency, not bandwidth, bounds reading them
EVENT_DIGEST_DIGITS = 16
SEGMENT_PREFIX = "segment-"  # journal/segment-<newest stamp>-<random>-<digest>.jsonl: compacted events
COMPACT_AFTER_EVENTS = 500  # about a month of hourly backups' events: a status then reads ~500 objects at most


def _event_digest(data: bytes) -> str:
    """The start of a journal event's SHA-256, carried in its object's name: an event has
    no manifest to hold its hash, and a flipped byte often leaves valid JSON."""
    import hashlib

    return hashlib.sha256(data).hexdigest()[:EVENT_DIGEST_DIGITS]


def _parses(line: bytes) -> bool:
    try:
        parse_journal_line(line)
    except ValueError:
        return False
    return True


class ObjectFile:
    """A data file of a backup, read as a stream (integrity.backups.archive checks it)."""

    def __init__(self, store: ObjectStore, name: str):
        self.store = store
        self.name = name

    @contextmanager
    def open(self, where: str) -> Iterator[tuple[Any, int]]:
        try:
            with self.store.reading(self.name) as (stream, size):
                yield stream, size
        except ObjectMissing:
            raise BackupCorrupt(f"{where} is missing") from None


class ObjectRepository(JournalRecords):
    """One backup repository under a bucket's prefix."""

    remote = True

    def __init__(self, store: ObjectStore, *, staging_root: Path, verifier=None, retention_mode: str = "",
                 retention_days: int = 0):
        self.store = store
        self.verifier = verifier
        self.staging_root = staging_root
        self.retention_mode = retention_mode.upper()
        self.retention_days = retention_days
        self._uploads: dict[Path, tuple] = {}  # staging directory -> (pool, future) of begin_upload

    @classmethod
    def of(cls, settings, *, verifier=None, url: S3Url | None = None) -> "ObjectRepository":
        s3 = settings.backups.s3
        store = ObjectStore(url or settings.backups.repository, endpoint_url=s3.endpoint_url, region=s3.region,
                            path_style=s3.path_style)
        return cls(store, staging_root=settings.state.dir / "uploads", verifier=verifier,
                   retention_mode=s3.object_lock_mode, retention_days=s3.object_lock_days)

    # ------------------------------------------------------------- where

    @property
    def location(self) -> str:
        return self.store.display().rstrip("/")

    @property
    def journal_location(self) -> str:
        return self.store.display(JOURNAL_DIR)

    def where(self, backup_id: str) -> str:
        self._require_id(backup_id)
        return self.store.display(f"{backup_id}/")

    def file_of(self, backup_id: str, name: str) -> ObjectFile:
        self._require_id(backup_id)
        return self.readable(backup_id, name, ObjectFile(self.store, f"{backup_id}/{name}"))  # `.age`: with its keys

    @staticmethod
    def _require_id(backup_id: str) -> None:
        if not is_backup_id(backup_id):
            raise BackupNotFound(
                f"{backup_id!r} is not a backup id (like 20261127T030118Z-a1b2c3); list them with `integrity backup list`"
            )

    # ------------------------------------------------------------- the repository itself

    def ensure(self) -> None:
        """Mark the prefix as a repository (the bucket itself is the operator's to create)."""
        marker = json.dumps({"format": MARKER_FORMAT, "kind": "integrity backup repository"}).encode()
        try:
            self.store.put(MARKER, marker, create_only=True)
        except ObjectExists:
            pass

    def exists(self) -> bool:
        return self.store.exists(MARKER)

    def require_exists(self) -> None:
        if not self.exists():
            self.store.bucket_facts()  # a missing bucket or no access says so, before "no marker"
            raise RepositoryUnusable(
                f"backup repository {self.location} does not exist (no {MARKER} under the prefix); check its location "
                "([backups] repository, INTEGRITY_BACKUPS__REPOSITORY or a [[repositories]] location), or create it "
                "with `integrity init`"
            )

    def _objects_by_backup(self) -> dict[str, dict[str, int]]:
        """Every object named like `<id>/...`: {id: {name inside the backup: size}}."""
        return {backup_id: {name: stored.size for name, stored in objects.items()}
                for backup_id, objects in self._listed_by_backup().items()}

    def _listed_by_backup(self) -> dict[str, dict[str, StoredObject]]:
        """Every object named like `<id>/...`: {id: {name inside the backup: as listed}}."""
        grouped: dict[str, dict[str, StoredObject]] = {}
        for stored in self.store.list():
            head, slash, rest = stored.key.partition("/")
            if slash and is_backup_id(head):
                grouped.setdefault(head, {})[rest] = stored
        return grouped

    def backup_ids(self) -> list[str]:
        """Committed backups (their manifest created), oldest first."""
        return sorted(i for i, names in self._objects_by_backup().items() if MANIFEST in names)

    def has_backup(self, backup_id: str) -> bool:
        self._require_id(backup_id)
        return any(self.store.list(f"{backup_id}/"))

    def leftover_names(self) -> list[str]:
        """Uploads in progress or killed (objects without a manifest), incomplete multipart
        uploads and local staging directories of killed runs."""
        names = {i for i, objects in self._objects_by_backup().items() if MANIFEST not in objects}
        names |= {name.partition("/")[0] for name, _ in self.store.incomplete_uploads()}
        if self.staging_root.is_dir():
            names |= {p.name for p in self.staging_root.iterdir() if p.name.startswith(TEMP_PREFIX)}
        return sorted(names)

    # ------------------------------------------------------------- manifests

    def read_manifest(self, backup_id: str, listed: dict[str, StoredObject] | None = None) -> Manifest:
        """`listed`: the backup's objects from a listing the caller just made
        (read_manifests), else listed here."""
        self._require_id(backup_id)
        where = f"backup {backup_id}"
        if listed is None:
            listed = {stored.key.partition("/")[2]: stored for stored in self.store.list(f"{backup_id}/")}
        present = {name: stored.size for name, stored in listed.items()}
        if MANIFEST not in present:
            pending = " (objects of an unfinished upload are there: prune removes them)" if present else ""
            raise BackupNotFound(f"no backup {backup_id} in {self.location}{pending}; list them with `integrity backup list`")
        if MANIFEST_HASH not in present:
            raise BackupCorrupt(f"{where} has a missing or empty manifest ({MANIFEST_HASH} is missing); it cannot be "
                                "trusted or restored")
        try:
            data = self.store.get_listed(listed[MANIFEST])
            recorded = self.store.get_listed(listed[MANIFEST_HASH])
            signature = None
            if self.verifier is not None and MANIFEST_SIGNATURE in present:
                signature = self.store.get_listed(listed[MANIFEST_SIGNATURE])
        except ObjectMissing:
            raise BackupCorrupt(f"{where} has a missing or empty manifest; it cannot be trusted or restored") from None
        manifest = validated_manifest(backup_id, data, recorded, verifier=self.verifier, signature=signature)
        stray = unlisted_names(manifest, set(present))
        if stray:
            raise BackupCorrupt(stray_text(where, stray))
        for entry in manifest.files:
            if entry.name not in present:
                raise BackupCorrupt(f"{where}: {entry.name} is missing; it cannot be trusted or restored")
            if present[entry.name] != entry.size:  # the listing gives sizes: a truncation shows without a read
                raise BackupCorrupt(f"{where}: {entry.name} is {present[entry.name]} bytes, the manifest says "
                                    f"{entry.size} (truncated or replaced); it cannot be trusted or restored")
        return manifest

    def read_manifests(self) -> dict[str, Manifest | Failure]:
        """Every committed backup's manifest (or why it cannot be trusted), from one listing
        and READ_WORKERS reads at a time: a catalogue of hundreds of backups is hundreds of
        small GETs, bound by latency, not one listing per backup one after another."""
        grouped = self._listed_by_backup()
        committed = sorted(i for i, names in grouped.items() if MANIFEST in names)

        def read(backup_id: str) -> Manifest | Failure:
            try:
                return self.read_manifest(backup_id, grouped[backup_id])
            except Failure as exc:
                return exc

        with ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="manifest-read") as pool:
            return dict(zip(committed, pool.map(read, committed)))

    def manifest_files(self, backup_id: str) -> dict[str, bytes]:
        """The manifest, its hash and its signature (when there is one) exactly as stored."""
        present = {stored.key.partition("/")[2] for stored in self.store.list(f"{backup_id}/")}
        return {name: self.store.get(f"{backup_id}/{name}")
                for name in (MANIFEST, MANIFEST_HASH, MANIFEST_SIGNATURE) if name in present}

    # ------------------------------------------------------------- writing backups

    def staging(self, backup_id: str) -> Path:
        """A local directory under the state directory: the engines write files, which
        are checked there before anything is uploaded."""
        self.staging_root.mkdir(parents=True, exist_ok=True)
        temp = self.staging_root / f"{TEMP_PREFIX}{backup_id}"
        temp.mkdir()
        return temp

    def begin_upload(self, backup_id: str, staging: Path, files) -> None:
        """Start uploading the data files while create reads them back to check them: the
        upload and the check overlap (both read the staging files, from the page cache), and
        `publish` commits only after both, so nothing unverified becomes visible."""
        if self.store.list(f"{backup_id}/"):  # another host's backup of this id: upload nothing over its objects
            raise self._id_taken(backup_id)
        retention = self.retention()

        def upload() -> None:
            for entry in files:
                self.store.upload(f"{backup_id}/{entry.name}", staging / entry.name, retention=retention)

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._uploads[staging] = (pool, pool.submit(upload))

    def _finish_upload(self, staging: Path) -> bool:
        """Wait for the upload begun for `staging`: True when one ran (raising its error)."""
        started = self._uploads.pop(staging, None)
        if started is None:
            return False
        pool, future = started
        try:
            future.result()
        finally:
            pool.shutdown(wait=True)
        return True

    def discard(self, staging: Path) -> None:
        try:
            self._finish_upload(staging)  # never remove files an upload still reads
        except Exception:  # noqa: BLE001 - the run is failing already; its objects are leftovers for prune
            pass
        shutil.rmtree(staging, ignore_errors=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.staging_root if self.staging_root.is_dir() else self.staging_root.parent).free

    def retention(self) -> Retention | None:
        """The Object Lock put on a new backup's objects, when configured."""
        if not self.retention_mode or not self.retention_days:
            return None
        return Retention(self.retention_mode, datetime.now(timezone.utc) + timedelta(days=self.retention_days))

    def publish(self, backup_id: str, staging: Path, manifest: Manifest) -> None:
        """Upload a checked backup: its data objects, the manifest's hash and signature,
        each size compared with the manifest, then the manifest itself, create-only (the
        commit). A run killed before that leaves objects no listing shows."""
        retention = self.retention()
        if not self._finish_upload(staging):  # begun while create checked the files, or not at all
            if self.store.list(f"{backup_id}/"):  # another host's backup of this id: upload nothing over its objects
                raise self._id_taken(backup_id)
            for entry in manifest.files:
                self.store.upload(f"{backup_id}/{entry.name}", staging / entry.name, retention=retention)
        for name in (MANIFEST_HASH, MANIFEST_SIGNATURE):
            if (staging / name).exists():
                self.store.put(f"{backup_id}/{name}", (staging / name).read_bytes(), retention=retention)
        crash_point("create:uploaded")  # data, hash and signature up, no manifest: invisible
        uploaded = {stored.key.partition("/")[2]: stored.size for stored in self.store.list(f"{backup_id}/")}
        for entry in manifest.files:
            if uploaded.get(entry.name) != entry.size:
                raise BackupCorrupt(f"backup {backup_id}: {entry.name} is {uploaded.get(entry.name)} bytes on "
                                    f"{self.location} after its upload, the manifest says {entry.size}")
        try:
            self.store.put(f"{backup_id}/{MANIFEST}", (staging / MANIFEST).read_bytes(), create_only=True,
                           retention=retention)
        except ObjectExists:
            raise self._id_taken(backup_id) from None
        self.discard(staging)

    def _id_taken(self, backup_id: str) -> RepositoryUnusable:
        return RepositoryUnusable(f"backup {backup_id} already exists in {self.location} (another host wrote the same "
                                  "id); nothing was overwritten: run again for a new id")

    def publish_server_side(self, source: "ObjectRepository", manifest: Manifest, manifest_files: dict[str, bytes]) -> bool:
        """Copy a backup from another bucket on the same server without its bytes crossing
        this host: each data object copied by the server, which returns the SHA-256 of
        what it wrote (compared with the manifest: the destination's bytes are checked, not
        only the source's), then the manifest's hash and signature, then the manifest,
        create-only, as any publish. False (nothing committed, objects removed) when the
        server gave no checksum: the caller copies through this host instead."""
        retention = self.retention()
        if retention is not None:
            # A locked object must arrive with its checksum header, which a CopyObject cannot
            # carry on every server (moto refuses it): upload through this host instead.
            return False
        backup_id = manifest.id
        for entry in manifest.files:
            name = f"{backup_id}/{entry.name}"
            written = self.store.copy_from(source.store, name)
            if written is None or written != entry.sha256:
                for stored in self.store.list(f"{backup_id}/"):
                    self.store.delete(stored.key)
                if written is None:
                    return False
                raise BackupCorrupt(f"backup {backup_id}: {entry.name} copied to {self.location} does not match its "
                                    "SHA-256 in the manifest (the source is damaged); nothing was copied")
        for name in (MANIFEST_HASH, MANIFEST_SIGNATURE):
            if name in manifest_files:
                self.store.put(f"{backup_id}/{name}", manifest_files[name])
        try:
            self.store.put(f"{backup_id}/{MANIFEST}", manifest_files[MANIFEST], create_only=True)
        except ObjectExists:
            raise RepositoryUnusable(f"backup {backup_id} already exists in {self.location}; nothing was overwritten") from None
        return True

    def locked_until(self, backup_id: str) -> datetime | None:
        """When Object Lock lets this backup's manifest be deleted; None when it is not locked."""
        try:
            head = self.store.head(f"{backup_id}/{MANIFEST}")
        except ObjectMissing:
            return None
        until = head.get("ObjectLockRetainUntilDate")
        return until if until and until > datetime.now(timezone.utc) else None

    def remove_backup(self, backup_id: str) -> None:
        """The manifest first (the backup is gone from every listing at once), then its
        other objects; a crash between leaves objects prune removes later."""
        self._require_id(backup_id)
        try:
            self.store.delete(f"{backup_id}/{MANIFEST}")
        except ObjectLocked:
            raise RepositoryUnusable(f"backup {backup_id} is under Object Lock retention in {self.location}; "
                                     "it cannot be deleted yet") from None
        for stored in self.store.list(f"{backup_id}/"):
            self.store.delete(stored.key)

    def remove_leftovers(self) -> list[str]:
        """Under the writer lease: abort incomplete multipart uploads, remove the objects
        of uploads without a manifest and local staging of killed runs. Objects still
        under Object Lock stay (and are listed again next time)."""
        removed = set()
        for name, upload_id in self.store.incomplete_uploads():
            self.store.abort_upload(name, upload_id)
            removed.add(name.partition("/")[0])
        for backup_id, objects in self._objects_by_backup().items():
            if MANIFEST in objects:
                continue
            try:
                for name in objects:
                    self.store.delete(f"{backup_id}/{name}")
                removed.add(backup_id)
            except ObjectLocked:
                continue
        if self.staging_root.is_dir():
            for path in self.staging_root.iterdir():
                if path.name.startswith(TEMP_PREFIX):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.add(path.name)
        return sorted(removed)

    # ------------------------------------------------------------- journal

    def append(self, backup_id: str, event: Event | str, detail: dict[str, Any] | None = None) -> JournalEntry:
        """One immutable object per event, created under a new name: no append to race,
        nothing an event can tear or overwrite."""
        entry = new_journal_entry(backup_id, event, detail)
        if entry.event not in (Event.PINNED, Event.UNPINNED):
            self._refuse_lost_journal(besides=backup_id)
        stamp = datetime.fromisoformat(entry.at).strftime("%Y%m%dT%H%M%S.%fZ")
        line = entry.to_line()
        self.store.put(f"{JOURNAL_DIR}{stamp}-{secrets.token_hex(4)}-{_event_digest(line)}.json", line, create_only=True)
        return entry

    def require_journal_writable(self, *, automatic: bool = True) -> None:
        if automatic:
            self._refuse_lost_journal(besides=None)

    def _refuse_lost_journal(self, *, besides: str | None) -> None:
        """As on a directory: with backups there and no event at all, the journal was lost;
        an automatic event does not start a new one (it would hold none of the old pins)."""
        if self.store.list(JOURNAL_DIR):
            return
        others = [b for b in self.backup_ids() if b != besides]
        if others:
            raise RepositoryUnusable(
                f"cannot record in the backup journal {self.journal_location}: it holds no events while the "
                f"repository holds {len(others)} other backup(s), so their pins and verifications are lost; re-pin "
                "what must be kept with `integrity backup pin` (which starts a new journal) before anything else is recorded"
            )

    def read_journal(self) -> JournalContents:
        objects = self.store.list(JOURNAL_DIR)
        if not objects:
            count = len(self.backup_ids())
            if not count:
                return JournalContents(())
            return JournalContents((), (f"{JOURNAL} (the events under {self.journal_location}) is missing while the "
                                        f"repository holds {count} backup(s): their pins and verifications are gone; "
                                        "re-pin what must be kept with `integrity backup pin` (which starts a new journal)",))
        lines, problems = self._journal_lines(objects)
        entries, seen = [], set()
        for name, line in lines:
            if line in seen:
                continue  # an event also in a segment (a compaction between its write and its deletes)
            seen.add(line)
            try:
                entries.append(parse_journal_line(line))
            except ValueError as exc:
                problems.append(f"journal event {name} {exc}; it was skipped")
        entries.sort(key=lambda entry: entry.at)
        return JournalContents(tuple(entries), tuple(problems))

    def _journal_lines(self, objects: list[StoredObject]) -> tuple[list[tuple[str, bytes]], list[str]]:
        """(object name, event line) of every journal object whose bytes match the digest in
        its name (an event object holds one line, a segment many), and what did not."""

        def read(stored: StoredObject) -> tuple[str, bytes | None]:
            try:
                return stored.key, self.store.get_listed(stored)
            except ObjectMissing:
                return stored.key, None

        with ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="journal-read") as pool:
            contents = list(pool.map(read, objects))
        lines, problems = [], []
        for name, data in contents:
            if data is None:
                continue  # removed between the listing and the read (compacted): its lines are in a segment
            digest = name.removesuffix(".json").removesuffix(".jsonl").rpartition("-")[2]
            if len(digest) == EVENT_DIGEST_DIGITS and _event_digest(data) != digest:  # names of 8 digits carry none
                problems.append(f"journal event {name} does not match the SHA-256 in its name (damaged or replaced); "
                                "it was skipped")
                continue
            lines.extend((name, line.strip()) for line in data.split(b"\n") if line.strip())
        return lines, problems

    def compact_journal(self, *, at_least: int = COMPACT_AFTER_EVENTS) -> int:
        """Fold the event objects into one segment object once there are `at_least` of them
        (under the writer lease: prune calls it), so that reading the journal stays a few
        requests, not one per event ever recorded. The segment is created (create-only, its
        digest in its name) before any event is deleted: a reader in between sees some
        events twice, and keeps them once. Damaged events stay where they are, reported."""
        events = [s for s in self.store.list(JOURNAL_DIR) if not s.key.startswith(f"{JOURNAL_DIR}{SEGMENT_PREFIX}")]
        if len(events) < at_least:
            return 0
        lines, problems = self._journal_lines(events)
        if not lines:
            return 0
        readable = [(name, line) for name, line in lines if _parses(line)]
        body = b"".join(line + b"\n" for _, line in sorted(readable, key=lambda item: item[0]))
        newest = max(name for name, _ in readable).removeprefix(JOURNAL_DIR).partition("-")[0]
        self.store.put(f"{JOURNAL_DIR}{SEGMENT_PREFIX}{newest}-{secrets.token_hex(4)}-{_event_digest(body)}.jsonl",
                       body, create_only=True)
        for name in sorted({name for name, _ in readable}):
            self.store.delete(name)
        return len(readable)

    # ------------------------------------------------------------- locks

    @contextmanager
    def writer_lock(self, *, command: str, wait_seconds: float) -> Iterator[None]:
        """One writer per repository at a time, across hosts (a lease object)."""
        self.require_exists()
        with leases.lease(self.store, WRITER_LEASE, command=command, mode="exclusive",
                          what=f"backup repository {self.location}", wait_seconds=wait_seconds):
            yield

    # A reader and prune on two hosts each write their intent first and look for the
    # other's second (the server's listings are read-after-write consistent): whichever
    # comes second sees the first, so a backup is never deleted under a reader that
    # started between prune's look and its delete.

    @contextmanager
    def reading(self, backup_id: str, *, command: str, wait_seconds: float = 0) -> Iterator[None]:
        """A read lease on one backup: prune on any host skips it while it is held, and a
        backup prune has begun to delete is refused (LockHeld)."""
        name = f"{LOCKS_DIR}read-{backup_id}-{secrets.token_hex(4)}.json"
        with leases.lease(self.store, name, command=command, mode="shared", what=f"backup {backup_id}",
                          wait_seconds=wait_seconds):
            deleters = leases.live_leases(self.store, f"{LOCKS_DIR}delete-{backup_id}")
            if deleters:
                raise leases.LockHeld(f"backup {backup_id} is being deleted by {leases.describe(deleters[0])}")
            yield

    @contextmanager
    def deleting(self, backup_id: str, *, command: str) -> Iterator[None]:
        """Hold the delete lease on this backup, refused (LockHeld) while anyone holds a
        read lease on it."""
        with leases.lease(self.store, f"{LOCKS_DIR}delete-{backup_id}.json", command=command, mode="exclusive",
                          what=f"backup {backup_id}", wait_seconds=0):
            readers = leases.live_leases(self.store, f"{LOCKS_DIR}read-{backup_id}-")
            if readers:
                raise leases.LockHeld(f"backup {backup_id} locked by {leases.describe(readers[0])}; it is being read")
            yield
