"""PostgreSQL restores: a staging database beside live, then two renames in one transaction.

DESIGN.md section 7 and PITFALLS.md: a database cannot be renamed while anyone is
connected to it, and a renamed-in database does not carry the old one's `ALTER DATABASE
... SET` values, grants or owner. So, from the maintenance database `postgres`, in ONE
transaction: end the sessions on live (only with consent), rename live to
`<live>_before_restore_<UTC time>`, rename staging to live, copy owner, connection limit,
settings (`pg_db_role_setting`) and grants (`datacl`) from the old database to the new,
commit. `ALTER DATABASE ... RENAME` holds an exclusive lock on the database until the
commit, so a game that reconnects at once waits and then lands on the restored database.
Until the commit nothing is visible: a failure or a kill anywhere before it leaves live
exactly as it was (the server rolls the transaction back when the session dies). The old
database is kept, renamed, for the operator to inspect and drop.

Staging databases are named `<live>_restore_<backup id>`, so the next restore of the
same database finds (and drops) one left by a killed run.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from game_core.db import DatabaseTarget
from game_core.errors import PreconditionFailed
from integrity.db.pg_tools import require_tool, server_major
from integrity.backups.repository import Manifest, Repository
# scratch.py owns "create a database, feed pg_restore from the verified stream"; the
# restore reuses it as it is (its flags: --no-owner --no-privileges --exit-on-error), then
# gives the restored objects live's owners and grants (integrity.db.postgres_access).
from integrity.db.scratch import pg_restore_into
from integrity.crashpoints import crash_point
from integrity.db.connect import maintenance
from integrity.db.postgres_access import copy_access
from integrity.db.sql import error_reason, literal, quote

STAGING_INFIX = "_restore_"
OLD_INFIX = "_before_restore_"
MAX_IDENTIFIER_BYTES = 63
# A rename fails when a session slipped in between the terminations and the rename
# (a client that reconnects at once): end it too and try again, a few times.
SWAP_ATTEMPTS = 5
# pg_dump's list of settings whose values are lists of quoted items (dumputils.c).
LIST_SETTINGS = {
    "local_preload_libraries", "search_path", "session_preload_libraries",
    "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories",
}
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")


class SessionsOpen(PreconditionFailed):
    """Sessions are connected to live and ending them was not consented to."""


class ServerFull(PreconditionFailed):
    """The server's disk filled up while the staging database was restored."""


class SwapRefused(PreconditionFailed):
    """The rename transaction failed (rights, sessions that would not end); nothing changed."""


@dataclass(frozen=True)
class Session:
    """A client session connected to the live database."""

    pid: int
    user: str | None
    application: str | None
    client: str | None
    state: str | None
    since: str | None

    def describe(self) -> str:
        application = f" application {self.application!r}" if self.application else ""
        return f"pid {self.pid} user {self.user or '?'}{application} from {self.client or 'local socket'} ({self.state or 'unknown'})"


@dataclass(frozen=True)
class SwapOutcome:
    old_database: str | None  # None when there was no live database to keep
    terminated: tuple[Session, ...]
    attempts: int


def _truncate(name: str, size: int) -> str:
    return name.encode()[:size].decode(errors="ignore")


def _backup_part(backup_id: str) -> str:
    return backup_id.lower().replace("-", "_")


def _staging_prefix(live: str) -> str:
    room = MAX_IDENTIFIER_BYTES - len(STAGING_INFIX) - len(_backup_part("20260101T000000Z-000000"))
    return _truncate(live, room) + STAGING_INFIX


def staging_name(live: str, backup_id: str) -> str:
    return _staging_prefix(live) + _backup_part(backup_id)


def old_name(live: str, moment: datetime) -> str:
    stamp = moment.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")
    return _truncate(live, MAX_IDENTIFIER_BYTES - len(OLD_INFIX) - len(stamp)) + OLD_INFIX + stamp


def drop_hint(name: str) -> str:
    return f"psql -d postgres -c 'DROP DATABASE {quote(name)}'"


# ---------------------------------------------------------------- what is there


def database_exists(connection, name: str) -> bool:
    return connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None


# A role without pg_read_all_stats sees another role's session with its database, user and
# application but a NULL backend_type (and state, client, start): it is still a client
# that the rename must wait for. Rows with no user are the server's own workers.
_SESSION_COLUMNS = (
    "SELECT pid, usename, application_name, client_addr::text AS client, state, backend_start "
    "FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
    "AND (backend_type = 'client backend' OR (backend_type IS NULL AND usename IS NOT NULL)) "
)


def _session(row) -> Session:
    since = row.backend_start.isoformat(timespec="seconds") if row.backend_start else None
    return Session(row.pid, row.usename, row.application_name or None, row.client, row.state, since)


def sessions(connection, database: str) -> list[Session]:
    """Client sessions on `database` other than this one (autovacuum workers excluded:
    the rename ends those itself)."""
    rows = connection.execute(sa.text(_SESSION_COLUMNS + "AND datname = :d ORDER BY pid"), {"d": database})
    return [_session(row) for row in rows]


