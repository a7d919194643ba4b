"""What a dry run observes of a database before and after a migration, by reflection.

The revisions under test may drop, add, retype or rename anything, so nothing here reads
the game's own schema (`game_core.schema`): tables, columns and constraints are
reflected from the connection, and every shape is a frozen, comparable value.

- `capture_schema` and `schema_changes`: the schema of one side, and what differs
  between two of them, in a deterministic order (tables by name, then columns in their
  table's order, then keys, indexes, foreign keys and checks; enums last).
- `table_statistics`: per-column row, NULL, minimum, maximum and sum figures (and
  SQLite storage classes) of one table, from a single scan.
- `tables_reaching`: the tables whose rows a change to some tables can delete or alter
  through foreign keys, so the content diff covers cascades.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from integrity.db.sql import quote

# Alembic's bookkeeping table: its row is the revision, which a migration always moves.
_SKIPPED_TABLES = frozenset({"alembic_version"})
SQLITE_STORAGE_CLASSES = ("null", "integer", "real", "text", "blob")


# ---------------------------------------------------------------- shapes


@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str  # rendered for the dialect, e.g. "NUMERIC(7, 2)", "VARCHAR(32)"
    nullable: bool
    default: str | None  # the server default as the database reports it


@dataclass(frozen=True)
class ForeignKeyShape:
    columns: tuple[str, ...]
    referred_table: str
    referred_columns: tuple[str, ...]
    ondelete: str | None  # upper case ("CASCADE", "SET NULL"), None for the default

    def render(self) -> str:
        action = f" ON DELETE {self.ondelete}" if self.ondelete else ""
        return f"({', '.join(self.columns)}) -> {self.referred_table}({', '.join(self.referred_columns)}){action}"


@dataclass(frozen=True)
class TableShape:
    name: str
    columns: tuple[ColumnShape, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[str, ...]  # "name(col, col) unique", unique constraints included, sorted
    foreign_keys: tuple[ForeignKeyShape, ...]
    checks: tuple[str, ...]  # "name: condition", sorted

    def column(self, name: str) -> ColumnShape | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


@dataclass(frozen=True)
class SchemaShape:
    tables: dict[str, TableShape]
    enums: tuple[str, ...]  # PostgreSQL enum types with their labels: "mood('sad', 'ok')"


def capture_schema(connection: Connection) -> SchemaShape:
    """The shape of every table in the default schema except `alembic_version`.

    Reflection takes dozens of catalogue queries (0.1-0.6 s on PostgreSQL), and every
    run asks for live's shape at least once (the schema verdict of status and the
    metrics file). A shape is a function of the schema's definition alone, so it is kept
    per process under a digest of that definition (`_definition_digest`, one query):
    a schema changed in any way the shape shows has another digest.
    """
    digest = _definition_digest(connection)
    key = (connection.dialect.name, digest)
    with _shapes_lock:
        known = _shapes.get(key) if digest is not None else None
    if known is not None:
        return SchemaShape(tables=dict(known.tables), enums=known.enums)  # the caller's own dict
    with warnings.catch_warnings():
        # A PostgreSQL type SQLAlchemy does not know (an extension's) reflects with a
        # warning per column; it is shown by the server's own name instead (_capture).
        warnings.filterwarnings("ignore", message="Did not recognize type", category=sa.exc.SAWarning)
        shape = _capture(connection)
    if digest is not None:
        with _shapes_lock:
            _shapes[key] = SchemaShape(tables=dict(shape.tables), enums=shape.enums)
            while len(_shapes) > _SHAPES_KEPT:
                _shapes.pop(next(iter(_shapes)))
    return shape


_shapes: dict[tuple[str, str], SchemaShape] = {}
_shapes_lock = threading.Lock()
_SHAPES_KEPT = 32

# SQLite's schema is the text of its CREATE statements.
_SQLITE_DEFINITION = (
    "SELECT group_concat(type || '|' || name || '|' || tbl_name || '|' || coalesce(sql, ''), char(10)) "
    "FROM (SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name)"
)
# PostgreSQL's, for what a shape shows: every column of every relation in the default
# schema in order (type with modifier, NOT NULL, default, identity, generated), every
# constraint and index definition there, and every enum's labels.
_POSTGRES_DEFINITION = """
SELECT md5(coalesce(string_agg(item, E'\n' ORDER BY item), '')) FROM (
    SELECT concat_ws('|', 'c', c.relname, c.relkind, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                     a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated) AS item
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws('|', 'k', c.relname, k.conname, pg_get_constraintdef(k.oid))
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
    WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws('|', 'i', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws('|', 'e', t.typnamespace::regnamespace::text, t.typname, e.enumsortorder, e.enumlabel)
    FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
) AS definition
"""


def _definition_digest(connection: Connection) -> str | None:
    """A digest of the schema's definition, or None where there is none to take (another
    dialect, no default schema)."""
    if connection.dialect.name == "sqlite":
        return connection.exec_driver_sql(_SQLITE_DEFINITION).scalar() or ""
    if connection.dialect.name == "postgresql":
        if connection.exec_driver_sql("SELECT current_schema()").scalar() is None:
            return None
        return connection.exec_driver_sql(_POSTGRES_DEFINITION).scalar()
    return None


def _capture(connection: Connection) -> SchemaShape:
    inspector = sa.inspect(connection)
    names = sorted(name for name in inspector.get_table_names() if name not in _SKIPPED_TABLES)
    if not names:
        return SchemaShape(tables={}, enums=_enums(inspector))
    # The get_multi_* calls reflect all tables in a few queries on PostgreSQL, where
    # table-by-table reflection costs several round trips per table.
    columns = _by_table(inspector.get_multi_columns(filter_names=names))
    keys = _by_table(inspector.get_multi_pk_constraint(filter_names=names))
    indexes = _by_table(inspector.get_multi_indexes(filter_names=names))
    uniques = _by_table(inspector.get_multi_unique_constraints(filter_names=names))
    checks = _by_table(inspector.get_multi_check_constraints(filter_names=names))
    if connection.dialect.name == "sqlite":
        declared = _sqlite_declared_types(connection, names)
        # SQLAlchemy's SQLite reflection loses ON DELETE of a column-level REFERENCES
        # clause; the engine's own pragma does not.
        foreign_keys = {name: _sqlite_foreign_keys(connection, name) for name in names}
    else:
        declared = {
            (name, column): rendered.upper()
            for name in names
            if any(isinstance(c["type"], sa.types.NullType) for c in columns.get(name, []))
            for column, (rendered, _category, _base) in postgres_column_types(connection, name).items()
        }
        foreign_keys = _by_table(inspector.get_multi_foreign_keys(filter_names=names))
    tables = {}
    for name in names:
        tables[name] = TableShape(
            name=name,
            columns=tuple(
                ColumnShape(
                    name=column["name"],
                    type=_render_type(column["type"], connection.dialect, declared.get((name, column["name"]))),
                    nullable=bool(column["nullable"]),
                    default=None if column.get("default") is None else str(column["default"]),
                )
                for column in columns.get(name, [])
            ),
            primary_key=tuple((keys.get(name) or {}).get("constrained_columns") or ()),
            indexes=_render_indexes(indexes.get(name, []), uniques.get(name, [])),
            foreign_keys=tuple(sorted(
                (
                    ForeignKeyShape(
                        columns=tuple(fk["constrained_columns"]),
                        referred_table=fk["referred_table"],
                        referred_columns=tuple(fk["referred_columns"]),
                        ondelete=_upper_or_none((fk.get("options") or {}).get("ondelete")),
                    )
                    for fk in foreign_keys.get(name, [])
                ),
                key=ForeignKeyShape.render,
            )),
            checks=tuple(sorted(
                f"{check['name']}: {check['sqltext']}" if check.get("name") else str(check["sqltext"])
                for check in checks.get(name, [])
            )),
        )
    return SchemaShape(tables=tables, enums=_enums(inspector))


def _by_table(reflected: dict) -> dict:
    return {table: value for (_schema, table), value in reflected.items()}


def _sqlite_declared_types(connection: Connection, names: list[str]) -> dict[tuple[str, str], str]:
    """SQLite's declared type text, for the types SQLAlchemy does not know."""
    declared = {}
    for table in names:
        for row in connection.exec_driver_sql(f"PRAGMA table_info({quote(table)})"):
            declared[(table, row[1])] = row[2]
    return declared


