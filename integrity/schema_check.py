"""Is live's schema the one its revision says, and did that revision pass a dry run here?

`alembic_version` only names a revision. The incident's change was applied with plain
`alembic upgrade head` behind the tool's back: the revision read as head while levels
were stored as text. So `integrity status` and the metrics judge the schema twice:

- **drift**: live's reflected tables, columns and types against the model of its
  revision, built by running this code's Alembic history up to that revision on an
  in-memory SQLite database (the same way the dry run's static pass builds the schema it
  judges operations against). Types are compared as normalised families (integer,
  numeric with its precision and scale, float, text, datetime, ...) because the model is
  reflected from SQLite and live may be PostgreSQL: SQLite keeps neither time zones nor
  enum types, so `timestamp` against `timestamptz` is not caught here (the dry run's
  rules catch that change before it is applied). A revision this code does not know has
  no model to compare with: its drift is unknown, never reported as none.
- **checked**: every revision from the base up to live's counts as checked when
  1. it is a root of the history (it creates the store from nothing: there were no rows
     it could change), or
  2. `integrity init` created the schema of this store on an empty database at it or
     after it (the init run records the store identity and the revision in the ledger),
     or
  3. a dry run on this store (same store identity) passed with exactly this revision
     file (its SHA-256, as `migrate apply` requires; `migration_dry_runs` in the ledger).
  Anything else was applied without a passing dry run on this store: plain
  `alembic upgrade`, a hand-written alembic.ini, a revision edited after its dry run.
  A revision this code does not know counts as checked only by a passing dry run of its
  id on this store (its file is not here to hash).

A game that created its own schema on an empty database at a head beyond the root,
without `integrity init`, leaves no record: its revisions after the root read as
unchecked. `runbooks/schema-unchecked.md` says how to tell that case apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core.schema_state import SchemaState, SchemaStatus, schema_status

# Tables in the guarded database that are not the game's schema: Litestream's bookkeeping.
_FOREIGN_TABLE_PREFIXES = ("_litestream",)
SHOWN_DIFFERENCES = 4


@dataclass(frozen=True)
class SchemaVerdict:
    status: SchemaStatus
    identity: str | None
    # None: not compared (no revision, a revision this code does not know, or a model
    # that could not be built: `model_problem` says which).
    differences: tuple[str, ...] | None
    model_problem: str | None
    # None: not judged (no revision, or the ledger could not be read).
    unchecked: tuple[str, ...] | None

    @property
    def drift(self) -> bool:
        return bool(self.differences)

    @property
    def is_unchecked(self) -> bool:
        return bool(self.unchecked)

    def describe_findings(self) -> list[str]:
        """One phrase per finding, for the status row."""
        revision = self.status.revision
        found = []
        if self.differences:
            shown = "; ".join(self.differences[:SHOWN_DIFFERENCES])
            more = len(self.differences) - SHOWN_DIFFERENCES
            found.append(f"live differs from the model of {revision}: {shown}"
                         + (f" (and {more} more)" if more > 0 else ""))
        if self.unchecked:
            found.append(f"{', '.join(self.unchecked)} never passed a dry run on this store "
                         "(applied behind the tool's back?)")
        return found


def judge_schema(connection: Connection, ledger) -> SchemaVerdict:
    """The schema verdict of the database behind `connection`; `ledger` may be None."""
    from integrity.backups.statistics import store_identity

    status = schema_status(connection)
    identity = store_identity(connection)
    if status.revision is None or status.state is SchemaState.EMPTY:
        return SchemaVerdict(status, identity, None, None, None)
    project = _project()
    known = status.state in (SchemaState.CURRENT, SchemaState.BEHIND)
    differences, model_problem = None, None
    if known:
        model, model_problem = _model(status.revision, _files_key(project, status.revision))
        if model is not None:
            differences = tuple(schema_drift(model, _live_shape(connection)))
    else:
        model_problem = f"revision {status.revision} is not in this code's history: no model to compare with"
    unchecked = None
    if ledger is not None:
        unchecked = tuple(_unchecked(project, ledger, identity, status.revision, known))
    return SchemaVerdict(status, identity, differences, model_problem, unchecked)


# ---------------------------------------------------------------- checked revisions


def _unchecked(project, ledger, identity: str | None, revision: str, known: bool) -> list[str]:
    passed = _passed_revisions(ledger, identity)
    if not known:
        return [] if any(rev == revision for rev, _sha in passed) else [revision]
    path = project.pending(None, revision)  # base .. revision, parents first
    created = _created_by_init(ledger, identity, project)
    return [
        info.id for info in path
        if info.down_revisions  # a root creates the store from nothing
        and info.id not in created
        and (info.id, info.sha256) not in passed
    ]


def _passed_revisions(ledger, identity: str | None) -> set[tuple[str, str]]:
    """(revision, file sha256) of every revision a passed dry run of this store ran
    (integrity.migrate.records writes the rows)."""
    import json

    from integrity.ledger import migration_dry_runs

    if identity is None:
        return set()
    query = sa.select(migration_dry_runs.c.revisions).where(
        migration_dry_runs.c.passed.is_(True), migration_dry_runs.c.store_identity == identity
    )
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).scalars().all()
    return {(item["id"], item["sha256"]) for text in rows for item in json.loads(text)}


def _created_by_init(ledger, identity: str | None, project) -> set[str]:
    """Revisions `integrity init` created this store's schema with (on an empty database)."""
    if identity is None:
        return set()
    created: set[str] = set()
    for run in ledger.runs(kind="init", limit=20):
        summary = run.summary
        revision = summary.get("created_revision")
        if run.exit_code == 0 and summary.get("store_identity") == identity and revision:
            try:
                created.update(info.id for info in project.pending(None, revision))
            except Exception:  # MigrationProjectInvalid: init ran code with another history
                continue
    return created


