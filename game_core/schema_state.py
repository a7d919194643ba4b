"""Where a database stands against this code's Alembic history, and the empty-only setup.

The game creates its schema only on an empty database. It never upgrades an existing
one on start: an automatic upgrade is how the incident's migration reached production
unchecked. Upgrades go through `integrity migrate dry-run` and `integrity migrate apply`.

Where a database stands needs only the revision ids, which `history()` reads from the
revision files without Alembic; running the history (`upgrade_to_head`) is Alembic's.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from game_core.errors import SchemaNotCurrent, SchemaUnknown

MIGRATE_HINT = "run `integrity migrate dry-run` and then `integrity migrate apply`"


class SchemaState(str, Enum):
    EMPTY = "empty"  # no tables at all: the game may create its schema
    CURRENT = "current"  # at this code's head
    BEHIND = "behind"  # at an older revision of this history
    UNKNOWN = "unknown"  # a revision this code does not know, or tables without a revision


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    revision: str | None
    head: str

    def describe(self) -> str:
        if self.state is SchemaState.CURRENT:
            return f"at head {self.head}"
        if self.state is SchemaState.EMPTY:
            return f"empty (head is {self.head})"
        if self.state is SchemaState.BEHIND:
            return f"at {self.revision}, behind head {self.head}"
        if self.revision is None:
            return "holds tables but no Alembic revision"
        return f"at unknown revision {self.revision} (this code's head is {self.head})"


def _script_directory():
    from alembic.script import ScriptDirectory

    from game_core.migrations import alembic_config

    return ScriptDirectory.from_config(alembic_config())


# ---------------------------------------------------------------- the history, read without Alembic


@dataclass(frozen=True)
class Revision:
    id: str
    down_revisions: tuple[str, ...]  # () for a root
    path: Path
    sha256: str  # of the file's bytes


@dataclass(frozen=True)
class History:
    """This code's revisions by id, with their single head."""

    revisions: dict[str, Revision]
    head: str

    def __contains__(self, revision: str) -> bool:
        return revision in self.revisions

    def lineage(self, revision: str) -> list[Revision]:
        """`revision` and every revision before it (base first; parents before children,
        ties by id): what an upgrade from an empty database to `revision` runs."""
        wanted, stack = set(), [revision]
        while stack:
            current = stack.pop()
            if current not in wanted:
                wanted.add(current)
                stack.extend(self.revisions[current].down_revisions)
        order, done = [], set()
        while len(order) < len(wanted):
            ready = sorted(r for r in wanted - done if set(self.revisions[r].down_revisions) <= done)
            order.extend(ready)
            done.update(ready)
        return [self.revisions[r] for r in order]


def _versions_dir() -> Path:
    from game_core.migrations import MIGRATIONS_DIR

    return MIGRATIONS_DIR / "versions"


