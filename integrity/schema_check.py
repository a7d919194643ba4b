"""Is live's schema the one its revision says, and did that revision pass a dry run here?

`alembic_version` only names a revision. The incident's change was applied with plain
`alembic upgrade head` behind the tool's back: the revision read as head while levels
were stored as text. So `integrity status` and the metrics judge the schema twice:

- **drift**: live's reflected tables, columns and types against the model of its
  revision, built by running this code's Alembic history up to that revision on an
  in-memory SQLite database (the same way the dry run's static pass builds the schema it
  judges operations against), kept in the state directory by the revision files' hashes so
  that a run reads it instead of importing Alembic to build it again. Types are compared as normalised families (integer,
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

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core.schema_state import SchemaState, SchemaStatus, history, schema_status

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


def model_cache(state_dir: Path) -> Path:
    """Where the models of revisions are kept between runs (`_cached_model`)."""
    return state_dir / "schema-models"


def judge_schema(connection: Connection, ledger, *, model_cache: Path | None = None) -> SchemaVerdict:
    """The schema verdict of the database behind `connection`; `ledger` may be None.
    `model_cache`: a directory where the models of revisions are kept between runs
    (see `_model`)."""
    from integrity.backups.statistics import store_identity

    status = schema_status(connection)
    identity = store_identity(connection)
    if status.revision is None or status.state is SchemaState.EMPTY:
        return SchemaVerdict(status, identity, None, None, None)
    project = history()
    known = status.state in (SchemaState.CURRENT, SchemaState.BEHIND)
    differences, model_problem = None, None
    if known:
        model, model_problem = _cached_model(status.revision, _files_key(project, status.revision), model_cache)
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
    path = project.lineage(revision)  # base .. revision, parents first
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
            if revision in project:  # else init ran code with another history
                created.update(info.id for info in project.lineage(revision))
    return created


# ---------------------------------------------------------------- the model of a revision


def _files_key(project, revision: str) -> tuple[tuple[str, str], ...]:
    return tuple((info.id, info.sha256) for info in project.lineage(revision))


# Part of the cached models' key: a change in what is kept, or in how SQLAlchemy renders a
# type, makes new entries instead of reading old ones. Types are kept as rendered and
# reduced to families when read, so a change to `type_family` needs no new key.
_MODEL_FORMAT = f"1-sqlalchemy-{sa.__version__}"


def _cached_model(revision: str, files: tuple[tuple[str, str], ...],
                  cache: Path | None) -> tuple[dict | None, str | None]:
    """{table: {column: family}} of `revision` and why it is None when it could not be
    built (`_model_columns`), kept as a small JSON file in `cache` between runs.

    Building a model runs the history up to `revision` with Alembic on in-memory SQLite
    (about 150 ms of imports and DDL), and every `status` and every metrics file written
    after a command judges the schema: a new process reads the file instead (issue 20).
    The key holds the revision files' hashes, so an edited revision file is built afresh;
    a cache that cannot be read or written costs only the build."""
    path = None
    if cache is not None:
        key = hashlib.sha256(json.dumps([_MODEL_FORMAT, revision, files]).encode()).hexdigest()[:32]
        path = cache / f"model-{key}.json"
    kept = _read_kept(path) if path is not None else None
    if kept is None:
        kept = _model_columns(revision, files)
        if path is not None:
            _keep(path, {"revision": revision, "columns": kept[0], "problem": kept[1]})
    columns, problem = kept
    if columns is None:
        return None, problem
    return {table: {name: type_family(rendered) for name, rendered in pairs} for table, pairs in columns.items()}, None


def _read_kept(path: Path):
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        columns = kept["columns"]
        if columns is not None:
            columns = {str(table): [(str(name), str(rendered)) for name, rendered in pairs]
                       for table, pairs in columns.items()}
        return columns, kept["problem"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _keep(path: Path, document: dict) -> None:
    """Write `document` to `path` atomically, or not at all (it is only a cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError:
        pass


@lru_cache(maxsize=8)
def _model_columns(revision: str, files: tuple[tuple[str, str], ...]):
    """({table: [(column, type as rendered)]} in model order, None) of `revision`, built
    on in-memory SQLite, or (None, why not); cached per process by the revision files'
    hashes."""
    from alembic import command

    from game_core.migrations import alembic_config
    from integrity.db.connect import in_memory_sqlite
    from integrity.migrate.observe import capture_schema

    try:
        with in_memory_sqlite() as connection:
            command.upgrade(alembic_config(connection), revision)
            shape = capture_schema(connection)
    except Exception as exc:  # a history that cannot run on SQLite (PostgreSQL-only operations)
        text = " ".join(str(exc).split())[:200]
        return None, f"the model of {revision} could not be built on SQLite: {type(exc).__name__}: {text}"
    return {name: [(column.name, column.type) for column in table.columns]
            for name, table in shape.tables.items() if not name.startswith(_FOREIGN_TABLE_PREFIXES)}, None


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
