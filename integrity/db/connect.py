"""Opening a database: the guarded one, its temporary copies, maintenance and the ledger.

Every engine comes from `game_core.db.create_engine` (the game's connect hook: the
settings production sees) and is disposed when its context ends, so no caller holds an
engine it could forget to dispose.

DESIGN.md invariant 1 lives here: the guarded database is opened read-only (SQLite
`mode=ro`, PostgreSQL read-only transactions), except through `Database.writer` with a
`Write` purpose naming one of the commands allowed to write it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from game_core.db import (
    POSTGRESQL,
    ConnectionSettings,
    DatabaseTarget,
    create_engine,
    parse_database_url,
    translate_connect_errors,
)
from integrity.settings import Settings

MAINTENANCE_DATABASE = "postgres"


class Write(enum.Enum):
    """Why a database is opened for writing. The guarded database takes only the
    purposes of invariant 1 (and the probe's canaries, its own rows); a temporary copy
    (scratch, staging, a dry run's work copy) only COPY."""

    INIT = "init"
    RESTORE = "restore"
    REPAIR = "repair"
    SALVAGE = "salvage"
    MIGRATE_APPLY = "migrate apply"
    PROBE_CANARIES = "probe canaries"
    # `backup check` with point-in-time recovery on: one marker player written, found in a
    # restore from the archive, and deleted (integrity.backups.check); its own purpose
    # because, unlike the canaries, the row is removed again within the same run.
    PITR_CHECK = "pitr check"
    COPY = "a temporary copy"


def connection_settings(settings: Settings) -> ConnectionSettings:
    """The configured timeouts, applied to every connection to the guarded database and its copies."""
    db = settings.database
    return ConnectionSettings(
        busy_timeout_ms=db.busy_timeout_ms,
        lock_timeout_ms=db.lock_timeout_ms,
        statement_timeout_ms=db.statement_timeout_ms,
    )


def guarded_target(settings: Settings) -> DatabaseTarget:
    """The database this tool guards, as configured (parsed, never opened)."""
    return parse_database_url(settings.database_url)


@dataclass(frozen=True)
class Database:
    """A database and the connection settings to open it with; `guarded` marks the one
    this tool guards, which `writer` opens only for the purposes of invariant 1."""

    target: DatabaseTarget
    connection: ConnectionSettings = ConnectionSettings()
    guarded: bool = False

    @classmethod
    def of(cls, settings: Settings) -> "Database":
        """The configured guarded database."""
        return cls(guarded_target(settings), connection_settings(settings), guarded=True)

    def beside(self, target: DatabaseTarget | str) -> "Database":
        """Another database opened with the same settings: a temporary copy (scratch,
        staging, a dry run's) or the old one a restore kept; never the guarded one."""
        if isinstance(target, str):
            target = parse_database_url(target)
        return Database(target, self.connection, guarded=False)

    def with_statement_timeout(self, milliseconds: int) -> "Database":
        """The same database, its statements stopped after `milliseconds` (PostgreSQL),
        or sooner if the configured timeout is shorter."""
        configured = self.connection.statement_timeout_ms
        limit = milliseconds if not configured else min(configured, milliseconds)
        return replace(self, connection=replace(self.connection, statement_timeout_ms=limit))

    @property
    def kind(self) -> str:
        return self.target.kind

    @property
    def display(self) -> str:
        return self.target.display

    @contextmanager
    def reader(self) -> Iterator[Engine]:
        """A read-only engine: SQLite `mode=ro`, PostgreSQL read-only transactions."""
        engine = create_engine(self.target, read_only=True, settings=self.connection)
        try:
            yield engine
        finally:
            engine.dispose()

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read-only transaction, rolled back on exit: every read in it sees the
        same state (PostgreSQL READ ONLY REPEATABLE READ; SQLite's read transaction)."""
        with self.reader() as engine, engine.connect() as connection:
            with _rolled_back(one_snapshot(connection)):
                yield connection

    @contextmanager
    def writer(self, purpose: Write) -> Iterator[Engine]:
        """The one writer, for `purpose`. A SQLite file that does not exist is created
        only by INIT (and a temporary copy); anything else is DatabaseMissing."""
        if self.guarded and purpose is Write.COPY:
            raise ValueError(f"{self.display} is the guarded database, not a temporary copy")
        if not self.guarded and purpose is not Write.COPY:
            raise ValueError(f"{self.display} is a temporary copy; open it with Write.COPY")
        engine = create_engine(self.target, settings=self.connection,
                               create_missing=purpose in (Write.INIT, Write.COPY))
        try:
            yield engine
        finally:
            engine.dispose()

    def maintenance(self):
        """`maintenance(self.target)`: the maintenance database of this one's server."""
        return maintenance(self.target)


def one_snapshot(connection: Connection) -> Connection:
    """`connection`, its transactions made REPEATABLE READ on PostgreSQL so every
    statement of one sees the same snapshot while the game writes (a reader's engine makes
    them READ ONLY too). SQLite's read transaction is one snapshot already."""
    if connection.dialect.name == POSTGRESQL:
        connection.execution_options(isolation_level="REPEATABLE READ")
    return connection


@contextmanager
def _rolled_back(connection: Connection) -> Iterator[Connection]:
    transaction = connection.begin()
    try:
        yield connection
    finally:
        if transaction.is_active:
            transaction.rollback()


@contextmanager
def maintenance(target: DatabaseTarget) -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the `postgres` database of `target`'s server: for CREATE,
    DROP and RENAME DATABASE, terminating sessions, and advisory locks that must outlive
    any one database. Unreachable is DatabaseUnreachable (exit 4), as for any database."""
    if target.kind != POSTGRESQL:
        raise ValueError(f"{target.display} is not PostgreSQL: no maintenance database")
    url = target.url.set(database=MAINTENANCE_DATABASE)
    engine = translate_connect_errors(
        sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10}), DatabaseTarget(url)
    )
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def in_memory_sqlite() -> Iterator[Connection]:
    """A connection to a throwaway in-memory SQLite database, for building a revision's
    schema from the migration history (no game data, no connect hook needed)."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def ledger_engine(target: DatabaseTarget, *, create_missing: bool) -> Engine:
    """The ledger's engine (the tool's own state, never the guarded database). The Ledger
    owns it for its whole life and disposes it in `close`."""
    return create_engine(target, create_missing=create_missing)
