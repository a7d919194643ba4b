"""`integrity snapshot export`: one file holding a consistent copy of live or of a backup,
optionally sanitised, for a CI job to run `migrate dry-run --from-snapshot` on.

The source is only read (DESIGN.md invariant 1): live through a read-only snapshot (SQLite's
backup API in one read transaction; pg_dump's own snapshot), a backup restored into scratch
after its hashes are checked (invariant 4) and under the repository's reader hold (invariant
3). Everything that changes happens on a copy: a temporary file beside the destination
(SQLite) or a scratch database (PostgreSQL), sanitised, then written out under a temporary
name, fsynced, renamed into place and the directory fsynced, so the destination is either
the old file or the complete new one.

`opened_snapshot` is the other way: a snapshot file made ready for a dry run's `--snapshot`
(the SQLite file as it is; a pg_dump archive restored into a scratch database).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from game_core.db import POSTGRESQL, SQLITE, DatabaseTarget, parse_database_url
from game_core.errors import ExitCode, InvalidInput, PreconditionFailed
from integrity.crashpoints import crash_point
from integrity.progress import NO_PROGRESS, Reporter
from integrity.snapshots.sanitize import ColumnReplaced

FORMATS = {SQLITE: "SQLite database file", POSTGRESQL: "pg_dump custom format, uncompressed"}
MIN_KEY_BYTES = 16


class SnapshotFileUnusable(PreconditionFailed):
    """A snapshot file that is missing, of an unknown format, or of the other engine."""


@dataclass(frozen=True)
class SnapshotExport:
    """What `snapshot export` wrote."""

    path: str
    engine: str
    format: str
    source: str  # "live <database>" or "backup <id>"
    backup_id: str | None
    revision: str | None
    store_identity: str | None
    sanitized: bool
    key: str | None  # where the pseudonyms' key came from (never the key itself)
    columns: tuple[ColumnReplaced, ...]
    tables: dict[str, int] = field(default_factory=dict)  # rows per game table in the file
    bytes: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def summary(self) -> dict:
        return {"path": self.path, "engine": self.engine, "source": self.source, "sanitized": self.sanitized,
                "revision": self.revision, "bytes": self.bytes}


def read_key_file(path: Path) -> bytes:
    """The pseudonym key in `path` (at least 16 bytes; surrounding whitespace ignored)."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise InvalidInput(f"--key-file {path}: {exc.strerror}; give a readable file holding the key") from None
    if len(key) < MIN_KEY_BYTES:
        raise InvalidInput(f"--key-file {path} holds {len(key)} bytes; a key needs at least {MIN_KEY_BYTES} "
                           "(e.g. `head -c 32 /dev/urandom | base64 > FILE`)")
    return key


