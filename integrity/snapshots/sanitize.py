"""Replace every value of the personal columns of a copy by its pseudonym, in one
transaction on either engine (`integrity.snapshots.pseudonyms` says how they are drawn).

One map for every marked column of every table: the same name becomes the same pseudonym
wherever it appears. The map goes into a temporary table (SQLite keeps those in a separate
temp file, PostgreSQL drops them with the session: neither ends up in the snapshot) and one
UPDATE per column looks each value up in it. Keys, numbers, timestamps and types are not
touched; NULLs stay NULL.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from game_core.errors import PreconditionFailed
from integrity.db.sql import quote
from integrity.snapshots.pseudonyms import PersonalColumn, pseudonyms

MAP_TABLE = "integrity_pseudonyms"
INSERT_BATCH = 5_000


class MarkedColumnMissing(PreconditionFailed):
    """The copy lacks a column the model marks personal (another revision's schema)."""


@dataclass(frozen=True)
class ColumnReplaced:
    column: str  # table.column
    rows: int  # rows whose value was replaced (its non-NULL values)
    values: int  # distinct values among them


def sanitize(connection: sa.Connection, columns: tuple[PersonalColumn, ...], key: bytes,
             revision: str | None = None) -> tuple[ColumnReplaced, ...]:
    """Pseudonymise `columns` on `connection` (inside the caller's transaction)."""
    if connection.dialect.name == "sqlite":
        # Freed cells zeroed as they go (some builds do it anyway); the export's VACUUM then
        # rewrites every page, so neither depends on the other.
        connection.exec_driver_sql("PRAGMA secure_delete = ON")
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    for marked in columns:
        present = {c["name"] for c in inspector.get_columns(marked.table)} if marked.table in tables else set()
        if marked.column not in present:
            raise MarkedColumnMissing(
                f"the copy has no column {marked.name}, which game_core/schema.py marks personal (the copy is at "
                f"revision {revision or 'none'}); sanitise it with the integrity version of that revision, whose "
                "model marks its own personal columns"
            )
    distinct: dict[str, set[str]] = {}
    for marked in columns:
        distinct[marked.name] = set(connection.execute(sa.text(
            f"SELECT DISTINCT {quote(marked.column)} FROM {quote(marked.table)} "
            f"WHERE {quote(marked.column)} IS NOT NULL"
        )).scalars())
    mapping = pseudonyms(set().union(*distinct.values()) if distinct else set(), key)
    connection.execute(sa.text(
        f"CREATE TEMPORARY TABLE {MAP_TABLE} (original TEXT PRIMARY KEY, pseudonym TEXT NOT NULL)"
    ))
    rows = [{"o": original, "p": pseudonym} for original, pseudonym in mapping.items()]
    for start in range(0, len(rows), INSERT_BATCH):
        connection.execute(sa.text(f"INSERT INTO {MAP_TABLE} (original, pseudonym) VALUES (:o, :p)"),
                           rows[start:start + INSERT_BATCH])
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"ANALYZE {MAP_TABLE}"))  # a temporary table has no statistics until then
    replaced = []
    for marked in columns:
        table, column = quote(marked.table), quote(marked.column)
        updated = connection.execute(sa.text(
            f"UPDATE {table} SET {column} = (SELECT m.pseudonym FROM {MAP_TABLE} m WHERE m.original = {table}.{column}) "
            f"WHERE {column} IS NOT NULL"
        )).rowcount
        replaced.append(ColumnReplaced(marked.name, int(updated), len(distinct[marked.name])))
    connection.execute(sa.text(f"DROP TABLE {MAP_TABLE}"))
    return tuple(replaced)
