"""Run Alembic revisions one at a time on a scratch copy and trace what happened.

`run_revisions` runs the project's real upgrade (or downgrade), one revision per
connection and transaction, on an engine from game_core's connect hook, so the copy sees
production's settings (SQLite `foreign_keys=ON`; PostgreSQL UTC and timeouts). For each
revision it records:

- the revision's time and every statement's time and row count, from SQLAlchemy's cursor
  events on the connection handed to Alembic (`config.attributes["connection"]`);
- on PostgreSQL, after each statement, the relation-level locks the migration's backend
  holds (`pg_locks` where `pid = pg_backend_pid()`): a lock is held until the end of the
  transaction, so a cheap first statement can keep ACCESS EXCLUSIVE for the whole
  revision. Each lock's hold time runs from the start of the statement after which it
  was first seen (it was not held before that statement, and statements lock what they
  touch as they begin, so a long ALTER's own time counts) to the commit (or the rollback
  of a failed revision, or the commit before an `autocommit_block`). Catalog relations
  are left out: they are the probe's own locks and Alembic's inspection queries. Modes
  are as `pg_locks` names them ("AccessExclusiveLock" is the docs' ACCESS EXCLUSIVE);
- on PostgreSQL, the tables and indexes of the public schema whose `relfilenode` changed:
  the statement rewrote them, which takes as long as copying the relation.

The lock probe runs on a raw driver cursor of the same backend, so it never shows up as a
traced statement; its time is subtracted from the revision's time.

The first failing revision stops the run: its transaction is rolled back and its trace
carries the database's message, the failing statement and, best effort, the rows that
made it fail, counted on the rolled-back copy (offending_rows is None when they could not
be identified, including when the query finds none; explaining never raises):

- NOT NULL: SQLite "NOT NULL constraint failed: t.c" (also from a batch copy into
  `_alembic_tmp_t`) and "Cannot add a NOT NULL column with default value NULL" (the table
  and column read from the ALTER TABLE), PostgreSQL 23502 with table and column: the rows
  where the column is NULL, or every row when the column did not exist before.
- UNIQUE: SQLite "UNIQUE constraint failed: t.a, t.b" or "index 'name'", PostgreSQL 23505:
  the terms (and partial-index predicate) from the failing CREATE UNIQUE INDEX or UNIQUE
  constraint in the revision's statements, else the message's columns (SQLite) or the
  detail's "Key (a, b)=" (PostgreSQL): every row of a group of duplicates.
- CHECK: SQLite "CHECK constraint failed: name" and PostgreSQL 23514: the constraint's
  expression found in the revision's statements (`CONSTRAINT name CHECK (...)`, SQLite
  also names an unnamed check by its expression): the rows where it is false.
- FOREIGN KEY: PostgreSQL 23503 (child columns and parent table from the detail, parent
  columns from the statement's REFERENCES or the parent's primary key); SQLite says only
  "FOREIGN KEY constraint failed", so the FOREIGN KEY clauses of the batch table being
  filled are checked: the rows without a parent.
- PostgreSQL 22P02 (invalid input, the value is in the message): the rows whose column,
  named by the failing `ALTER TABLE t ALTER COLUMN c TYPE ...`, holds that value;
  22003 and 22001 (numeric out of range, value too long: no value in the message): the
  rows whose value (the USING expression's, else the column's) does not fit the new
  integer, numeric(p, s) or varchar(n) type.

Anything else (a lock or statement timeout, a revision raising in Python) is reported
with its message only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from integrity.db.sql import NAME, quote, unquote

UPGRADE = "upgrade"
DOWNGRADE = "downgrade"
SQL_WIDTH = 200  # a statement as it appears in a trace: one line, at most this long

# Schemas whose relations are the probe's or Alembic's own catalog reads, never the data.
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

# Relation-level locks of this backend in this database. `granted` only: a lock still
# waited for is not held (and a wait ends in lock_timeout, reported as the failure).
_LOCKS_SQL = """
SELECT l.relation, l.mode, n.nspname, c.relname
FROM pg_catalog.pg_locks l
LEFT JOIN pg_catalog.pg_class c ON c.oid = l.relation
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
"""

# Tables, materialized views and indexes of the public schema with their storage file,
# and for an index the table it indexes (whose rows it holds one entry for).
_RELATIONS_SQL = sa.text("""
SELECT c.oid, c.relname, c.relkind, c.relfilenode, c.reltuples, t.relname AS table_name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm', 'i')
""")


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class LockHeld:
    relation: str
    mode: str  # as pg_locks names it, e.g. "AccessExclusiveLock"
    seconds: float  # from the start of the statement that took it until the transaction ended


@dataclass(frozen=True)
class StatementTrace:
    sql: str  # one line, at most SQL_WIDTH characters
    seconds: float
    rows: int | None  # the driver's row count, when it reports one
    locks: tuple[str, ...] = ()  # PostgreSQL: "relation:mode" newly held after this statement


@dataclass(frozen=True)
class Rewrite:
    relation: str
    kind: str  # "table" | "index"
    rows: int  # pg_class.reltuples, or an exact count when the table was never analyzed


@dataclass(frozen=True)
class RevisionTrace:
    revision: str
    direction: str  # "upgrade" | "downgrade"
    seconds: float
    statements: tuple[StatementTrace, ...]
    locks_held: tuple[LockHeld, ...]  # PostgreSQL only
    rewritten: tuple[Rewrite, ...]  # PostgreSQL only
    error: str | None = None  # one line: the database's message
    failing_statement: str | None = None  # one line, at most SQL_WIDTH characters
    offending_rows: int | None = None  # the rows that made it fail, when identified
    offending_samples: tuple[str, ...] = ()  # their keys, e.g. "results.id=17"
    # The database refused a statement (the data or the schema made it fail), as opposed
    # to the revision's own Python raising: the first is a finding, the second a broken
    # revision that cannot be rehearsed at all.
    database_error: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None


class AlembicProject(Protocol):
    def config(self, connection: Connection):  # -> alembic.config.Config
        """A fresh Alembic Config whose attributes["connection"] is `connection`."""


# ---------------------------------------------------------------- running


def run_revisions(
    project: AlembicProject,
    engine: Engine,
    steps: list[tuple[str, str]],
    *,
    direction: str,
    sample_limit: int = 10,
) -> list[RevisionTrace]:
    """Run each (revision, Alembic target) step in its own transaction and trace it.

    For an upgrade the target is the revision itself; for a downgrade it is the revision
    below it ("base" below the first). Stops after the first step that fails (its
    trace has `error` set; its transaction is rolled back), so the copy stays at the
    last revision that succeeded.
    """
    if direction not in (UPGRADE, DOWNGRADE):
        raise ValueError(f"direction must be {UPGRADE!r} or {DOWNGRADE!r}, not {direction!r}")
    from alembic import command

    run = command.upgrade if direction == UPGRADE else command.downgrade
    traces: list[RevisionTrace] = []
    for revision, target in steps:
        trace = _run_step(project, engine, revision, target, direction, run, sample_limit)
        traces.append(trace)
        if trace.failed:
            break
    return traces


def _run_step(
    project: AlembicProject,
    engine: Engine,
    revision: str,
    target: str,
    direction: str,
    run: Callable,
    sample_limit: int,
) -> RevisionTrace:
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        before = _relations(connection) if postgres else {}
        # Alembic must receive a connection outside any transaction: it then opens and
        # commits its own, and an `autocommit_block()` in a revision can commit it.
        connection.commit()
        recorder = _Recorder(
            postgres,
            connection.dialect.paramstyle in ("format", "pyformat"),
            {oid: relation.name for oid, relation in before.items()},
        )
        recorder.attach(connection)
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            run(project.config(connection), target)
            connection.commit()  # whatever Alembic left open (its own transaction is committed)
        except Exception as exc:
            failure = exc
        finally:
            elapsed = time.perf_counter() - started - recorder.probe_seconds
            if failure is not None or connection.in_transaction():
                _rollback_quietly(connection)
            recorder.detach(connection)
        try:
            rewritten = _rewrites(connection, before, _relations(connection)) if postgres else ()
        except sa.exc.DBAPIError:
            if failure is None:
                raise
            rewritten = ()  # the failure took the connection with it: report the failure itself
        _rollback_quietly(connection)
        trace = RevisionTrace(
            revision=revision,
            direction=direction,
            seconds=max(elapsed, 0.0),
            statements=tuple(recorder.statements),
            locks_held=tuple(recorder.held),
            rewritten=rewritten,
        )
        if failure is None:
            return trace
        failing_sql = recorder.failed_sql or getattr(failure, "statement", None)
        rows, samples = _explain_failure(connection, failure, failing_sql, recorder.history, sample_limit)
        return replace(
            trace,
            error=_error_line(failure),
            failing_statement=one_line(failing_sql) if failing_sql else None,
            offending_rows=rows,
            offending_samples=samples,
            database_error=isinstance(failure, sa.exc.DBAPIError),
        )


def _rollback_quietly(connection: Connection) -> None:
    try:
        connection.rollback()
    except Exception:  # a broken connection has nothing left to roll back
        pass


def one_line(sql: str) -> str:
    """A statement on one line, cut to SQL_WIDTH characters."""
    text = " ".join(sql.split())
    return text if len(text) <= SQL_WIDTH else text[: SQL_WIDTH - 1] + "…"


def _error_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    if original is None:
        text = f"{type(exc).__name__}: {exc}"
    else:
        diag = getattr(original, "diag", None)
        primary = getattr(diag, "message_primary", None)
        detail = getattr(diag, "message_detail", None)
        text = f"{primary} ({detail})" if primary and detail else (primary or str(original))
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@dataclass
class _Recorder:
    """Cursor events of the migration's connection: statement times, rows and locks."""

    postgres: bool
    percent_escaped: bool  # the driver's paramstyle doubles '%' in statements
    names: dict[int, str]  # oid -> name, for locks on relations the revision dropped
    statements: list[StatementTrace] = field(default_factory=list)
    history: list[str] = field(default_factory=list)  # every statement in full, for explaining a failure
    held: list[LockHeld] = field(default_factory=list)
    open_locks: dict[tuple[str, str], float] = field(default_factory=dict)
    probe_seconds: float = 0.0
    pending: tuple[str, float] | None = None  # the statement the driver is running
    failed_sql: str | None = None  # the statement the driver rejected
    _on_error: Callable | None = field(default=None, init=False, repr=False)

    def _listeners(self) -> list[tuple[str, Callable]]:
        return [
            ("before_cursor_execute", self._before),
            ("after_cursor_execute", self._after),
            ("commit", self._transaction_ended),
            ("rollback", self._transaction_ended),
        ]

    def attach(self, connection: Connection) -> None:
        for name, listener in self._listeners():
            event.listen(connection, name, listener)
        # SQLAlchemy takes handle_error only per engine: the filter keeps it to this connection.
        self._on_error = lambda context: self._failed(context) if context.connection is connection else None
        event.listen(connection.engine, "handle_error", self._on_error)

    def detach(self, connection: Connection) -> None:
        for name, listener in self._listeners():
            event.remove(connection, name, listener)
        event.remove(connection.engine, "handle_error", self._on_error)

    def _before(self, _conn, _cursor, statement, parameters, _context, _executemany) -> None:
        if self.percent_escaped and parameters is not None:
            # What the server ran: the driver turns pyformat's '%%' back into '%'.
            statement = statement.replace("%%", "%")
        self.history.append(statement)
        self.pending = (statement, time.perf_counter())

    def _after(self, _conn, cursor, _statement, _parameters, _context, _executemany) -> None:
        ended = time.perf_counter()
        statement, began = self.pending or (_statement, ended)
        self.pending = None
        rowcount = getattr(cursor, "rowcount", -1)
        rows = rowcount if isinstance(rowcount, int) and rowcount >= 0 else None
        locks = self._probe_locks(cursor.connection, began) if self.postgres else ()
        self.statements.append(StatementTrace(one_line(statement), ended - began, rows, locks))

    def _failed(self, context) -> None:
        # The rejected statement ran too (a long UPDATE may fail only at its last row):
        # it is traced with its time, without rows or locks.
        if self.pending is None:
            return
        statement, began = self.pending
        self.pending = None
        self.failed_sql = statement
        self.statements.append(StatementTrace(one_line(statement), time.perf_counter() - began, None))

    def _probe_locks(self, dbapi_connection, since: float) -> tuple[str, ...]:
        began = time.perf_counter()
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(_LOCKS_SQL)
                found = cursor.fetchall()
        finally:
            self.probe_seconds += time.perf_counter() - began
        new = []
        for oid, mode, schema, name in found:
            if schema in _SYSTEM_SCHEMAS or (schema or "").startswith("pg_toast"):
                continue
            if name is None:  # dropped by this transaction: its catalog row is gone
                if oid not in self.names:
                    continue  # created and dropped by it, as a rewrite's transient heap is: nobody else saw it
                relation = self.names[oid]
            else:
                relation = name if schema == "public" else f"{schema}.{name}"
            key = (relation, mode)
            if key not in self.open_locks:
                self.open_locks[key] = since
                new.append(f"{key[0]}:{key[1]}")
        return tuple(new)

    def _transaction_ended(self, _conn) -> None:
        # Fired just before the driver's commit or rollback, which releases every lock.
        ended = time.perf_counter()
        for (relation, mode), since in self.open_locks.items():
            self.held.append(LockHeld(relation, mode, ended - since))
        self.open_locks.clear()