def _sqlite_foreign_keys(connection: Connection, table: str) -> list[dict]:
    grouped: dict[int, dict] = {}
    for key_id, _seq, parent, column, referred, _on_update, on_delete, _match in connection.exec_driver_sql(
        f"PRAGMA foreign_key_list({quote(table)})"
    ):
        entry = grouped.setdefault(key_id, {
            "constrained_columns": [], "referred_table": parent, "referred_columns": [],
            "options": {"ondelete": None if on_delete == "NO ACTION" else on_delete},
        })
        entry["constrained_columns"].append(column)
        entry["referred_columns"].append(referred)
    for entry in grouped.values():
        if None in entry["referred_columns"]:
            # "REFERENCES parent" without columns names the parent's primary key.
            primary = [row[1] for row in sorted(
                connection.exec_driver_sql(f"PRAGMA table_info({quote(entry['referred_table'])})"), key=lambda r: r[5]
            ) if row[5]]
            entry["referred_columns"] = primary
    return [grouped[key_id] for key_id in sorted(grouped)]


def _render_type(kind: sa.types.TypeEngine, dialect, declared: str | None) -> str:
    """The reflected type compiled for the dialect; `declared` is the database's own
    name for it (SQLite: every column; PostgreSQL: types SQLAlchemy does not know)."""
    if declared is not None and dialect.name == "sqlite":
        # SQLite accepts any type name and SQLAlchemy maps names it does not know to
        # their affinity (FANCYTYPE reflects as NUMERIC): show those as declared, so a
        # change between two unknown names is still a type change.
        base = declared.split("(")[0].strip().upper()
        if base and base not in dialect.ischema_names:
            return " ".join(declared.upper().split())
    if isinstance(kind, sa.types.NullType):
        return (declared or "").upper() or "NULL"
    try:
        return kind.compile(dialect=dialect)
    except sa.exc.CompileError:
        return declared.upper() if declared else str(kind)


