"""The static pass of a dry run: read each pending revision's operations without data.

Each revision's `upgrade()` and `downgrade()` run through Alembic's offline (`--sql`)
mode for SQLite and PostgreSQL while every operation is recorded, batch operations
included. The rules whose phase is "static" (integrity.migrate.rules) judge those
operations against the schema as it stands at the snapshot's revision, which is built by
running the history on an in-memory SQLite database and kept up to date revision by
revision. Where offline mode cannot run a revision (it reads the database through
`op.get_bind()`, or a SQLite batch needs reflection) the revision is marked as needing
the data pass instead of failing. Declared intent is not applied here: the orchestrator
does that for static and data findings alike.
"""

from __future__ import annotations

import linecache
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from integrity.db.sql import unquote
from integrity.migrate.findings import Finding
from integrity.migrate.project import MigrationProject, RevisionInfo
from integrity.migrate.rules import RULES

DIALECTS = ("postgresql", "sqlite")  # postgresql first: its offline mode renders batches too


@dataclass(frozen=True)
class RecordedOperation:
    kind: str  # the Alembic operation class name, e.g. "DropColumnOp", "ExecuteSQLOp"
    table: str | None
    column: str | None
    detail: str  # one line for humans


@dataclass(frozen=True)
class RevisionLint:
    revision: str
    operations: tuple[RecordedOperation, ...]
    downgrade_operations: tuple[RecordedOperation, ...]
    sql: dict[str, tuple[str, ...]]  # dialect -> the upgrade's offline SQL statements
    needs_data_pass: dict[str, str]  # dialect -> why offline mode could not render it
    findings: tuple[Finding, ...]  # phase "static", sorted by Finding.key()
    touched_tables: frozenset[str] | None  # None when unknown (raw SQL not understood, or rendering stopped early)
    downgrade_sql: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dialect -> the downgrade's offline SQL (squawk reads it)
    # "upgrade"/"downgrade" -> the tables a SQLite batch rebuilds (copy, drop, rename), in
    # order: what a cascade the data pass measures (rows lost, a lossy round trip) came from.
    rebuilds: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LintReport:
    revisions: tuple[RevisionLint, ...]
    seconds: float
    # Why the schema at the start revision could not be built (the type rules then only
    # see the existing_type a revision states); None when it was built.
    start_schema_error: str | None = None

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(finding for revision in self.revisions for finding in revision.findings)


def lint_revisions(project: MigrationProject, revisions: list[RevisionInfo], *, start_revision: str | None) -> LintReport:
    """Record and judge the operations of `revisions` (in upgrade order) from `start_revision`."""
    started = time.perf_counter()
    with _recording() as log:
        schema, schema_error = _start_schema(project, start_revision, log)
        lints = []
        for revision in revisions:
            lint, schema = _lint_revision(revision, schema, log)
            lints.append(lint)
    lints = _with_squawk(lints)
    return LintReport(tuple(lints), time.perf_counter() - started, schema_error)


def _statement_target(statement: str) -> tuple[str | None, str | None]:
    """The table (and column) a PostgreSQL statement names, for squawk's findings."""
    first = next((s for s in _parse_sql(statement, "postgresql") if s.table), None)
    return (first.table, first.column) if first else (None, None)


def _with_squawk(lints: list[RevisionLint]) -> list[RevisionLint]:
    """squawk's violations on each revision's PostgreSQL SQL, folded into its findings
    (integrity.migrate.squawk: one process for all revisions; a warning when missing)."""
    from dataclasses import replace

    from integrity.migrate.squawk import squawk_findings

    run = squawk_findings(lints, our_findings=[f for lint in lints for f in lint.findings], target=_statement_target)
    return [
        replace(lint, findings=tuple(sorted((*lint.findings, *run.findings[lint.revision]), key=Finding.key)))
        if lint.revision in run.findings else lint
        for lint in lints
    ]


# ---------------------------------------------------------------- recording


@dataclass(frozen=True)
class _Rebuild:
    """A batch_alter_table that recreates its table (copy, drop, rename) on this dialect."""

    table: str


@dataclass(frozen=True)
class _Autocommit:
    """Entering (True) or leaving (False) MigrationContext.autocommit_block(): SQLite obeys
    `PRAGMA foreign_keys` only outside a transaction, that is only inside such a block."""

    inside: bool


_MARKERS = (_Rebuild, _Autocommit)


@dataclass
class _Log:
    events: list = field(default_factory=list)  # the operations (and _Rebuild markers) of the run being recorded


@contextmanager
def _recording() -> Iterator[_Log]:
    """Record every operation Alembic invokes while the block runs.

    `invoke` is patched on AbstractOperations, the class both Operations and
    BatchOperations inherit it from, so the operations inside a batch are seen too (they
    are only queued until the batch flushes). The patch is process-wide: a lint must not
    run beside another Alembic run in a second thread of the same process.
    """
    from alembic.operations.base import AbstractOperations
    from alembic.operations.batch import BatchOperationsImpl
    from alembic.runtime.migration import MigrationContext

    log = _Log()
    invoke, flush = AbstractOperations.invoke, BatchOperationsImpl.flush
    autocommit_block = MigrationContext.autocommit_block

    @contextmanager
    def recording_autocommit_block(context):
        log.events.append(_Autocommit(True))
        try:
            with autocommit_block(context):
                yield
        finally:
            log.events.append(_Autocommit(False))

    def recording_invoke(operations, operation):
        log.events.append(operation)
        return invoke(operations, operation)

    def recording_flush(batch):
        # Noted before flushing: SQLite's offline mode raises inside flush when it would
        # have to reflect the table, and the rebuild is what the cascade rule needs.
        if batch.impl.dialect.name == "sqlite" and batch._should_recreate():
            log.events.append(_Rebuild(batch.table_name))
        return flush(batch)

    AbstractOperations.invoke, BatchOperationsImpl.flush = recording_invoke, recording_flush
    MigrationContext.autocommit_block = recording_autocommit_block
    try:
        yield log
    finally:
        AbstractOperations.invoke, BatchOperationsImpl.flush = invoke, flush
        MigrationContext.autocommit_block = autocommit_block


class _StatementBuffer:
    """Alembic's offline output buffer, kept as one entry per statement it writes."""

    def __init__(self):
        self.statements: list[str] = []

    def write(self, text: str) -> None:
        if text.strip():
            self.statements.append(text.strip())

    def flush(self) -> None:
        pass


@dataclass
class _Run:
    """One direction of one revision, rendered offline for one dialect."""

    events: list
    statements: list[str]
    error: str | None = None  # one line, when the function raised
    explicit_raise: bool = False  # the revision's own `raise` statement, not an offline limitation

    @property
    def operations(self) -> list:
        return [event for event in self.events if not isinstance(event, _MARKERS)]