@dataclass(frozen=True)
class _Relation:
    name: str
    kind: str  # "table" | "index"
    filenode: int
    reltuples: float
    table: str  # the relation itself, or the table an index belongs to


def _relations(connection: Connection) -> dict[int, _Relation]:
    found = {}
    for oid, name, relkind, filenode, reltuples, table in connection.execute(_RELATIONS_SQL):
        kind = "index" if relkind == "i" else "table"
        found[oid] = _Relation(name, kind, filenode, float(reltuples), table or name)
    return found


def _rewrites(connection: Connection, before: dict[int, _Relation], after: dict[int, _Relation]) -> tuple[Rewrite, ...]:
    rewrites = []
    for oid, relation in sorted(after.items(), key=lambda item: (item[1].kind != "table", item[1].name)):
        old = before.get(oid)
        if old is None or old.filenode == relation.filenode:
            continue
        if relation.reltuples >= 0:
            rows = round(relation.reltuples)
        else:  # never analyzed (-1): count, as a restored copy's tables often are
            quoted = quote(relation.table)
            rows = connection.execute(sa.text(f"SELECT count(*) FROM {quoted}")).scalar_one()
        rewrites.append(Rewrite(relation.name, relation.kind, int(rows)))
    return tuple(rewrites)


# ---------------------------------------------------------------- explaining a failure

