"""Row-level differences between two copies of the game database at one revision (a
backup and live), keyed by primary key: `integrity diff`, restore plans, salvage and
drills.

Memory never holds a table: only differing rows reach Python, a range at a time.

- SQLite: the backup's file is ATTACHed read-only to the live connection and the table
  is compared in set-based SQL (`_SqliteJoin`): one LEFT JOIN on the key returns only
  the live rows without an identical twin, and a second query the backup's rows whose
  key live lacks, run only when the row counts say there are some. Reading both sides
  into Python tops out near 200,000 rows per second per side on this hardware; the join
  compares over a million.
- PostgreSQL, or SQLite files that cannot be attached (the backup connection holds an
  open transaction whose uncommitted rows an attachment could not see): the keyed walk
  of `tablediff.walk` (record hashes summed per bucket or page, only differing ranges
  fetched), merged here row by row.

The database only ever rules out rows it finds identical; everything reported comes
from the rows themselves, compared per column type (`values.normaliser_for`) so that
the drivers' spellings of one stored value (Decimal or float, text or datetime
timestamps, naive or aware) never count as a change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter, ne
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core.errors import InvalidInput, PreconditionFailed
from game_core.schema import GAME_TABLES, metadata
from integrity.db.sql import quote
from integrity.tablediff import sqlite_attach
from integrity.tablediff.walk import Fetched, Side, Walk, hashing_available, key_collation
from integrity.tablediff.values import normaliser_for

ONLY_LIVE = "only_live"
ONLY_BACKUP = "only_backup"
CHANGED = "changed"
KINDS = (ONLY_LIVE, ONLY_BACKUP, CHANGED)
DEFAULT_BATCH_SIZE = 50_000
_ATTACH_ALIAS = "integrity_diff_other"

# How a table is compared (see _choose_path).
JOINED, HASHED, FETCHED = "joined", "hashed", "fetched"


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

    def side(self, connection: Connection, collation: str | None) -> Side:
        """This table on one side of the keyed walk: rows fetched whole, in schema order."""
        keys = [
            quote(name) + (f' COLLATE "{collation}"' if is_text and collation else "")
            for name, is_text in zip(self.key, self.text_key)
        ]
        columns = [quote(c) for c in self.columns]
        return Side(connection, quote(self.name), keys, columns=columns, fetched=columns)


class _SqliteJoin:
    """SQLite, the backup's file attached read-only to the live connection: the whole
    table in set-based queries instead of key ranges.

    One LEFT JOIN on the key returns only the live rows without an identical backup twin
    (`IS NOT`: NULL-safe, and compares stored values as SQLite does, 5 = 5.0). The live
    side is scanned in key order; with an integer key every lookup on the other side is
    the key after the previous one, which SQLite's b-tree serves by stepping forward
    rather than searching again: in effect a merge join in C, about twice the rows per
    second of checking key ranges. Rows only in the backup need a second scan of the
    backup side, run only when the row counts say some exist: backup rows = live rows -
    rows only in live + rows only in the backup (keys are unique). Everything is read in
    the connection's one transaction, so the counts and the rows come from one snapshot.
    """

    def __init__(self, connection: Connection, spec: _TableSpec, alias: str):
        self.connection, self.spec = connection, spec
        self.live_table, self.backup_table = quote(spec.name), f"{quote(alias)}.{quote(spec.name)}"
        self.join = " AND ".join(f"b.{quote(k)} = l.{quote(k)}" for k in spec.key)
        self.missing = f"b.{quote(spec.key[0])} IS NULL"
        self.differs = " OR ".join(f"l.{quote(c)} IS NOT b.{quote(c)}" for c in spec.columns if c not in spec.key)

    def _columns(self, alias: str) -> str:
        return ", ".join(f"{alias}.{quote(c)}" for c in self.spec.columns)

    def _order(self, alias: str) -> str:
        return ", ".join(f"{alias}.{quote(k)}" for k in self.spec.key)

    def _stream(self, sql: str, batch_size: int) -> Iterator[tuple]:
        result = self.connection.exec_driver_sql(sql)
        try:
            while batch := result.cursor.fetchmany(batch_size):
                yield from batch
        finally:
            result.close()

    def counts(self) -> tuple[int, int]:
        count = "SELECT COUNT(*) FROM {}"
        return tuple(int(self.connection.exec_driver_sql(count.format(table)).scalar_one())
                     for table in (self.live_table, self.backup_table))

    def live_side_rows(self, batch_size: int) -> Iterator[tuple[bool, tuple, tuple]]:
        """(only in live?, live row, backup row) of every live row without an identical
        twin, in key order."""
        width = len(self.spec.columns)
        condition = self.missing + (f" OR {self.differs}" if self.differs else "")
        for row in self._stream(
            f"SELECT {self.missing}, {self._columns('l')}, {self._columns('b')} "
            f"FROM {self.live_table} AS l LEFT JOIN {self.backup_table} AS b ON {self.join} "
            f"WHERE {condition} ORDER BY {self._order('l')}",
            batch_size,
        ):
            yield bool(row[0]), row[1:width + 1], row[width + 1:]

    def backup_only_rows(self, batch_size: int) -> Iterator[tuple]:
        """The backup rows whose key live lacks, in key order."""
        return self._stream(
            f"SELECT {self._columns('b')} FROM {self.backup_table} AS b "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.live_table} AS l WHERE {self.join}) "
            f"ORDER BY {self._order('b')}",
            batch_size,
        )


def _choose_path(live: Connection, backup: Connection) -> str:
    """The fastest exact way the two sides allow (tests force FETCHED to prove the plain
    path finds the same differences)."""
    if live.dialect.name == "sqlite":
        return JOINED
    return HASHED if hashing_available(live, backup) else FETCHED


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


def _attach(live: Connection, backup: Connection) -> str | None:
    """Attach the backup's file to the live connection (or find it attached already).

    A new attachment is refused (None) when the backup connection has a transaction
    open: rows it wrote and has not committed are invisible through another connection.
    An attachment made earlier (the previous table of the same diff) is reused: SQLite
    refuses DETACH inside a transaction, so it outlives its table.
    """
    # Asked first: the PRAGMA below begins a transaction on the backup connection itself.
    backup_busy = getattr(backup.connection.dbapi_connection, "in_transaction", True)
    path = sqlite_attach.main_file(backup.exec_driver_sql)
    if not path or path == sqlite_attach.main_file(live.exec_driver_sql):
        return None
    existing = sqlite_attach.attached_as(live.exec_driver_sql, path)
    if existing is not None:
        return existing
    if backup_busy:
        return None
    try:
        return sqlite_attach.attach_read_only(live.exec_driver_sql, path, _ATTACH_ALIAS)
    except sa.exc.DBAPIError:
        return None  # no URIs on this connection: the plain path


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
        path = _choose_path(live, backup)
        # Before anything reads the backup side: whether it may be attached depends on it
        # having no transaction open yet.
        alias = _attach(live, backup) if path == JOINED else None
        if path == JOINED and alias is None:
            path = FETCHED
        try:
            _require_layout(live, "live", spec)
            _require_layout(backup, "backup", spec)
            if path == JOINED:
                yield from self._joined(_SqliteJoin(live, spec, alias))
            else:
                yield from self._walked(path == HASHED)
        finally:
            if alias is not None:
                sqlite_attach.detach(live.exec_driver_sql, alias)

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

    def _walked(self, hashing: bool) -> Iterator[tuple]:
        live, backup, spec = self.live_connection, self.backup_connection, self.spec
        collation = key_collation(live, backup)
        walk = Walk(spec.side(live, collation), spec.side(backup, collation),
                    page_size=self.batch_size, hashing=hashing, buckets=spec.integer_key)
        for event in walk:
            if isinstance(event, Fetched):
                self.live_rows += len(event.rows_a)
                self.backup_rows += len(event.rows_b)
                found = list(self._merge(event.rows_a, event.rows_b)) if event.rows_a != event.rows_b else []
                walk.report_differing(len(found))
                yield from found
            else:
                self.live_rows += event.rows
                self.backup_rows += event.rows

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
