"""Opening the guarded database with the configured connection settings.

Everything but init, restore, repair, salvage and `migrate apply` opens it read-only
(DESIGN.md invariant 1): SQLite with `mode=ro`, PostgreSQL with read-only transactions.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from game_core.db import ConnectionSettings, DatabaseTarget, create_engine, parse_database_url
from game_core.schema import GAME_TABLES
from integrity.settings import Settings


def connection_settings(settings: Settings) -> ConnectionSettings:
    db = settings.database
    return ConnectionSettings(
        busy_timeout_ms=db.busy_timeout_ms,
        lock_timeout_ms=db.lock_timeout_ms,
        statement_timeout_ms=db.statement_timeout_ms,
    )


def target_of(settings: Settings) -> DatabaseTarget:
    return parse_database_url(settings.database_url)


def open_read_only(settings: Settings) -> tuple[DatabaseTarget, Engine]:
    target = target_of(settings)
    return target, create_engine(target, read_only=True, settings=connection_settings(settings))


def open_for_writing(settings: Settings, *, create_missing: bool = False) -> tuple[DatabaseTarget, Engine]:
    target = target_of(settings)
    engine = create_engine(target, create_missing=create_missing, settings=connection_settings(settings))
    return target, engine


def table_row_counts(connection: Connection) -> dict[str, int]:
    """Rows per game table that exists (a database at another revision may lack some)."""
    present = set(sa.inspect(connection).get_table_names())
    return {
        name: connection.execute(sa.text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
        for name in GAME_TABLES
        if name in present
    }
