"""Row-level differences between two copies of the game database, keyed by primary key.

Memory never holds a table: only differing rows reach Python, a batch at a time.

- SQLite: the other side's file is ATTACHed read-only to the live connection and the
  table is compared in set-based SQL (`_SqliteJoin`): one LEFT JOIN on the key returns
  only the live rows without an identical twin, and a second query the backup's rows
  whose key live lacks, run only when the row counts say there are some. Reading both
  sides into Python tops out near 200,000 rows per second per side on this hardware;
  the join compares over a million.
- PostgreSQL: the sides are two servers (or databases), so `iter_table_differences`
  walks both in primary-key order one key range at a time (keyset pagination: every
  range starts after the last key of the previous one, never OFFSET). Both servers sum
  `hash_record_extended` over the range, concurrently (two backends, two cores); a few
  hundred bytes cross the wire per range instead of the rows. With one integer key the
  sums come per bucket of 256 consecutive keys and only differing buckets are fetched
  (`_bucket_walk`); otherwise a range whose sums differ is narrowed step by step. The
  fetched rows are merged in Python.
- Otherwise (an old server, a SQLite connection holding an open transaction whose
  uncommitted rows an attachment could not see): the rows of every range are fetched
  and compared as plain tuples, which is exact, only slower.

The database only ever rules out rows it finds identical; everything reported comes
from the rows themselves, compared per column type so that the drivers' spellings of
one stored value (Decimal or float, text or datetime timestamps, naive or aware) never
count as a change. On SQLite that is exact (value by value, as SQLite compares them).
On PostgreSQL it rests on 64-bit record hashes: a differing range goes unseen only if
the sums of its hashes collide, about one chance in 2**64 per range.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from itertools import compress
from operator import itemgetter, ne
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core.errors import ExitCode, InvalidInput, PreconditionFailed
from game_core.schema import GAME_TABLES, metadata

ONLY_LIVE = "only_live"
ONLY_BACKUP = "only_backup"
CHANGED = "changed"
KINDS = (ONLY_LIVE, ONLY_BACKUP, CHANGED)
DEFAULT_BATCH_SIZE = 50_000
# PostgreSQL 14 added hash_record_extended; older servers take the tuple path.
_PG_HASH_VERSION = 140000
_ATTACH_ALIAS = "integrity_diff_other"


class UnknownTable(PreconditionFailed):
    """A table name that is not one of the game's tables."""


class EnginesDiffer(PreconditionFailed):
    """The two sides are different database engines (a SQLite backup of a PostgreSQL store)."""


class LayoutDiffers(PreconditionFailed):
    """A side lacks a table or a column of the schema this code knows (another revision)."""


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class RowDifference:
    """One primary key whose row is missing on a side or differs between the sides."""

    kind: str  # "only_live" | "only_backup" | "changed"
    key: tuple  # primary key values
    live: dict | None  # the live row (column -> value), None when only_backup
    backup: dict | None  # the backup row, None when only_live
    columns: tuple[str, ...]  # for "changed": the columns that differ; () otherwise


@dataclass(frozen=True)
class TableDiff:
    """Exact counts of one table's differences, with a few sample keys of each kind."""

    table: str
    live_rows: int
    backup_rows: int
    only_live: int
    only_backup: int
    changed: int
    changed_columns: dict[str, int]  # column -> rows where it differs
    samples: dict[str, list]  # kind -> up to sample_limit keys (lists)

    @property
    def differing_rows(self) -> int:
        return self.only_live + self.only_backup + self.changed

    @property
    def differing_share(self) -> float:
        return self.differing_rows / max(self.live_rows, self.backup_rows, 1)


# ---------------------------------------------------------------- value normalisation


def _utc_datetime(value: Any) -> Any:
    # SQLite keeps UTC wall-clock digits as text (SQLAlchemy drops the offset on write);
    # PostgreSQL returns aware datetimes. Both become aware UTC datetimes.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value


def _numeric(scale: int | None, as_decimal: bool) -> Callable[[Any], Any]:
    quantum = None if scale is None else Decimal(1).scaleb(-scale)

    def normalise(value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, float) and scale is not None and not as_decimal:
            return round(value, scale)  # SQLite's REAL: ten times cheaper than through Decimal
        # str() first: Decimal(0.1) is the binary float's long expansion, str(0.1) is '0.1'.
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if quantum is not None:
            number = number.quantize(quantum)
        return number if as_decimal else float(number)

    return normalise


def _integer(value: Any) -> Any:
    if isinstance(value, (str, float, Decimal)) and not isinstance(value, bool):
        number = Decimal(str(value))
        return int(number) if number == number.to_integral_value() else value
    return value


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _identity(value: Any) -> Any:
    return value