def history() -> History:
    """This code's history. Read from the revision files' own `revision` and
    `down_revision` assignments, without importing Alembic or running the files: `status`
    and the metrics file written after every command need only the ids, and importing
    Alembic cost about 100 ms of every run (issue 20). A history the reader does not fully
    understand (an id that is not a literal, `depends_on`, branch labels, several heads,
    a missing parent) is Alembic's to read, so both always agree
    (tests/test_fixed_cost.py compares them). Cached per process while the files are
    unchanged."""
    versions = _versions_dir()
    files = tuple(sorted((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in _revision_files(versions)))
    return _history_of(str(versions), files)


def _revision_files(versions: Path) -> list[Path]:
    # Alembic's own choice of files in a version location: *.py, not __init__ nor an
    # editor's lock file (.#name).
    return [path for path in versions.glob("*.py") if not path.name.startswith(("__init__", ".#"))]


@lru_cache(maxsize=4)
def _history_of(versions: str, files: tuple[tuple[str, int, int], ...]) -> History:
    return read_history(Path(versions)) or _alembic_history()


def read_history(versions: Path) -> History | None:
    """The history in `versions` read from the files' literal assignments, or None when
    it is not one this reader fully understands (see `history`)."""
    revisions: dict[str, Revision] = {}
    for path in _revision_files(versions):
        data = path.read_bytes()
        try:
            names = _literal_assignments(ast.parse(data, filename=str(path)))
        except (SyntaxError, ValueError):
            return None
        revision, down = names.get("revision"), names.get("down_revision")
        if not isinstance(revision, str) or revision in revisions:
            return None
        if names.get("depends_on") is not None or names.get("branch_labels") is not None:
            return None
        if down is None:
            downs = ()
        elif isinstance(down, str):
            downs = (down,)
        elif isinstance(down, (tuple, list)) and all(isinstance(d, str) for d in down):
            downs = tuple(down)
        else:
            return None
        revisions[revision] = Revision(revision, downs, path, hashlib.sha256(data).hexdigest())
    referenced = {down for info in revisions.values() for down in info.down_revisions}
    heads = [rev for rev in revisions if rev not in referenced]
    if len(heads) != 1 or not referenced <= set(revisions):
        return None
    return History(revisions, heads[0])


_UNSET = object()


def _literal_assignments(module: ast.Module) -> dict[str, object]:
    """Module-level `name = literal` (or `name: type = literal`) assignments; a name bound
    to anything else maps to _UNSET, so the caller falls back to Alembic."""
    found: dict[str, object] = {}
    for node in module.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    found[target.id] = _UNSET
    return found


def _alembic_history() -> History:
    script = _script_directory()
    revisions = {}
    for rev in script.walk_revisions():
        down = rev.down_revision
        downs = () if down is None else (down,) if isinstance(down, str) else tuple(down)
        path = Path(rev.path)
        revisions[rev.revision] = Revision(rev.revision, downs, path, hashlib.sha256(path.read_bytes()).hexdigest())
    return History(revisions, script.get_current_head())


def head_revision() -> str:
    return history().head


def current_revision(connection: Connection) -> str | None:
    """The revision in alembic_version, or None when the table is missing or empty."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def schema_status(connection: Connection) -> SchemaStatus:
    known = history()
    head = known.head
    revision = current_revision(connection)
    if revision is None:
        has_tables = bool(sa.inspect(connection).get_table_names())
        return SchemaStatus(SchemaState.UNKNOWN if has_tables else SchemaState.EMPTY, None, head)
    if revision == head:
        return SchemaStatus(SchemaState.CURRENT, revision, head)
    # An exact id: alembic_version holds whole ids (Alembic's get_revision also took a
    # unique prefix, which no upgrade ever writes there).
    if revision not in known:
        return SchemaStatus(SchemaState.UNKNOWN, revision, head)
    return SchemaStatus(SchemaState.BEHIND, revision, head)


def upgrade_to_head(connection: Connection, revision: str = "head") -> None:
    """Run the history on this connection, inside the caller's transaction."""
    from alembic import command

    from game_core.migrations import alembic_config

    command.upgrade(alembic_config(connection), revision)


def ensure_schema(engine: Engine, *, display_name: str) -> SchemaStatus:
    """Create the schema on an empty database; accept one at head; refuse anything else."""
    with engine.begin() as connection:
        status = schema_status(connection)
        if status.state is SchemaState.EMPTY:
            upgrade_to_head(connection)
            return SchemaStatus(SchemaState.CURRENT, status.head, status.head)
    require_current(status, display_name=display_name)
    return status


def require_current(status: SchemaStatus, *, display_name: str) -> None:
    if status.state is SchemaState.BEHIND:
        raise SchemaNotCurrent(
            f"database {display_name} is {status.describe()}; the game does not upgrade it on "
            f"start: {MIGRATE_HINT}"
        )
    if status.state is SchemaState.UNKNOWN:
        raise SchemaUnknown(
            f"database {display_name} {status.describe()}; point --database-url at the game's "
            "database or install the version of the game that wrote it"
        )
