"""SQLite: the other side's file attached read-only to one connection, so that a table
is compared in set-based SQL instead of through Python.

Every function takes `execute(sql, params=())`, the connection's way of running a
statement: `Connection.exec_driver_sql` when the comparison must run inside a
SQLAlchemy transaction, a DBAPI cursor's `execute` when it manages its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote as url_quote

import sqlalchemy as sa

from integrity.db.sql import quote

Execute = Callable[..., Iterable[Any]]


def main_file(execute: Execute) -> str | None:
    """The path of the connection's main database; None for an in-memory one."""
    for _seq, name, path in execute("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


def attached_as(execute: Execute, path: str) -> str | None:
    """The name under which `path` is attached already, if it is."""
    for _seq, name, attached in execute("PRAGMA database_list"):
        if attached == path and name != "main":
            return name
    return None


def attach_read_only(execute: Execute, path: str, alias: str) -> str | None:
    """Attach `path` read-only under `alias` (or `alias_1`, ... when taken); the name
    used, or None when the attachment is not that file.

    Read-only through a URI: an attachment does not inherit the main file's mode=ro.
    game_core.db opens connections with URIs enabled; on a connection without them the
    URI is a file name in a directory "file:" that does not exist: the ATTACH fails
    (the driver's error propagates) or attaches something else (None).
    """
    names = {row[1] for row in execute("PRAGMA database_list")}
    chosen, suffix = alias, 0
    while chosen in names:
        suffix += 1
        chosen = f"{alias}_{suffix}"
    execute(f"ATTACH DATABASE ? AS {quote(chosen)}", (f"file:{url_quote(path)}?mode=ro",))
    attached = {name: file for _seq, name, file in execute("PRAGMA database_list")}
    if attached.get(chosen) != path:
        detach(execute, chosen)
        return None
    return chosen


def detach(execute: Execute, alias: str) -> bool:
    """Detach `alias`; False when SQLite refuses (inside a transaction: "database is
    locked"). A refused attachment is read-only, found again by path next time, and
    goes with the connection."""
    try:
        execute(f"DETACH DATABASE {quote(alias)}")
    except (sqlite3.Error, sa.exc.DBAPIError):
        return False
    return True