def _render(revision: RevisionInfo, direction: str, dialect: str, log: _Log) -> _Run:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    buffer = _StatementBuffer()
    context = MigrationContext.configure(
        dialect_name=dialect,
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True, "target_metadata": None},
    )
    result = _Run(events=[], statements=buffer.statements)
    log.events = result.events
    function = getattr(revision.module, direction, None)
    if not callable(function):
        result.error, result.explicit_raise = f"the revision has no {direction}() function", True
        return result
    # Operations.context() is a generator that skips removing its `op` proxy when the
    # revision raises; install and remove it here so a failure leaves nothing behind.
    operations = Operations(context)
    operations._install_proxy()
    try:
        function()
    except Exception as exc:  # whatever the revision raises is a finding, never a crash
        result.error = _offline_reason(exc, result.events)
        result.explicit_raise = _raised_by_revision(exc, revision.path)
    finally:
        operations._remove_proxy()
    return result


def _offline_reason(exc: BaseException, events: list) -> str:
    """Why offline mode stopped, in the words of the rule catalogue where it is a known limit."""
    if events and isinstance(events[-1], _Rebuild) and type(exc).__name__ == "CommandError":
        return f"the batch rebuild of {events[-1].table} needs the live table (offline mode cannot reflect it)"
    if type(exc).__name__ == "NoInspectionAvailable" or (isinstance(exc, AttributeError) and "'NoneType'" in str(exc)):
        return f"it reads the database through op.get_bind() ({_one_line(exc)})"
    return _one_line(exc)


