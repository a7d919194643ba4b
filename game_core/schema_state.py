"""Where a database stands against this code's Alembic history, and the empty-only setup.

The game creates its schema only on an empty database. It never upgrades an existing
one on start: an automatic upgrade is how the incident's migration reached production
unchecked. Upgrades go through `integrity migrate dry-run` and `integrity migrate apply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from game_core.errors import SchemaNotCurrent, SchemaUnknown

MIGRATE_HINT = "run `integrity migrate dry-run` and then `integrity migrate apply`"


class SchemaState(str, Enum):
    EMPTY = "empty"  # no tables at all: the game may create its schema
    CURRENT = "current"  # at this code's head
    BEHIND = "behind"  # at an older revision of this history
    UNKNOWN = "unknown"  # a revision this code does not know, or tables without a revision


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    revision: str | None
    head: str

    def describe(self) -> str:
        if self.state is SchemaState.CURRENT:
            return f"at head {self.head}"
        if self.state is SchemaState.EMPTY:
            return f"empty (head is {self.head})"
        if self.state is SchemaState.BEHIND:
            return f"at {self.revision}, behind head {self.head}"
        if self.revision is None:
            return "holds tables but no Alembic revision"
        return f"at unknown revision {self.revision} (this code's head is {self.head})"


def _script_directory():
    from alembic.script import ScriptDirectory

    from game_core.migrations import alembic_config

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return _script_directory().get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision in alembic_version, or None when the table is missing or empty."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def schema_status(connection: Connection) -> SchemaStatus:
    script = _script_directory()
    head = script.get_current_head()
    revision = current_revision(connection)
    if revision is None:
        has_tables = bool(sa.inspect(connection).get_table_names())
        return SchemaStatus(SchemaState.UNKNOWN if has_tables else SchemaState.EMPTY, None, head)
    if revision == head:
        return SchemaStatus(SchemaState.CURRENT, revision, head)
    try:
        script.get_revision(revision)
    except Exception:  # alembic raises a ResolutionError subclass for unknown ids
        return SchemaStatus(SchemaState.UNKNOWN, revision, head)
    return SchemaStatus(SchemaState.BEHIND, revision, head)


def upgrade_to_head(connection: Connection, revision: str = "head") -> None:
    """Run the history on this connection, inside the caller's transaction."""
    from alembic import command

    from game_core.migrations import alembic_config

    command.upgrade(alembic_config(connection), revision)


def ensure_schema(engine: Engine, *, display_name: str) -> SchemaStatus:
    """Create the schema on an empty database; accept one at head; refuse anything else."""
    with engine.begin() as connection:
        status = schema_status(connection)
        if status.state is SchemaState.EMPTY:
            upgrade_to_head(connection)
            return SchemaStatus(SchemaState.CURRENT, status.head, status.head)
    require_current(status, display_name=display_name)
    return status


def require_current(status: SchemaStatus, *, display_name: str) -> None:
    if status.state is SchemaState.BEHIND:
        raise SchemaNotCurrent(
            f"database {display_name} is {status.describe()}; the game does not upgrade it on "
            f"start: {MIGRATE_HINT}"
        )
    if status.state is SchemaState.UNKNOWN:
        raise SchemaUnknown(
            f"database {display_name} {status.describe()}; point --database-url at the game's "
            "database or install the version of the game that wrote it"
        )
