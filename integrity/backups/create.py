"""`integrity backup create`: a consistent online backup, visible only when complete.

DESIGN.md invariant 2, step by step: the engine writes the data files under
`backups/.tmp-<id>/`, each fsynced and hashed as it is written; the manifest is written
last, then its own hash; every file is read back and checked (quick verification)
before the directory is renamed into place and the parent directory fsynced. A run
killed at any point leaves at most a `.tmp-` directory, which `list` ignores, `restore`
cannot name, and `prune` removes.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass

from game_core.db import DatabaseTarget
from game_core.errors import DatabaseMissing, ExitCode, PreconditionFailed
from integrity import __version__
from integrity.backups.archive import check_stored
from integrity.backups.plausibility import Tolerances, assess, assess_against_repository
from integrity.backups.signing import signer_of
from integrity.backups.durable import fsync_directory
from integrity.backups.repository import (
    MANIFEST,
    MANIFEST_HASH,
    MANIFEST_SIGNATURE,
    POINT_IN_TIME,
    Manifest,
    Repository,
    RepositoryUnusable,
    backup_time,
    new_backup_id,
    sha256_bytes,
)
from integrity.crashpoints import crash_point, pause_point
from integrity.db.connect import Database, guarded_target
from integrity.db.engines import SourceState, engine_for
from integrity.db.locks import database_lock
from integrity.progress import NO_PROGRESS, Reporter
from integrity.settings import Settings

COMPRESSION_THREADS = -1  # zstd's own workers, one per core, outside the GIL


@dataclass(frozen=True)
class CreatedBackup:
    manifest: Manifest
    path: str
    seconds: float
    # `backup create --copy`: each copy repository's outcome, {"repository", "state":
    # copied | present | failed, "problem", "exit_code"} (integrity.api.backup_create).
    copies: tuple[dict, ...] = ()

    @property
    def suspect_reasons(self) -> list[str]:
        return list(self.manifest.suspect_reasons or ())

    @property
    def exit_code(self) -> int:
        # A copy that failed is the worse news (the off-host copy is what a lost disk needs);
        # written and intact but implausible is a problem found, and cron must hear of it.
        failed = [c["exit_code"] for c in self.copies if c["state"] == "failed"]
        if failed:
            return max(failed)
        return ExitCode.PROBLEMS_FOUND if self.suspect_reasons else ExitCode.OK

    def summary(self) -> dict:
        return {
            "backup_id": self.manifest.id,
            "size": self.manifest.size,
            "rows": self.manifest.row_counts(),
            "seconds": round(self.seconds, 3),
            "suspect": self.suspect_reasons,
            "copies": {c["repository"]: c["state"] for c in self.copies},
        }


class NotAGameDatabase(PreconditionFailed):
    """The configured database is not the game's (no store identity or revision)."""


