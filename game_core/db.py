"""The one connect hook: every engine the game, `integrity` and scratch copies use.

A dry run must see exactly the settings production sees, so nobody else calls
`sqlalchemy.create_engine` on a game database:

- SQLite: WAL, `busy_timeout`, `foreign_keys=ON`, and real transactions (the driver's
  legacy lazy BEGIN is replaced so that a read transaction is one snapshot and a write
  transaction takes the write lock up front instead of failing on upgrade).
- PostgreSQL: TimeZone UTC, `lock_timeout`, `statement_timeout`; read-only engines run
  every transaction read-only on the server.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from game_core.errors import DatabaseMissing, DatabaseUnreachable, PreconditionFailed

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
MASK = "***"
# 'postgresql//u:pw@h/db' or 'postgresql:/u:pw@h/db': a URL with a typo, not a file path.
_MISTYPED_URL = re.compile(r"^(sqlite|postgres|postgresql)(\+\w+)?(:|//)", re.IGNORECASE)
# 'host=db1 password=... dbname=game': libpq's other connection string form.
_LIBPQ_KEYWORD = re.compile(
    r"(^|\s)(host|hostaddr|port|dbname|user|password|passfile|sslmode|sslpassword|service|options|"
    r"connect_timeout|application_name|target_session_attrs)\s*=",
    re.IGNORECASE,
)
_SECRET_KEYS = ("password", "passfile", "sslpassword")
# A secret key's value in a keyword string or a query: quoted ('it''s'), or up to a separator.
_SECRET_VALUE = re.compile(r"\b((?:password|passfile|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)
URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST:PORT/DB"


@dataclass(frozen=True)
class ConnectionSettings:
    """Timeouts applied on every connection (milliseconds; 0 means none)."""

    busy_timeout_ms: int = 5000
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 0


@dataclass(frozen=True)
class DatabaseTarget:
    """A parsed database URL: what engine it is and, for SQLite, which file."""

    url: URL

    @property
    def kind(self) -> str:
        return SQLITE if self.url.get_backend_name() == "sqlite" else POSTGRESQL

    @property
    def sqlite_path(self) -> Path | None:
        if self.kind != SQLITE or not self.url.database or self.url.database == ":memory:":
            return None
        return Path(self.url.database).absolute()

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    @property
    def display(self) -> str:
        """What to print: the file path for SQLite, the masked URL otherwise."""
        return str(self.sqlite_path) if self.sqlite_path else self.masked


def parse_database_url(raw: str) -> DatabaseTarget:
    """Accept a SQLAlchemy URL, a `postgresql://` URL or a bare SQLite file path.

    SQLAlchemy's `make_url` is the parser: its parts are what psycopg and pg_dump are
    handed (as keywords and PG* variables), so what it reads is what is used. Anything it
    would read differently from what the user meant is refused, never echoed whole: a libpq
    keyword string (its `password=` would otherwise pass for part of a file name) and a
    password with an unencoded '@' (its tail would become the host, printed everywhere).
    """
    text = (raw or "").strip()
    if not text:
        raise DatabaseUnreachable("the database URL is empty; set --database-url or GAME_DATABASE_URL")
    if "://" not in text and _LIBPQ_KEYWORD.search(text):
        raise DatabaseUnreachable(
            "the database URL is a libpq keyword string (host=... dbname=...), which is not accepted (and not "
            f"shown: it may hold a password); give a URL instead: {URL_FORMS}"
        )
    if "://" not in text and _MISTYPED_URL.match(text):
        raise DatabaseUnreachable(f"malformed database URL {mask_text_url(text)!r}; expected {URL_FORMS}")
    if "://" not in text:
        return DatabaseTarget(make_url(f"sqlite:///{Path(text).expanduser().absolute()}"))
    try:
        url = make_url(text)
    except Exception:  # sqlalchemy raises ArgumentError with the whole URL in it
        raise DatabaseUnreachable(f"malformed database URL {mask_text_url(text)!r}; expected {URL_FORMS}") from None
    if "@" in (url.host or "") or "@" in (url.username or ""):
        raise DatabaseUnreachable(
            f"malformed database URL {mask_text_url(text)!r}: its password holds an unencoded '@'; "
            f"percent-encode reserved characters in the password (@ as %40, / as %2F, % as %25); expected {URL_FORMS}"
        )
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise DatabaseUnreachable(
                f"{mask_text_url(text)!r} is an in-memory SQLite database, which holds nothing to guard; give a file: sqlite:///PATH"
            )
        if "\x00" in url.database:
            raise DatabaseUnreachable("the SQLite path of the database URL contains a NUL character")
        return DatabaseTarget(url.set(database=str(Path(url.database).expanduser().absolute())))
    if backend in ("postgresql", "postgres"):
        return DatabaseTarget(url.set(drivername="postgresql+psycopg"))
    raise DatabaseUnreachable(
        f"unsupported database {backend!r} in {mask_url(url)!r}; use sqlite:///PATH or postgresql://..."
    )


def mask_url(url: URL | str) -> str:
    """The URL with its password (and any password-like query value) replaced by ***."""
    if isinstance(url, str):
        return mask_text_url(url)
    secret_keys = [k for k in url.query if k.lower() in _SECRET_KEYS]
    if secret_keys:
        url = url.update_query_dict({k: MASK for k in secret_keys})
    # render_as_string percent-encodes query values; show the mask as it is.
    return url.render_as_string(hide_password=True).replace("%2A%2A%2A", MASK)


def mask_text_url(text: str) -> str:
    """Mask a URL given as text, even one too broken for SQLAlchemy to parse, and the
    password of a libpq keyword string."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        if _LIBPQ_KEYWORD.search(text):
            return _mask_keywords(text)
        # No scheme separator (a typo or a file path): mask anything shaped like credentials.
        return re.sub(r"([^/:@]*):.*@", lambda m: f"{m.group(1)}:{MASK}@", text) if "@" in text else text
    authority = rest.split("/", 1)[0]
    if authority.count("@") <= 1 and rest.count("@") <= 1:
        try:
            return _mask_keywords(mask_url(make_url(text)))
        except Exception:
            pass
    if "@" not in rest:
        return _mask_keywords(text)
    # An unencoded '@' (or '/', '?', '#') in a password: everything before the last '@'
    # may be secret, whatever a parser would make of it.
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0].split("/", 1)[0]
    return _mask_keywords(f"{scheme}://{user}:{MASK}@{host}")


