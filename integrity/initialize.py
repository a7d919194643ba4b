"""`integrity init`: a starter config, the state directory and repository, and the
schema on an empty database (the only write `init` ever makes to the guarded database)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from game_core.db import parse_database_url
from game_core.errors import ExitCode
from game_core.schema_state import SchemaState, require_current, schema_status, upgrade_to_head
from integrity.backups.repository import Repository
from integrity.backups.statistics import store_identity
from integrity.database import open_for_writing
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
    # The database first: an unreachable server or a foreign database stops init before
    # it has written anything.
    target, engine = open_for_writing(settings, create_missing=True)
    created = False
    identity = None
    try:
        with engine.begin() as connection:
            status = schema_status(connection)
            if status.state is SchemaState.UNKNOWN:
                require_current(status, display_name=target.display)  # raises with the fix
            written = write_starter_config(config_path, database_url_given)
            settings.state.dir.mkdir(parents=True, exist_ok=True)
            Repository(settings.backups.repository).ensure()  # the one command that creates a repository
            if status.state is SchemaState.EMPTY:
                upgrade_to_head(connection)
                created = True
                status = schema_status(connection)
                identity = store_identity(connection)
    finally:
        engine.dispose()
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
