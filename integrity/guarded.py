"""Is the guarded database the game's, at a revision this code knows? Asked first.

Every command that reads the guarded database (audit, diff, drill, repair, init's
refusal, salvage, migrate apply) asks this one question before anything else, read-only,
so that

- a database with no game schema, another application's database, or one at a revision
  this code does not know is refused with exit 4 in one line naming the revision found,
  this code's head and the fix, instead of an audit that passes on tables it does not
  understand (issue 14: exit 0 on a newer revision), a drill or diff that "finds
  differences" against the wrong thing, or a driver error;
- nothing is written before the answer: a writer's connect hook switches a SQLite file to
  WAL (rewriting its header and creating -wal and -shm beside it), which must never happen
  to a file we are about to refuse.

`integrity status` and the metrics report the same states as a row and a gauge rather than
refusing, and the retrieval probe deliberately probes a game database at an unknown
revision (that is the incident's alarm): neither goes through here.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from game_core.errors import PreconditionFailed, SchemaNotCurrent, SchemaUnknown
from game_core.schema_state import MIGRATE_HINT, SchemaState, SchemaStatus, schema_status

UNKNOWN_REVISION_RUNBOOK = "runbooks/schema-unchecked.md"


class NoGameSchema(PreconditionFailed):
    """The guarded database is empty: nothing of the game's to read."""


def refusal(status: SchemaStatus, display: str, *, current: bool = False) -> PreconditionFailed | None:
    """The exit-4 failure for a database this code must not read (or, with `current`,
    must not write: a database behind head too); None when it may go on."""
    if status.state is SchemaState.EMPTY:
        return NoGameSchema(
            f"database {display} has no game schema (no tables, no revision; this code's head is {status.head}): "
            "run `integrity init` to create it, or point --database-url at the game's database"
        )
    if status.state is SchemaState.UNKNOWN and status.revision is None:
        return SchemaUnknown(
            f"database {display} holds tables but no Alembic revision (this code's head is {status.head}): it is "
            "not the game's database; point --database-url at the game's database"
        )
    if status.state is SchemaState.UNKNOWN:
        return SchemaUnknown(
            f"database {display} is at revision {status.revision}, which this code does not know (its head is "
            f"{status.head}): if a newer version wrote it, run that version's `integrity`; if it was applied "
            f"behind `integrity migrate` (plain alembic), follow {UNKNOWN_REVISION_RUNBOOK}; or check --database-url"
        )
    if current and status.state is SchemaState.BEHIND:
        return SchemaNotCurrent(
            f"database {display} is at revision {status.revision}, behind this code's head {status.head}: "
            f"{MIGRATE_HINT} first"
        )
    return None


def require_game_revision(connection: Connection, display: str, *, current: bool = False) -> SchemaStatus:
    """Raise the refusal (exit 4) unless the database behind `connection` is the game's
    at this code's head or, unless `current`, at an older revision of its history."""
    status = schema_status(connection)
    failure = refusal(status, display, current=current)
    if failure is not None:
        raise failure
    return status


def check_guarded(settings, *, current: bool = False) -> SchemaStatus:
    """Open the configured database read-only (never creating it), ask
    `require_game_revision`, close. For commands about to open it otherwise."""
    from integrity.db.connect import Database

    database = Database.of(settings)
    with database.reader() as engine, engine.connect() as connection:
        return require_game_revision(connection, database.display, current=current)
