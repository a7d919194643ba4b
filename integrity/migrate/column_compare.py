"""Whether a column's values live on under another name after a migration.

A rename written as `alter_column(new_column_name=...)` (or a copy into a new column
followed by a drop) keeps every value: the dropped column's values are then not lost.
Both sides are hashed in key order, each by its own engine, so two databases on a
PostgreSQL server or two SQLite files compare the same way.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from integrity.db.sql import quote as _quote

BATCH = 10_000


def column_digest(connection, table: str, key: tuple[str, ...], column: str) -> str:
    keys = ", ".join(_quote(k) for k in key)
    if connection.dialect.name == "postgresql":
        # The server hashes each (key, value) row and sums: no sort, no rows shipped.
        total = connection.execute(sa.text(
            f"SELECT count(*), coalesce(sum(hash_record_extended(ROW({keys}, {_quote(column)}::text), 0)), 0) "
            f"FROM {_quote(table)}"
        )).one()
        return repr(tuple(total))
    digest = hashlib.blake2b(digest_size=16)
    result = connection.execution_options(stream_results=True, yield_per=BATCH).execute(sa.text(
        f"SELECT {keys}, {_quote(column)} FROM {_quote(table)} ORDER BY {keys}"
    ))
    for partition in result.partitions(BATCH):
        digest.update(repr(partition).encode())
    return digest.hexdigest()


def same_values(before_engine, after_engine, table: str, key: tuple[str, ...], old: str, new: str) -> bool:
    """True when `table.new` after holds exactly what `table.old` held before, row by row."""
    try:
        with before_engine.connect() as before, after_engine.connect() as after:
            return column_digest(before, table, key, old) == column_digest(after, table, key, new)
    except sa.exc.DBAPIError:
        return False  # the key columns changed too: not a plain rename