# ---------------------------------------------------------------- the model of a revision


def _project():
    """This code's history, loaded once per process while its files stay as they were:
    the metrics after every command judge the schema, and loading the history executes
    every revision file (compiled from source where no bytecode is cached)."""
    from game_core.migrations import MIGRATIONS_DIR

    files = tuple(sorted((str(path), path.stat().st_mtime_ns, path.stat().st_size)
                         for path in MIGRATIONS_DIR.rglob("*.py")))
    return _project_of(files)


@lru_cache(maxsize=2)
def _project_of(files: tuple[tuple[str, int, int], ...]):
    from integrity.migrate.project import MigrationProject

    return MigrationProject.load(None)


def _files_key(project, revision: str) -> tuple[tuple[str, str], ...]:
    return tuple((info.id, info.sha256) for info in project.pending(None, revision))


@lru_cache(maxsize=8)
def _model(revision: str, files: tuple[tuple[str, str], ...]) -> tuple[dict | None, str | None]:
    """{table: {column: family}} of `revision`, built on in-memory SQLite; cached per
    process by the revision files' hashes (a status or metrics run builds it once)."""
    from alembic import command

    from integrity.db.connect import in_memory_sqlite
    from integrity.migrate.observe import capture_schema

    try:
        with in_memory_sqlite() as connection:
            command.upgrade(_project().config(connection), revision)
            shape = capture_schema(connection)
    except Exception as exc:  # a history that cannot run on SQLite (PostgreSQL-only operations)
        text = " ".join(str(exc).split())[:200]
        return None, f"the model of {revision} could not be built on SQLite: {type(exc).__name__}: {text}"
    return _families(shape), None


def _live_shape(connection: Connection) -> dict[str, dict[str, str]]:
    from integrity.migrate.observe import capture_schema

    return _families(capture_schema(connection))


def _families(shape) -> dict[str, dict[str, str]]:
    return {
        name: {column.name: type_family(column.type) for column in table.columns}
        for name, table in shape.tables.items()
        if not name.startswith(_FOREIGN_TABLE_PREFIXES)
    }


def schema_drift(model: dict[str, dict[str, str]], live: dict[str, dict[str, str]]) -> list[str]:
    """Each difference as one phrase, tables by name, columns in model order."""
    differences = []
    for table in sorted(set(model) | set(live)):
        if table not in live:
            differences.append(f"table {table} is missing")
            continue
        if table not in model:
            differences.append(f"table {table} is not in the model")
            continue
        expected, found = model[table], live[table]
        for column, family in expected.items():
            if column not in found:
                differences.append(f"{table}.{column} is missing")
            elif found[column] != family:
                differences.append(f"{table}.{column} is {found[column]}, the model says {family}")
        differences.extend(f"{table}.{column} is not in the model" for column in found if column not in expected)
    return differences


_NUMERIC = re.compile(r"^(?:NUMERIC|DECIMAL)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def type_family(rendered: str) -> str:
    """A column type as rendered by `capture_schema` (either engine), reduced to what both
    engines keep: 'integer', 'numeric(7,2)', 'float', 'text', 'datetime', 'date', 'time',
    'boolean', 'binary', 'json', else the type's own name in lower case."""
    text = " ".join(rendered.upper().split())
    numeric = _NUMERIC.match(text)
    if numeric:
        return f"numeric({numeric.group(1)},{numeric.group(2) or 0})"
    base = text.split("(")[0].strip()
    if base in ("NUMERIC", "DECIMAL"):
        return "numeric"
    if "INT" in base or base in ("SERIAL", "BIGSERIAL", "SMALLSERIAL"):
        return "integer"
    if base in ("REAL", "FLOAT", "DOUBLE", "DOUBLE PRECISION") or base.startswith("FLOAT"):
        return "float"
    if any(word in base for word in ("CHAR", "TEXT", "CLOB", "STRING", "ENUM")):
        return "text"
    if base.startswith(("TIMESTAMP", "DATETIME")):
        return "datetime"
    if base.startswith("TIME"):
        return "time"
    if base == "DATE":
        return "date"
    if base.startswith("BOOL"):
        return "boolean"
    if base in ("BLOB", "BYTEA") or "BINARY" in base:
        return "binary"
    if base.startswith("JSON"):
        return "json"
    return base.lower() or "untyped"