def normaliser_for(column: sa.Column) -> Callable[[Any], Any]:
    """The function that turns either driver's value of `column` into one canonical value."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        convert = _utc_datetime
    elif isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        convert = _numeric(kind.scale, bool(kind.asdecimal))
    elif isinstance(kind, sa.Integer):
        convert = _integer
    elif isinstance(kind, sa.String):
        convert = _text
    else:
        convert = _identity

    def safe(value: Any) -> Any:
        if value is None:
            return None
        try:
            return convert(value)
        except (ValueError, TypeError, InvalidOperation, ArithmeticError):
            return value  # a damaged value stays as it is and shows up as a change

    return safe


# ---------------------------------------------------------------- one table


@dataclass(frozen=True)
class _TableSpec:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    key_positions: tuple[int, ...]
    text_key: tuple[bool, ...]  # per key column: compared with a collation
    integer_key: bool  # one key column of an integer type (unique integers: bucketable)
    normalisers: tuple[Callable[[Any], Any], ...]

    @classmethod
    def of(cls, table: str) -> "_TableSpec":
        schema_table = metadata.tables.get(table)
        if schema_table is None or table not in GAME_TABLES:
            raise UnknownTable(f"unknown table {table!r}; the game's tables are: {', '.join(GAME_TABLES)}")
        columns = tuple(c.name for c in schema_table.columns)
        key = tuple(c.name for c in schema_table.primary_key.columns)
        return cls(
            name=table,
            columns=columns,
            key=key,
            key_positions=tuple(columns.index(name) for name in key),
            text_key=tuple(isinstance(schema_table.c[name].type, sa.String) for name in key),
            integer_key=len(key) == 1 and isinstance(schema_table.c[key[0]].type, sa.Integer),
            normalisers=tuple(normaliser_for(c) for c in schema_table.columns),
        )

    @property
    def positions(self) -> range:
        return range(len(self.columns))

    def key_of(self, row: Sequence) -> tuple:
        return tuple(row[i] for i in self.key_positions)

    @property
    def raw_key(self) -> Callable[[Sequence], Any]:
        """A row's key in the cheapest comparable form: the value itself for a one-column
        key, a tuple otherwise (itemgetter, in C)."""
        return itemgetter(*self.key_positions)

    def normalised(self, row: Sequence) -> tuple:
        return tuple(convert(value) for convert, value in zip(self.normalisers, row))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def keyset_range(keys: Sequence[str], after: tuple | None, upto: tuple | None, params: dict) -> list[str]:
    """The conditions `keys > after` and `keys <= upto` (row values for a composite key),
    their bounds bound into `params`: one page of a keyset walk, never OFFSET."""
    lhs = keys[0] if len(keys) == 1 else "(" + ", ".join(keys) + ")"
    parts = []
    for operator, bound, prefix in ((">", after, "a"), ("<=", upto, "u")):
        if bound is None:
            continue
        names = []
        for index, value in enumerate(bound):
            params[f"{prefix}{index}"] = value
            names.append(f":{prefix}{index}")
        rhs = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
        parts.append(f"{lhs} {operator} {rhs}")
    return parts


class _Side:
    """SQL for one side of the comparison: key ranges, boundaries and row fetches."""

    def __init__(self, connection: Connection, spec: _TableSpec, *, schema: str | None = None, collation: str | None = None):
        self.connection = connection
        self.spec = spec
        prefix = f"{_quote(schema)}." if schema else ""
        self.table = prefix + _quote(spec.name)
        self.collation = collation

    def key_expressions(self, alias: str = "") -> list[str]:
        qualifier = f"{alias}." if alias else ""
        expressions = []
        for name, is_text in zip(self.spec.key, self.spec.text_key):
            expression = qualifier + _quote(name)
            if is_text and self.collation:
                expression += f' COLLATE "{self.collation}"'
            expressions.append(expression)
        return expressions

    def range_condition(self, after: tuple | None, upto: tuple | None, params: dict, alias: str = "") -> str:
        return " AND ".join(keyset_range(self.key_expressions(alias), after, upto, params)) or "1 = 1"

    def order(self, alias: str = "") -> str:
        return ", ".join(self.key_expressions(alias))

    def boundary(self, after: tuple | None, limit: int) -> tuple[tuple | None, int]:
        """The key of the `limit`-th row after `after` (None when fewer remain) and how many
        rows the page holds. Only keys are read, so this costs little next to the rows."""
        params: dict[str, Any] = {"limit": limit}
        where = self.range_condition(after, None, params)
        key_list = ", ".join(_quote(k) for k in self.spec.key)
        page = f"SELECT {key_list} FROM {self.table} WHERE {where} ORDER BY {self.order()} LIMIT :limit"
        if len(self.spec.key) == 1 and not self.spec.text_key[0]:
            # One numeric key: MAX over the page, about four times cheaper than sorting it back.
            row = self.connection.execute(
                sa.text(f"SELECT MAX({key_list}), COUNT(*) FROM ({page}) AS page_rows"), params
            ).one()
            count = int(row[1])
            return ((row[0],) if count >= limit else None), count
        row = self.connection.execute(sa.text(
            f"WITH page_rows AS ({page}) SELECT {key_list}, (SELECT COUNT(*) FROM page_rows) "
            f"FROM page_rows ORDER BY {self._descending('page_rows')}"
            " LIMIT 1"
        ), params).first()
        if row is None:
            return None, 0
        count = int(row[-1])
        return (tuple(row[:-1]) if count >= limit else None), count

    def _descending(self, alias: str) -> str:
        # DESC must apply to every key column, not only the last one.
        return ", ".join(f"{expression} DESC" for expression in self.key_expressions(alias))

    def rows(self, after: tuple | None, upto: tuple | None) -> list[tuple]:
        params: dict[str, Any] = {}
        where = self.range_condition(after, upto, params)
        columns = ", ".join(_quote(c) for c in self.spec.columns)
        result = self.connection.execute(
            sa.text(f"SELECT {columns} FROM {self.table} WHERE {where} ORDER BY {self.order()}"), params
        )
        # Plain tuples straight from the driver: a text() query has no result processing
        # to skip, and SQLAlchemy's per-row Row objects cost a third of the fetch.
        try:
            return result.cursor.fetchall()
        finally:
            result.close()

    def bucket_summaries(self, after: tuple | None, limit: int) -> list[tuple[int, int, Any, Any]]:
        """PostgreSQL, one integer key: the next page of `limit` rows as (bucket, rows,
        hash sum, last key) per bucket of 2**BUCKET_BITS consecutive key values, in order."""
        params: dict[str, Any] = {"limit": limit}
        where = self.range_condition(after, None, params)
        key = _quote(self.spec.key[0])
        columns = ", ".join(_quote(c) for c in self.spec.columns)
        result = self.connection.execute(sa.text(
            f"SELECT {key} >> {BUCKET_BITS} AS bucket, COUNT(*), SUM(hash_record_extended(ROW({columns}), 0)), MAX({key}) "
            f"FROM (SELECT {columns} FROM {self.table} WHERE {where} ORDER BY {key} LIMIT :limit) AS page_rows "
            "GROUP BY 1 ORDER BY 1"
        ), params)
        try:
            return result.cursor.fetchall()
        finally:
            result.close()

    def page_hash_summary(self, after: tuple | None, limit: int) -> tuple[Any, int, Any]:
        """PostgreSQL, one numeric key: the next page's last key, row count and hash sum."""
        params: dict[str, Any] = {"limit": limit}
        where = self.range_condition(after, None, params)
        key = _quote(self.spec.key[0])
        columns = ", ".join(_quote(c) for c in self.spec.columns)
        record = "ROW(" + columns + ")"
        row = self.connection.execute(sa.text(
            f"SELECT MAX({key}), COUNT(*), COALESCE(SUM(hash_record_extended({record}, 0)), 0) "
            f"FROM (SELECT {columns} FROM {self.table} WHERE {where} ORDER BY {key} LIMIT :limit) AS page_rows"
        ), params).one()
        return row[0], int(row[1]), row[2]

    def hash_summary(self, after: tuple | None, upto: tuple | None, cap: int | None = None) -> tuple[int, Any]:
        """PostgreSQL: rows in the range and the sum of their record hashes (numerically
        equal values hash alike, so 52.1 and 52.10 agree as they should). With `cap`, at
        most that many rows are read: enough to tell "more than the other side"."""
        params: dict[str, Any] = {}
        where = self.range_condition(after, upto, params)
        columns = ", ".join(_quote(c) for c in self.spec.columns)
        limit = ""
        if cap is not None:
            params["cap"] = cap
            limit = " LIMIT :cap"
        row = self.connection.execute(sa.text(
            f"SELECT COUNT(*), COALESCE(SUM(hash_record_extended(ROW({columns}), 0)), 0) "
            f"FROM (SELECT {columns} FROM {self.table} WHERE {where}{limit}) AS range_rows"
        ), params).one()
        return int(row[0]), row[1]

    def count(self, after: tuple | None, upto: tuple | None, cap: int | None = None) -> int:
        """Rows in the range, counting at most `cap` of them."""
        params: dict[str, Any] = {}
        where = self.range_condition(after, upto, params)
        limit = ""
        if cap is not None:
            params["cap"] = cap
            limit = " LIMIT :cap"
        return int(self.connection.execute(sa.text(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {self.table} WHERE {where}{limit}) AS range_rows"
        ), params).scalar_one())