def leftovers(connection, live: str) -> list[str]:
    """Staging databases of this live database left by killed restores."""
    prefix = _staging_prefix(live)
    pattern = re.compile(re.escape(prefix) + r"\d{8}t\d{6}z_[0-9a-f]{6}$")
    names = connection.execute(
        sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :p) ORDER BY datname"), {"p": prefix}
    ).scalars()
    return [name for name in names if pattern.match(name)]


def drop(live: DatabaseTarget, name: str) -> None:
    with maintenance(live) as admin:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))


def remove_leftovers(live: DatabaseTarget) -> list[str]:
    with maintenance(live) as admin:
        with admin.connect() as connection:
            found = leftovers(connection, live.url.database)
            for name in found:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))
        return found


def live_sessions(live: DatabaseTarget) -> list[Session]:
    with maintenance(live) as admin:
        with admin.connect() as connection:
            return sessions(connection, live.url.database)


# ---------------------------------------------------------------- staging


def stage(repository: Repository, manifest: Manifest, *, live: DatabaseTarget) -> DatabaseTarget:
    """A new staging database (the live one's encoding and locale) filled by pg_restore."""
    name = staging_name(live.url.database, manifest.id)
    with maintenance(live) as admin:
        with admin.connect() as connection:
            major = server_major(connection)
            like = connection.execute(sa.text(
                "SELECT pg_encoding_to_char(encoding) AS encoding, datcollate, datctype FROM pg_database WHERE datname = :n"
            ), {"n": live.url.database}).first()
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))
            statement = f"CREATE DATABASE {quote(name)}"
            if like is not None:
                statement += (
                    f" TEMPLATE template0 ENCODING {literal(like.encoding)} LC_COLLATE {literal(like.datcollate)} "
                    f"LC_CTYPE {literal(like.datctype)}"
                )
            connection.execute(sa.text(statement))
        staging = DatabaseTarget(live.url.set(database=name))
        try:
            tool = require_tool("pg_restore", major)
            pg_restore_into(tool.path, repository, manifest, staging)
            if like is not None:  # live exists: the game's roles must keep their rights
                copy_access(live, staging)
        except BaseException as exc:
            with admin.connect() as connection:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))
            if any(sign in str(exc) for sign in ("No space left on device", "could not extend file", "disk full")):
                raise ServerFull(
                    f"the PostgreSQL server ran out of disk space while staging backup {manifest.id}; the staging "
                    "database was dropped and the live database was not touched; free space on the server and run "
                    "the restore again"
                ) from None
            raise
        return staging


# ---------------------------------------------------------------- the swap


def swap(live: DatabaseTarget, staging: str, *, terminate: bool, now: datetime | None = None) -> SwapOutcome:
    """Rename live away and staging in, in one transaction; see the module docstring.

    `terminate`: consent was given to end the sessions on live; without it, sessions on
    live raise SessionsOpen (exit 4, naming them) and nothing changes.
    """
    live_name = live.url.database
    with maintenance(live) as admin:
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            try:
                with admin.connect() as autocommit:
                    connection = autocommit.execution_options(isolation_level="READ COMMITTED")
                    with connection.begin():
                        old, ended = _swap_once(connection, live, staging, terminate=terminate, now=now)
                return SwapOutcome(old_database=old, terminated=tuple(ended), attempts=attempt)
            except sa.exc.DBAPIError as exc:
                state = getattr(exc.orig, "sqlstate", None)
                if state == "55006" and attempt < SWAP_ATTEMPTS:  # object_in_use: someone slipped in
                    time.sleep(0.1 * attempt)
                    continue
                reason = error_reason(exc)
                raise SwapRefused(
                    f"PostgreSQL refused the swap of {staging} into {live_name}: {reason}; the transaction rolled "
                    "back and the live database is as it was"
                ) from None
        raise AssertionError("unreachable")