def _raised_by_revision(exc: BaseException, path: Path) -> bool:
    """Whether a `raise` statement in the revision file itself raised it (a downgrade
    that refuses), as opposed to offline mode lacking a database."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or Path(tb.tb_frame.f_code.co_filename).resolve() != path.resolve():
        return False
    return linecache.getline(str(path), tb.tb_lineno).strip().startswith("raise")


def _one_line(exc: BaseException) -> str:
    # Without object addresses ("at 0x7f..."), so reports stay the same from run to run.
    text = " ".join(re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc)).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- the schema at the start


@dataclass(frozen=True)
class _Column:
    type: Any  # a SQLAlchemy TypeEngine, or None when unknown
    nullable: bool | None


@dataclass(frozen=True)
class _ForeignKey:
    name: str | None
    referred_table: str
    ondelete: str | None


@dataclass
class _Schema:
    """What the rules need to know of the schema: columns with types and nullability,
    foreign keys with their ON DELETE, and what the pending revisions created (a table
    created in this upgrade holds no rows yet)."""

    tables: dict[str, dict[str, _Column]] = field(default_factory=dict)
    foreign_keys: dict[str, tuple[_ForeignKey, ...]] = field(default_factory=dict)
    fresh_tables: set[str] = field(default_factory=set)
    fresh_columns: set[tuple[str, str]] = field(default_factory=set)

    def copy(self) -> _Schema:
        return _Schema(
            {name: dict(columns) for name, columns in self.tables.items()},
            dict(self.foreign_keys), set(self.fresh_tables), set(self.fresh_columns),
        )

    def existing(self, table: str | None) -> bool:
        """Whether the table may hold rows: it was not created by the pending revisions."""
        return table is not None and table not in self.fresh_tables

    def column(self, table: str, column: str) -> _Column | None:
        return self.tables.get(table, {}).get(column)


def _start_schema(project: MigrationProject, start_revision: str | None, log: _Log) -> tuple[_Schema, str | None]:
    """The schema at `start_revision`: the history run for real on an in-memory SQLite
    database and reflected, with each column's type taken from the operations that made
    it where they say more (SQLite keeps no time zone flag and no enum)."""
    if start_revision is None:
        return _Schema(), None
    import sqlalchemy as sa
    from alembic import command

    from integrity.db.connect import in_memory_sqlite

    log.events = replayed = []
    try:
        with in_memory_sqlite() as connection:
            command.upgrade(project.config(connection), start_revision)
            inspector = sa.inspect(connection)
            reflected = {
                table: (inspector.get_columns(table), inspector.get_foreign_keys(table))
                for table in inspector.get_table_names() if table != "alembic_version"
            }
    except Exception as exc:  # a history that cannot run on SQLite, an env.py that ignores the connection
        return _Schema(), f"the schema at {start_revision} could not be built on SQLite: {_one_line(exc)}"
    from_ops = _Schema()
    for operation in replayed:
        if not isinstance(operation, _MARKERS):
            _apply(from_ops, operation)
    schema = _Schema()
    for table, (columns, foreign_keys) in reflected.items():
        schema.tables[table] = {
            column["name"]: _Column(
                getattr(from_ops.column(table, column["name"]), "type", None) or column["type"], column["nullable"]
            )
            for column in columns
        }
        schema.foreign_keys[table] = tuple(
            _ForeignKey(fk.get("name"), fk["referred_table"], (fk.get("options") or {}).get("ondelete"))
            for fk in foreign_keys
        )
    return schema, None


def _apply(schema: _Schema, operation) -> None:
    """Keep the schema up to date with one operation (the ones that change what the
    rules look at; others leave it as it is)."""
    from alembic.operations import ops

    if isinstance(operation, ops.CreateTableOp):
        table = operation.to_table()
        schema.tables[table.name] = {c.name: _Column(c.type, c.nullable) for c in table.columns}
        schema.foreign_keys[table.name] = tuple(
            _ForeignKey(_name(fk.name), _referred(fk.elements[0]), fk.ondelete) for fk in table.foreign_key_constraints
        )
        schema.fresh_tables.add(table.name)
    elif isinstance(operation, ops.DropTableOp):
        schema.tables.pop(operation.table_name, None)
        schema.foreign_keys.pop(operation.table_name, None)
        schema.fresh_tables.discard(operation.table_name)
    elif isinstance(operation, ops.RenameTableOp):
        old, new = operation.table_name, operation.new_table_name
        schema.tables[new] = schema.tables.pop(old, {})
        schema.foreign_keys[new] = schema.foreign_keys.pop(old, ())
        for table, fks in schema.foreign_keys.items():
            schema.foreign_keys[table] = tuple(
                _ForeignKey(fk.name, new, fk.ondelete) if fk.referred_table == old else fk for fk in fks
            )
        if old in schema.fresh_tables:
            schema.fresh_tables.discard(old)
            schema.fresh_tables.add(new)
    elif isinstance(operation, ops.AddColumnOp):
        column = operation.column
        schema.tables.setdefault(operation.table_name, {})[column.name] = _Column(column.type, column.nullable)
        schema.fresh_columns.add((operation.table_name, column.name))
        schema.foreign_keys[operation.table_name] = schema.foreign_keys.get(operation.table_name, ()) + tuple(
            _ForeignKey(_name(fk.constraint.name if fk.constraint is not None else None), _referred(fk), fk.ondelete)
            for fk in column.foreign_keys
        )
    elif isinstance(operation, ops.DropColumnOp):
        schema.tables.get(operation.table_name, {}).pop(operation.column_name, None)
        schema.fresh_columns.discard((operation.table_name, operation.column_name))
    elif isinstance(operation, ops.AlterColumnOp):
        columns = schema.tables.setdefault(operation.table_name, {})
        current = columns.pop(operation.column_name, None) or _Column(operation.existing_type, operation.existing_nullable)
        name = operation.modify_name or operation.column_name
        columns[name] = _Column(
            operation.modify_type if operation.modify_type is not None else current.type,
            operation.modify_nullable if operation.modify_nullable is not None else current.nullable,
        )
        if (operation.table_name, operation.column_name) in schema.fresh_columns and name != operation.column_name:
            schema.fresh_columns.discard((operation.table_name, operation.column_name))
            schema.fresh_columns.add((operation.table_name, name))
    elif isinstance(operation, ops.CreateForeignKeyOp):
        schema.foreign_keys[operation.source_table] = schema.foreign_keys.get(operation.source_table, ()) + (
            _ForeignKey(_name(operation.constraint_name), operation.referent_table, operation.kw.get("ondelete")),
        )
    elif isinstance(operation, ops.DropConstraintOp) and operation.constraint_type in ("foreignkey", None):
        name = _name(operation.constraint_name)
        schema.foreign_keys[operation.table_name] = tuple(
            fk for fk in schema.foreign_keys.get(operation.table_name, ()) if fk.name != name
        )


def _name(name) -> str | None:
    return None if name is None else str(name)


def _referred(foreign_key) -> str:
    # "table.column" or "schema.table.column": the table is the part before the column.
    return foreign_key.target_fullname.split(".")[-2]


# ---------------------------------------------------------------- one revision


def _lint_revision(revision: RevisionInfo, schema: _Schema, log: _Log) -> tuple[RevisionLint, _Schema]:
    runs = {
        dialect: (_render(revision, "upgrade", dialect, log), _render(revision, "downgrade", dialect, log))
        for dialect in DIALECTS
    }
    findings: set[Finding] = set()
    needs: dict[str, str] = {}
    after: dict[str, _Schema] = {}
    touched: set[str] | None = set()
    for dialect, (up, down) in runs.items():
        reasons = []
        if up.error:
            reasons.append(f"upgrade: {up.error}")
        if down.error and not down.explicit_raise:
            reasons.append(f"downgrade: {down.error}")
        if reasons:
            needs[dialect] = "; ".join(reasons)
            findings.add(_finding("needs-data-pass", revision, f"{dialect}: offline mode cannot render the {needs[dialect]}",
                                  engine=dialect))
        judge = _Judge(revision, dialect, schema.copy())
        judge.judge(up.events)
        judge.downgrade(up, down)
        findings |= judge.findings
        # The downgrade, with the same rules, against the schema the upgrade left: what the
        # upgrade created (fresh) it may drop; a column it changed it may change back.
        back = _Judge(revision, dialect, judge.schema.copy(), direction="downgrade", before_upgrade=schema)
        back.judge(down.events)
        findings |= back.findings
        after[dialect] = judge.schema
        if up.error or judge.unknown_tables:
            touched = None
        elif touched is not None:
            touched |= judge.touched
    upgrade_dialect = _fullest({dialect: up for dialect, (up, _down) in runs.items()})
    downgrade_dialect = _fullest({dialect: down for dialect, (_up, down) in runs.items()})
    lint = RevisionLint(
        revision=revision.id,
        operations=tuple(_recorded(op) for op in runs[upgrade_dialect][0].operations),
        downgrade_operations=tuple(_recorded(op) for op in runs[downgrade_dialect][1].operations),
        sql={dialect: tuple(up.statements) for dialect, (up, _down) in runs.items()},
        downgrade_sql={dialect: tuple(down.statements) for dialect, (_up, down) in runs.items()},
        needs_data_pass=needs,
        findings=tuple(sorted(findings, key=Finding.key)),
        touched_tables=None if touched is None else frozenset(touched),
        rebuilds={direction: tuple(event.table for event in run.events if isinstance(event, _Rebuild))
                  for direction, run in zip(("upgrade", "downgrade"), runs["sqlite"])},
    )
    return lint, after[upgrade_dialect]


def _fullest(runs: dict[str, _Run]) -> str:
    """The dialect whose run went furthest: one that completed (PostgreSQL first, as
    SQLite stops at batches), else the one that recorded the most."""
    for dialect in DIALECTS:
        if runs[dialect].error is None:
            return dialect
    return max(DIALECTS, key=lambda dialect: (len(runs[dialect].events), dialect == DIALECTS[0]))


def _finding(rule_id: str, revision: RevisionInfo, message: str, table: str | None = None, column: str | None = None,
             engine: str | None = None) -> Finding:
    return Finding(
        rule=rule_id, severity=RULES[rule_id].severity, revision=revision.id, message=message,
        table=table, column=column, phase="static", engine=engine,
    )


class _Judge:
    """The static rules, applied to one revision's operations on one dialect, in order,
    against the schema as each operation finds it. Operations and the raw SQL of
    op.execute() reach the same rule methods."""

    def __init__(self, revision: RevisionInfo, dialect: str, schema: _Schema, *, direction: str = "upgrade",
                 before_upgrade: _Schema | None = None):
        self.revision = revision
        self.dialect = dialect
        self.schema = schema
        self.direction = direction  # "downgrade": every message says so
        self.before_upgrade = before_upgrade  # a downgrade's: the schema the upgrade started from
        self.findings: set[Finding] = set()
        self.touched: set[str] = set()
        self.unknown_tables = False  # raw SQL this pass could not read
        self.dropped: dict[str, list[str]] = {}  # table -> columns it held before and lost
        self.added: dict[str, list[str]] = {}
        self.backfilled: set[str] = set()  # tables an UPDATE of this revision wrote
        self.foreign_keys_off = False  # a PRAGMA foreign_keys=OFF ran before, outside the transaction (SQLite)
        self.foreign_keys_ignored = False  # ... one ran inside the transaction, where SQLite ignores it
        self.autocommit = False  # inside op.get_context().autocommit_block()

    def add(self, rule_id: str, message: str, table: str | None = None, column: str | None = None) -> None:
        if self.direction == "downgrade":
            message = f"downgrade: {message}"
        self.findings.add(_finding(rule_id, self.revision, message, table, column))

    def holds_data(self, table: str | None, column: str | None = None) -> bool:
        """Whether the table (and column) existed before this upgrade, so may hold rows."""
        return self.schema.existing(table) and (column is None or (table, column) not in self.schema.fresh_columns)

    # ------------------------------------------------------------ one direction's operations

    def judge(self, events: list) -> None:
        for event in events:
            if isinstance(event, _Rebuild):
                self._rebuild(event.table)
                continue
            if isinstance(event, _Autocommit):
                self.autocommit = event.inside
                continue
            self.touched.update(table for table in _tables_of(event) if table)
            self._operation(event)
            _apply(self.schema, event)
        for table, dropped in self.dropped.items():
            added = self.added.get(table)
            for column in dropped if added else ():
                self.add("drop-add-rename",
                         f"{table}.{column}: dropped while {', '.join(added)} is added in the same revision: "
                         "probably a rename that loses every value", table, column)

    def _operation(self, o) -> None:
        from alembic.operations import ops

        if isinstance(o, ops.DropTableOp):
            self._drop_table(o.table_name)
        elif isinstance(o, ops.RenameTableOp):
            self._rename_table(o.table_name, o.new_table_name)
        elif isinstance(o, ops.AddColumnOp):
            self._add_column(o.table_name, o.column.name, not_null=not o.column.nullable,
                             has_default=o.column.server_default is not None, rewrite=_rewriting_default(o.column))
        elif isinstance(o, ops.DropColumnOp):
            self._drop_column(o.table_name, o.column_name)
        elif isinstance(o, ops.AlterColumnOp):
            self._alter_column(o)
        elif isinstance(o, ops.CreateIndexOp):
            self._create_index(o.table_name, o.index_name, bool(o.kw.get("postgresql_concurrently")))
        elif isinstance(o, ops.CreateForeignKeyOp):
            self._add_constraint(o.source_table, "foreign key", o.constraint_name, bool(o.kw.get("postgresql_not_valid")))
        elif isinstance(o, ops.CreateCheckConstraintOp):
            self._add_constraint(o.table_name, "check constraint", o.constraint_name, bool(o.kw.get("postgresql_not_valid")))
        elif isinstance(o, ops.ExecuteSQLOp):
            for statement in _sql_statements(o.sqltext, self.dialect):
                self._statement(statement)

    def _alter_column(self, o) -> None:
        table, column = o.table_name, o.column_name
        known = self.schema.column(table, column)
        if o.modify_name and o.modify_name != column:
            self._rename_column(table, column, o.modify_name)
        if o.modify_type is not None:
            self._type_change(table, column, o.existing_type or (known.type if known else None), o.modify_type)
        if o.modify_nullable is False and o.existing_nullable is not False and (known is None or known.nullable is not False):
            self._set_not_null(table, column)

    def _statement(self, s: _Sql) -> None:
        if s.kind == "unknown":
            self.unknown_tables = True
            return
        self.touched.update(name for name in (s.table, s.name if s.kind == "rename-table" else None) if name)
        if s.kind in ("update", "delete", "truncate"):
            self._data_change(s.kind, s.table, s.where)
        elif s.kind == "create-table":
            self.schema.fresh_tables.add(s.table)
        elif s.kind == "drop-table":
            self._drop_table(s.table)
        elif s.kind == "drop-column":
            self._drop_column(s.table, s.column)
        elif s.kind == "rename-table":
            self._rename_table(s.table, s.name)
        elif s.kind == "rename-column":
            self._rename_column(s.table, s.column, s.name)
        elif s.kind == "add-column":
            volatile = s.default is not None and s.default.lower() in _VOLATILE_FUNCTIONS
            self._add_column(s.table, s.column, not_null=s.not_null, has_default=s.default is not None,
                             rewrite=f"the volatile default {s.default}()" if volatile else None)
            self.schema.fresh_columns.add((s.table, s.column))
        elif s.kind == "alter-type":
            self._type_change(s.table, s.column, None, None)
        elif s.kind == "set-not-null":
            self._set_not_null(s.table, s.column)
        elif s.kind == "add-constraint":
            self._add_constraint(s.table, s.constraint, s.name, s.not_valid)
        elif s.kind == "create-index":
            self._create_index(s.table, s.name, s.concurrently)
        elif s.kind in ("foreign-keys-off", "foreign-keys-on"):
            if self.autocommit:
                self.foreign_keys_off = s.kind == "foreign-keys-off"
            else:  # Alembic runs the revision in a transaction: SQLite ignores the PRAGMA there
                self.foreign_keys_ignored = s.kind == "foreign-keys-off"

    # ------------------------------------------------------------ the rules

    def _drop_table(self, table: str) -> None:
        if self.holds_data(table):
            self.add("drop-table", f"{table}: table dropped, every row is lost", table)

    def _rename_table(self, table: str, new: str | None) -> None:
        if self.holds_data(table):
            self.add("rename-table", f"{table}: table renamed to {new}; code reading {table} breaks", table)

    def _drop_column(self, table: str, column: str | None) -> None:
        if self.holds_data(table, column):
            self.dropped.setdefault(table, []).append(column)
            self.add("drop-column", f"{table}.{column}: column dropped, its values are lost", table, column)

    def _rename_column(self, table: str, column: str | None, new: str | None) -> None:
        if self.holds_data(table, column):
            self.add("rename-column", f"{table}.{column}: column renamed to {new}; code reading {column} breaks",
                     table, column)

    def _add_column(self, table: str, column: str | None, *, not_null: bool, has_default: bool, rewrite: str | None) -> None:
        if not self.holds_data(table):
            return
        self.added.setdefault(table, []).append(column)
        if not_null and not has_default:
            self.add("not-null-no-default",
                     f"{table}.{column}: added NOT NULL without a server default; fails on a populated table", table, column)
        if self.dialect == "postgresql" and rewrite:
            self.add("pg-table-rewrite",
                     f"{table}.{column}: added with {rewrite}, which rewrites the table under ACCESS EXCLUSIVE", table, column)

    def _type_change(self, table: str, column: str | None, old, new) -> None:
        """`old` and `new` are SQLAlchemy types, None when unknown (raw SQL)."""
        if not self.holds_data(table):
            return
        both = old is not None and new is not None
        change = _value_change(old, new) if both else None
        if change and self._restores_type(table, column, new):
            change = None  # every value stored before the upgrade had that type (the round trip checks the rest)
        if change and self.holds_data(table, column):
            rule_id, why = change
            self.add(rule_id, f"{table}.{column}: {_type_text(old)} → {_type_text(new)} {why}", table, column)
        if self.dialect != "postgresql" or (both and (_kind(old) == _kind(new) or _binary_coercible(old, new))):
            return
        shown = f" {_type_text(old)} → {_type_text(new)}" if both else f" to {_type_text(new)}" if new is not None else ""
        self.add("pg-table-rewrite", f"{table}.{column}: ALTER COLUMN TYPE{shown} rewrites the table under ACCESS EXCLUSIVE",
                 table, column)

    def _restores_type(self, table: str, column: str | None, new) -> bool:
        """Whether a downgrade gives the column back the type it had before the upgrade."""
        if self.before_upgrade is None or column is None:
            return False
        known = self.before_upgrade.column(table, column)
        return known is not None and known.type is not None and _kind(known.type) == _kind(new)

    def _set_not_null(self, table: str, column: str | None) -> None:
        if not self.holds_data(table):
            return
        # A column this upgrade added, or one it backfilled first, is the safe pattern.
        if self.holds_data(table, column) and table not in self.backfilled:
            self.add("not-null-no-default", f"{table}.{column}: set NOT NULL; fails if any row holds NULL", table, column)
        if self.dialect == "postgresql":
            self.add("pg-table-rewrite", f"{table}.{column}: SET NOT NULL scans the whole table under ACCESS EXCLUSIVE",
                     table, column)

    def _create_index(self, table: str, name: str | None, concurrently: bool) -> None:
        if self.dialect == "postgresql" and self.holds_data(table) and not concurrently:
            self.add("pg-index-not-concurrent",
                     f"{table}: index {name or '(unnamed)'} is built without CONCURRENTLY; writes to {table} "
                     "wait for the whole build", table)

    def _add_constraint(self, table: str, what: str, name: str | None, not_valid: bool) -> None:
        if self.dialect != "postgresql" or not self.holds_data(table) or not_valid:
            return
        lock = "SHARE ROW EXCLUSIVE" if what == "foreign key" else "ACCESS EXCLUSIVE"
        self.add("pg-constraint-validated",
                 f"{table}: {what} {name or '(unnamed)'} is validated against every row in one step under {lock}", table)

    def _data_change(self, kind: str, table: str | None, where: bool) -> None:
        if kind == "update":
            self.backfilled.add(table)
        if not where:
            verb, effect = {"update": ("UPDATE", "rewrites"), "delete": ("DELETE", "removes"),
                            "truncate": ("TRUNCATE", "removes")}[kind]
            self.add("unbounded-data-change", f"{table}: {verb} without WHERE {effect} every row", table)

    def _rebuild(self, table: str) -> None:
        self.touched.add(table)
        # With foreign_keys turned off first, outside the transaction, the DROP inside the
        # rebuild cascades nowhere (the data pass sees whether it did).
        if not self.holds_data(table) or self.foreign_keys_off:
            return
        children = sorted(
            child for child, fks in self.schema.foreign_keys.items()
            if child != table and any(fk.referred_table == table and (fk.ondelete or "").upper() == "CASCADE" for fk in fks)
        )
        if children:
            ignored = (" (its PRAGMA foreign_keys=OFF runs inside the transaction, where SQLite ignores it: run it in "
                       "op.get_context().autocommit_block())" if self.foreign_keys_ignored else "")
            self.add("batch-rebuild-cascade",
                     f"{table}: the SQLite batch rebuild drops and recreates the table; with foreign_keys=ON that "
                     f"deletes every row of {', '.join(children)} (ON DELETE CASCADE){ignored}", table)

    # ------------------------------------------------------------ downgrade

    def downgrade(self, up: _Run, down: _Run) -> None:
        if down.error and down.explicit_raise:
            self.add("empty-downgrade", f"the downgrade cannot roll back: {down.error}")
            return
        if not down.error and not down.events and not down.statements:
            if up.events or up.statements:  # a merge revision does nothing both ways, rightly
                self.add("empty-downgrade", "the downgrade does nothing")
            return
        if self.dialect != "postgresql" or down.error:
            return  # a downgrade offline mode could not finish may still drop the type later
        dropped = {name for statement in down.statements for name in _type_names(_DROP_TYPE, statement)}
        for statement in up.statements:
            for name in _type_names(_CREATE_ENUM, statement):
                if name not in dropped:
                    table, column = _enum_user(up.operations, name)
                    self.add("enum-not-dropped",
                             f"enum type {name} is created by the upgrade but the downgrade does not drop it; "
                             "the next upgrade fails with 'type already exists'", table, column)


def _tables_of(operation) -> tuple[str | None, ...]:
    from alembic.operations import ops

    if isinstance(operation, ops.RenameTableOp):
        return (operation.table_name, operation.new_table_name)
    if isinstance(operation, ops.CreateForeignKeyOp):
        return (operation.source_table,)
    if isinstance(operation, ops.BulkInsertOp):
        return (getattr(operation.table, "name", None),)
    if isinstance(operation, ops.ExecuteSQLOp):
        return ()  # its statements name their tables (see _Judge._statement)
    return (getattr(operation, "table_name", None),)


def _enum_user(operations: list, name: str) -> tuple[str | None, str | None]:
    """The table and column of the first created column that uses the enum type `name`."""
    import sqlalchemy as sa
    from alembic.operations import ops

    for operation in operations:
        if isinstance(operation, ops.CreateTableOp):
            columns = [(operation.table_name, c) for c in operation.columns if isinstance(c, sa.Column)]
        elif isinstance(operation, ops.AddColumnOp):
            columns = [(operation.table_name, operation.column)]
        else:
            continue
        for table, column in columns:
            if isinstance(column.type, sa.Enum) and (column.type.name or "").lower() == name:
                return table, column.name
    return None, None


_CREATE_ENUM = re.compile(r"\bCREATE\s+TYPE\s+((?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?)\s+AS\s+ENUM\b", re.I)
_DROP_TYPE = re.compile(r"\bDROP\s+TYPE\s+(?:IF\s+EXISTS\s+)?((?:(?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?\s*,?\s*)+)", re.I)


def _type_names(pattern: re.Pattern, statement: str) -> list[str]:
    names = []
    for match in pattern.finditer(statement):
        for qualified in match.group(1).split(","):
            if qualified.strip():
                names.append(unquote(qualified.strip(), "postgresql"))  # enum types: PostgreSQL only
    return names


# ---------------------------------------------------------------- types


def _kind(type_) -> tuple:
    """What a column type means for stored values, independent of dialect spelling."""
    import sqlalchemy as sa

    type_ = sa.types.to_instance(type_)
    if isinstance(type_, sa.Interval):
        return ("interval",)
    while isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, sa.Boolean):
        return ("boolean",)
    if isinstance(type_, sa.Enum):
        return ("enum", tuple(type_.enums))
    if isinstance(type_, sa.Integer):
        return ("integer", 8 if isinstance(type_, sa.BigInteger) else 2 if isinstance(type_, sa.SmallInteger) else 4)
    if isinstance(type_, sa.Float):
        return ("float",)
    if isinstance(type_, sa.Numeric):
        return ("numeric", type_.precision, type_.scale)
    if isinstance(type_, sa.DateTime):
        return ("datetime", bool(type_.timezone))
    if isinstance(type_, sa.Date):
        return ("date",)
    if isinstance(type_, sa.Time):
        return ("time",)
    if isinstance(type_, sa.String):
        return ("text", type_.length)
    if isinstance(type_, sa.JSON):
        return ("json",)
    if isinstance(type_, sa.LargeBinary):
        return ("binary",)
    if isinstance(type_, sa.Uuid):
        return ("uuid",)
    return ("other", type(type_).__name__)


_NUMBERS = ("integer", "numeric", "float")
_TIMES = ("date", "datetime", "time", "interval")
_INTEGER_DIGITS = {2: 5, 4: 10, 8: 19}  # decimal digits of the largest smallint, integer, bigint


def _value_change(old, new) -> tuple[str, str] | None:
    """(rule id, what happens to the values) when a type change narrows or changes
    meaning; None when every value keeps its meaning."""
    before, after = _kind(old), _kind(new)
    if before == after:
        return None
    o, n = before[0], after[0]
    meaning, narrowing = "type-meaning-change", "type-narrowing"
    if o in _NUMBERS + ("boolean",) and n == "text":
        return meaning, "turns numbers into text: they sort and compare as strings ('10' before '9')"
    if o in _TIMES and n == "text":
        return meaning, "turns dates and times into text: their format and order depend on the engine"
    if o == "text" and n in _NUMBERS + ("boolean",):
        return meaning, "reads text as numbers: values that are not numbers fail or change"
    if o == "text" and n in _TIMES:
        return meaning, "reads text as dates and times: the format decides what each value means"
    if o in _NUMBERS and n == "boolean":
        return meaning, "turns numbers into true/false"
    if o == "datetime" and n == "datetime":
        return meaning, ("reinterprets stored timestamps in the session's time zone" if after[1]
                         else "drops the time zone: timestamps from different zones no longer compare")
    if {o, n} == {"date", "datetime"}:
        return meaning, "drops the time of day" if n == "date" else "adds a midnight time to every date"
    if o == "float" and n == "integer":
        return narrowing, "drops the fractions"
    if o == "numeric" and n == "integer":
        precision, scale = before[1], before[2]
        if scale is None or scale > 0:
            return narrowing, "drops the decimals"
        if precision is None or precision > _INTEGER_DIGITS[after[1]]:
            return narrowing, "keeps fewer digits"
        return None
    if o == "integer" and n == "integer":
        return (narrowing, "holds smaller integers") if after[1] < before[1] else None
    if o == "integer" and n == "numeric":
        precision, scale = after[1], after[2] or 0
        if precision is not None and precision - scale < _INTEGER_DIGITS[before[1]]:
            return narrowing, f"keeps only {precision - scale} integer digits"
        return None
    if o == "numeric" and n == "numeric":
        (old_p, old_s), (new_p, new_s) = before[1:], after[1:]
        if new_s is not None and (old_s is None or new_s < old_s):
            return narrowing, "keeps fewer decimals"
        if new_p is not None and (old_p is None or new_p - (new_s or 0) < old_p - (old_s or 0)):
            return narrowing, "keeps fewer digits"
        return None
    if o == "float" and n == "numeric" and after[2] is not None:
        return narrowing, f"rounds floating-point values to {after[2]} decimals"
    if o == "text" and n == "text":
        old_length, new_length = before[1], after[1]
        if new_length is not None and (old_length is None or new_length < old_length):
            return narrowing, f"cuts strings longer than {new_length} characters"
        return None
    if o == "text" and n == "enum":
        return narrowing, "keeps only the enum's values"
    if o == "enum" and n == "enum":
        lost = [value for value in before[1] if value not in after[1]]
        return (narrowing, f"drops the enum values {', '.join(map(str, lost))}") if lost else None
    if o == "enum" and n == "text":
        longest = max((len(str(value)) for value in before[1]), default=0)
        if after[1] is not None and after[1] < longest:
            return narrowing, f"cuts values longer than {after[1]} characters"
    return None


def _binary_coercible(old, new) -> bool:
    """PostgreSQL changes these types without rewriting the table (longer or unbounded
    strings, more numeric precision at the same scale); measured on PostgreSQL 15."""
    before, after = _kind(old), _kind(new)
    if before[0] == after[0] == "text":
        return after[1] is None or (before[1] is not None and after[1] >= before[1])
    if before[0] == after[0] == "numeric":
        return after[2] == before[2] and (after[1] is None or (before[1] is not None and after[1] >= before[1]))
    return False


def _type_text(type_) -> str:
    import sqlalchemy as sa

    type_ = sa.types.to_instance(type_)
    kind = _kind(type_)
    if kind[0] == "datetime":
        return "DATETIME WITH TIME ZONE" if kind[1] else "DATETIME"
    if kind[0] == "enum":
        return f"ENUM({', '.join(repr(value) for value in kind[1])})"
    try:
        return str(type_)
    except Exception:  # a dialect-only type the default compiler cannot render
        return type(type_).__name__.upper()


# PostgreSQL functions whose value differs per row: a DEFAULT calling one fills every row.
_VOLATILE_FUNCTIONS = {"random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
                       "clock_timestamp", "timeofday", "nextval"}
_VOLATILE = re.compile(rf"\b({'|'.join(sorted(_VOLATILE_FUNCTIONS))})\s*\(", re.I)


def _rewriting_default(column) -> str | None:
    """Why adding this column rewrites a PostgreSQL table, or None. A constant or a stable
    default (now(), CURRENT_TIMESTAMP) is stored once in the catalogue since PostgreSQL 11;
    a volatile one is computed for every row (measured: relfilenode changes)."""
    import sqlalchemy as sa

    default = column.server_default
    if isinstance(default, sa.Identity) or column.identity is not None:
        return "an identity"
    if isinstance(default, sa.Computed):
        return "a generated (stored) value"
    if isinstance(default, sa.DefaultClause):
        text = str(default.arg.text if isinstance(default.arg, sa.TextClause) else default.arg)
        if _VOLATILE.search(text):
            return f"the volatile default {text}"
    return None


# ---------------------------------------------------------------- raw SQL


@dataclass(frozen=True)
class _Sql:
    """What one statement does to table data, as far as its text shows."""

    kind: str  # update delete truncate insert create-table drop-table drop-column rename-table
    #            rename-column add-column alter-type set-not-null add-constraint create-index
    #            alter-table foreign-keys-off foreign-keys-on none unknown
    table: str | None = None
    column: str | None = None
    name: str | None = None  # the new name of a rename, the index's or constraint's name
    where: bool = False  # an UPDATE or DELETE with a WHERE clause
    concurrently: bool = False
    not_valid: bool = False
    not_null: bool = False
    default: str | None = None  # an added column's DEFAULT (its first word)
    constraint: str = ""  # "check constraint" | "foreign key"


_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>--[^\n]*|/\*.*?\*/)|(?P<string>'(?:[^']|'')*')
    |(?P<quoted>"(?:[^"]|"")*")|(?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
    |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)|(?P<number>\d+(?:\.\d+)?)|(?P<other>.)""",
    re.S | re.X,
)
# Statements that change no table's rows.
_HARMLESS = {"SELECT", "CREATE TYPE", "ALTER TYPE", "DROP TYPE", "DROP INDEX", "CREATE EXTENSION", "COMMENT",
             "CREATE VIEW", "DROP VIEW", "CREATE SEQUENCE", "ALTER SEQUENCE", "DROP SEQUENCE", "CREATE FUNCTION",
             "DROP FUNCTION", "GRANT", "REVOKE", "SET", "ANALYZE", "VACUUM", "REINDEX", "PRAGMA", "CREATE TRIGGER",
             "DROP TRIGGER", "CREATE OR", "CREATE SCHEMA", "LOCK"}


