"""The before/after content diff of one table across a migration, keyed by primary key.

A dry run keeps a "before" copy (never migrated) and a "work" copy the revisions ran on.
This module says, for one table, which rows the migration lost or added and which values
it changed, and how: the incident this project exists for kept every row and every
constraint while changing what the stored values meant.

Matching rows. Rows are matched by the before side's primary key. When the migration
dropped some of its columns, the before key's remaining columns are used, provided
their values are unique on both sides (checked in the database). When no key column is
left, the before table had no primary key, or the remaining columns are not unique,
whole rows of the common columns are compared as multisets: rows lost and added are
counted (a changed row counts once as lost and once as added) and no per-column
changes can be attributed. `TableContentDiff.key` is () in that case.

What is compared. Only the columns both sides have; a dropped column's non-NULL values
are counted as lost with it (`dropped_columns`), an added column is only named. A value
is unchanged when the stored values are equal as the engine compares them without
conversions: on SQLite 12 and 12.0 are one number (its NUMERIC affinity already stores
12.00 as integer 12), but 10 and '10' differ; on PostgreSQL values of a changed column
type are compared after a cast to a common type (numbers as numeric, date and timestamps
as timestamptz in the session's UTC, strings as text).

Each changed value gets exactly one of these kinds, which exclude each other:
- became_null: a non-NULL value became NULL;
- storage_class: the same value in another storage class: on SQLite typeof() differs
  (integer 10 became text '10'); on PostgreSQL the column's type category changed
  (number to text, timestamp to text) and the text equals the old value's;
- truncated: text that became a proper prefix of itself;
- precision_lost: a number that became itself rounded or cut to fewer decimals (12.37
  to 12.4, 12.3 or 12: after the change it has d decimals, fewer than before, and lies
  within one unit of its last decimal, 10**-d, of the old value);
- rewritten: any other change (a NULL that became a value included).
sort_order is counted on top of those, for every value that moved between numbers and
text (both non-NULL): such a column orders its values differently ('10' < '9') even
where each value "stayed the same", so it is worth its own count; those values also
count as storage_class (same value) or rewritten (another value).

Speed and memory: no table is loaded into Python.
- SQLite: the before file is ATTACHed read-only (`mode=ro`) to a connection on the
  after file and everything is set-based SQL: a LEFT JOIN on the key counts lost rows
  and each column's changed values in one pass, a second pass classifies only the rows
  and columns that changed, the row counts give the added rows, and samples come from
  LIMITed queries that stop at the last sample needed.
- PostgreSQL: the sides are two databases: the keyed walk of `tablediff.walk` (record
  hashes summed per bucket of an integer key or per page, only differing ranges
  fetched, pages fetched directly while most of their rows differ); memory holds at
  most a page per side. The fetched rows are classified here (`changes.classify`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from game_core.errors import InvalidInput, PreconditionFailed
from integrity.db.sql import quote
from integrity.migrate.observe import TableShape, postgres_column_types, sqlite_affinity
from integrity.tablediff import sqlite_attach
from integrity.tablediff.changes import (
    CHANGE_KINDS, KIND_OF_CODE, SORT_FLAG, VALUE_CODES, classify, classify_texts, sqlite_code,
)
from integrity.tablediff.values import canonical, canonical_key
from integrity.tablediff.walk import Fetched, Identical, Side, Walk, hashing_available, key_collation

# PostgreSQL: the largest page the walk hashes or fetches.
PAGE_SIZE = 50_000
_ATTACH_ALIAS = "integrity_before"


class ContentDiffFailed(PreconditionFailed):
    """The two sides cannot be compared (other engines, one file twice, no attachment)."""


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ColumnChange:
    column: str
    changed: int  # rows whose value of this column changed
    kinds: dict[str, int]  # kind -> rows; only kinds with rows > 0
    samples: tuple[str, ...]  # rendered keys, e.g. "id=42"


@dataclass(frozen=True)
class TableContentDiff:
    table: str
    key: tuple[str, ...]  # the columns rows were matched by; () when compared as multisets
    rows_before: int
    rows_after: int
    lost: int
    added: int
    changed: int  # rows with at least one changed common column
    lost_samples: tuple[str, ...]
    added_samples: tuple[str, ...]
    columns: tuple[ColumnChange, ...]  # the changed columns, in the before table's order
    dropped_columns: dict[str, int]  # column -> non-NULL values it held before (its values are gone)
    added_columns: tuple[str, ...]
    seconds: float

    @property
    def differs(self) -> bool:
        return bool(self.lost or self.added or self.changed or any(self.dropped_columns.values()))


# ---------------------------------------------------------------- rendering


def render_key(names: Sequence[str], values: Sequence[Any]) -> str:
    """`id=42`, `player_id=3, mode='words'`: how samples name a row."""
    return ", ".join(f"{name}={_literal(value)}" for name, value in zip(names, values))


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "x'" + bytes(value).hex() + "'"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------- counting


@dataclass
class _ColumnCounts:
    changed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def add(self, kind: str, rows: int = 1) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + rows


@dataclass
class _Tally:
    """Counts and samples as the engines find them, turned into the result at the end."""

    sample_limit: int
    rows_before: int = 0
    rows_after: int = 0
    lost: int = 0
    added: int = 0
    changed: int = 0
    lost_samples: list[str] = field(default_factory=list)
    added_samples: list[str] = field(default_factory=list)
    columns: dict[str, _ColumnCounts] = field(default_factory=dict)

    def column(self, name: str) -> _ColumnCounts:
        return self.columns.setdefault(name, _ColumnCounts())

    def sample(self, samples: list[str], rendered: str) -> None:
        if len(samples) < self.sample_limit:
            samples.append(rendered)

    def needs(self, samples: list[str]) -> int:
        return self.sample_limit - len(samples)


@dataclass(frozen=True)
class _Plan:
    table: str
    common: tuple[str, ...]  # columns both sides have, in the before table's order
    dropped: tuple[str, ...]
    added: tuple[str, ...]
    key: tuple[str, ...]  # matching key; () compares whole rows as multisets
    key_is_before_pk: bool  # unique on the before side by its own constraint
    after_pk_within_key: bool  # unique on the after side by its own constraint
    before_nullable_key: bool  # a key column may hold NULL on that side
    after_nullable_key: bool


def diff_table_content(
    before_engine: Engine,
    after_engine: Engine,
    table: str,
    *,
    before_shape: TableShape,
    after_shape: TableShape | None,
    sample_limit: int = 10,
) -> TableContentDiff:
    """Compare `table` between the never-migrated copy and the migrated one (both only
    read). `after_shape` None means the migration dropped the table: all of it is lost.
    Raises ContentDiffFailed (exit 4) when the sides cannot be compared."""
    if not isinstance(sample_limit, int) or isinstance(sample_limit, bool) or sample_limit < 0:
        raise InvalidInput(f"sample limit {sample_limit!r} is not a non-negative integer")
    started = time.perf_counter()
    tally = _Tally(sample_limit=sample_limit)
    if after_shape is None:
        key = before_shape.primary_key
        common: tuple[str, ...] = ()
        added_columns: tuple[str, ...] = ()
        dropped_counts = _dropped_table(before_engine, before_shape, tally)
    else:
        if before_engine.dialect.name != after_engine.dialect.name:
            raise ContentDiffFailed(
                f"cannot compare table {table} of a {before_engine.dialect.name} database with a "
                f"{after_engine.dialect.name} one; a dry run's copies share their source's engine"
            )
        plan = _plan(before_shape, after_shape)
        engine_diff = _SqliteDiff if before_engine.dialect.name == "sqlite" else _PostgresDiff
        key, dropped_counts = engine_diff(before_engine, after_engine, plan, tally).run()
        common, added_columns = plan.common, plan.added
    changes = []
    for name in common:
        counts = tally.columns.get(name)
        if counts is None or not counts.changed:
            continue
        changes.append(ColumnChange(
            column=name,
            changed=counts.changed,
            kinds={kind: counts.kinds[kind] for kind in CHANGE_KINDS if counts.kinds.get(kind)},
            samples=tuple(counts.samples),
        ))
    return TableContentDiff(
        table=table,
        key=key,
        rows_before=tally.rows_before,
        rows_after=tally.rows_after,
        lost=tally.lost,
        added=tally.added,
        changed=tally.changed,
        lost_samples=tuple(tally.lost_samples),
        added_samples=tuple(tally.added_samples),
        columns=tuple(changes),
        dropped_columns=dropped_counts,
        added_columns=added_columns,
        seconds=round(time.perf_counter() - started, 3),
    )


def _plan(before: TableShape, after: TableShape) -> _Plan:
    after_names = set(after.column_names)
    before_names = set(before.column_names)
    key = tuple(name for name in before.primary_key if name in after_names)
    return _Plan(
        table=before.name,
        common=tuple(name for name in before.column_names if name in after_names),
        dropped=tuple(name for name in before.column_names if name not in after_names),
        added=tuple(name for name in after.column_names if name not in before_names),
        key=key,
        key_is_before_pk=bool(key) and key == before.primary_key,
        after_pk_within_key=bool(key) and bool(after.primary_key) and set(after.primary_key) <= set(key),
        before_nullable_key=any(_nullable(before, name) for name in key),
        after_nullable_key=any(_nullable(after, name) for name in key),
    )


def _nullable(shape: TableShape, name: str) -> bool:
    column = shape.column(name)
    return column is None or column.nullable


def _dropped_table(engine: Engine, shape: TableShape, tally: _Tally) -> dict[str, int]:
    """The migration dropped the table: every row and every value is lost."""
    names = shape.column_names
    table = quote(shape.name)
    counts = ", ".join(f"COUNT({quote(name)})" for name in names)
    order = shape.primary_key or names
    listed = ", ".join(quote(name) for name in order)
    with engine.connect() as connection:
        row = connection.execute(sa.text(f"SELECT COUNT(*), {counts} FROM {table}")).one()
        samples = connection.execute(
            sa.text(f"SELECT {listed} FROM {table} ORDER BY {listed} LIMIT :limit"), {"limit": tally.sample_limit}
        ).all()
    tally.rows_before = tally.lost = int(row[0])
    tally.lost_samples = [render_key(order, sample) for sample in samples]
    return {name: int(count) for name, count in zip(names, row[1:])}


# ---------------------------------------------------------------- SQLite



class _SqliteDiff:
    """Set-based SQL on one connection: the after file as main, the before file attached."""

    def __init__(self, before_engine: Engine, after_engine: Engine, plan: _Plan, tally: _Tally):
        self.before_engine, self.after_engine = before_engine, after_engine
        self.plan, self.tally = plan, tally
        self.after = f"main.{quote(plan.table)}"

    def run(self) -> tuple[tuple[str, ...], dict[str, int]]:
        # Raw DBAPI connections: the engines' begin hook would take a write lock
        # (BEGIN IMMEDIATE) on a writable copy, and ATTACH/DETACH want no transaction.
        before_raw = self.before_engine.raw_connection()
        try:
            before_cursor = before_raw.cursor()
            before_path = sqlite_attach.main_file(before_cursor.execute)
            before_cursor.close()
        finally:
            before_raw.close()
        raw = self.after_engine.raw_connection()
        try:
            self.cursor = raw.cursor()
            after_path = sqlite_attach.main_file(self.cursor.execute)
            if not before_path or before_path == after_path:
                raise ContentDiffFailed(
                    f"the before and after copies of table {self.plan.table} must be two database files "
                    f"(got {before_path or 'an in-memory database'} and {after_path})"
                )
            self.alias = self._attach(before_path)
            self.before = f"{quote(self.alias)}.{quote(self.plan.table)}"
            try:
                self.cursor.execute("BEGIN")
                try:
                    return self._compare()
                finally:
                    self.cursor.execute("ROLLBACK")
            finally:
                sqlite_attach.detach(self.cursor.execute, self.alias)
                self.cursor.close()
        finally:
            raw.close()

    def _attach(self, path: str) -> str:
        """The before copy, attached read-only: it must never be written."""
        refusal = "the attachment is not that file"
        try:
            alias = sqlite_attach.attach_read_only(self.cursor.execute, path, _ATTACH_ALIAS)
        except sqlite3.Error as exc:
            alias, refusal = None, str(exc)
        if alias is None:
            raise ContentDiffFailed(
                f"cannot attach the before copy {path} read-only to the after copy: {refusal}; "
                "open both with game_core.db.create_engine"
            )
        return alias

    def _one(self, sql: str, params: Sequence = ()) -> tuple:
        return self.cursor.execute(sql, params).fetchone()

    def _compare(self) -> tuple[tuple[str, ...], dict[str, int]]:
        plan, tally = self.plan, self.tally
        tally.rows_before = int(self._one(f"SELECT COUNT(*) FROM {self.before}")[0])
        tally.rows_after = int(self._one(f"SELECT COUNT(*) FROM {self.after}")[0])
        dropped = {}
        if plan.dropped:
            counts = self._one(
                f"SELECT {', '.join(f'COUNT({quote(name)})' for name in plan.dropped)} FROM {self.before}"
            )
            dropped = {name: int(count) for name, count in zip(plan.dropped, counts)}
        key = plan.key
        if key and not (
            (plan.key_is_before_pk or self._unique(self.before, key))
            and (plan.after_pk_within_key or self._unique(self.after, key))
        ):
            key = ()
        if key:
            self._keyed(key)
        else:
            self._multiset()
        return key, dropped

    def _unique(self, table: str, key: tuple[str, ...]) -> bool:
        listed = ", ".join(quote(name) for name in key)
        return self._one(f"SELECT 1 FROM {table} GROUP BY {listed} HAVING COUNT(*) > 1 LIMIT 1") is None

    def _declared_types(self, schema: str) -> dict[str, str]:
        return {row[1]: row[2] for row in self.cursor.execute(f"PRAGMA {schema}.table_info({quote(self.plan.table)})")}

    def _keyed(self, key: tuple[str, ...]) -> None:
        plan, tally = self.plan, self.tally
        before_types, after_types = self._declared_types(quote(self.alias)), self._declared_types("main")
        differs, codes = {}, {}
        for name in plan.common:
            numeric = ("INTEGER", "REAL", "NUMERIC")
            # Text may carry a column collation (NOCASE) under which 'Abc' IS 'abc': compare bytes.
            collate = "" if (
                sqlite_affinity(before_types.get(name)) in numeric and sqlite_affinity(after_types.get(name)) in numeric
            ) else " COLLATE BINARY"
            differs[name] = f"+b.{quote(name)} IS NOT +a.{quote(name)}{collate}"
            codes[name] = sqlite_code(name, collate)
        join = " AND ".join(f"a.{quote(name)} = b.{quote(name)}" for name in key)
        unmatched = f"a.{quote(key[0])} IS NULL"
        key_list = ", ".join(f"b.{quote(name)}" for name in key)
        # Pass 1: lost rows and each column's changed values. Only rows that are lost or
        # differ pass the WHERE, so an unchanged row costs one comparison per column.
        row = self._one(
            f"SELECT COUNT(*), SUM({unmatched}), "
            + ", ".join(f"SUM(NOT {unmatched} AND {differs[name]})" for name in plan.common)
            + f" FROM {self.before} AS b LEFT JOIN {self.after} AS a ON {join}"
            f" WHERE {unmatched} OR {' OR '.join(differs.values())}"
        )
        passing, lost = int(row[0]), int(row[1] or 0)
        tally.lost = lost
        tally.changed = passing - lost
        # Keys are unique on both sides: every after row that matched nothing is added.
        tally.added = tally.rows_after - (tally.rows_before - lost)
        changed_columns = [name for name, count in zip(plan.common, row[2:]) if count]
        for name, count in zip(plan.common, row[2:]):
            if count:
                tally.column(name).changed = int(count)
        if changed_columns:
            self._classify(changed_columns, codes, differs, join)
        limit = tally.sample_limit
        if lost and limit:
            for sample in self.cursor.execute(
                f"SELECT {key_list} FROM {self.before} AS b WHERE NOT EXISTS "
                f"(SELECT 1 FROM {self.after} AS a WHERE {join}) ORDER BY {key_list} LIMIT ?", (min(lost, limit),)
            ).fetchall():
                tally.sample(tally.lost_samples, render_key(key, sample))
        if tally.added and limit:
            after_keys = ", ".join(f"a.{quote(name)}" for name in key)
            for sample in self.cursor.execute(
                f"SELECT {after_keys} FROM {self.after} AS a WHERE NOT EXISTS "
                f"(SELECT 1 FROM {self.before} AS b WHERE {join}) ORDER BY {after_keys} LIMIT ?",
                (min(tally.added, limit),),
            ).fetchall():
                tally.sample(tally.added_samples, render_key(key, sample))
        for name in changed_columns:
            counts = tally.column(name)
            if not limit:
                break
            # The exact count bounds the LIMIT, so the scan stops at the last changed row.
            for sample in self.cursor.execute(
                f"SELECT {key_list} FROM {self.before} AS b JOIN {self.after} AS a ON {join}"
                f" WHERE {differs[name]} ORDER BY {key_list} LIMIT ?", (min(counts.changed, limit),)
            ).fetchall():
                tally.sample(counts.samples, render_key(key, sample))

    def _classify(self, columns: list[str], codes: dict[str, str], differs: dict[str, str], join: str) -> None:
        """Pass 2, over the rows where one of `columns` changed: how each value changed.
        The LIMIT -1 keeps SQLite from flattening the subquery, which would evaluate each
        classification once per aggregate instead of once per row."""
        selected = ", ".join(f"{codes[name]} AS k{index}" for index, name in enumerate(columns))
        sums = []
        for index in range(len(columns)):
            sums += [f"SUM(k{index} & 7 = {code})" for code in VALUE_CODES.values()]
            sums.append(f"SUM(k{index} >= {SORT_FLAG})")
        row = self._one(
            f"SELECT {', '.join(sums)} FROM (SELECT {selected} FROM {self.before} AS b JOIN {self.after} AS a"
            f" ON {join} WHERE {' OR '.join(differs[name] for name in columns)} LIMIT -1)"
        )
        width = len(VALUE_CODES) + 1
        for index, name in enumerate(columns):
            counts = self.tally.column(name)
            values = row[index * width: (index + 1) * width]
            for kind, rows in zip((*VALUE_CODES, "sort_order"), values):
                if rows:
                    counts.add(kind, int(rows))

    def _multiset(self) -> None:
        """No usable key: whole rows of the common columns as multisets, in one sorted pass."""
        plan, tally = self.plan, self.tally
        if not plan.common:
            return
        values = ", ".join(f"+{quote(name)} COLLATE BINARY AS v{index}" for index, name in enumerate(plan.common))
        groups = ", ".join(f"v{index}" for index in range(len(plan.common)))
        query = (
            f"SELECT {groups}, SUM(side = 0), SUM(side = 1) FROM ("
            f"SELECT {values}, 0 AS side FROM {self.before} UNION ALL SELECT {values}, 1 AS side FROM {self.after}"
            f") GROUP BY {groups} HAVING SUM(side = 0) <> SUM(side = 1)"
        )
        width = len(plan.common)
        for row in self.cursor.execute(query):
            before_rows, after_rows = int(row[width]), int(row[width + 1])
            if before_rows > after_rows:
                tally.lost += before_rows - after_rows
                samples = tally.lost_samples
            else:
                tally.added += after_rows - before_rows
                samples = tally.added_samples
            if tally.needs(samples) > 0:
                samples.append(render_key(plan.common, row[:width]))


# ---------------------------------------------------------------- PostgreSQL

# How a column is compared when its type differs between the sides (see _pg_mode).
_SAME, _NUMERIC, _INSTANT, _TEXT, _CATEGORY = "same", "numeric", "instant", "text", "category"
_INSTANT_TYPES = frozenset({"date", "timestamp", "timestamptz"})
# Types hash_record_extended can hash as they are; others are hashed through their text.
_PG_HASHABLE_CATEGORIES = frozenset({"B", "D", "E", "S", "T"})
_PG_HASHABLE_TYPES = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8", "oid", "uuid", "bytea", "jsonb"})
_PG_INTEGER_TYPES = frozenset({"int2", "int4", "int8"})


def _pg_mode(before: tuple[str, str, str], after: tuple[str, str, str]) -> str:
    (before_type, before_category, before_base), (after_type, after_category, after_base) = before, after
    if before_type == after_type:
        return _SAME
    if before_category != after_category:
        return _CATEGORY
    if before_category == "N":
        return _NUMERIC
    if before_base in _INSTANT_TYPES and after_base in _INSTANT_TYPES:
        return _INSTANT
    return _TEXT


class _PostgresDiff:
    """Two databases: the keyed walk (tablediff.walk), or a multiset merge."""

    def __init__(self, before_engine: Engine, after_engine: Engine, plan: _Plan, tally: _Tally):
        self.before_engine, self.after_engine = before_engine, after_engine
        self.plan, self.tally = plan, tally

    def run(self) -> tuple[tuple[str, ...], dict[str, int]]:
        with self.before_engine.connect() as before, self.after_engine.connect() as after:
            # One snapshot per side for the whole walk.
            before = before.execution_options(isolation_level="REPEATABLE READ")
            after = after.execution_options(isolation_level="REPEATABLE READ")
            plan = self.plan
            before_types = postgres_column_types(before, plan.table)
            after_types = postgres_column_types(after, plan.table)
            self.modes = {name: _pg_mode(before_types[name], after_types[name]) for name in plan.common}
            self.categories = {name: before_types[name][1] for name in plan.common}
            self.number_text = {
                name for name in plan.common
                if {before_types[name][1], after_types[name][1]} == {"N", "S"}
            }
            self.hashable = {
                name: _pg_hashable(before_types[name]) and _pg_hashable(after_types[name]) for name in plan.common
            }
            self.integer = {
                name: {before_types[name][2], after_types[name][2]} <= _PG_INTEGER_TYPES for name in plan.common
            }
            dropped = {}
            if plan.dropped:
                counts = before.execute(sa.text(
                    f"SELECT {', '.join(f'COUNT({quote(name)})' for name in plan.dropped)} FROM {quote(plan.table)}"
                )).one()
                dropped = {name: int(count) for name, count in zip(plan.dropped, counts)}
            key = plan.key
            # Keys must order alike on both sides for the walk: a key column that changed
            # category (number to text) does not, and is compared as part of whole rows.
            if key and (
                any(self.modes[name] == _CATEGORY for name in key)
                or not (plan.key_is_before_pk or _pg_unique(before, plan.table, key))
                or not (plan.after_pk_within_key or _pg_unique(after, plan.table, key))
            ):
                key = ()
            if key:
                self._walk(before, after, key)
            else:
                self._multiset(before, after)
            return key, dropped

    # ---- the keyed walk

    def _sides(self, before: Connection, after: Connection, key: tuple[str, ...]) -> tuple[Side, Side]:
        plan = self.plan
        hashed, fetched = [], []
        for index, name in enumerate(plan.common):
            page_column, mode = f"c{index}", self.modes[name]
            if mode == _SAME:
                hashed.append(page_column if self.hashable[name] else f"{page_column}::text")
            elif mode == _NUMERIC:
                hashed.append(f"{page_column}::numeric")
            elif mode == _INSTANT:
                hashed.append(f"{page_column}::timestamptz")
            else:
                hashed.append(f"{page_column}::text")
            fetched.append(f"{quote(name)}::text" if mode == _CATEGORY else quote(name))
        self.category = [name for name in plan.common if self.modes[name] == _CATEGORY]
        # On a range whose hashes agree, a category-changed column's texts are equal row by
        # row: each of its non-NULL values is a storage_class change, counted here.
        not_null = [f"c{plan.common.index(name)} IS NOT NULL" for name in self.category]
        extras = not_null + ([" OR ".join(not_null)] if not_null else [])
        collation = key_collation(before, after)
        keys = [
            quote(name) + (f' COLLATE "{collation}"' if collation and self.categories[name] == "S" else "")
            for name in key
        ]
        columns = [quote(name) for name in plan.common]
        return (
            Side(before, quote(plan.table), keys, columns=columns, hashed=hashed, fetched=keys + fetched,
                 extras=extras, nullable_key=plan.before_nullable_key),
            Side(after, quote(plan.table), keys, columns=columns, hashed=hashed, fetched=keys + fetched,
                 nullable_key=plan.after_nullable_key),
        )

    def _walk(self, before_connection: Connection, after_connection: Connection, key: tuple[str, ...]) -> None:
        before, after = self._sides(before_connection, after_connection, key)
        self.key = key
        # An integer key on both sides (int2/int4/int8: `>>` buckets them) is unique here.
        buckets = len(key) == 1 and self.integer[key[0]]
        walk = Walk(before, after, page_size=PAGE_SIZE, buckets=buckets,
                    hashing=hashing_available(before_connection, after_connection))
        for event in walk:
            if isinstance(event, Fetched):
                walk.report_differing(self._compare_rows(event.rows_a, event.rows_b))
            else:
                self._identical(before, event)
        tally = self.tally
        for side, samples, is_before in ((before, tally.lost_samples, True), (after, tally.added_samples, False)):
            count, keys = side.null_keys(tally.needs(samples))
            if is_before:
                tally.rows_before += count
                tally.lost += count
            else:
                tally.rows_after += count
                tally.added += count
            for row in keys:
                tally.sample(samples, render_key(key, row))

    def _identical(self, before: Side, event: Identical) -> None:
        tally = self.tally
        tally.rows_before += event.rows
        tally.rows_after += event.rows
        if not self.category:
            return
        tally.changed += event.extras[-1]
        for name, values in zip(self.category, event.extras):
            if not values:
                continue
            counts = tally.column(name)
            counts.changed += values
            counts.add("storage_class", values)
            if name in self.number_text:
                counts.add("sort_order", values)
            need = tally.needs(counts.samples)
            if need > 0:
                for row in before.keys_where(event.after, event.upto, f"{quote(name)} IS NOT NULL", need):
                    tally.sample(counts.samples, render_key(self.key, row))

    def _compare_rows(self, rows_before: list[tuple], rows_after: list[tuple]) -> int:
        """Merge one key range of both sides; returns how many rows differ. This is the
        only per-row Python of the walk (pages that differ), so it stays lean: raw
        tuples, one pass per side, samples rendered only while still wanted."""
        tally, width, key = self.tally, len(self.key), self.key
        key_of = (lambda row: canonical(row[0])) if width == 1 else (lambda row: canonical_key(row[:width]))
        limit = tally.sample_limit
        columns = [
            (width + index, tally.column(name), self.modes[name] == _CATEGORY, name in self.number_text)
            for index, name in enumerate(self.plan.common)
        ]
        tally.rows_before += len(rows_before)
        tally.rows_after += len(rows_after)
        pending = {key_of(row): row for row in rows_after}
        differing = 0
        for row in rows_before:
            other = pending.pop(key_of(row), None)
            if other is None:
                tally.lost += 1
                if len(tally.lost_samples) < limit:
                    tally.lost_samples.append(render_key(key, row[:width]))
                differing += 1
                continue
            row_changed = False
            for position, counts, category, number_text in columns:
                old, new = row[position], other[position]
                if category:
                    code = classify_texts(old, new, number_text)
                elif old == new and type(old) is type(new):
                    continue
                else:
                    code = classify(old, new)
                if not code:
                    continue
                row_changed = True
                counts.changed += 1
                counts.add(KIND_OF_CODE[code & 7])
                if code & SORT_FLAG:
                    counts.add("sort_order")
                if len(counts.samples) < limit:
                    counts.samples.append(render_key(key, row[:width]))
            if row_changed:
                tally.changed += 1
                differing += 1
        if pending:
            for row in rows_after:
                if key_of(row) in pending:
                    tally.added += 1
                    if len(tally.added_samples) < limit:
                        tally.added_samples.append(render_key(key, row[:width]))
                    differing += 1
        return differing

    # ---- whole rows as multisets

    def _multiset(self, before: Connection, after: Connection) -> None:
        """Both sides grouped by the text of every common column, streamed in the same
        byte order (COLLATE "C", NULLs last) and merged: memory holds one group per side."""
        plan, tally = self.plan, self.tally
        if not plan.common:
            for connection, is_before in ((before, True), (after, False)):
                rows = int(connection.execute(sa.text(f"SELECT COUNT(*) FROM {quote(plan.table)}")).scalar_one())
                if is_before:
                    tally.rows_before = rows
                else:
                    tally.rows_after = rows
            return
        expressions, numbers = [], []
        for index, name in enumerate(plan.common):
            column, mode = quote(name), self.modes[name]
            if mode in (_SAME, _NUMERIC) and self.categories[name] == "N":
                expressions.append(f"trim_scale({column}::numeric)::text")  # 12.5 and 12.50 alike
                numbers.append(index)
            elif mode == _INSTANT:
                expressions.append(f"{column}::timestamptz::text")
            else:
                expressions.append(f"{column}::text")
        aliases = [f"v{index}" for index in range(len(expressions))]
        query = sa.text(
            f"SELECT {', '.join(aliases)}, COUNT(*) FROM (SELECT "
            + ", ".join(f"{e} AS {a}" for e, a in zip(expressions, aliases))
            + f" FROM {quote(plan.table)}) AS canonical GROUP BY {', '.join(aliases)} "
            + "ORDER BY " + ", ".join(f'{a} COLLATE "C"' for a in aliases)
        )
        streams = [
            connection.execution_options(stream_results=True, yield_per=5_000).execute(query)
            for connection in (before, after)
        ]
        try:
            for values, before_rows, after_rows in _merge_groups(*streams):
                tally.rows_before += before_rows
                tally.rows_after += after_rows
                if before_rows > after_rows:
                    tally.lost += before_rows - after_rows
                    samples = tally.lost_samples
                elif after_rows > before_rows:
                    tally.added += after_rows - before_rows
                    samples = tally.added_samples
                else:
                    continue
                if tally.needs(samples) > 0:
                    # Numbers arrive as canonical text; shown as numbers, as SQLite shows them.
                    shown = [Decimal(v) if i in numbers and v is not None else v for i, v in enumerate(values)]
                    samples.append(render_key(plan.common, shown))
        finally:
            for stream in streams:
                stream.close()


def _merge_groups(before_rows, after_rows) -> Iterator[tuple[tuple, int, int]]:
    """(values, rows before, rows after) for every distinct row of two streams sorted
    alike. Python compares str by code point, which is the UTF-8 byte order of "C"."""
    def order(values: tuple) -> tuple:
        return tuple((1, "") if value is None else (0, value) for value in values)

    before_iter, after_iter = iter(before_rows), iter(after_rows)
    left, right = next(before_iter, None), next(after_iter, None)
    while left is not None or right is not None:
        if right is None or (left is not None and order(tuple(left[:-1])) < order(tuple(right[:-1]))):
            yield tuple(left[:-1]), int(left[-1]), 0
            left = next(before_iter, None)
        elif left is None or order(tuple(right[:-1])) < order(tuple(left[:-1])):
            yield tuple(right[:-1]), 0, int(right[-1])
            right = next(after_iter, None)
        else:
            yield tuple(left[:-1]), int(left[-1]), int(right[-1])
            left, right = next(before_iter, None), next(after_iter, None)


def _pg_hashable(column_type: tuple[str, str, str]) -> bool:
    _rendered, category, base = column_type
    return category in _PG_HASHABLE_CATEGORIES or base in _PG_HASHABLE_TYPES


def _pg_unique(connection: Connection, table: str, key: tuple[str, ...]) -> bool:
    listed = ", ".join(quote(name) for name in key)
    return connection.execute(sa.text(
        f"SELECT 1 FROM {quote(table)} GROUP BY {listed} HAVING COUNT(*) > 1 LIMIT 1"
    )).first() is None



