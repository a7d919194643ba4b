"""The two copies a dry run works on: `before`, never migrated, and `work`, migrated.

Both come from one consistent snapshot of the source, and `work` is proven identical to
the source (per-table fingerprints) before anything runs on it (DESIGN.md invariant 8).
The source is only ever read; both copies are removed afterwards unless `--keep-copy`,
and both are claimed while they exist, so that a killed run's are removed by the next
(`integrity.db.claims`).

- SQLite (live database or a snapshot file): one read transaction on the source pins
  its state; the backup API copies it twice from that transaction (source -> before ->
  work, page for page) and the source's fingerprints are taken inside the same
  transaction, so a game writing meanwhile cannot make the proof fail or lie.
- SQLite from a backup: the backup is restored into scratch (hashes checked), which is
  then the source of the two copies.
- PostgreSQL from a backup (the default: the newest deep-verified one): pg_restore into
  a scratch database (`before`), then `CREATE DATABASE work TEMPLATE before`, which is
  possible because nobody else knows that database: never a template of live.
- PostgreSQL live: pg_dump in an exported REPEATABLE READ snapshot of live, piped into
  pg_restore; live's fingerprints are taken in that same snapshot.
- PostgreSQL snapshot database: a database nobody uses; it serves as `before` (read only)
  and is the template of `work`.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from game_core.db import POSTGRESQL, DatabaseTarget, parse_database_url
from game_core.errors import PreconditionFailed
from integrity.db.claims import SCRATCH_PREFIX as SCRATCH_DATABASE_PREFIX
from integrity.db.claims import ScratchDatabases, claimed_path, scratch_databases
from integrity.db.connect import Database, maintenance
from integrity.db.sql import error_reason
from integrity.errors import VerificationFailed
from integrity.fingerprint import TableFingerprint, database_fingerprints
from integrity.migrate.beside import fingerprints_beside
from integrity.progress import NO_PROGRESS, Reporter

SCRATCH_PREFIX = f"{SCRATCH_DATABASE_PREFIX}dry_"

LIVE, BACKUP, SNAPSHOT = "live", "backup", "snapshot"


class SnapshotUnavailable(PreconditionFailed):
    """The copies could not be made (rights, a missing snapshot, a database in use)."""


class CopyDiffers(VerificationFailed):
    """The work copy's fingerprints differ from its source's: nothing may run on it."""


@dataclass(frozen=True)
class SourceChoice:
    kind: str  # live | backup | snapshot
    backup_id: str | None = None  # an id or "latest" (the newest deep-verified backup)
    snapshot: str | None = None  # a SQLite file, or a PostgreSQL database name or URL


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    rows: int | None = None

    @property
    def rows_per_second(self) -> float | None:
        if self.rows is None or self.seconds <= 0:
            return None
        return round(self.rows / self.seconds)


@dataclass
class Copies:
    engine: str
    source: str  # what was copied, for humans (masked)
    source_kind: str
    backup_id: str | None
    source_target: DatabaseTarget | None  # the database the run must never write (None for a backup)
    before: DatabaseTarget
    work: DatabaseTarget
    fingerprints: dict[str, TableFingerprint]  # the source's = the work copy's before the run
    phases: list[Phase] = field(default_factory=list)
    kept: tuple[str, ...] = ()  # where the copies stay with --keep-copy

    @property
    def rows(self) -> int:
        return _fingerprint_rows(self.fingerprints)


def _fingerprint_rows(fingerprints: dict[str, TableFingerprint]) -> int:
    return sum(f.rows for f in fingerprints.values())


def prove_identical(source: dict[str, TableFingerprint], copy: dict[str, TableFingerprint], what: str) -> None:
    differing = sorted(
        name for name in set(source) | set(copy)
        if name not in source or name not in copy or source[name].digest != copy[name].digest
    )
    if differing:
        raise CopyDiffers(
            f"the work copy differs from {what} in {', '.join(differing)} before anything ran; "
            "the copy is not trustworthy, so the dry run stops (check the disk and run it again)"
        )


def _restore_backup(stack: ExitStack, restored_backup, backup_id: str, phases: list[Phase]) -> tuple[str, DatabaseTarget]:
    """The backup restored into scratch until `stack` closes, timed as a phase; its id
    (`latest` resolved) and the scratch copy."""
    started = time.perf_counter()
    resolved_id, restored = stack.enter_context(restored_backup(backup_id))
    phases.append(Phase("restore backup", time.perf_counter() - started))
    return resolved_id, restored.target


# ---------------------------------------------------------------- SQLite


@contextmanager
def sqlite_copies(live, choice, scratch_dir: Path, settings, keep_copy: bool, restored_backup,
                  progress: Reporter = NO_PROGRESS) -> Iterator[Copies]:
    name = f"dry-run-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    with ExitStack() as stack:
        try:
            folder = stack.enter_context(claimed_path(scratch_dir, name, keep=keep_copy))
            folder.mkdir()
        except OSError as exc:
            raise SnapshotUnavailable(
                f"cannot create the scratch folder {scratch_dir / name}: {exc.strerror}; "
                "set [state] dir to a writable directory with room for two copies"
            ) from None
        phases: list[Phase] = []
        backup_id = None
        if choice.kind == BACKUP:
            backup_id, source = _restore_backup(stack, restored_backup, choice.backup_id, phases)
            described = f"backup {backup_id}"
        elif choice.kind == SNAPSHOT:
            source = parse_database_url(choice.snapshot)
            if source.kind == POSTGRESQL:
                raise SnapshotUnavailable(f"--snapshot {source.masked} is a PostgreSQL database but the configured database is SQLite; give a SQLite file")
            described = f"snapshot {source.display}"
        else:
            source = live
            described = f"live {live.display}"
        before, work = folder / "before.db", folder / "work.db"
        fingerprints = _copy_sqlite(source, before, work, settings, phases, progress)
        yield Copies(
            engine="sqlite", source=described, source_kind=choice.kind, backup_id=backup_id,
            source_target=None if choice.kind == BACKUP else source,
            before=parse_database_url(str(before)), work=parse_database_url(str(work)),
            fingerprints=fingerprints, phases=phases,
            kept=(str(before), str(work)) if keep_copy else (),
        )


def _copy_sqlite(source: DatabaseTarget, before: Path, work: Path, settings, phases: list[Phase],
                 progress: Reporter = NO_PROGRESS) -> dict[str, TableFingerprint]:
    import sqlite3

    with Database(source, settings).reader() as engine, engine.connect() as connection:
        # The first read starts the transaction that pins what every step below sees.
        connection.execute(sa.text("SELECT count(*) FROM sqlite_schema")).all()
        reader = connection.connection.driver_connection
        started = time.perf_counter()
        with progress.task("snapshot copy (one step)", unit="bytes"):
            backup_api_copy(reader, before)
        phases.append(Phase("snapshot", time.perf_counter() - started))
        started = time.perf_counter()
        with closing(sqlite3.connect(f"file:{before}?mode=ro", uri=True)) as frozen, \
                progress.task("work copy (one step)", unit="bytes"):
            backup_api_copy(frozen, work)
        phases.append(Phase("work copy", time.perf_counter() - started))
        started = time.perf_counter()
        work_prints = fingerprints_beside(parse_database_url(str(work)), settings)
        source_prints = database_fingerprints(connection, progress=progress, what="fingerprinting the source")
        phases.append(Phase("fingerprint source", time.perf_counter() - started, _fingerprint_rows(source_prints)))
    started = time.perf_counter()
    with progress.task("fingerprinting the work copy (beside)", unit="rows"):
        work_prints = work_prints()
    phases.append(Phase("fingerprint copy (beside the source's)", time.perf_counter() - started, _fingerprint_rows(work_prints)))
    prove_identical(source_prints, work_prints, f"its source {source.display}")
    return source_prints


def backup_api_copy(reader, destination: Path) -> None:
    import sqlite3

    writer = sqlite3.connect(str(destination))
    try:
        reader.backup(writer, pages=-1)
        # A plain rollback-journal file: nothing beside it to lose or to leave behind.
        writer.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.OperationalError as exc:
        raise SnapshotUnavailable(f"cannot write the copy {destination}: {exc}; free space under [state] dir (two copies of the database are needed)") from None
    finally:
        writer.close()


# ---------------------------------------------------------------- PostgreSQL


def _create_database(databases: ScratchDatabases, name: str, *, template: str | None = None, keep: bool) -> None:
    try:
        databases.create(name, template=template, keep=keep)
    except sa.exc.DBAPIError as exc:
        reason = error_reason(exc)
        if "permission denied" in reason:
            raise SnapshotUnavailable(
                f"cannot create the scratch database {name}: {reason}; the dry run needs a role with CREATEDB "
                "(ALTER ROLE ... CREATEDB) in [database] url"
            ) from None
        if "being accessed by other users" in reason:
            raise SnapshotUnavailable(
                f"cannot copy {template}: {reason}; a snapshot database must have no connections while it is copied"
            ) from None
        raise SnapshotUnavailable(f"cannot create the scratch database {name}: {reason}") from None


def _timed_fingerprints(target: DatabaseTarget, settings, phases: list[Phase], phase: str,
                        progress: Reporter = NO_PROGRESS) -> dict[str, TableFingerprint]:
    started = time.perf_counter()
    with Database(target, settings).reader() as engine, engine.connect() as connection:
        prints = database_fingerprints(connection, progress=progress, what=phase.replace("fingerprint", "fingerprinting the"))
    phases.append(Phase(phase, time.perf_counter() - started, _fingerprint_rows(prints)))
    return prints


@contextmanager
def postgres_copies(live, choice, settings, keep_copy: bool, restored_backup, progress: Reporter = NO_PROGRESS) -> Iterator[Copies]:
    token = f"{time.strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(3)}"
    work_name = f"{SCRATCH_PREFIX}{token}_work"
    made: list[str] = []
    phases: list[Phase] = []
    with ExitStack() as stack:
        admin = stack.enter_context(maintenance(live))
        databases = stack.enter_context(scratch_databases(admin))  # dropped last, after the restored backup's
        backup_id = None
        source_target = None
        if choice.kind == BACKUP:
            backup_id, before = _restore_backup(stack, restored_backup, choice.backup_id, phases)
            described = f"backup {backup_id}"
            if keep_copy:
                # The restored scratch database is dropped by its owner: keep a copy of it.
                kept_before = f"{SCRATCH_PREFIX}{token}_before"
                _create_database(databases, kept_before, template=before.url.database, keep=True)
                made.append(kept_before)
            source_prints = _timed_fingerprints(before, settings, phases, "fingerprint source", progress)
        elif choice.kind == SNAPSHOT:
            before = snapshot_target(live, choice.snapshot)
            source_target = before
            described = f"snapshot database {before.url.database}"
            source_prints = _timed_fingerprints(before, settings, phases, "fingerprint source", progress)
        else:
            source_target = live
            before_name = f"{SCRATCH_PREFIX}{token}_before"
            _create_database(databases, before_name, keep=keep_copy)
            made.append(before_name)
            before = DatabaseTarget(live.url.set(database=before_name))
            described = f"live {live.masked}"
            source_prints = _dump_live_into(live, before, settings, phases, progress)
        started = time.perf_counter()
        with progress.task("work copy (CREATE DATABASE ... TEMPLATE)", unit="bytes"):
            _create_database(databases, work_name, template=before.url.database, keep=keep_copy)
        made.append(work_name)
        work = DatabaseTarget(live.url.set(database=work_name))
        phases.append(Phase("work copy", time.perf_counter() - started))
        work_prints = _timed_fingerprints(work, settings, phases, "fingerprint copy", progress)
        prove_identical(source_prints, work_prints, described)
        if choice.kind == BACKUP and keep_copy:
            before = DatabaseTarget(live.url.set(database=made[0]))
        yield Copies(
            engine="postgresql", source=described, source_kind=choice.kind, backup_id=backup_id,
            source_target=source_target, before=before, work=work, fingerprints=source_prints,
            phases=phases, kept=tuple(made) if keep_copy else (),
        )


def snapshot_target(live: DatabaseTarget, snapshot: str) -> DatabaseTarget:
    if "://" in snapshot:
        target = parse_database_url(snapshot)
        if target.kind != POSTGRESQL:
            raise SnapshotUnavailable(f"--snapshot {target.display} is a SQLite file but the configured database is PostgreSQL; give a database name")
    else:
        target = DatabaseTarget(live.url.set(database=snapshot))
    if target.url.database == live.url.database and target.url.host == live.url.host:
        raise SnapshotUnavailable(
            f"--snapshot {target.url.database} is the live database; a snapshot must be a copy nobody uses "
            "(or use --from-live, which copies live without touching it)"
        )
    with maintenance(live) as admin, admin.connect() as connection:
        exists = connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.url.database}).first()
    if not exists:
        raise SnapshotUnavailable(f"no snapshot database {target.url.database} on {live.url.host}; create it with createdb -T, or use --from-backup")
    return target


def _dump_live_into(live: DatabaseTarget, before: DatabaseTarget, settings, phases: list[Phase],
                    progress: Reporter = NO_PROGRESS) -> dict[str, TableFingerprint]:
    """pg_dump of an exported snapshot of live piped into pg_restore; live's fingerprints
    are taken in that same snapshot, so they describe exactly what was copied."""
    from integrity.db.pg_tools import libpq_environment, require_tool, server_major, tool_error

    with Database(live, settings).snapshot() as connection:  # the exported snapshot lives as long as it
        major = server_major(connection)
        pg_dump = require_tool("pg_dump", major)
        pg_restore = require_tool("pg_restore", major)
        snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar()
        started = time.perf_counter()
        with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as restore_errors:
            dump = subprocess.Popen(
                [pg_dump.path, "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password"],
                stdout=subprocess.PIPE, stderr=dump_errors, env=libpq_environment(live.url),
            )
            restore = subprocess.Popen(
                [pg_restore.path, "--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
                 f"--dbname={before.url.database}"],
                stdin=dump.stdout, stdout=subprocess.DEVNULL, stderr=restore_errors,
                env=libpq_environment(before.url),
            )
            dump.stdout.close()  # pg_restore holds the pipe now: pg_dump sees it close
            with progress.task("snapshot copy (pg_dump | pg_restore)", unit="bytes"):
                restore_status, dump_status = restore.wait(), dump.wait()
            for name, status, errors in (("pg_dump", dump_status, dump_errors), ("pg_restore", restore_status, restore_errors)):
                if status != 0:
                    errors.seek(0)
                    raise SnapshotUnavailable(f"{name} exited with status {status} while copying live: {tool_error(errors.read())}")
        phases.append(Phase("snapshot", time.perf_counter() - started))
        started = time.perf_counter()
        prints = database_fingerprints(connection, progress=progress, what="fingerprinting the source")
        phases.append(Phase("fingerprint source", time.perf_counter() - started, _fingerprint_rows(prints)))
        return prints