def _sql_statements(sqltext, dialect_name: str) -> list[_Sql]:
    """The statements an op.execute() runs: text is parsed, Core constructs inspected."""
    import sqlalchemy as sa
    from sqlalchemy.sql import dml

    if isinstance(sqltext, str):
        return _parse_sql(sqltext, dialect_name)
    if isinstance(sqltext, sa.TextClause):
        return _parse_sql(sqltext.text, dialect_name)
    if isinstance(sqltext, (dml.Update, dml.Delete)):
        kind = "update" if isinstance(sqltext, dml.Update) else "delete"
        return [_Sql(kind, getattr(sqltext.table, "name", None), where=sqltext.whereclause is not None)]
    if isinstance(sqltext, dml.Insert):
        return [_Sql("insert", getattr(sqltext.table, "name", None))]
    if isinstance(sqltext, sa.sql.Select):
        return [_Sql("none")]
    if isinstance(sqltext, sa.schema.DDL):
        return _parse_sql(sqltext.statement, dialect_name)
    try:
        from sqlalchemy.engine import URL

        return _parse_sql(str(sqltext.compile(dialect=URL.create(dialect_name).get_dialect()())), dialect_name)
    except Exception:  # a construct this pass cannot render: its tables are unknown
        return [_Sql("unknown")]