def check_destination(to: str, live: DatabaseTarget, *, overwrite: bool) -> Path:
    """The local file `to` names, refused (InvalidInput, exit 2) when it is a URL, a
    directory, in a missing directory, an existing file without `overwrite`, or live."""
    if "://" in to:
        scheme = to.split("://", 1)[0]
        raise InvalidInput(f"--to {scheme}://... is not a destination this tool writes; give a file (--to PATH) or "
                           "s3://BUCKET/PATH/FILE")
    path = Path(to).expanduser().absolute()
    if path.is_dir():
        raise InvalidInput(f"--to {path} is a directory; give a file name in it")
    if not path.parent.is_dir():
        raise InvalidInput(f"--to {path}: the directory {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"--to {path}: the directory {path.parent} is not writable by this user; choose another")
    live_path = live.sqlite_path if live.kind == SQLITE else None
    if live_path is not None:
        live_path = live_path.expanduser().absolute()
        family = {live_path, *(live_path.with_name(live_path.name + s) for s in ("-wal", "-shm", "-journal"))}
        if path in family or path.resolve() in {p.resolve() for p in family}:
            raise InvalidInput(f"--to {path} is the live database; a snapshot never writes live: choose another file")
    if path.exists() and not overwrite:
        raise InvalidInput(f"--to {path} exists; choose another file, or add --overwrite to replace it")
    return path


def export_snapshot(
    settings,
    *,
    to: str,
    sanitize: bool = False,
    from_backup: str | None = None,
    key: bytes | None = None,
    key_source: str | None = None,
    overwrite: bool = False,
    command: str = "snapshot export",
    lock_wait: float = 0,
    progress: Reporter = NO_PROGRESS,
) -> SnapshotExport:
    """Write a consistent copy of live (or of backup `from_backup`: an id, or latest for
    the newest restorable one) to the file `to`, its personal columns replaced by
    pseudonyms when `sanitize` (keyed by `key`, else a random key used once)."""
    from integrity.db.connect import Database

    from integrity.snapshots import remote
    from integrity.storage.location import is_s3_url

    started = time.perf_counter()
    database = Database.of(settings)
    live = database.target
    url = remote.snapshot_url(to, "--to") if is_s3_url(to) else None
    if url is not None:  # written here first, then uploaded whole
        remote.refuse_existing(settings, url, overwrite=overwrite)
        path = remote.local_staging(settings, url)
    else:
        path = check_destination(to, live, overwrite=overwrite)
    if sanitize and key is None:
        key, key_source = secrets.token_bytes(32), "random, used for this export only"
    job = _Job(settings, database, path, sanitize, key, command, lock_wait, progress)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        if live.kind == SQLITE:
            facts = _export_sqlite(job, from_backup, temporary)
        else:
            facts = _export_postgres(job, from_backup, temporary)
        crash_point("snapshot-export:written")  # complete under its temporary name only
        _fsync(temporary)
        os.replace(temporary, path)
        from integrity.backups.durable import fsync_directory

        fsync_directory(path.parent)
        size = path.stat().st_size
        if url is not None:
            remote.upload(settings, path, url)
    finally:
        for leftover in (temporary, *(temporary.with_name(temporary.name + s) for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        if url is not None:
            path.unlink(missing_ok=True)
    return SnapshotExport(
        path=str(url or path), engine=live.kind, format=FORMATS[live.kind], source=facts.source, backup_id=facts.backup_id,
        revision=facts.revision, store_identity=facts.identity, sanitized=sanitize,
        key=key_source if sanitize else None, columns=facts.columns, tables=facts.tables,
        bytes=size, seconds=round(time.perf_counter() - started, 3),
    )


@dataclass(frozen=True)
class _Job:
    settings: object
    database: object  # integrity.db.connect.Database, the guarded one (only read)
    path: Path
    sanitize: bool
    key: bytes | None
    command: str
    lock_wait: float
    progress: Reporter


@dataclass(frozen=True)
class _Facts:
    source: str
    backup_id: str | None
    revision: str | None
    identity: str | None
    columns: tuple[ColumnReplaced, ...]
    tables: dict[str, int]


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def _source_copy(job: _Job, from_backup: str | None) -> Iterator[tuple[str, str | None, DatabaseTarget]]:
    """(description, backup id, a database to read): live itself, or the backup restored
    into scratch (held against prune, hashes checked first), removed on the way out."""
    if not from_backup:
        yield f"live {job.database.target.display}", None, job.database.target
        return
    from integrity.backups.catalog import resolve_backup
    from integrity.backups.repository import BackupCorrupt, Repository
    from integrity.backups.verify import verify_one
    from integrity.db.engines import engine_for

    repository = Repository.of(job.settings)
    repository.require_exists()
    backup_id = resolve_backup(repository, from_backup, _live_identity(job.database))
    with repository.reading(backup_id, command=job.command, wait_seconds=job.lock_wait):
        verification = verify_one(job.settings, repository, backup_id, deep=False, command=job.command,
                                  progress=job.progress)
        if verification.quick != "ok":
            raise BackupCorrupt("; ".join(verification.problems) + "; it cannot be exported")
        manifest = repository.read_manifest(backup_id)
        if manifest.engine != job.database.kind:
            raise SnapshotFileUnusable(
                f"backup {backup_id} is a {manifest.engine} backup but the configured database is "
                f"{job.database.kind}; export it with --database-url of a {manifest.engine} database"
            )
        with engine_for(job.database).restored_copy(repository, manifest, scratch_dir=job.settings.state.dir / "scratch",
                                                    progress=job.progress) as copy:
            yield f"backup {backup_id}", backup_id, copy.target


def _live_identity(database) -> str | None:
    """Live's store identity, to pick `latest` among this store's backups; None when live
    cannot be read (an export from the repository alone)."""
    from integrity.backups.statistics import store_identity

    try:
        with database.reader() as engine, engine.connect() as connection:
            return store_identity(connection)
    except PreconditionFailed:
        return None


def _prepare(job: _Job, copy: DatabaseTarget) -> tuple[str | None, str | None, tuple[ColumnReplaced, ...], dict[str, int]]:
    """On the copy (ours to write): revision and identity, sanitised when asked, row counts."""
    from game_core.schema_state import current_revision
    from integrity.backups.statistics import store_identity
    from integrity.db.connect import Write
    from integrity.db.sql import table_row_counts
    from integrity.snapshots.pseudonyms import personal_columns
    from integrity.snapshots.sanitize import sanitize

    with job.database.beside(copy).writer(Write.COPY) as engine:
        with engine.begin() as connection:
            revision, identity = current_revision(connection), store_identity(connection)
            columns: tuple[ColumnReplaced, ...] = ()
            if job.sanitize:
                with job.progress.task("replacing personal values by pseudonyms", unit="rows"):
                    columns = sanitize(connection, personal_columns(), job.key, revision)
        with engine.connect() as connection:
            tables = table_row_counts(connection)
    return revision, identity, columns, tables


def _export_sqlite(job: _Job, from_backup: str | None, temporary: Path) -> _Facts:
    from integrity.db.snapshot_files import copy_sqlite, finish_sqlite

    with _source_copy(job, from_backup) as (source, backup_id, target):
        with job.progress.task("copying (backup API, one step)", unit="bytes"):
            copy_sqlite(target, job.database.connection, temporary)
    revision, identity, columns, tables = _prepare(job, parse_database_url(str(temporary)))
    with job.progress.task("ANALYZE where statistics exist, VACUUM", unit="bytes"):
        finish_sqlite(temporary)
    return _Facts(source, backup_id, revision, identity, columns, tables)


def _export_postgres(job: _Job, from_backup: str | None, temporary: Path) -> _Facts:
    from integrity.db.snapshot_files import dump_into, dump_to_file, scratch_database

    settings = job.database.connection
    with ExitStack() as stack:
        source, backup_id, target = stack.enter_context(_source_copy(job, from_backup))
        if backup_id is None:  # live: copied into a scratch database of ours first
            copy = stack.enter_context(scratch_database(job.database.target, "export"))
            with job.progress.task("copying live (pg_dump | pg_restore)", unit="bytes"):
                dump_into(target, copy, settings)
        else:
            copy = target  # the backup's scratch restore is ours already
        revision, identity, columns, tables = _prepare(job, copy)
        with job.progress.task("writing the archive (pg_dump)", unit="bytes"):
            dump_to_file(copy, settings, temporary)
    return _Facts(source, backup_id, revision, identity, columns, tables)


# ---------------------------------------------------------------- a snapshot file as a dry run's source


@contextmanager
def opened_snapshot(settings, path: Path) -> Iterator[str]:
    """What a dry run's `--snapshot` takes for the snapshot file `path`: the SQLite file
    itself, or the name of a scratch database the pg_dump archive was restored into on the
    configured server (dropped on the way out)."""
    from integrity.db.connect import Database
    from integrity.db.snapshot_files import file_kind, restore_file_into, scratch_database

    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise SnapshotFileUnusable(f"--from-snapshot {path} does not exist or is not a file; "
                                   "write one with `integrity snapshot export --to PATH`")
    kind = file_kind(path)
    database = Database.of(settings)
    if kind is None:
        raise SnapshotFileUnusable(f"--from-snapshot {path} is neither a SQLite database nor a pg_dump custom-format "
                                   "archive; give a file written by `integrity snapshot export`")
    if kind == "sqlite":
        if database.kind != SQLITE:
            raise SnapshotFileUnusable(
                f"--from-snapshot {path} is a SQLite snapshot but the configured database is PostgreSQL; run the "
                f"dry run with --database-url sqlite:///{path} (any SQLite URL selects the engine)"
            )
        yield str(path)
        return
    if database.kind != POSTGRESQL:
        raise SnapshotFileUnusable(
            f"--from-snapshot {path} is a pg_dump archive: it is restored into a scratch database on a PostgreSQL "
            "server; give --database-url postgresql://... of a server where this role may create databases"
        )
    with scratch_database(database.target, "dry") as scratch:
        restore_file_into(path, scratch, database.connection)
        yield scratch.url.database
