"""`integrity init`: a starter config, the state directory and repository, and the
schema on an empty database (the only write `init` ever makes to the guarded database)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from game_core.db import parse_database_url
from game_core.errors import ExitCode
from game_core.schema_state import SchemaState, SchemaStatus, head_revision, schema_status, upgrade_to_head
from integrity.backups.repositories import all_repositories
from integrity.backups.repository import Repository
from integrity.backups.statistics import store_identity
from integrity.db.connect import Database, Write
from integrity.guarded import require_game_revision
from integrity.settings import Settings, starter_toml


@dataclass(frozen=True)
class InitResult:
    config_path: str
    config_written: bool
    state_dir: str
    repository: str
    database: str
    schema: str
    schema_state: SchemaState
    schema_created: bool
    # Recorded in the ledger when init created the schema: integrity.schema_check counts
    # the revisions made on an empty database as checked (there were no rows to change).
    store_identity: str | None = None
    created_revision: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        # A database behind head is left alone: upgrades go through the migrate commands.
        return ExitCode.PROBLEMS_FOUND if self.schema_state is SchemaState.BEHIND else ExitCode.OK

    def summary(self) -> dict:
        created = {"store_identity": self.store_identity, "created_revision": self.created_revision} if self.schema_created else {}
        return {"config_written": self.config_written, "schema_created": self.schema_created, "schema": self.schema, **created}


def initialize(settings: Settings, config_path: Path, *, database_url_given: str | None) -> InitResult:
    # The database first, read-only: an unreachable server or a database that is not the
    # game's stops init before it has written anything, to the database or beside it. A
    # writer is opened only for an empty database (its connect hook switches a SQLite
    # file to WAL, rewriting the header of a file we might be about to refuse).
    database = Database.of(settings)
    target = database.target
    status = _status_read_only(database)
    written = write_starter_config(config_path, database_url_given)
    settings.state.dir.mkdir(parents=True, exist_ok=True)
    Repository.of(settings).ensure()  # the one command that creates a repository (a directory, or an object store's marker)
    for _name, copy in all_repositories(settings)[1:]:  # and each [[repositories]] copy
        copy.ensure()
    created = False
    identity = None
    if status.state is SchemaState.EMPTY:
        with database.writer(Write.INIT) as engine, engine.begin() as connection:
            # Again under the write lock: someone may have created tables meanwhile.
            status = schema_status(connection)
            if status.state is SchemaState.EMPTY:
                upgrade_to_head(connection)
                created = True
                status = schema_status(connection)
                identity = store_identity(connection)
            else:
                require_game_revision(connection, target.display)
    return InitResult(
        config_path=str(config_path),
        config_written=written,
        state_dir=str(settings.state.dir),
        repository=str(settings.backups.repository),
        database=target.display,
        schema=status.describe(),
        schema_state=status.state,
        schema_created=created,
        store_identity=identity,
        created_revision=status.revision if created else None,
    )


def _status_read_only(database: Database) -> SchemaStatus:
    """Where the database stands, read-only; refuses (exit 4) one that is not the game's.
    A SQLite file that does not exist yet is empty: init creates it."""
    target = database.target
    if target.sqlite_path is not None and not target.sqlite_path.exists():
        return SchemaStatus(SchemaState.EMPTY, None, head_revision())
    with database.reader() as engine, engine.connect() as connection:
        status = schema_status(connection)
        if status.state is not SchemaState.EMPTY:
            require_game_revision(connection, target.display)
        return status


def write_starter_config(path: Path, database_url: str | None) -> bool:
    """Write the starter file atomically; never overwrite an existing one."""
    if path.exists():
        return False
    # A URL with a password stays out of the file: secrets belong in the environment.
    url = database_url if database_url and not parse_database_url(database_url).url.password else None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(starter_toml(url))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True