def _parse_sql(text: str, dialect: str) -> list[_Sql]:
    statements: list[list[tuple[str, str]]] = [[]]
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup if match.lastgroup != "tag" else "dollar"
        if kind in ("space", "comment"):
            continue
        if kind == "other" and match.group() == ";":
            statements.append([])
            continue
        statements[-1].append((kind, match.group()))
    return [parsed for tokens in statements if tokens for parsed in _statement(_top_level(tokens), dialect)]


def _statement(top: list[tuple[str, str]], dialect: str) -> list[_Sql]:
    words = _words(top)
    if not words:
        return [_Sql("unknown")]  # wholly parenthesised: nothing at the top level to read
    if words[0] == "WITH":  # a CTE: the statement's verb is the first top-level DML word after it
        at = next((i for i, word in enumerate(words) if word in ("SELECT", "INSERT", "UPDATE", "DELETE")), 0)
        words, top = words[at:], top[at:]
    head = " ".join(words[:2])
    if words[0] == "UPDATE":
        return [_Sql("update", _name_after(top, 1, dialect), where=_has_where(words))]
    if words[0] == "DELETE":
        return [_Sql("delete", _name_after(top, 2 if words[1:2] == ["FROM"] else 1, dialect), where=_has_where(words))]
    if words[0] == "TRUNCATE":
        return [_Sql("truncate", _name_after(top, 2 if words[1:2] == ["TABLE"] else 1, dialect))]
    if words[0] == "INSERT":
        return [_Sql("insert", _name_after(top, 2, dialect))]
    if head == "CREATE TABLE":
        return [_Sql("create-table", _name_after(top, _skip(words, 2, ("IF", "NOT", "EXISTS")), dialect))]
    if head == "DROP TABLE":
        return [_Sql("drop-table", _name_after(top, _skip(words, 2, ("IF", "EXISTS")), dialect))]
    if head == "ALTER TABLE":
        at = _skip(words, 2, ("IF", "EXISTS", "ONLY"))
        table = _name_after(top, at, dialect)
        return [_alter_action(table, action, dialect) for action in _split(top[at + 1 + 2 * _dots(top, at):], ",")]
    if words[0] == "CREATE" and "INDEX" in words[1:3] and "ON" in words:
        on = words.index("ON")
        name = unquote(top[on - 1][1], dialect) if words[on - 1] not in ("INDEX", "CONCURRENTLY", "EXISTS") else None
        return [_Sql("create-index", _name_after(top, on + 1, dialect), name=name, concurrently="CONCURRENTLY" in words[:on])]
    if words[0] == "PRAGMA" and len(words) >= 4 and words[1] == "FOREIGN_KEYS":
        off = words[3].strip("'\"") in ("OFF", "0", "FALSE", "NO")
        return [_Sql("foreign-keys-off" if off else "foreign-keys-on")]
    if head in _HARMLESS or words[0] in _HARMLESS:
        return [_Sql("none")]
    return [_Sql("unknown")]


