"""Restoring a backup into a scratch copy that is always removed afterwards.

SQLite: the data file is decompressed (both hashes checked on the way) into a temp file
in the state directory. PostgreSQL: a scratch database is created next to the source
(through the maintenance database `postgres`), filled by pg_restore fed from the
decompressing stream, and dropped WITH (FORCE) whatever happens. Both are claimed while
they exist (`scratch_claims`), so that a killed run's copy is removed by the next one.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from game_core.db import POSTGRESQL, ConnectionSettings, DatabaseTarget, create_engine, parse_database_url
from integrity.backups.archive import decompress_to
from integrity.backups.pg_tools import libpq_environment, require_tool, server_major, tool_error
from integrity.backups.repository import Manifest, Repository
from integrity.backups.scratch_claims import SCRATCH_PREFIX, claimed_path, scratch_databases
from integrity.errors import VerificationFailed
from integrity.progress import NO_PROGRESS, Reporter

MAINTENANCE_DATABASE = "postgres"


class RestoreFailed(VerificationFailed):
    """The backup could not be restored into a scratch copy."""


@dataclass(frozen=True)
class ScratchCopy:
    target: DatabaseTarget
    description: str


@contextmanager
def restored_copy(
    repository: Repository,
    manifest: Manifest,
    *,
    source: DatabaseTarget,
    scratch_dir: Path,
    settings: ConnectionSettings,
    progress: Reporter = NO_PROGRESS,
) -> Iterator[ScratchCopy]:
    if manifest.engine == POSTGRESQL:
        with _postgres_copy(repository, manifest, source=source, settings=settings, progress=progress) as copy:
            yield copy
    else:
        with _sqlite_copy(repository, manifest, scratch_dir=scratch_dir, progress=progress) as copy:
            yield copy


@contextmanager
def _sqlite_copy(repository: Repository, manifest: Manifest, *, scratch_dir: Path, progress: Reporter = NO_PROGRESS) -> Iterator[ScratchCopy]:
    entry = manifest.files[0]
    with claimed_path(scratch_dir, f"{manifest.id}-{secrets.token_hex(4)}.db") as path:
        with path.open("xb") as handle, progress.task(f"restoring {manifest.id}", total=entry.size, unit="bytes") as task:
            decompress_to(repository.path_of(manifest.id) / entry.name, entry, handle.write, backup_id=manifest.id,
                          advance=task.advance)
        yield ScratchCopy(parse_database_url(str(path)), str(path))


def maintenance_engine(source: DatabaseTarget):
    from game_core.db import translate_connect_errors

    url = source.url.set(database=MAINTENANCE_DATABASE)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})
    return translate_connect_errors(engine, DatabaseTarget(url))  # unreachable: exit 4, not a bug


@contextmanager
def _postgres_copy(repository: Repository, manifest: Manifest, *, source: DatabaseTarget, settings: ConnectionSettings,
                   progress: Reporter = NO_PROGRESS) -> Iterator[ScratchCopy]:
    name = f"{SCRATCH_PREFIX}{manifest.id[:15].lower()}_{secrets.token_hex(3)}"
    admin = maintenance_engine(source)
    try:
        with admin.connect() as connection:
            major = server_major(connection)
        with scratch_databases(admin) as databases:
            databases.create(name)
            tool = require_tool("pg_restore", major)
            scratch = DatabaseTarget(source.url.set(database=name))
            pg_restore_into(tool.path, repository, manifest, scratch, progress=progress)
            yield ScratchCopy(scratch, f"scratch database {name}")
    finally:
        admin.dispose()


def pg_restore_into(pg_restore: str, repository: Repository, manifest: Manifest, scratch: DatabaseTarget,
                    progress: Reporter = NO_PROGRESS) -> None:
    """Fill the empty database `scratch` from the backup, decompressed on the way into
    pg_restore (no owners or privileges: the target's roles may not exist)."""
    entry = manifest.files[0]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
             f"--dbname={scratch.url.database}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=libpq_environment(scratch.url),
        )
        try:
            with progress.task(f"restoring {manifest.id} (pg_restore)", total=entry.size, unit="bytes") as task:
                decompress_to(repository.path_of(manifest.id) / entry.name, entry, process.stdin.write,
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


def open_copy(copy: ScratchCopy, settings: ConnectionSettings):
    """A read-only engine on the scratch copy, with the production connection settings."""
    return create_engine(copy.target, read_only=True, settings=settings)