_IDENT = rf"{NAME}(?:\s*\.\s*{NAME})?"
_TMP_PREFIX = "_alembic_tmp_"  # Alembic's batch mode copies a SQLite table into this one
_ALTER_TYPE = re.compile(
    rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{_IDENT})\s+ALTER\s+(?:COLUMN\s+)?(?P<column>{NAME})\s+"
    rf"(?:SET\s+DATA\s+)?TYPE\s+(?P<type>[A-Za-z][A-Za-z0-9_ ]*?)\s*"
    rf"(?:\(\s*(?P<precision>\d+)\s*(?:,\s*(?P<scale>-?\d+)\s*)?\))?\s*(?:COLLATE\s+\S+\s*)?"
    rf"(?:USING\s+(?P<using>.+?))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_INTEGER_RANGES = {
    "smallint": 2**15, "int2": 2**15,
    "integer": 2**31, "int": 2**31, "int4": 2**31,
    "bigint": 2**63, "int8": 2**63,
}


def _explain_failure(
    connection: Connection,
    exc: BaseException,
    failing_sql: str | None,
    history: list[str],
    sample_limit: int,
) -> tuple[int | None, tuple[str, ...]]:
    """The rows that made the revision fail, counted on the rolled-back copy, and up to
    `sample_limit` of their keys; (None, ()) when they cannot be identified."""
    original = getattr(exc, "orig", None)
    if original is None:
        return None, ()
    try:
        explainer = _Explainer(connection, failing_sql or "", history, sample_limit)
        if connection.dialect.name == "postgresql":
            found = explainer.postgresql(getattr(original, "diag", None), str(original))
        else:
            found = explainer.sqlite(str(original).strip())
    except Exception:  # explaining is best effort: the error itself is the finding
        found = None
    _rollback_quietly(connection)
    if found is None or found[0] == 0:
        return None, ()
    return found