def write_file_durably(path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def create_backup(
    settings: Settings,
    *,
    label: str | None = None,
    lock_wait: float = 0,
    command: str = "backup create",
    locks_held: bool = False,
    purpose: str = "backup",
    progress: Reporter = NO_PROGRESS,
    source: DatabaseTarget | None = None,
    point_in_time: dict | None = None,
) -> CreatedBackup:
    """`locks_held`: the caller already holds the repository writer lock and the database
    lock (a restore takes its safety backup inside its own locks; flock and advisory
    locks are per open file or session, so taking them again here would fail).
    `purpose`: "backup", "safety" (a restore's copy of live, which may be of a database
    that is not the game's: it must always be restorable to where it came from) or
    "check" (`backup check`'s test backup) or "point-in-time".
    `source` and `point_in_time` (purpose "point-in-time"): the copy to back up instead of
    live, a point-in-time engine's restore of the guarded database to a moment
    (integrity.recovery.point_in_time), and that origin ({engine, moment, window, asked}),
    recorded in the manifest. The backup is still of the guarded database (its source in
    the manifest, its locks), as it was at that moment."""
    if (purpose == POINT_IN_TIME) != (source is not None and point_in_time is not None):
        raise ValueError("a point-in-time backup needs both its source copy and its point_in_time, and only it")
    repository = Repository.of(settings)
    repository.require_exists()
    signer = signer_of(settings)  # refused (exit 4) before anything is copied; None: signing off
    target = guarded_target(settings)
    copied = Database.of(settings) if source is None else Database.of(settings).beside(source)
    started = time.perf_counter()
    with _locks(repository, target, settings, command=command, lock_wait=lock_wait, held=locks_held):
        if purpose != "safety":
            _require_game_database(copied, target)
        backup_id = _next_backup_id(repository)
        temp = repository.staging(backup_id)
        crash_point("create:started")
        try:
            pause_point("create:started")
            capture = _capture(settings, copied, temp, progress)
            if purpose != "safety" and (capture.identity is None or capture.revision is None):
                raise NotAGameDatabase(_not_the_game(target))
            recorded_source = capture.source if source is None else _as_guarded(capture.source, target)
            suspect_reasons = None if purpose == "safety" else _plausibility(settings, repository, capture, purpose)
            files, encryption = _encrypted(settings, temp, capture.files, progress)
            repository.begin_upload(backup_id, temp, files)  # object storage: uploads while it is verified below
            manifest = Manifest(
                id=backup_id,
                engine=target.kind,
                created_at=backup_time(backup_id).isoformat(),  # one time per backup: its id's, read before the copy
                label=label,
                source_url=target.masked,
                source_path=str(target.sqlite_path) if target.sqlite_path else None,
                source_identity=capture.identity,
                revision=capture.revision,
                tables=capture.tables,
                files=files,
                tool={"name": "integrity", "version": __version__, "host": socket.gethostname(), **capture.tool},
                timings={name: round(value, 3) for name, value in capture.timings.items()},
                suspect_reasons=suspect_reasons,
                purpose=purpose,
                source=recorded_source,
                point_in_time=point_in_time,
                encryption=encryption,
            )
            data = manifest.to_json()
            write_file_durably(temp / MANIFEST, data)
            crash_point("create:manifest-written")
            write_file_durably(temp / MANIFEST_HASH, f"{sha256_bytes(data)}  {MANIFEST}\n".encode())
            if signer is not None:  # before the rename: a signed backup is never visible unsigned
                write_file_durably(temp / MANIFEST_SIGNATURE, signer.signature_file(data))
            fsync_directory(temp)
            # Read everything back before anyone can see it: create verifies its own output.
            # Its size and SHA-256 on disk are enough: the capture decompressed these very
            # bytes as it wrote them (compress_stream), an encrypted file's plaintext was
            # decompressed as it was sealed; a second decompression would prove nothing more.
            with progress.task("verifying the backup", total=sum(e.size for e in manifest.files), unit="bytes") as task:
                for entry in manifest.files:
                    check_stored(temp / entry.name, entry, backup_id=backup_id, advance=task.advance)
            crash_point("create:verified")
            repository.publish(backup_id, temp, manifest)
            crash_point("create:renamed")
        except OSError as exc:
            repository.discard(temp)
            if exc.errno == errno.ENOSPC:
                raise _repository_full(settings, repository) from None
            raise
        except sqlite3.OperationalError as exc:
            # The SQLite copy into the repository reports a full disk as SQLITE_FULL, not ENOSPC.
            repository.discard(temp)
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
                raise _repository_full(settings, repository) from None
            raise
        except BaseException:
            repository.discard(temp)
            raise
        repository.record_quick_check(backup_id, problem=None, by=command)
    return CreatedBackup(manifest=manifest, path=repository.where(backup_id), seconds=time.perf_counter() - started)


@contextmanager
def _locks(repository: Repository, target, settings: Settings, *, command: str, lock_wait: float, held: bool):
    if held:
        yield
        return
    with repository.writer_lock(command=command, wait_seconds=lock_wait), database_lock(
        target, state_dir=settings.state.dir, command=command, wait_seconds=lock_wait
    ):
        yield


def _encrypted(settings: Settings, temp, files, progress: Reporter):
    """With [backups] encrypt_to set, each data file replaced by its age ciphertext
    (integrity.backups.encryption), and the manifest's encryption field; else as captured.
    The plaintext is proven to be what the capture wrote and to decompress whole as it is
    encrypted; the read-back below then checks the ciphertext's hash (no key here)."""
    recipients = settings.backups.encrypt_to
    if not recipients:
        return files, None
    from integrity.backups.encryption import manifest_field, seal_file

    sealed = []
    for entry in files:
        with progress.task(f"encrypting {entry.name}", total=entry.size, unit="bytes") as task:
            sealed.append(seal_file(temp, entry, recipients, advance=task.advance))
    crash_point("create:encrypted")
    return tuple(sealed), manifest_field(recipients)


def _plausibility(settings: Settings, repository: Repository, capture, purpose: str) -> list[str]:
    """The suspect reasons of a new backup. A point-in-time backup is of the past on
    purpose: older rows and fewer of them than the newest backup are what was asked for,
    so only what it must hold on its own is checked (every table with rows has data)."""
    if purpose == POINT_IN_TIME:
        return assess(tables=capture.tables, data_size=0, source=capture.source, previous_restorable=None,
                      previous_any=None, tolerances=Tolerances(shrink=1.0, size_drop=1.0),
                      tables_without_data=capture.tables_without_data)
    return assess_against_repository(
        settings.backups, repository, identity=capture.identity, tables=capture.tables, files=capture.files,
        source=capture.source, tables_without_data=capture.tables_without_data,
    )


def _as_guarded(copied: dict, target: DatabaseTarget) -> dict:
    """The source a point-in-time backup records: the guarded database, not the scratch copy
    it was read from (a file or a scratch cluster gone by now). The next backup of live
    compares its source with this one's, and a restore knows where the backup belongs.
    PostgreSQL's system identifier is kept as read: a physical restore keeps the cluster's."""
    if "path" in copied:  # SQLite records the file
        return {**copied, "path": str(target.sqlite_path.resolve())}
    return {**copied, "host": target.url.host or "local socket", "port": target.url.port or 5432,
            "database": target.url.database}


def _require_game_database(copied: Database, target) -> None:
    """Refuse what is not the game's database before anything is copied, as far as the
    engine can tell before its capture (which checks again on what it copied)."""
    state = engine_for(copied).backup_source_state()
    if state is SourceState.MISSING:
        raise DatabaseMissing(f"database {copied.display} does not exist; nothing to back up (check --database-url)")
    if state is SourceState.NOT_THE_GAME:
        raise NotAGameDatabase(_not_the_game(target))


def _not_the_game(target) -> str:
    return (
        f"{target.display} is not the typing game's database (no store identity or schema revision); "
        "check --database-url / [database] url, or run `integrity init` on an empty database"
    )


def _next_backup_id(repository: Repository) -> str:
    """A new id that sorts after every existing one: ids have one-second resolution and a
    random suffix, so a second backup within the same second waits for the next second
    (under the writer lock) rather than possibly sorting before the first."""
    newest = repository.backup_ids()[-1:]
    backup_id = new_backup_id()
    while newest and backup_id[:16] == newest[0][:16]:
        time.sleep(0.05)
        backup_id = new_backup_id()
    return backup_id


def _capture(settings: Settings, copied: Database, temp, progress: Reporter = NO_PROGRESS):
    return engine_for(copied).backup(
        temp, level=settings.backups.compression_level, threads=COMPRESSION_THREADS, progress=progress,
    )


def _repository_full(settings: Settings, repository: Repository) -> RepositoryUnusable:
    free = repository.free_bytes()
    target = guarded_target(settings)
    needed = target.sqlite_path.stat().st_size * 2 if target.sqlite_path and target.sqlite_path.exists() else None
    need_text = f"about {needed / 1e6:.0f} MB (a copy plus its compressed form)" if needed else "more room"
    return RepositoryUnusable(
        f"the backup repository {repository.location} ran out of space ({free / 1e6:.0f} MB free, needs {need_text}); "
        "the partial backup was removed; free space or set [backups] repository to a larger disk"
    )