def _mask_keywords(text: str) -> str:
    """`password=...` (and the other secret keys) in a keyword string or a query, masked."""
    return _SECRET_VALUE.sub(lambda m: f"{m.group(1)}{MASK}", text)


def unreachable(target: DatabaseTarget, exc: BaseException) -> DatabaseUnreachable:
    """A driver's failure to connect as one line naming the database, never its password."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    reason = lines[0] if lines else type(orig).__name__
    password = target.url.password
    if password and len(password) >= 3:  # a driver may quote what it was given
        reason = reason.replace(password, MASK)
    failure = DatabaseUnreachable(
        f"cannot connect to {target.display}: {reason}; check that --database-url points at the game's "
        "database and that it is reachable"
    )
    failure.cause = f"cannot connect to {target.display}: {reason}"  # for callers with their own hint
    return failure


def translate_connect_errors(engine: Engine, target: DatabaseTarget) -> Engine:
    """Make every failure to reach the database, on any connection of `engine` (the first
    or a later one, a refused port, an unknown host or role, a bad sslmode, a server gone
    mid-session), DatabaseUnreachable (exit 4) with the driver's one-line reason, instead of
    a driver exception that would reach the CLI as a bug. Errors of a statement on a live
    connection (a lock timeout, a constraint) stay the caller's."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context):
        if context.is_pre_ping:
            return  # the pool handles a stale pooled connection by reconnecting
        if context.connection is not None and not context.is_disconnect:
            return
        if not isinstance(context.original_exception, Exception):
            return
        raise unreachable(target, context.original_exception)

    return engine


def create_engine(
    target: DatabaseTarget | str,
    *,
    read_only: bool = False,
    settings: ConnectionSettings = ConnectionSettings(),
    create_missing: bool = False,
) -> Engine:
    """An engine with the production connection settings, checked to answer.

    A read-only engine never creates anything: a missing SQLite file is DatabaseMissing
    (exit 4, naming the path). A writer creates the file only with `create_missing`.
    """
    if isinstance(target, str):
        target = parse_database_url(target)
    if target.kind == SQLITE:
        engine = _sqlite_engine(target, read_only=read_only, settings=settings, create_missing=create_missing)
    else:
        engine = _postgresql_engine(target, read_only=read_only, settings=settings)
    check_reachable(engine, target)
    return engine


def check_reachable(engine: Engine, target: DatabaseTarget) -> None:
    try:
        with engine.connect() as connection:
            # SQLite's SELECT 1 never reads the file: the schema cookie does, so a file
            # that is not a database fails here instead of in the first real query.
            connection.execute(sa.text("PRAGMA schema_version" if target.kind == SQLITE else "SELECT 1"))
    except DatabaseUnreachable:
        engine.dispose()
        raise
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        raise unreachable(target, exc) from None


def _sqlite_engine(target: DatabaseTarget, *, read_only: bool, settings: ConnectionSettings, create_missing: bool) -> Engine:
    path = target.sqlite_path
    if path is None:
        raise DatabaseUnreachable("an in-memory SQLite database cannot be guarded; give a file path")
    if not path.exists():
        if read_only or not create_missing:
            raise DatabaseMissing(
                f"database {path} does not exist; run `integrity init` (or `typing-game play`) "
                "to create it, or point --database-url at the right file"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    if read_only:
        uri = f"file:{quote(str(path))}?mode=ro"
    else:
        uri = f"file:{quote(str(path))}?mode=rwc"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=settings.busy_timeout_ms / 1000)

    engine = translate_connect_errors(sa.create_engine("sqlite://", creator=connect), target)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control from the driver: it would otherwise BEGIN lazily
        # at the first write, so reads before it would not share one snapshot.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # An AUTOCOMMIT connection (Alembic's autocommit_block()) must stay outside any
        # transaction: SQLite ignores `PRAGMA foreign_keys` inside one, and turning foreign
        # keys off around a batch rebuild is the only way to keep its DROP TABLE from
        # cascading into the child tables.
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        # A writer takes the lock at BEGIN: upgrading a read transaction to a write
        # fails at once (SQLITE_BUSY_SNAPSHOT) when another writer committed meanwhile.
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgresql_engine(target: DatabaseTarget, *, read_only: bool, settings: ConnectionSettings) -> Engine:
    try:
        import psycopg  # noqa: F401  (only to give a clear message when it is missing)
    except ImportError:
        raise PreconditionFailed(
            "PostgreSQL needs psycopg; install the extra: pip install 'typing-game-integrity[postgres]'"
        ) from None
    options = [
        "-c TimeZone=UTC",
        f"-c lock_timeout={int(settings.lock_timeout_ms)}",
        f"-c statement_timeout={int(settings.statement_timeout_ms)}",
    ]
    if read_only:
        options.append("-c default_transaction_read_only=on")
    engine = sa.create_engine(
        target.url,
        connect_args={"options": " ".join(options), "connect_timeout": 10},
        pool_pre_ping=True,
    )
    return translate_connect_errors(engine, target)