@dataclass
class _Explainer:
    connection: Connection
    failing_sql: str
    history: list[str]
    sample_limit: int

    @property
    def kind(self) -> str:
        """The engine whose rules turn names in the failing SQL into catalogue names."""
        return self.connection.dialect.name

    # ---- per engine

    def sqlite(self, message: str):
        if match := re.match(r"NOT NULL constraint failed: (\S+?)\.(\S+)$", message):
            return self._nulls(_base_table(match.group(1), self.kind), match.group(2))
        if message.startswith("Cannot add a NOT NULL column"):
            added = re.search(rf"ALTER\s+TABLE\s+({_IDENT})\s+ADD\s+(?:COLUMN\s+)?({NAME})", self.failing_sql, re.I)
            return self._nulls(unquote(added.group(1), self.kind), unquote(added.group(2), self.kind)) if added else None
        if match := re.match(r"UNIQUE constraint failed: index '(.+)'$", message):
            return self._unique_from_definition(match.group(1), table=None)
        if (match := re.match(r"UNIQUE constraint failed: (.+)$", message)) and (
            definition := _unique_definition(None, [self.failing_sql], self.kind)
        ):
            return self._duplicates(*definition)
        if match:
            qualified = [part.strip().rsplit(".", 1) for part in match.group(1).split(",")]
            table = _base_table(qualified[0][0], self.kind)
            return self._duplicates(table, [quote(column) for _, column in qualified], None)
        if match := re.match(r"CHECK constraint failed: (.+)$", message):
            table = self._statement_table()
            expression = _check_expression(match.group(1), [self.failing_sql, *reversed(self.history)])
            # An unnamed check is named by its expression.
            return self._where(table, f"NOT ({expression or match.group(1)})") if table else None
        if message.startswith("FOREIGN KEY constraint failed"):
            return self._sqlite_orphans()
        return None

    def postgresql(self, diag, message: str):
        state = getattr(diag, "sqlstate", None)
        table = getattr(diag, "table_name", None)
        if state == "23502" and table and diag.column_name:
            return self._nulls(table, diag.column_name)
        if state == "23505":
            return self._unique_from_definition(diag.constraint_name, table=table, detail=diag.message_detail)
        if state == "23514" and table:
            expression = _check_expression(diag.constraint_name or "", [self.failing_sql, *reversed(self.history)])
            return self._where(table, f"NOT ({expression})") if expression else None
        if state == "23503" and table:
            return self._postgres_orphans(table, diag.message_detail or "")
        if state in ("22P02", "22003", "22001"):
            return self._bad_cast(state, message)
        return None

    # ---- the rules

    def _nulls(self, table: str, column: str):
        if column in self._columns(table):
            return self._where(table, f"{quote(column)} IS NULL")
        return self._where(table, "1 = 1")  # an added column is NULL in every existing row

    def _unique_from_definition(self, name: str | None, *, table: str | None, detail: str | None = None):
        definition = _unique_definition(name, [self.failing_sql, *reversed(self.history)], self.kind) if name else None
        if definition is not None:
            defined_table, terms, predicate = definition
            return self._duplicates(table or defined_table, terms, predicate)
        key = re.match(r"Key \((.+?)\)=\(", detail or "")
        if table and key:
            columns = [column.strip() for column in key.group(1).split(",")]
            known = self._columns(table)
            if all(column in known for column in columns):
                return self._duplicates(table, [quote(column) for column in columns], None)
        return None

    def _duplicates(self, table: str, terms: list[str], predicate: str | None):
        listed = ", ".join(terms)
        present = " AND ".join(f"({term}) IS NOT NULL" for term in terms)  # NULLs never collide
        where = f"{present} AND ({predicate})" if predicate else present
        quoted = quote(table)
        groups = f"SELECT {listed} FROM {quoted} WHERE {where} GROUP BY {listed} HAVING count(*) > 1"
        return self._where(table, f"({listed}) IN ({groups})" + (f" AND ({predicate})" if predicate else ""))

    def _sqlite_orphans(self):
        table = self._statement_table()
        if table is None:
            return None
        conditions = []
        # The batch table being filled declares the new foreign keys; its CREATE TABLE is
        # in the revision's statements.
        target = re.search(rf"INSERT\s+INTO\s+({_IDENT})", self.failing_sql, re.I)
        created = _create_table_sql(unquote(target.group(1), self.kind), self.history) if target else None
        for columns, parent, parent_columns in _foreign_keys(created or "", self.kind):
            conditions.append(self._orphan_condition(table, columns, parent, parent_columns))
        return self._where(table, " OR ".join(f"({c})" for c in conditions)) if conditions else None

    def _postgres_orphans(self, table: str, detail: str):
        match = re.match(r'Key \((.+?)\)=\(.*\) is not present in table "(.+)"\.?$', detail)
        if not match:
            return None
        columns = [column.strip() for column in match.group(1).split(",")]
        parent = match.group(2)
        parent_columns = None
        for declared, declared_parent, declared_columns in _foreign_keys(self.failing_sql, self.kind):
            if declared == columns and declared_parent == parent:
                parent_columns = declared_columns
        if parent_columns is None:
            parent_columns = sa.inspect(self.connection).get_pk_constraint(parent)["constrained_columns"]
        return self._where(table, self._orphan_condition(table, columns, parent, parent_columns))

    def _orphan_condition(self, table: str, columns: list[str], parent: str, parent_columns: list[str]) -> str:
        child = quote(table)
        present = " AND ".join(f"{child}.{quote(c)} IS NOT NULL" for c in columns)
        match = " AND ".join(
            f"parent.{quote(p)} = {child}.{quote(c)}" for c, p in zip(columns, parent_columns)
        )
        return f"{present} AND NOT EXISTS (SELECT 1 FROM {quote(parent)} AS parent WHERE {match})"

    def _bad_cast(self, state: str, message: str):
        altered = _ALTER_TYPE.search(self.failing_sql)
        if not altered:
            return None
        table, column = unquote(altered.group("table"), self.kind), quote(unquote(altered.group("column"), self.kind))
        if state == "22P02":
            value = re.search(r': "(.*)"\s*$', message.splitlines()[0])
            if not value:
                return None
            return self._where(table, f"CAST({column} AS TEXT) = :value", {"value": value.group(1)})
        kind = " ".join(altered.group("type").lower().split())
        precision, scale = altered.group("precision"), altered.group("scale")
        # The values the cast saw: the USING expression's, else the column's.
        sources = [source for source in (altered.group("using"), column) if source]
        for source in sources:
            if kind in _INTEGER_RANGES:
                bound = _INTEGER_RANGES[kind]
                condition = f"ROUND(CAST(({source}) AS NUMERIC)) NOT BETWEEN {-bound} AND {bound - 1}"
            elif kind in ("numeric", "decimal") and precision:
                digits = int(precision) - int(scale or 0)
                condition = f"ABS(ROUND(CAST(({source}) AS NUMERIC), {int(scale or 0)})) >= 10 ^ {digits}"
            elif kind in ("varchar", "character varying", "char", "character") and precision:
                condition = f"LENGTH(CAST(({source}) AS TEXT)) > {int(precision)}"
            else:
                return None
            try:
                found = self._where(table, condition)
            except sa.exc.DBAPIError:  # the USING expression fails by itself: try the column
                self.connection.rollback()
                continue
            if found[0]:
                return found
        return None

    # ---- helpers

    def _statement_table(self) -> str | None:
        """The table the failing statement writes or alters, batch copies mapped back."""
        match = re.search(
            rf"(?:INSERT\s+INTO|UPDATE|ALTER\s+TABLE|DELETE\s+FROM)\s+(?:OR\s+\w+\s+)?({_IDENT})", self.failing_sql, re.I
        )
        return _base_table(match.group(1), self.kind) if match else None

    def _columns(self, table: str) -> set[str]:
        return {column["name"] for column in sa.inspect(self.connection).get_columns(table)}

    def _where(self, table: str, condition: str, params: dict | None = None) -> tuple[int, tuple[str, ...]]:
        """Count the rows of `table` where `condition` holds and take the first keys.

        Without `params`, every colon is escaped: the condition then holds SQL taken from
        the revision (`x::integer`, `':'` in a literal), which text() would read as binds.
        """
        if not params:
            condition = condition.replace(":", "\\:")
        quoted = quote(table)
        rows = self.connection.execute(
            sa.text(f"SELECT count(*) FROM {quoted} WHERE {condition}"), params or {}
        ).scalar_one()
        keys = sa.inspect(self.connection).get_pk_constraint(table).get("constrained_columns") or []
        if not rows or not keys:
            return rows, ()
        listed = ", ".join(f"{quoted}.{quote(key)}" for key in keys)
        found = self.connection.execute(
            sa.text(f"SELECT {listed} FROM {quoted} WHERE {condition} ORDER BY {listed} LIMIT {int(self.sample_limit)}"),
            params or {},
        )
        samples = tuple(f"{table}." + ",".join(f"{key}={value}" for key, value in zip(keys, row)) for row in found)
        return rows, samples


