"""A dry run's two copies of a PostgreSQL database (`integrity.migrate.snapshot` says
what they are): `before` from a backup restored into scratch, from a snapshot database
nobody uses, or from live through pg_dump in an exported snapshot piped into pg_restore;
`work` is `CREATE DATABASE ... TEMPLATE before`, which is possible because nobody else
knows `before`: never a template of live.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import sqlalchemy as sa

from game_core.db import POSTGRESQL, DatabaseTarget, parse_database_url
from integrity.db.claims import SCRATCH_PREFIX as SCRATCH_DATABASE_PREFIX
from integrity.db.claims import ScratchDatabases, scratch_databases
from integrity.db.connect import Database, maintenance
from integrity.db.sql import error_reason
from integrity.fingerprint import TableFingerprint, database_fingerprints
from integrity.migrate.snapshot import (
    BACKUP, SNAPSHOT, Copies, SnapshotUnavailable, fingerprint_rows, prove_identical, restore_backup,
)
from integrity.phases import PhaseTimer
from integrity.progress import NO_PROGRESS, Reporter

SCRATCH_PREFIX = f"{SCRATCH_DATABASE_PREFIX}dry_"


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


def _timed_fingerprints(target: DatabaseTarget, settings, timer: PhaseTimer, name: str,
                        progress: Reporter = NO_PROGRESS) -> dict[str, TableFingerprint]:
    with timer.phase(name) as phase, Database(target, settings).reader() as engine, engine.connect() as connection:
        prints = database_fingerprints(connection, progress=progress, what=name.replace("fingerprint", "fingerprinting the"))
        phase.rows = fingerprint_rows(prints)
    return prints


@contextmanager
def postgres_copies(live, choice, settings, keep_copy: bool, restored_backup, progress: Reporter = NO_PROGRESS) -> Iterator[Copies]:
    token = f"{time.strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(3)}"
    work_name = f"{SCRATCH_PREFIX}{token}_work"
    made: list[str] = []
    timer = PhaseTimer()
    with ExitStack() as stack:
        admin = stack.enter_context(maintenance(live))
        databases = stack.enter_context(scratch_databases(admin))  # dropped last, after the restored backup's
        backup_id = None
        source_target = None
        if choice.kind == BACKUP:
            backup_id, before = restore_backup(stack, restored_backup, choice.backup_id, timer)
            described = f"backup {backup_id}"
            if keep_copy:
                # The restored scratch database is dropped by its owner: keep a copy of it.
                kept_before = f"{SCRATCH_PREFIX}{token}_before"
                _create_database(databases, kept_before, template=before.url.database, keep=True)
                made.append(kept_before)
            source_prints = _timed_fingerprints(before, settings, timer, "fingerprint source", progress)
        elif choice.kind == SNAPSHOT:
            before = snapshot_target(live, choice.snapshot)
            source_target = before
            described = f"snapshot database {before.url.database}"
            source_prints = _timed_fingerprints(before, settings, timer, "fingerprint source", progress)
        else:
            source_target = live
            before_name = f"{SCRATCH_PREFIX}{token}_before"
            _create_database(databases, before_name, keep=keep_copy)
            made.append(before_name)
            before = DatabaseTarget(live.url.set(database=before_name))
            described = f"live {live.masked}"
            source_prints = _dump_live_into(live, before, settings, timer, progress)
        with timer.phase("work copy"), progress.task("work copy (CREATE DATABASE ... TEMPLATE)", unit="bytes"):
            _create_database(databases, work_name, template=before.url.database, keep=keep_copy)
        made.append(work_name)
        work = DatabaseTarget(live.url.set(database=work_name))
        work_prints = _timed_fingerprints(work, settings, timer, "fingerprint copy", progress)
        prove_identical(source_prints, work_prints, described)
        if choice.kind == BACKUP and keep_copy:
            before = DatabaseTarget(live.url.set(database=made[0]))
        yield Copies(
            engine="postgresql", source=described, source_kind=choice.kind, backup_id=backup_id,
            source_target=source_target, before=before, work=work, fingerprints=source_prints,
            phases=timer.done, kept=tuple(made) if keep_copy else (),
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


def _dump_live_into(live: DatabaseTarget, before: DatabaseTarget, settings, timer: PhaseTimer,
                    progress: Reporter = NO_PROGRESS) -> dict[str, TableFingerprint]:
    """pg_dump of an exported snapshot of live piped into pg_restore; live's fingerprints
    are taken in that same snapshot, so they describe exactly what was copied."""
    from integrity.db.pg_tools import RESTORE_OPTIONS, libpq_environment, require_tool, server_major, tool_error

    with Database(live, settings).snapshot() as connection:  # the exported snapshot lives as long as it
        major = server_major(connection)
        pg_dump = require_tool("pg_dump", major)
        pg_restore = require_tool("pg_restore", major)
        snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar()
        with timer.phase("snapshot"), tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as restore_errors:
            dump = subprocess.Popen(
                [pg_dump.path, "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password"],
                stdout=subprocess.PIPE, stderr=dump_errors, env=libpq_environment(live.url),
            )
            restore = subprocess.Popen(
                [pg_restore.path, *RESTORE_OPTIONS,
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
        with timer.phase("fingerprint source") as phase:
            prints = database_fingerprints(connection, progress=progress, what="fingerprinting the source")
            phase.rows = fingerprint_rows(prints)
        return prints