# ---------------------------------------------------------------- range checks


class _RangeCheck:
    """Answers "do both sides hold the same rows in this key range?" inside the databases.

    `same(after, upto)` returns (live rows, backup rows) when they are identical, else
    None; the caller then fetches the rows. Subclasses are the engine-specific shortcuts
    and set `self.live`, the live side's `_Side`.
    """

    live: _Side

    def same(self, after: tuple | None, upto: tuple | None, live_count: int | None = None) -> tuple[int, int] | None:
        """`live_count`: the live side's rows in the range, when the caller knows it."""
        return None

    def next_identical(self, after: tuple | None, batch_size: int) -> tuple[tuple | None, tuple[int, int]] | None:
        """(end of the next range, its row counts) when the range of the next live page is
        identical on both sides; None when it is not (or not known to be)."""
        upto, live_count = self.live.boundary(after, batch_size)
        counts = self.same(after, upto, live_count)
        return None if counts is None else (upto, counts)

    def close(self) -> None:
        pass


class _NoCheck(_RangeCheck):
    """No shortcut available: every range is fetched and compared in Python."""

    def next_identical(self, after, batch_size):
        return None


class _PostgresHashCheck(_RangeCheck):
    def __init__(self, live: _Side, backup: _Side):
        self.live, self.backup = live, backup
        # One worker: the backup side's query runs while this thread runs the live one.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diff-backup")

    def next_identical(self, after, batch_size):
        if len(self.live.spec.key) != 1 or self.live.spec.text_key[0]:
            return super().next_identical(after, batch_size)
        # One query per side, both at once: each side's next page with its last key.
        future = self.pool.submit(self.backup.page_hash_summary, after, batch_size)
        live_page = self.live.page_hash_summary(after, batch_size)
        backup_page = future.result()
        if live_page != backup_page:
            return None
        last_key, count, _ = live_page
        return ((last_key,) if count >= batch_size else None), (count, count)

    def same(self, after, upto, live_count=None):
        # The live count caps the reads: a backup with a long tail past the live side's
        # end is not hashed to its end on every range (that would be quadratic).
        cap = None if live_count is None else live_count + 1
        future = self.pool.submit(self.backup.hash_summary, after, upto, cap)
        live_summary = self.live.hash_summary(after, upto, cap)
        backup_summary = future.result()
        if live_summary == backup_summary:
            return live_summary[0], backup_summary[0]
        return None

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _SqliteJoin:
    """SQLite, the backup's file attached read-only to the live connection: the whole
    table in set-based queries instead of key ranges.

    One LEFT JOIN on the key returns only the live rows without an identical backup twin
    (`IS NOT`: NULL-safe, and compares stored values as SQLite does, 5 = 5.0). The live
    side is scanned in key order; with an integer key every lookup on the other side is
    the key after the previous one, which SQLite's b-tree serves by stepping forward
    rather than searching again: in effect a merge join in C, about twice the rows per
    second of checking key ranges (which also counted and bounded every range). Rows only in the backup need a
    second scan of the backup side, run only when the row counts say some exist: backup
    rows = live rows - rows only in live + rows only in the backup (keys are unique).
    Everything is read in the connection's one transaction, so the counts and the rows
    come from one snapshot.
    """

    def __init__(self, live: _Side, attached: _Side):
        self.live, self.attached = live, attached
        spec = live.spec
        self.join = " AND ".join(f"b.{_quote(k)} = l.{_quote(k)}" for k in spec.key)
        self.missing = f"b.{_quote(spec.key[0])} IS NULL"
        self.differs = " OR ".join(f"l.{_quote(c)} IS NOT b.{_quote(c)}" for c in spec.columns if c not in spec.key)

    def _columns(self, alias: str) -> str:
        return ", ".join(f"{alias}.{_quote(c)}" for c in self.live.spec.columns)

    def _stream(self, sql: str, batch_size: int) -> Iterator[tuple]:
        result = self.live.connection.exec_driver_sql(sql)
        try:
            while batch := result.cursor.fetchmany(batch_size):
                yield from batch
        finally:
            result.close()

    def counts(self) -> tuple[int, int]:
        return self.live.count(None, None), self.attached.count(None, None)

    def live_side_rows(self, batch_size: int) -> Iterator[tuple[bool, tuple, tuple]]:
        """(only in live?, live row, backup row) of every live row without an identical
        twin, in key order."""
        width = len(self.live.spec.columns)
        condition = self.missing + (f" OR {self.differs}" if self.differs else "")
        for row in self._stream(
            f"SELECT {self.missing}, {self._columns('l')}, {self._columns('b')} "
            f"FROM {self.live.table} AS l LEFT JOIN {self.attached.table} AS b ON {self.join} "
            f"WHERE {condition} ORDER BY {self.live.order('l')}",
            batch_size,
        ):
            yield bool(row[0]), row[1:width + 1], row[width + 1:]

    def backup_only_rows(self, batch_size: int) -> Iterator[tuple]:
        """The backup rows whose key live lacks, in key order."""
        return self._stream(
            f"SELECT {self._columns('b')} FROM {self.attached.table} AS b "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.live.table} AS l WHERE {self.join}) "
            f"ORDER BY {self.attached.order('b')}",
            batch_size,
        )