def _base_table(name: str, kind: str) -> str:
    name = unquote(name, kind)
    return name[len(_TMP_PREFIX):] if name.startswith(_TMP_PREFIX) else name


def _balanced(text: str, start: int) -> str | None:
    """The text inside the parenthesis opening at `start`, nested ones and quotes respected."""
    depth, quote = 0, None
    for position in range(start, len(text)):
        char = text[position]
        if quote:
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1: position]
    return None


def _split_top_level(text: str) -> list[str]:
    parts, depth, current, quote = [], 0, [], None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in ("'", '"'):
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _name_pattern(name: str) -> str:
    return rf'(?:"{re.escape(name)}"|`{re.escape(name)}`|\[{re.escape(name)}\]|\b{re.escape(name)}\b)'


def _check_expression(name: str, statements: list[str]) -> str | None:
    pattern = re.compile(rf"CONSTRAINT\s+{_name_pattern(name)}\s+CHECK\s*\(", re.IGNORECASE)
    for sql in statements:
        if match := pattern.search(sql or ""):
            return _balanced(sql, match.end() - 1)
    return None


def _unique_definition(name: str | None, statements: list[str], kind: str) -> tuple[str, list[str], str | None] | None:
    """(table, terms, partial-index predicate) of the unique index or constraint `name`
    (None: whichever the statements define)."""
    named = _name_pattern(name) if name else NAME
    index = re.compile(
        rf"CREATE\s+UNIQUE\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:{NAME}\s*\.\s*)?{named}"
        rf"\s+ON\s+(?:ONLY\s+)?({_IDENT})\s*(?:USING\s+\w+\s*)?\(",
        re.IGNORECASE,
    )
    constraint = re.compile(rf"CONSTRAINT\s+{named}\s+UNIQUE\s*(?:NULLS\s+(?:NOT\s+)?DISTINCT\s*)?\(", re.I)
    for sql in statements:
        sql = sql or ""
        if match := index.search(sql):
            inside = _balanced(sql, match.end() - 1)
            if inside is None:
                continue
            rest = sql[match.end() + len(inside):]
            predicate = re.search(r"\bWHERE\s+(.+?)\s*;?\s*$", rest, re.IGNORECASE | re.DOTALL)
            return unquote(match.group(1), kind), _split_top_level(inside), predicate.group(1) if predicate else None
        if match := constraint.search(sql):
            inside = _balanced(sql, match.end() - 1)
            owner = re.match(rf"\s*(?:ALTER|CREATE)\s+TABLE\s+(?:ONLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})", sql, re.I)
            if inside is not None and owner:
                return _base_table(owner.group(1), kind), _split_top_level(inside), None
    return None


def _create_table_sql(table: str, statements: list[str]) -> str | None:
    pattern = re.compile(rf"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_name_pattern(table)}\s*\(", re.IGNORECASE)
    for sql in reversed(statements):
        if pattern.search(sql or ""):
            return sql
    return None


def _foreign_keys(sql: str, kind: str) -> list[tuple[list[str], str, list[str]]]:
    """(columns, parent table, parent columns) of every FOREIGN KEY clause in `sql`."""
    found = []
    pattern = re.compile(rf"FOREIGN\s+KEY\s*\(([^)]*)\)\s*REFERENCES\s+({_IDENT})\s*\(([^)]*)\)", re.IGNORECASE)
    for match in pattern.finditer(sql):
        columns = [unquote(column.strip(), kind) for column in match.group(1).split(",")]
        parent_columns = [unquote(column.strip(), kind) for column in match.group(3).split(",")]
        found.append((columns, unquote(match.group(2), kind), parent_columns))
    return found