def _render_indexes(indexes: list[dict], uniques: list[dict]) -> tuple[str, ...]:
    rendered = set()
    for index in indexes:
        if index.get("duplicates_constraint"):
            continue  # PostgreSQL's index behind a unique constraint: rendered from the constraint
        expressions = index.get("expressions") or []
        parts = [
            column if column is not None else (expressions[position] if position < len(expressions) else "?")
            for position, column in enumerate(index["column_names"])
        ]
        rendered.add(f"{index['name']}({', '.join(parts)})" + (" unique" if index.get("unique") else ""))
    for unique in uniques:
        rendered.add(f"{unique.get('name') or ''}({', '.join(unique['column_names'])}) unique")
    return tuple(sorted(rendered))


def _upper_or_none(value: str | None) -> str | None:
    return value.upper() if value else None


def _enums(inspector) -> tuple[str, ...]:
    if inspector.dialect.name != "postgresql":
        return ()
    return tuple(sorted(
        f"{enum['name']}({', '.join(repr(label) for label in enum['labels'])})"
        for enum in inspector.get_enums()
    ))


# ---------------------------------------------------------------- schema diff


@dataclass(frozen=True)
class SchemaChange:
    kind: str  # one of SCHEMA_CHANGE_KINDS
    table: str | None
    column: str | None
    before: str | None
    after: str | None


SCHEMA_CHANGE_KINDS = (
    "table_added", "table_dropped", "column_added", "column_dropped", "type_changed",
    "nullable_changed", "default_changed", "primary_key_changed", "index_added", "index_dropped",
    "foreign_key_added", "foreign_key_dropped", "check_added", "check_dropped", "enum_added",
    "enum_dropped",
)


def schema_changes(before: SchemaShape, after: SchemaShape) -> list[SchemaChange]:
    """What differs, in a deterministic order: tables by name; within a table dropped
    columns then changed ones (in the before table's order), added columns (in the after
    table's order), the primary key, indexes, foreign keys and checks (each dropped
    before added, sorted); enums last. A renamed table or column shows as dropped plus
    added: reflection cannot tell a rename from a replacement."""
    changes: list[SchemaChange] = []
    for name in sorted(set(before.tables) | set(after.tables)):
        old, new = before.tables.get(name), after.tables.get(name)
        if new is None:
            changes.append(SchemaChange("table_dropped", name, None, _columns_text(old), None))
        elif old is None:
            changes.append(SchemaChange("table_added", name, None, None, _columns_text(new)))
        else:
            changes.extend(_table_changes(old, new))
    changes.extend(_set_changes("enum", None, before.enums, after.enums))
    return changes