def _choose_check(live: _Side, backup: _Side, alias: str | None) -> _SqliteJoin | _RangeCheck:
    """The fastest exact way the two sides allow (tests swap in _NoCheck to prove the
    plain path finds the same differences)."""
    if alias is not None:
        return _SqliteJoin(live, _Side(live.connection, live.spec, schema=alias))
    if live.connection.dialect.name == "postgresql":
        versions = (live.connection.dialect.server_version_info, backup.connection.dialect.server_version_info)
        if all(v and v[0] * 10000 >= _PG_HASH_VERSION for v in versions):
            return _PostgresHashCheck(live, backup)
    return _NoCheck()


# ---------------------------------------------------------------- the walk


def _require_same_engine(live: Connection, backup: Connection) -> None:
    if live.dialect.name != backup.dialect.name:
        raise EnginesDiffer(
            f"cannot compare a {live.dialect.name} database with a {backup.dialect.name} one; "
            "a backup is only comparable with a database of its own engine"
        )


def _require_layout(connection: Connection, side: str, spec: _TableSpec) -> None:
    # Only a guard: the tables, keys and types come from game_core.schema, not from here.
    inspector = sa.inspect(connection)
    if not inspector.has_table(spec.name):
        raise LayoutDiffers(f"the {side} database has no table {spec.name}; it is at another schema revision")
    present = {column["name"] for column in inspector.get_columns(spec.name)}
    missing = [c for c in spec.columns if c not in present]
    if missing:
        raise LayoutDiffers(
            f"table {spec.name} in the {side} database lacks column(s) {', '.join(missing)}; "
            "it is at another schema revision (migrate it, or compare copies at the same revision)"
        )


