"""Restoring a backup into a scratch copy that is always removed afterwards (the two
engines' `restored_copy`, integrity.db.engines).

SQLite: the data file is decompressed (both hashes checked on the way) into a temp file
in the state directory. PostgreSQL: a scratch database is created next to the source
(through the maintenance database `postgres`), filled by pg_restore fed from the
decompressing stream, and dropped WITH (FORCE) whatever happens. Both are claimed while
they exist (`integrity.db.claims`), so that a killed run's copy is removed by the next one.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from game_core.db import DatabaseTarget, parse_database_url
from integrity.backups.archive import decompress_to
from integrity.db.pg_tools import (
    RESTORE_OPTIONS, libpq_environment, parallel_restore_jobs, require_tool, restore_file, server_major, tool_error,
)
from integrity.backups.repository import Manifest, Repository
from integrity.db.claims import SCRATCH_PREFIX, claimed_path, scratch_databases
from integrity.db.connect import maintenance
from integrity.errors import VerificationFailed
from integrity.progress import NO_PROGRESS, Reporter


class RestoreFailed(VerificationFailed):
    """The backup could not be restored into a scratch copy."""


@dataclass(frozen=True)
class ScratchCopy:
    target: DatabaseTarget
    description: str


@contextmanager
def sqlite_copy(repository: Repository, manifest: Manifest, *, scratch_dir: Path, progress: Reporter = NO_PROGRESS) -> Iterator[ScratchCopy]:
    """The backup's data file decompressed into a claimed file in `scratch_dir`."""
    entry = manifest.files[0]
    with claimed_path(scratch_dir, f"{manifest.id}-{secrets.token_hex(4)}.db") as path:
        with path.open("xb") as handle, progress.task(f"restoring {manifest.id}", total=entry.size, unit="bytes") as task:
            decompress_to(repository.file_of(manifest.id, entry.name), entry, handle.write, backup_id=manifest.id,
                          advance=task.advance)
        yield ScratchCopy(parse_database_url(str(path)), f"scratch file {path.name}")


@contextmanager
def postgres_copy(repository: Repository, manifest: Manifest, *, server: DatabaseTarget,
                  progress: Reporter = NO_PROGRESS, scratch_dir: Path | None = None) -> Iterator[ScratchCopy]:
    """A claimed scratch database on `server`'s server filled by pg_restore."""
    name = f"{SCRATCH_PREFIX}{manifest.id[:15].lower()}_{secrets.token_hex(3)}"
    with maintenance(server) as admin:
        with admin.connect() as connection:
            major = server_major(connection)
        with scratch_databases(admin) as databases:
            databases.create(name)
            tool = require_tool("pg_restore", major)
            scratch = DatabaseTarget(server.url.set(database=name))
            how = pg_restore_into(tool.path, repository, manifest, scratch, progress=progress, scratch_dir=scratch_dir)
            yield ScratchCopy(scratch, f"scratch database {name} ({how})")


def pg_restore_into(pg_restore: str, repository: Repository, manifest: Manifest, scratch: DatabaseTarget,
                    progress: Reporter = NO_PROGRESS, scratch_dir: Path | None = None) -> str:
    """Fill the empty database `scratch` from the backup, decompressed on the way into
    pg_restore (no owners or privileges: the target's roles may not exist). With a
    `scratch_dir` that has room: decompressed into a claimed file there first (both hashes
    checked the same way), then restored by `pg_restore --jobs`, which needs a file.
    Returns how it restored, for the copy's description."""
    entry = manifest.files[0]
    jobs = parallel_restore_jobs(scratch_dir, entry.raw_size) if scratch_dir is not None else 1
    if jobs > 1:
        with claimed_path(scratch_dir, f"{scratch.url.database}.dump") as archive:
            with archive.open("xb") as handle, progress.task(f"decompressing {manifest.id}", total=entry.size,
                                                             unit="bytes") as task:
                decompress_to(repository.file_of(manifest.id, entry.name), entry, handle.write,
                              backup_id=manifest.id, advance=task.advance)
            with progress.task(f"restoring {manifest.id} (pg_restore --jobs={jobs})", unit="bytes"):
                returncode, why = restore_file(pg_restore, archive, scratch.url, jobs=jobs)
        if returncode != 0:
            raise RestoreFailed(f"pg_restore of backup {manifest.id} exited with status {returncode}: {why}")
        return f"pg_restore --jobs={jobs} from a decompressed file"
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [pg_restore, *RESTORE_OPTIONS,
             f"--dbname={scratch.url.database}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=libpq_environment(scratch.url),
        )
        try:
            with progress.task(f"restoring {manifest.id} (pg_restore)", total=entry.size, unit="bytes") as task:
                decompress_to(repository.file_of(manifest.id, entry.name), entry, process.stdin.write,
                              backup_id=manifest.id, advance=task.advance)
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its exit status below says why
        finally:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
            returncode = process.wait()
        if returncode != 0:
            errors.seek(0)
            raise RestoreFailed(f"pg_restore of backup {manifest.id} exited with status {returncode}: {tool_error(errors.read())}")
    return "streamed into pg_restore"


def require_quick_check(path: Path, *, what: str) -> None:
    """SQLite's `PRAGMA quick_check` of a restored file, read only: what Litestream's
    `-integrity-check quick` runs inside its Go binary, here in this process, faster
    (integrity.pitr.litestream restores with `-integrity-check none` and calls this)."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = [row[0] for row in connection.execute("PRAGMA quick_check")]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise RestoreFailed(f"{what}: the restored file is not a readable SQLite database: {exc}") from None
    if found != ["ok"]:
        raise RestoreFailed(f"{what}: PRAGMA quick_check of the restored file failed: {'; '.join(found[:5])}")
