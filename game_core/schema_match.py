"""Does the database's shape match the model of the revision it claims to be at?

`alembic_version` says which revision a database is at; it does not prove the tables
are that revision's. The incident's change (levels stored as text, wpm rounded to
integers, a table rebuilt) was applied behind the tool's back, so the revision still
read as head while every read of a level crashed. The game therefore compares the
reflected tables with `game_core.schema` (the model of this code's head, the only
revision the game runs at) before any command reads or writes, and refuses with one
line naming each difference instead of failing later on the first odd value.

Types are compared as the dialect compiles them (INTEGER, NUMERIC(7, 2),
VARCHAR(32), TIMESTAMP WITH TIME ZONE / DATETIME), so a changed scale or length counts,
not only a changed family; nullability and missing or extra columns count too. Extra
tables are left alone (they are not the game's).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core import schema
from game_core.errors import SchemaMismatch

# What to do about it, named in every refusal: see the damage, then recover.
MISMATCH_HINT = (
    "the schema was changed outside `integrity migrate`, or this is not the game's database: "
    "run `integrity status` and `integrity audit` to see the damage, then restore the last good "
    "backup (runbooks/restore.md)"
)
SHOWN_DIFFERENCES = 6


def _type_text(type_: sa.types.TypeEngine, dialect) -> str:
    try:
        return type_.compile(dialect=dialect)
    except Exception:  # a reflected type the dialect cannot render (NullType): its name
        return str(type_) if not isinstance(type_, sa.types.NullType) else "untyped"


def schema_differences(connection: Connection) -> list[str]:
    """Each way the game's tables differ from the model, as 'table.column is X, expected Y'."""
    dialect = connection.dialect
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    wanted = [table for table in schema.metadata.sorted_tables if table.name in present]
    # One round trip for every table on PostgreSQL (per-table reflection costs several).
    reflected = {
        table: columns
        for (_schema, table), columns in inspector.get_multi_columns(filter_names=[t.name for t in wanted]).items()
    } if wanted else {}
    differences = []
    for table in schema.metadata.sorted_tables:
        if table.name not in present:
            differences.append(f"table {table.name} is missing")
            continue
        live = {column["name"]: column for column in reflected.get(table.name, [])}
        for column in table.columns:
            where = f"{table.name}.{column.name}"
            expected = _type_text(column.type, dialect)
            found = live.pop(column.name, None)
            if found is None:
                differences.append(f"{where} is missing (expected {expected})")
                continue
            found_type = _type_text(found["type"], dialect)
            if found_type != expected:
                differences.append(f"{where} is {found_type}, expected {expected}")
            # SQLite reports a PRIMARY KEY column as nullable unless declared NOT NULL; the
            # key itself forbids NULL there, so nullability is compared for other columns.
            if found["nullable"] != column.nullable and not column.primary_key:
                differences.append(f"{where} is {'nullable' if found['nullable'] else 'NOT NULL'}, expected "
                                   f"{'nullable' if column.nullable else 'NOT NULL'}")
        differences.extend(f"{table.name}.{name} is not in the model" for name in live)
    return differences


def require_matching_schema(connection: Connection, *, revision: str, display_name: str) -> None:
    """Raise SchemaMismatch (exit 4) naming the differences, when there are any."""
    differences = schema_differences(connection)
    if not differences:
        return
    shown = "; ".join(differences[:SHOWN_DIFFERENCES])
    if len(differences) > SHOWN_DIFFERENCES:
        shown += f"; and {len(differences) - SHOWN_DIFFERENCES} more"
    raise SchemaMismatch(
        f"database {display_name}: the game's schema at revision {revision} does not match: {shown}; {MISMATCH_HINT}"
    )