def _alter_action(table: str | None, top: list[tuple[str, str]], dialect: str) -> _Sql:
    """One action of an ALTER TABLE (they are separated by commas)."""
    w = _words(top)
    if w[:1] == ["DROP"] and w[1:2] != ["CONSTRAINT"]:
        return _Sql("drop-column", table, _name_after(top, _skip(w, 2 if w[1:2] == ["COLUMN"] else 1, ("IF", "EXISTS")), dialect))
    if w[:2] == ["RENAME", "TO"]:
        return _Sql("rename-table", table, name=_name_after(top, 2, dialect))
    if w[:1] == ["RENAME"] and "TO" in w:
        return _Sql("rename-column", table, _name_after(top, 2 if w[1:2] == ["COLUMN"] else 1, dialect),
                    name=_name_after(top, w.index("TO") + 1, dialect))
    if w[:1] == ["ADD"] and w[1:2] in (["CONSTRAINT"], ["CHECK"], ["FOREIGN"]):
        if "CHECK" not in w and "FOREIGN" not in w:
            return _Sql("alter-table", table)  # a primary key or unique constraint
        return _Sql("add-constraint", table, name=_name_after(top, 2, dialect) if w[1] == "CONSTRAINT" else None,
                    constraint="foreign key" if "FOREIGN" in w else "check constraint", not_valid=_pair(w, "NOT", "VALID"))
    if w[:1] == ["ADD"]:
        at = _skip(w, 2 if w[1:2] == ["COLUMN"] else 1, ("IF", "NOT", "EXISTS"))
        default = top[w.index("DEFAULT") + 1][1] if "DEFAULT" in w[:-1] else None
        return _Sql("add-column", table, _name_after(top, at, dialect), not_null=_pair(w, "NOT", "NULL"), default=default)
    if w[:1] == ["ALTER"]:
        at = 2 if w[1:2] == ["COLUMN"] else 1
        column, rest = _name_after(top, at, dialect), w[at + 1:]
        if "TYPE" in rest:
            return _Sql("alter-type", table, column)
        if rest[:3] == ["SET", "NOT", "NULL"]:
            return _Sql("set-not-null", table, column)
    return _Sql("alter-table", table)