def _swap_once(connection, live: DatabaseTarget, staging: str, *, terminate: bool, now: datetime | None) -> tuple[str | None, list[Session]]:
    name = live.url.database
    old_oid = connection.execute(sa.text("SELECT oid FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
    connected = sessions(connection, name) if old_oid is not None else []
    if connected and not terminate:
        raise SessionsOpen(sessions_message(name, connected))
    ended: dict[int, Session] = {}
    old = None
    if old_oid is not None:
        old = _free_old_name(connection, name, now or datetime.now(timezone.utc))
        # The rename takes the database's lock first (new sessions now wait for our
        # commit), then waits up to 5 s for the sessions already there to leave: ending
        # them meanwhile, from another session, closes the gap a reconnecting game
        # would otherwise slip through between a termination and the rename.
        with _ending_sessions(live, old_oid, ended) if terminate else nullcontext():
            connection.execute(sa.text(f"ALTER DATABASE {quote(name)} RENAME TO {quote(old)}"))
    connection.execute(sa.text(f"ALTER DATABASE {quote(staging)} RENAME TO {quote(name)}"))
    if old_oid is not None:
        copy_properties(connection, old_oid, name)
    crash_point("restore:swapping")
    return old, list(ended.values())


@contextmanager
def _ending_sessions(live: DatabaseTarget, database_oid: int, ended: dict[int, Session]) -> Iterator[None]:
    """While the body runs, end every client session on the database, again and again."""
    stop = threading.Event()
    problems: list[str] = []

    def end_them() -> None:
        try:
            with maintenance(live) as admin, admin.connect() as connection:
                while not stop.is_set():
                    for session in _sessions_of(connection, database_oid):
                        connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": session.pid})
                        ended.setdefault(session.pid, session)
                    stop.wait(0.02)
        except sa.exc.DBAPIError as exc:  # the rename then fails with "being accessed by other users"
            problems.append(error_reason(exc))

    worker = threading.Thread(target=end_them, name="end-sessions", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=30)


def _sessions_of(connection, database_oid: int) -> list[Session]:
    rows = connection.execute(sa.text(_SESSION_COLUMNS + "AND datid = :o"), {"o": database_oid})
    return [_session(row) for row in rows]


def _free_old_name(connection, live: str, moment: datetime) -> str:
    name = old_name(live, moment)
    if not database_exists(connection, name):
        return name
    for number in range(2, 100):  # two restores within one second
        candidate = _truncate(name, MAX_IDENTIFIER_BYTES - 3) + f"_{number}"
        if not database_exists(connection, candidate):
            return candidate
    raise SwapRefused(f"too many databases named like {name}; drop old ones ({drop_hint(name)})")


def sessions_message(live: str, connected: list[Session]) -> str:
    listed = "; ".join(session.describe() for session in connected[:10])
    more = f" and {len(connected) - 10} more" if len(connected) > 10 else ""
    return (
        f"{len(connected)} other session(s) are connected to {live}: {listed}{more}; the swap must end them: "
        "stop the game first, or run again with --terminate-connections (or from a terminal to confirm); "
        "the live database was not changed"
    )


def copy_properties(connection, old_oid: int, new: str) -> None:
    """Owner, connection limit, settings and grants of the old database onto the new one."""
    facts = connection.execute(sa.text(
        "SELECT pg_get_userbyid(datdba) AS owner, datconnlimit, datacl IS NULL AS default_acl "
        "FROM pg_database WHERE oid = :o"
    ), {"o": old_oid}).one()
    connection.execute(sa.text(f"ALTER DATABASE {quote(new)} OWNER TO {quote(facts.owner)}"))
    if facts.datconnlimit != -1:
        connection.execute(sa.text(f"ALTER DATABASE {quote(new)} CONNECTION LIMIT {int(facts.datconnlimit)}"))
    settings = connection.execute(sa.text(
        "SELECT s.setrole, r.rolname, s.setconfig FROM pg_db_role_setting AS s "
        "LEFT JOIN pg_roles AS r ON r.oid = s.setrole WHERE s.setdatabase = :o ORDER BY s.setrole"
    ), {"o": old_oid})
    for setrole, role, config in settings.all():
        target = f"DATABASE {quote(new)}" if setrole == 0 else f"ROLE {quote(role)} IN DATABASE {quote(new)}"
        for item in config or ():
            name, _, value = item.partition("=")
            connection.execute(sa.text(f"ALTER {target} SET {_setting_name(name)} = {setting_value(name, value)}"))
    if not facts.default_acl:
        # NULL means the built-in defaults (PUBLIC may CONNECT and TEMP); an explicit ACL
        # may have revoked them, so start from nothing and grant exactly what was there.
        connection.execute(sa.text(f"REVOKE ALL ON DATABASE {quote(new)} FROM PUBLIC"))
        grants = connection.execute(sa.text(
            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END AS grantee, "
            "a.privilege_type, a.is_grantable FROM pg_database AS d, aclexplode(d.datacl) AS a WHERE d.oid = :o"
        ), {"o": old_oid})
        for grantee, privilege, grantable in grants.all():
            to = "PUBLIC" if grantee is None else quote(grantee)
            option = " WITH GRANT OPTION" if grantable else ""
            connection.execute(sa.text(f"GRANT {privilege} ON DATABASE {quote(new)} TO {to}{option}"))


def _setting_name(name: str) -> str:
    return name if _PLAIN_NAME.match(name) else quote(name)


def setting_value(name: str, value: str) -> str:
    """The SQL for a stored `name=value`: list settings item by item, as pg_dump does,
    so that `search_path="$user", public` stays two items and not one."""
    if name.lower() not in LIST_SETTINGS:
        return literal(value)
    return ", ".join(literal(item) for item in _split_list(value))


def _split_list(value: str) -> list[str]:
    items, current, quoted, index = [], [], False, 0
    while index < len(value):
        char = value[index]
        if quoted:
            if char == '"' and value[index + 1:index + 2] == '"':
                current.append('"')
                index += 1
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = True
        elif char == ",":
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        index += 1
    items.append("".join(current).strip())
    return [item for item in items if item]