def _sqlite_file(connection: Connection) -> str | None:
    for _seq, name, path in connection.exec_driver_sql("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


def _attach(live: Connection, backup: Connection) -> str | None:
    """Attach the backup's file to the live connection (or find it attached already).

    A new attachment is refused (None) when the backup connection has a transaction
    open: rows it wrote and has not committed are invisible through another connection.
    An attachment made earlier (the previous table of the same diff) is reused: SQLite
    refuses DETACH inside a transaction, so it outlives its table.
    """
    # Asked first: the PRAGMA below begins a transaction on the backup connection itself.
    backup_busy = getattr(backup.connection.dbapi_connection, "in_transaction", True)
    path = _sqlite_file(backup)
    if not path or path == _sqlite_file(live):
        return None
    for _seq, name, attached in live.exec_driver_sql("PRAGMA database_list"):
        if attached == path and name != "main":
            return name
    if backup_busy:
        return None
    names = {row[1] for row in live.exec_driver_sql("PRAGMA database_list")}
    alias = _ATTACH_ALIAS
    suffix = 0
    while alias in names:
        suffix += 1
        alias = f"{_ATTACH_ALIAS}_{suffix}"
    # Read-only through a URI (an attachment does not inherit the main file's mode=ro).
    # game_core.db opens connections with URIs enabled; on a connection without them the
    # URI is a file name in a directory "file:" that does not exist, the ATTACH fails, and
    # the diff takes the plain path.
    try:
        live.exec_driver_sql(f"ATTACH DATABASE ? AS {_quote(alias)}", (f"file:{quote(path)}?mode=ro",))
    except sa.exc.DBAPIError:
        return None
    attached = {name: file for _seq, name, file in live.exec_driver_sql("PRAGMA database_list")}
    if attached.get(alias) != path:
        _detach(live, alias)
        return None
    return alias


def _detach(live: Connection, alias: str) -> None:
    try:
        live.exec_driver_sql(f"DETACH DATABASE {_quote(alias)}")
    except sa.exc.DBAPIError:
        # Inside a transaction SQLite refuses ("database is locked"); the attachment is
        # read-only, found again by path next time, and goes with the connection.
        pass


def _pg_collation(live: Connection, backup: Connection) -> str | None:
    """Key ranges must hold the same keys on both sides: when the databases sort text
    differently, compare text keys byte-wise ("C") on both."""
    query = sa.text("SELECT datcollate FROM pg_database WHERE datname = current_database()")
    return None if live.execute(query).scalar() == backup.execute(query).scalar() else "C"


# The smallest page a differing range is narrowed to before its rows are fetched.
FETCH_MIN = 64
# PostgreSQL, one integer key: a page's hashes are summed per bucket of 2**BUCKET_BITS
# consecutive key values, so a differing page names its differing buckets at once (at
# most 256 rows each: the keys are unique integers) instead of being narrowed step by step.
BUCKET_BITS = 8


class _TableWalk:
    """One table's comparison; iterating yields the differences, then the row counts are known."""

    def __init__(self, live: Connection, backup: Connection, table: str, *, batch_size: int):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidInput(f"batch size {batch_size!r} is not a positive integer")
        _require_same_engine(live, backup)
        self.spec = _TableSpec.of(table)
        self.live_connection, self.backup_connection = live, backup
        self.batch_size = batch_size
        self.live_rows = 0
        self.backup_rows = 0

    def __iter__(self) -> Iterator[RowDifference]:
        for kind, key, live_row, backup_row, columns in self.found():
            yield RowDifference(kind, key, self._as_dict(live_row), self._as_dict(backup_row), columns)

    def found(self) -> Iterator[tuple]:
        """The differences as plain tuples (kind, key, live row, backup row, changed columns):
        rows stay as the driver returned them, normalised only where values differ. Counting
        a table where every row differs then costs a tuple per row instead of two dicts."""
        live, backup, spec = self.live_connection, self.backup_connection, self.spec
        # Before anything reads the backup side: whether it may be attached depends on it
        # having no transaction open yet.
        alias = _attach(live, backup) if live.dialect.name == "sqlite" else None
        try:
            _require_layout(live, "live", spec)
            _require_layout(backup, "backup", spec)
        except Exception:
            if alias is not None:
                _detach(live, alias)
            raise
        if live.dialect.name == "postgresql":
            collation = _pg_collation(live, backup)
            live_side = _Side(live, spec, collation=collation)
            backup_side = _Side(backup, spec, collation=collation)
        else:
            live_side, backup_side = _Side(live, spec), _Side(backup, spec)
        check = _choose_check(live_side, backup_side, alias)
        try:
            if isinstance(check, _SqliteJoin):
                yield from self._joined(check)
            else:
                try:
                    if isinstance(check, _PostgresHashCheck) and spec.integer_key:
                        yield from self._bucket_walk(live_side, backup_side, check.pool)
                    else:
                        yield from self._walk(live_side, backup_side, check)
                finally:
                    check.close()
        finally:
            if alias is not None:
                _detach(live, alias)

    def _joined(self, join: _SqliteJoin) -> Iterator[tuple]:
        """The differences from the set-based SQLite queries: the live side's rows first
        (only in live, or changed), then the rows only in the backup, each in key order."""
        spec = self.spec
        self.live_rows, self.backup_rows = join.counts()
        only_live = 0
        for missing, live_row, backup_row in join.live_side_rows(self.batch_size):
            if missing:
                only_live += 1
                yield ONLY_LIVE, spec.key_of(live_row), live_row, None, ()
                continue
            columns = self._changed_columns(live_row, backup_row)
            if columns:
                yield CHANGED, spec.key_of(live_row), live_row, backup_row, columns
        if self.backup_rows - (self.live_rows - only_live) > 0:
            for backup_row in join.backup_only_rows(self.batch_size):
                yield ONLY_BACKUP, spec.key_of(backup_row), None, backup_row, ()

    def _next_bound(self, live: _Side, backup: _Side, after: tuple | None, size: int) -> tuple | None:
        """The upper end of the next range: at most `size` rows of either side in it."""
        live_key, _ = live.boundary(after, size)
        backup_key, _ = backup.boundary(after, size)
        if live_key is None or backup_key is None:
            return live_key if backup_key is None else backup_key
        if live_key == backup_key:
            return live_key
        # Which key comes first is the database's question (its collation), not Python's:
        # if the live side holds fewer than a page up to the backup's key, that key is first.
        return backup_key if live.count(after, backup_key, cap=size) < size else live_key

    def _walk(self, live: _Side, backup: _Side, check: _RangeCheck) -> Iterator[tuple]:
        after: tuple | None = None
        # A page that differs is narrowed in the database before any row is fetched: the
        # page shrinks (down to FETCH_MIN rows) until a prefix is identical, and grows
        # back after identical pages. A few changed rows spread over a big table then cost
        # a few small fetches each instead of whole pages through Python.
        size = self.batch_size
        narrowing = not isinstance(check, _NoCheck)
        while True:
            # The common case first: the next live page is identical on the backup side.
            # Only when it is not does the backup side's own boundary matter (it may hold
            # far more rows up to the live page's end than a page).
            identical = check.next_identical(after, size)
            if identical is not None:
                upto, (live_count, backup_count) = identical
                self.live_rows += live_count
                self.backup_rows += backup_count
                size = min(self.batch_size, size * 2)
            elif narrowing and size > FETCH_MIN:
                size = max(FETCH_MIN, size // 8)
                continue
            else:
                upto = self._next_bound(live, backup, after, size)
                yield from self._fetched(live, backup, after, upto, count=True)
            if upto is None:
                return
            after = upto

    def _bucket_walk(self, live: _Side, backup: _Side, pool: ThreadPoolExecutor) -> Iterator[tuple]:
        """PostgreSQL, one integer key: every row is hashed once, as for identical copies,
        however thinly the changes are spread. Each page comes back as per-bucket sums
        from both servers at once; the buckets below the end of the shorter page are
        compared, and only differing buckets are fetched and merged."""
        after: tuple | None = None
        width = 1 << BUCKET_BITS
        while True:
            future = pool.submit(backup.bucket_summaries, after, self.batch_size)
            live_page = live.bucket_summaries(after, self.batch_size)
            backup_page = future.result()
            # A side whose page is full may hold more rows past its last key; one that is
            # not has reached its end. Only keys up to the smaller full page's end are known
            # on both sides.
            ends = [page[-1][3] for page in (live_page, backup_page) if sum(b[1] for b in page) >= self.batch_size]
            cut_bucket = (min(ends) >> BUCKET_BITS) if ends else None
            if cut_bucket is not None and not any(b[0] < cut_bucket for b in live_page + backup_page):
                # The page covers less than one whole bucket: compare its rows directly
                # (at most a page per side up to that end).
                upto = (min(ends),)
                yield from self._fetched(live, backup, after, upto, count=True)
                after = upto
                continue
            live_sums, backup_sums = (
                {b: (n, total) for b, n, total, _ in page if cut_bucket is None or b < cut_bucket}
                for page in (live_page, backup_page)
            )
            self.live_rows += sum(n for n, _ in live_sums.values())
            self.backup_rows += sum(n for n, _ in backup_sums.values())
            for bucket in sorted(live_sums.keys() | backup_sums.keys()):
                if live_sums.get(bucket) == backup_sums.get(bucket):
                    continue
                start = bucket * width - 1  # keys > start: the bucket's first key
                lower = after if after is not None and after[0] > start else (start,)
                # Counted above from the bucket's sums.
                yield from self._fetched(live, backup, lower, (bucket * width + width - 1,), count=False)
            if cut_bucket is None:
                return
            after = (cut_bucket * width - 1,)

    def _fetched(self, live: _Side, backup: _Side, after: tuple | None, upto: tuple | None, *, count: bool) -> Iterator[tuple]:
        """Fetch both sides' rows in the range (after, upto] and yield their differences;
        with `count`, add them to the rows compared."""
        live_rows, backup_rows = live.rows(after, upto), backup.rows(after, upto)
        if count:
            self.live_rows += len(live_rows)
            self.backup_rows += len(backup_rows)
        if live_rows != backup_rows:
            yield from self._merge(live_rows, backup_rows)

    def _merge(self, live_rows: list[tuple], backup_rows: list[tuple]) -> Iterator[tuple]:
        """Both lists hold one key range in the database's key order. Keys are matched by
        equality (a set), never by Python's ordering, which may differ from a collation."""
        spec = self.spec
        raw_key = spec.raw_key
        single = len(spec.key) == 1
        live_keys = list(map(raw_key, live_rows))
        backup_keys = list(map(raw_key, backup_rows))
        if live_keys == backup_keys:
            # The usual shape of a damaged range: the same rows, some values rewritten.
            for key, live_row, backup_row in zip(live_keys, live_rows, backup_rows):
                if live_row != backup_row:
                    columns = self._changed_columns(live_row, backup_row)
                    if columns:
                        yield CHANGED, (key,) if single else key, live_row, backup_row, columns
            return
        live_set, backup_set = set(live_keys), set(backup_keys)
        i = j = 0
        while i < len(live_rows) or j < len(backup_rows):
            live_key = live_keys[i] if i < len(live_rows) else None
            backup_key = backup_keys[j] if j < len(backup_rows) else None
            if i < len(live_rows) and j < len(backup_rows) and live_key == backup_key:
                live_row, backup_row = live_rows[i], backup_rows[j]
                i += 1
                j += 1
                if live_row != backup_row:
                    columns = self._changed_columns(live_row, backup_row)
                    if columns:
                        yield CHANGED, (live_key,) if single else live_key, live_row, backup_row, columns
            elif i < len(live_rows) and live_key not in backup_set:
                yield ONLY_LIVE, (live_key,) if single else live_key, live_rows[i], None, ()
                i += 1
            elif j < len(backup_rows) and backup_key not in live_set:
                yield ONLY_BACKUP, (backup_key,) if single else backup_key, None, backup_rows[j], ()
                j += 1
            else:  # pragma: no cover - both lists come from one key order, so keys cannot cross
                raise AssertionError(f"{spec.name}: keys {live_key} and {backup_key} out of order")

    def _changed_columns(self, live_row: tuple, backup_row: tuple) -> tuple[str, ...]:
        """The columns whose values differ. Only values that differ as stored are normalised
        (equal raw values are equal values); none left means two spellings of one value
        (a text and a datetime timestamp, 52.1 and 52.10)."""
        spec = self.spec
        # compress/map/ne find the differing positions in C: most columns of a changed row
        # are equal, and a Python-level loop over all of them costs more than the fetch.
        return tuple(
            spec.columns[i]
            for i in compress(spec.positions, map(ne, live_row, backup_row))
            if spec.normalisers[i](live_row[i]) != spec.normalisers[i](backup_row[i])
        )

    def _as_dict(self, row: tuple | None) -> dict | None:
        return None if row is None else dict(zip(self.spec.columns, self.spec.normalised(row)))


def iter_table_differences(
    live: Connection, backup: Connection, table: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[RowDifference]:
    """The differences of one table, streamed (never the whole table in memory), each
    kind in primary-key order; on SQLite the live side's (only live, changed) come
    before the rows only in the backup.

    Reads inside the connections' current transactions (SQLAlchemy begins one if none is
    open): give each side one snapshot, for instance REPEATABLE READ on PostgreSQL.
    Raises UnknownTable, EnginesDiffer or LayoutDiffers (exit 4) before reading rows.
    """
    return iter(_TableWalk(live, backup, table, batch_size=batch_size))


def diff_table(
    live: Connection, backup: Connection, table: str, *, sample_limit: int = 10, batch_size: int = DEFAULT_BATCH_SIZE
) -> TableDiff:
    """Exact counts of one table's differences and up to `sample_limit` keys of each kind."""
    walk = _TableWalk(live, backup, table, batch_size=batch_size)
    counts = dict.fromkeys(KINDS, 0)
    changed_columns: dict[str, int] = {}
    samples: dict[str, list] = {kind: [] for kind in KINDS}
    for kind, key, _live, _backup, columns in walk.found():
        counts[kind] += 1
        if len(samples[kind]) < sample_limit:
            samples[kind].append(list(key))
        for column in columns:
            changed_columns[column] = changed_columns.get(column, 0) + 1
    ordered = {c: changed_columns[c] for c in walk.spec.columns if c in changed_columns}
    return TableDiff(
        table=table,
        live_rows=walk.live_rows,
        backup_rows=walk.backup_rows,
        only_live=counts[ONLY_LIVE],
        only_backup=counts[ONLY_BACKUP],
        changed=counts[CHANGED],
        changed_columns=ordered,
        samples=samples,
    )


def check_tables(tables: Sequence[str] | None) -> list[str]:
    """The tables to compare (all game tables by default); UnknownTable names the known ones."""
    if tables is None:
        return list(GAME_TABLES)
    chosen = []
    for table in tables:
        _TableSpec.of(table)
        if table not in chosen:
            chosen.append(table)
    return chosen


def diff_databases(
    live: Connection, backup: Connection, *, tables: Sequence[str] | None = None, sample_limit: int = 10
) -> list[TableDiff]:
    """Every game table in schema order (or `tables`, in the order given), compared by primary key."""
    if not isinstance(sample_limit, int) or isinstance(sample_limit, bool) or sample_limit < 0:
        raise InvalidInput(f"sample limit {sample_limit!r} is not a non-negative integer")
    chosen = check_tables(tables)
    _require_same_engine(live, backup)
    return [diff_table(live, backup, table, sample_limit=sample_limit) for table in chosen]


# ---------------------------------------------------------------- `integrity diff`: a backup against live



class DiffCouldNotRun(PreconditionFailed):
    """A database refused or timed out a query of the diff."""


class OtherStore(PreconditionFailed):
    """The backup was taken of another database (its store identity differs from live's)."""


@dataclass(frozen=True)
class BackupDiffReport:
    """`integrity diff`: what differs between a backup and the live database, per table.

    Rows only in live are what a restore to this backup would lose; rows only in the
    backup are what it would bring back; changed rows are what it would overwrite.
    """

    backup_id: str
    backup_created_at: str
    backup_source: str  # where the backup was taken (masked), from its manifest
    store_identity: str | None
    engine: str
    database: str  # live, as displayed
    tables: tuple[TableDiff, ...]
    sample_limit: int
    differing_rows: int
    rows_compared: int
    seconds: float

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PROBLEMS_FOUND if self.differing_rows else ExitCode.OK

    def summary(self) -> dict:
        return {
            "backup_id": self.backup_id,
            "differing_rows": self.differing_rows,
            "tables": {t.table: {"only_live": t.only_live, "only_backup": t.only_backup, "changed": t.changed} for t in self.tables},
        }


def diff_backup(
    settings,
    backup_id: str,
    *,
    tables: Sequence[str] | None = None,
    sample_limit: int = 10,
    command: str = "diff",
    lock_wait: float = 0,
) -> BackupDiffReport:
    """Compare backup `backup_id` (or "latest": the newest good backup of this database)
    with the live database, which is only read.

    The backup is held against prune (reader lock), its hashes are verified (and the
    outcome journalled, as `backup verify` does), it is restored into a scratch copy that
    is always removed, and both sides are walked by primary key. Raises BackupNotFound,
    UnknownTable, EnginesDiffer, OtherStore, or the refusal of a live database that is not
    the game's at a revision this code knows (integrity.guarded), all exit 4, or
    BackupCorrupt (exit 5).
    """
    from integrity.backups.repository import BackupCorrupt, Repository
    from integrity.backups.scratch import open_copy, restored_copy
    from integrity.backups.statistics import store_identity
    from integrity.backups.catalog import resolve_backup
    from integrity.backups.verify import verify_one
    from integrity.database import connection_settings, open_read_only
    from integrity.guarded import require_game_revision

    chosen_tables = check_tables(tables)  # a typo fails before any work
    if not isinstance(sample_limit, int) or isinstance(sample_limit, bool) or sample_limit < 0:
        raise InvalidInput(f"--limit {sample_limit!r} is not a non-negative integer")
    started = time.perf_counter()
    target, live_engine = open_read_only(settings)
    try:
        with live_engine.connect() as probe:
            # First: a diff against another application's tables or a revision this code
            # does not know would report its own confusion as differences (exit 3).
            require_game_revision(probe, target.display)
            identity = store_identity(probe)
        repository = Repository.of(settings)
        repository.require_exists()
        chosen = resolve_backup(repository, backup_id, identity)
        with repository.reading(chosen, command=command, wait_seconds=lock_wait):
            verification = verify_one(settings, repository, chosen, deep=False, command=command)
            if verification.quick != "ok":
                raise BackupCorrupt("; ".join(verification.problems) + "; it cannot be compared or restored")
            manifest = repository.read_manifest(chosen)
            source = manifest.source_path or manifest.source_url
            if manifest.engine != target.kind:
                raise EnginesDiffer(
                    f"backup {manifest.id} is a {manifest.engine} backup (of {source}) but the configured database "
                    f"is {target.kind}; compare it with a {manifest.engine} database (--database-url)"
                )
            if manifest.source_identity and identity and manifest.source_identity != identity:
                raise OtherStore(
                    f"backup {manifest.id} was taken of another store: {source} (store {manifest.source_identity}); "
                    f"the configured database {target.display} is store {identity}; compare it with its own "
                    "database (--database-url), or pick one of this database's backups (`integrity backup list`)"
                )
            conn_settings = connection_settings(settings)
            with restored_copy(
                repository, manifest, source=target, scratch_dir=settings.state.dir / "scratch", settings=conn_settings,
            ) as copy:
                copy_engine = open_copy(copy, conn_settings)
                try:
                    diffs = _diff_live_and_copy(live_engine, copy_engine, chosen_tables, sample_limit, target.display)
                finally:
                    copy_engine.dispose()
    finally:
        live_engine.dispose()
    return BackupDiffReport(
        backup_id=manifest.id,
        backup_created_at=manifest.created_at,
        backup_source=source,
        store_identity=manifest.source_identity,
        engine=manifest.engine,
        database=target.display,
        tables=tuple(diffs),
        sample_limit=sample_limit,
        differing_rows=sum(d.differing_rows for d in diffs),
        rows_compared=sum(max(d.live_rows, d.backup_rows) for d in diffs),
        seconds=round(time.perf_counter() - started, 3),
    )


def _diff_live_and_copy(live_engine, copy_engine, tables: list[str], sample_limit: int, where: str) -> list[TableDiff]:
    try:
        with live_engine.connect() as live, copy_engine.connect() as backup:
            if live.dialect.name == "postgresql":
                # One snapshot of live for every table: the game keeps writing meanwhile.
                live = live.execution_options(isolation_level="REPEATABLE READ")
            return diff_databases(live, backup, tables=tables, sample_limit=sample_limit)
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise DiffCouldNotRun(
            f"the diff could not read {where} or the restored backup: {reason}; check the database "
            "(and [database] statement_timeout_ms) and run it again"
        ) from None
