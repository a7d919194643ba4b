"""SQL text both engines share: identifiers quoted and read back, a driver error as one line."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core.db import POSTGRESQL, SQLITE
from game_core.schema import GAME_TABLES

# One part of a name as SQL text spells it: double-quoted (both engines), backquoted or
# bracketed (SQLite accepts both for compatibility), or bare.
NAME = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][\w$]*)'


def quote(name: str) -> str:
    """A double-quoted SQL identifier (both engines)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A single-quoted SQL string literal (both engines)."""
    return "'" + value.replace("'", "''") + "'"


def unquote(identifier: str, kind: str) -> str:
    """The name a possibly qualified, possibly quoted identifier in SQL text resolves to
    on engine `kind`, so scanners can compare it with the names the catalogue reports.

    PostgreSQL folds a bare identifier to lower case and keeps a quoted one as written.
    SQLite matches identifiers case-insensitively, quoted or not, and its catalogue keeps
    the declared spelling, so one spelling stands for all: lower case, the way the game's
    models declare every name.
    """
    parts = re.findall(NAME, identifier)
    last = parts[-1] if parts else identifier.strip()
    if last[:1] == '"':
        name, quoted = last[1:-1].replace('""', '"'), True
    elif last[:1] in ("`", "["):
        name, quoted = last[1:-1], True
    else:
        name, quoted = last, False
    if kind == POSTGRESQL and quoted:
        return name
    return name.lower()


def error_reason(exc: BaseException) -> str:
    """The one-line reason of a driver error: the first line of what the database said
    (SQLAlchemy wraps it with the statement and a link), or the error's type when empty."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def table_row_counts(connection: Connection) -> dict[str, int]:
    """Rows per game table that exists (a database at another revision may lack some)."""
    present = set(sa.inspect(connection).get_table_names())
    return {
        name: connection.execute(sa.text(f"SELECT COUNT(*) FROM {quote(name)}")).scalar_one()
        for name in GAME_TABLES
        if name in present
    }


def database_bytes(connection: Connection) -> int:
    """The size of the database `connection` reads: SQLite's pages, PostgreSQL's
    `pg_database_size` (tables, indexes and their free space, as a restore writes them)."""
    if connection.dialect.name == SQLITE:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
        size = connection.exec_driver_sql("PRAGMA page_size").scalar()
        return int(pages) * int(size)
    return int(connection.execute(sa.text("SELECT pg_database_size(current_database())")).scalar())