def _columns_text(table: TableShape) -> str:
    return ", ".join(f"{column.name} {column.type}" for column in table.columns)


def _table_changes(old: TableShape, new: TableShape) -> list[SchemaChange]:
    table = old.name
    changes = []
    for column in old.columns:
        if new.column(column.name) is None:
            changes.append(SchemaChange("column_dropped", table, column.name, column.type, None))
    for column in old.columns:
        other = new.column(column.name)
        if other is None:
            continue
        if column.type != other.type:
            changes.append(SchemaChange("type_changed", table, column.name, column.type, other.type))
        if column.nullable != other.nullable:
            changes.append(SchemaChange(
                "nullable_changed", table, column.name, _nullability(column.nullable), _nullability(other.nullable)
            ))
        if column.default != other.default:
            changes.append(SchemaChange("default_changed", table, column.name, column.default, other.default))
    for column in new.columns:
        if old.column(column.name) is None:
            changes.append(SchemaChange("column_added", table, column.name, None, column.type))
    if old.primary_key != new.primary_key:
        changes.append(SchemaChange(
            "primary_key_changed", table, None, ", ".join(old.primary_key) or None, ", ".join(new.primary_key) or None
        ))
    changes.extend(_set_changes("index", table, old.indexes, new.indexes))
    changes.extend(_set_changes(
        "foreign_key", table,
        tuple(fk.render() for fk in old.foreign_keys), tuple(fk.render() for fk in new.foreign_keys),
    ))
    changes.extend(_set_changes("check", table, old.checks, new.checks))
    return changes


def _nullability(nullable: bool) -> str:
    return "NULL" if nullable else "NOT NULL"


def _set_changes(what: str, table: str | None, old: Iterable[str], new: Iterable[str]) -> list[SchemaChange]:
    old_set, new_set = set(old), set(new)
    return [SchemaChange(f"{what}_dropped", table, None, item, None) for item in sorted(old_set - new_set)] + [
        SchemaChange(f"{what}_added", table, None, None, item) for item in sorted(new_set - old_set)
    ]


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class ColumnStatistics:
    column: str
    rows: int
    nulls: int
    minimum: str | None
    maximum: str | None
    total: str | None  # the sum, for numeric columns
    storage_classes: dict[str, int]  # SQLite typeof() counts (only those present); {} on PostgreSQL


# PostgreSQL base types whose values sum, and type categories whose values have MIN and
# MAX. The numeric category also holds oid and the reg* types, which have neither: only
# the summable ones of it are ordered here.
_PG_SUMMABLE = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8", "money"})
_PG_ORDERED_CATEGORIES = frozenset({"N", "S", "D", "T", "E"})


def table_statistics(connection: Connection, table: str, columns: Iterable[str] | None = None) -> dict[str, ColumnStatistics]:
    """Per-column figures of `table` (of `columns` only, when given: each column costs
    about as much as the scan), from one SELECT of aggregates (one scan).

    SQLite: MIN and MAX over every column (SQLite orders mixed storage classes too), the
    sum of columns with numeric affinity, and the storage-class counts that show a
    number turned into text. PostgreSQL: MIN and MAX where the type is ordered
    (bool_and and bool_or for booleans), sums of numeric types.
    """
    wanted = None if columns is None else set(columns)
    if connection.dialect.name == "sqlite":
        return _sqlite_statistics(connection, table, wanted)
    return _postgres_statistics(connection, table, wanted)


def _sqlite_statistics(connection: Connection, table: str, wanted: set[str] | None) -> dict[str, ColumnStatistics]:
    columns = [(row[1], row[2]) for row in connection.exec_driver_sql(f"PRAGMA table_info({quote(table)})")
               if wanted is None or row[1] in wanted]
    summed = [name for name, declared in columns if sqlite_affinity(declared) in ("INTEGER", "REAL", "NUMERIC")]

    def select(sum_function: str) -> str:
        parts = ["COUNT(*)"]
        for name, _declared in columns:
            column = quote(name)
            parts += [f"COUNT({column})", f"MIN({column})", f"MAX({column})"]
            parts.append(f"{sum_function}({column})" if name in summed else "NULL")
            parts += [f"SUM(typeof({column}) = '{kind}')" for kind in SQLITE_STORAGE_CLASSES]
        return f"SELECT {', '.join(parts)} FROM {quote(table)}"

    try:
        row = connection.exec_driver_sql(select("SUM")).one()
    except sa.exc.OperationalError as error:
        if "integer overflow" not in str(error.orig):
            raise
        # SUM refuses to overflow 64 bits; TOTAL sums in floating point and never does.
        row = connection.exec_driver_sql(select("TOTAL")).one()
    rows = int(row[0])
    statistics = {}
    width = 4 + len(SQLITE_STORAGE_CLASSES)
    for index, (name, _declared) in enumerate(columns):
        count, minimum, maximum, total, *classes = row[1 + index * width: 1 + (index + 1) * width]
        statistics[name] = ColumnStatistics(
            column=name,
            rows=rows,
            nulls=rows - int(count),
            minimum=render_value(minimum),
            maximum=render_value(maximum),
            total=render_value(total) if name in summed else None,
            storage_classes={kind: int(n) for kind, n in zip(SQLITE_STORAGE_CLASSES, classes) if n},
        )
    return statistics