def _top_level(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The tokens outside parentheses (subqueries and column lists hide their WHEREs)."""
    depth, top = 0, []
    for kind, value in tokens:
        if value == "(":
            depth += 1
        elif value == ")":
            depth = max(depth - 1, 0)
        elif depth == 0:
            top.append((kind, value))
    return top


def _words(top: list[tuple[str, str]]) -> list[str]:
    return [value.upper() if kind == "word" else value for kind, value in top]


def _split(top: list[tuple[str, str]], separator: str) -> list[list[tuple[str, str]]]:
    parts: list[list[tuple[str, str]]] = [[]]
    for token in top:
        if token[1] == separator:
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


def _pair(words: list[str], first: str, second: str) -> bool:
    return any(a == first and b == second for a, b in zip(words, words[1:]))


def _has_where(words: list[str]) -> bool:
    if "WHERE" not in words:
        return False
    condition = words[words.index("WHERE") + 1:]
    return condition not in (["TRUE"], ["1"], ["1", "=", "1"])  # a WHERE that bounds nothing


def _skip(words: list[str], index: int, optional: tuple[str, ...]) -> int:
    while index < len(words) and words[index] in optional:
        index += 1
    return index


def _dots(top: list[tuple[str, str]], index: int) -> int:
    """How many "schema." qualifiers the name at `index` has."""
    count = 0
    while index + 2 * count + 1 < len(top) and top[index + 2 * count + 1][1] == ".":
        count += 1
    return count


def _name_after(top: list[tuple[str, str]], index: int, dialect: str) -> str | None:
    """The (possibly schema-qualified) name at `index`, as its last part; ONLY is skipped."""
    if index < len(top) and top[index][0] == "word" and top[index][1].upper() == "ONLY":
        index += 1
    if index >= len(top) or top[index][0] not in ("word", "quoted"):
        return None
    return unquote(top[index + 2 * _dots(top, index)][1], dialect)


# ---------------------------------------------------------------- what was recorded


def _recorded(operation) -> RecordedOperation:
    from alembic.operations import ops

    kind = type(operation).__name__
    table = next((name for name in _tables_of(operation) if name), None)
    column = None
    if isinstance(operation, ops.AddColumnOp):
        column = operation.column.name
    elif isinstance(operation, (ops.DropColumnOp, ops.AlterColumnOp)):
        column = operation.column_name
    elif isinstance(operation, ops.ExecuteSQLOp):
        named = {statement.table for statement in _sql_statements(operation.sqltext, "postgresql") if statement.table}
        table = named.pop() if len(named) == 1 else None
    return RecordedOperation(kind=kind, table=table, column=column, detail=" ".join(_describe(operation).split()))


def _describe(operation) -> str:
    import sqlalchemy as sa
    from alembic.operations import ops

    o = operation
    if isinstance(o, ops.CreateTableOp):
        return f"create table {o.table_name} ({sum(isinstance(c, sa.Column) for c in o.columns)} columns)"
    if isinstance(o, ops.DropTableOp):
        return f"drop table {o.table_name}"
    if isinstance(o, ops.RenameTableOp):
        return f"rename table {o.table_name} to {o.new_table_name}"
    if isinstance(o, ops.AddColumnOp):
        column = o.column
        default = f" DEFAULT {_default_text(column.server_default)}" if column.server_default is not None else ""
        null = "" if column.nullable else " NOT NULL"
        return f"add column {o.table_name}.{column.name} {_type_text(column.type)}{null}{default}"
    if isinstance(o, ops.DropColumnOp):
        return f"drop column {o.table_name}.{o.column_name}"
    if isinstance(o, ops.AlterColumnOp):
        parts = []
        if o.modify_type is not None:
            old = f"{_type_text(o.existing_type)} → " if o.existing_type is not None else ""
            parts.append(f"type {old}{_type_text(o.modify_type)}")
        if o.modify_nullable is not None:
            parts.append("NULL" if o.modify_nullable else "NOT NULL")
        if o.modify_server_default is not False:
            parts.append(f"server default {_default_text(o.modify_server_default)}")
        if o.modify_name:
            parts.append(f"rename to {o.modify_name}")
        return f"alter column {o.table_name}.{o.column_name}: {', '.join(parts) or 'no change'}"
    if isinstance(o, ops.CreateIndexOp):
        columns = ", ".join(str(c) for c in o.columns)
        concurrently = " concurrently" if o.kw.get("postgresql_concurrently") else ""
        return f"create {'unique ' if o.unique else ''}index {o.index_name} on {o.table_name} ({columns}){concurrently}"
    if isinstance(o, ops.DropIndexOp):
        return f"drop index {o.index_name}"
    if isinstance(o, ops.CreateForeignKeyOp):
        not_valid = " not valid" if o.kw.get("postgresql_not_valid") else ""
        return (f"create foreign key {o.constraint_name} {o.source_table}({', '.join(o.local_cols)}) → "
                f"{o.referent_table}({', '.join(o.remote_cols)}){not_valid}")
    if isinstance(o, ops.CreateCheckConstraintOp):
        not_valid = " not valid" if o.kw.get("postgresql_not_valid") else ""
        return f"create check constraint {o.constraint_name} on {o.table_name}: {o.condition}{not_valid}"
    if isinstance(o, ops.DropConstraintOp):
        return f"drop constraint {o.constraint_name} on {o.table_name}"
    if isinstance(o, ops.AddConstraintOp):
        return f"create {o.constraint_type} constraint {getattr(o, 'constraint_name', '')} on {getattr(o, 'table_name', '')}"
    if isinstance(o, ops.BulkInsertOp):
        return f"insert {len(o.rows)} rows into {getattr(o.table, 'name', '?')}"
    if isinstance(o, ops.ExecuteSQLOp):
        text = o.sqltext if isinstance(o.sqltext, str) else getattr(o.sqltext, "text", None) or str(o.sqltext)
        text = " ".join(text.split())
        return f"execute: {text[:117] + '...' if len(text) > 120 else text}"
    return type(o).__name__


def _default_text(default) -> str:
    import sqlalchemy as sa

    if default is None:
        return "none"
    arg = getattr(default, "arg", default)
    if isinstance(arg, sa.TextClause):
        return arg.text
    try:
        return str(arg)
    except Exception:  # a construct the default compiler cannot render
        return type(arg).__name__
