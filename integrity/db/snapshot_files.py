"""The engine mechanics of `integrity snapshot export` and of a dry run from a snapshot
file (`integrity.snapshots` orchestrates them).

SQLite: a snapshot is a database file. The source is copied in one read transaction
through the backup API (consistent while the game writes; the source is opened read
only), and finished with ANALYZE (only where statistics tables exist: sqlite_stat4 keeps
sample index keys, which would still be the original names), VACUUM (a fresh file: no free
page keeps a replaced value) and the rollback journal, so that the file stands alone.

PostgreSQL: a snapshot is a pg_dump custom-format archive, uncompressed. Custom format
because it is what our backups and `pg_restore` already handle (restored into a scratch
database by the same code paths), it is one portable file that any server at least as new
can restore, and it carries rows, not pages: a row replaced in the scratch database leaves
no dead tuple behind in the file. Uncompressed so that the file can be checked byte for
byte (no original name in it) and compressed by whatever the CI stores it with. The copy
to sanitise is a scratch database filled by pg_dump of the source piped into pg_restore,
claimed while it exists and always dropped.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import sqlalchemy as sa

from game_core.db import ConnectionSettings, DatabaseTarget
from game_core.errors import PreconditionFailed
from integrity.db.claims import SCRATCH_PREFIX, scratch_databases
from integrity.db.connect import Database, maintenance
from integrity.db.pg_tools import RESTORE_OPTIONS, libpq_environment, require_tool, server_major, tool_error
from integrity.db.sql import error_reason

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
SNAPSHOT_SCRATCH_PREFIX = f"{SCRATCH_PREFIX}snap_"


class SnapshotFailed(PreconditionFailed):
    """A copy, a dump or a restore of a snapshot could not be made."""


def file_kind(path: Path) -> str | None:
    """"sqlite", "pg_dump" or None, from the file's first bytes."""
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "pg_dump"
    return None


# ---------------------------------------------------------------- SQLite


def copy_sqlite(source: DatabaseTarget, settings: ConnectionSettings, destination: Path) -> None:
    """`source` copied to `destination` (a new file) in one read transaction."""
    with Database(source, settings).reader() as engine, engine.connect() as connection:
        connection.execute(sa.text("SELECT count(*) FROM sqlite_schema")).all()  # pins the snapshot
        writer = sqlite3.connect(str(destination))
        try:
            connection.connection.driver_connection.backup(writer, pages=-1)  # one step: consistent while the game writes
            writer.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error as exc:
            raise SnapshotFailed(f"cannot write the snapshot {destination}: {exc}; free space in its directory") from None
        finally:
            writer.close()


def finish_sqlite(path: Path) -> None:
    """ANALYZE where statistics exist, VACUUM, rollback journal: one self-contained file
    holding no page of what was replaced."""
    try:
        with closing(sqlite3.connect(str(path), isolation_level=None)) as connection:
            statistics = connection.execute(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE 'sqlite_stat%'"
            ).fetchone()[0]
            if statistics:
                connection.execute("ANALYZE")
            connection.execute("VACUUM")
            connection.execute("PRAGMA journal_mode = DELETE").fetchall()
            problems = connection.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        raise SnapshotFailed(f"cannot finish the snapshot file {path}: {exc}; check the space in its directory") from None
    if problems != [("ok",)]:
        raise SnapshotFailed(f"the snapshot file {path} fails quick_check: {problems[0][0]}")


# ---------------------------------------------------------------- PostgreSQL


@contextmanager
def scratch_database(server: DatabaseTarget, label: str) -> Iterator[DatabaseTarget]:
    """An empty scratch database on `server`'s server, claimed while it exists and
    dropped on the way out."""
    name = f"{SNAPSHOT_SCRATCH_PREFIX}{label}_{time.strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(3)}"
    with maintenance(server) as admin, scratch_databases(admin) as databases:
        try:
            databases.create(name)
        except sa.exc.DBAPIError as exc:
            reason = error_reason(exc)
            hint = " (ALTER ROLE ... CREATEDB)" if "permission denied" in reason else ""
            raise SnapshotFailed(f"cannot create the scratch database {name}: {reason}; the snapshot needs a role "
                                 f"that may create databases{hint} in [database] url") from None
        yield DatabaseTarget(server.url.set(database=name))


def _major(target: DatabaseTarget, settings: ConnectionSettings) -> int:
    with Database(target, settings).reader() as engine, engine.connect() as connection:
        return server_major(connection)


def _checked(status: int, name: str, errors, what: str) -> None:
    if status != 0:
        errors.seek(0)
        raise SnapshotFailed(f"{name} exited with status {status} while {what}: {tool_error(errors.read())}")


def dump_into(source: DatabaseTarget, scratch: DatabaseTarget, settings: ConnectionSettings) -> None:
    """pg_dump of `source` (its own consistent snapshot; the source is only read) piped
    into pg_restore into the empty `scratch`; both exit statuses checked."""
    major = _major(source, settings)
    pg_dump, pg_restore = require_tool("pg_dump", major), require_tool("pg_restore", major)
    with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as restore_errors:
        dump = subprocess.Popen(
            [pg_dump.path, "--format=custom", "--compress=0", "--no-password"],
            stdout=subprocess.PIPE, stderr=dump_errors, env=libpq_environment(source.url),
        )
        restore = subprocess.Popen(
            [pg_restore.path, *RESTORE_OPTIONS,
             f"--dbname={scratch.url.database}"],
            stdin=dump.stdout, stdout=subprocess.DEVNULL, stderr=restore_errors, env=libpq_environment(scratch.url),
        )
        dump.stdout.close()  # pg_restore holds the pipe now
        restore_status, dump_status = restore.wait(), dump.wait()
        _checked(dump_status, "pg_dump", dump_errors, f"copying {source.masked}")
        _checked(restore_status, "pg_restore", restore_errors, "filling the scratch copy")


def dump_to_file(source: DatabaseTarget, settings: ConnectionSettings, path: Path) -> None:
    """pg_dump of `source` into `path`, custom format, uncompressed, without owners or
    privileges (the CI server's roles are not production's)."""
    major = _major(source, settings)
    pg_dump = require_tool("pg_dump", major)
    command = [pg_dump.path, "--format=custom", "--compress=0", "--no-owner", "--no-privileges", "--no-password",
               f"--file={path}"]
    if pg_dump.major >= 18:
        command.append("--no-statistics")  # statistics hold sample values: the names again
    with tempfile.TemporaryFile() as errors:
        status = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=errors, env=libpq_environment(source.url)).returncode
        _checked(status, "pg_dump", errors, f"writing {path}")


def restore_file_into(path: Path, scratch: DatabaseTarget, settings: ConnectionSettings) -> None:
    """pg_restore of the archive `path` into the empty `scratch`."""
    pg_restore = require_tool("pg_restore", _major(scratch, settings))
    with tempfile.TemporaryFile() as errors:
        status = subprocess.run(
            [pg_restore.path, *RESTORE_OPTIONS,
             f"--dbname={scratch.url.database}", str(path)],
            stdout=subprocess.DEVNULL, stderr=errors, env=libpq_environment(scratch.url),
        ).returncode
        _checked(status, "pg_restore", errors, f"restoring {path}")