def _postgres_statistics(connection: Connection, table: str, wanted: set[str] | None) -> dict[str, ColumnStatistics]:
    types = {name: kind for name, kind in postgres_column_types(connection, table).items() if wanted is None or name in wanted}
    parts = ["COUNT(*)"]
    for name, (_rendered, category, base) in types.items():
        column = quote(name)
        parts.append(f"COUNT({column})")
        if base == "bool":
            parts += [f"bool_and({column})", f"bool_or({column})"]
        elif category in _PG_ORDERED_CATEGORIES and (category != "N" or base in _PG_SUMMABLE):
            parts += [f"MIN({column})", f"MAX({column})"]
        else:
            parts += ["NULL", "NULL"]
        parts.append(f"SUM({column})" if base in _PG_SUMMABLE else "NULL")
    row = connection.execute(sa.text(f"SELECT {', '.join(parts)} FROM {quote(table)}")).one()
    rows = int(row[0])
    statistics = {}
    for index, name in enumerate(types):
        count, minimum, maximum, total = row[1 + index * 4: 5 + index * 4]
        statistics[name] = ColumnStatistics(
            column=name,
            rows=rows,
            nulls=rows - int(count),
            minimum=render_value(minimum),
            maximum=render_value(maximum),
            total=render_value(total),
            storage_classes={},
        )
    return statistics


def postgres_column_types(connection: Connection, table: str) -> dict[str, tuple[str, str, str]]:
    """Column -> (type as PostgreSQL formats it, type category, base type name), in table
    order. A domain reports its base type's category and name."""
    rows = connection.execute(sa.text(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory, b.typname "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
        "WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    ), {"table": quote(table)}).all()
    return {name: (rendered, category, base) for name, rendered, category, base in rows}


def sqlite_affinity(declared: str | None) -> str:
    """SQLite's column affinity for a declared type (the rules of section 3.1 of its
    datatype documentation, applied in their order)."""
    text = (declared or "").upper()
    if "INT" in text:
        return "INTEGER"
    if "CHAR" in text or "CLOB" in text or "TEXT" in text:
        return "TEXT"
    if "BLOB" in text or not text:
        return "BLOB"
    if "REAL" in text or "FLOA" in text or "DOUB" in text:
        return "REAL"
    return "NUMERIC"


# ---------------------------------------------------------------- cascades


def tables_reaching(schema: SchemaShape, tables: set[str]) -> set[str]:
    """`tables` plus every table whose rows a change to them can delete or alter through
    a foreign key: the tables referencing them, transitively (a deleted player deletes
    their results, whose deletion deletes the personal bests naming them).

    Every referencing table counts, whatever its ON DELETE action: the shapes do not
    record ON UPDATE actions, and a SQLite table rebuild that drops a parent deletes or
    fails on child rows in ways the action alone does not predict. Parents are not
    included: a change to a child never deletes its parent's rows.
    """
    children: dict[str, set[str]] = {}
    for table in schema.tables.values():
        for foreign_key in table.foreign_keys:
            children.setdefault(foreign_key.referred_table, set()).add(table.name)
    reached = set(tables)
    pending = list(tables)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in reached:
                reached.add(child)
                pending.append(child)
    return reached


# ---------------------------------------------------------------- small helpers


def render_value(value) -> str | None:
    """A value as reports show it: numbers plainly, bytes in hex, the rest as str()."""
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "x'" + bytes(value).hex() + "'"
    return str(value)
