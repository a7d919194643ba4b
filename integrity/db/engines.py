"""The engine protocol: what differs between SQLite and PostgreSQL when a backup is
taken, restored into a fresh database, staged and swapped into live, or copied for a
dry run. `engine_for(database)` chooses the implementation once, from the target, so the
orchestrators (create, check, verify, drill, restore, salvage, the dry run) never
branch on it.

The implementations hold the algorithm's engine-specific steps; the mechanics they drive
(pg_dump and pg_restore, the backup API, renames in the maintenance database, claims on
temporary databases) stay in the modules named in each method.
"""

from __future__ import annotations

import enum
import os
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote as url_quote

import sqlalchemy as sa

from game_core.db import POSTGRESQL, SQLITE, DatabaseTarget, parse_database_url
from game_core.errors import DatabaseUnreachable, Failure
from integrity.db.claims import claimed_path
from integrity.db.connect import MAINTENANCE_DATABASE, Database, maintenance
from integrity.db.sql import error_reason, quote
from integrity.progress import NO_PROGRESS, Reporter


@dataclass(frozen=True)
class Presence:
    """Live as a restore's plan first sees it: there or not, what a killed restore left
    beside it, who is connected."""

    exists: bool
    leftovers: tuple[str, ...] = ()
    sessions: tuple = ()


class SourceState(enum.Enum):
    """What a backup can tell of its source before it copies anything."""

    READY = "ready"  # or only the capture can tell (PostgreSQL: the dump's own snapshot)
    MISSING = "missing"
    NOT_THE_GAME = "not the game's database"  # a 0-byte file, /dev/null, another application's


@dataclass(frozen=True)
class Readiness:
    """One finding of `backup check` about the database: can a backup read all of it."""

    name: str
    state: str  # "ok" | "fail"
    detail: str


@dataclass(frozen=True)
class Staged:
    """A backup restored into a staging database next to live, ready to be swapped in."""

    target: DatabaseTarget
    description: str


class DatabaseEngine(Protocol):
    """One engine's way to back up, restore into a fresh database, stage, swap and copy."""

    kind: str
    database: Database
    # What a real swap spends beyond what `rehearse_swap` measures (ending live's sessions).
    swap_allowance_seconds: float
    # A table's fingerprint is hashed by the server (PostgreSQL), not a Python pass over
    # every row (SQLite, about 100,000 rows/s): a drill, whose compare with live reads
    # every row anyway, takes fingerprints only where they are this cheap.
    fingerprints_in_server: bool
    # A consistent copy of live costs little and never holds the game up (SQLite's backup
    # API): a dry run starts from live, not from the newest deep-verified backup.
    copies_live_cheaply: bool

    def backup(self, workdir: Path, *, level: int, threads: int, progress: Reporter = NO_PROGRESS):
        """Capture a consistent backup of the database into `workdir` (a `Capture`)."""

    def backup_source_state(self) -> SourceState:
        """What can be told of the database before a backup copies anything."""

    def backup_readiness(self) -> list[Readiness]:
        """Whether this user can read the whole database, and with which tools."""

    def restored_copy(self, repository, manifest, *, scratch_dir: Path,
                      progress: Reporter = NO_PROGRESS) -> AbstractContextManager:
        """The backup restored into a fresh scratch database, claimed while it exists and
        removed on the way out (a `ScratchCopy`)."""

    def snapshot_copies(self, choice, *, scratch_dir: Path, keep_copy: bool, restored_backup,
                        progress: Reporter = NO_PROGRESS) -> AbstractContextManager:
        """A dry run's two proven copies of `choice` (`integrity.migrate.snapshot.Copies`)."""

    def snapshot_source(self, snapshot: str) -> DatabaseTarget:
        """The database a dry run's `--snapshot` names (a file, or a database name or URL on
        live's server); refuses one of the other engine, or one that cannot serve."""

    def rehearse_swap(self, copy, *, scratch_dir: Path) -> str:
        """Time what the restore's swap does, on a scratch copy; say what was timed."""

    def live_sessions(self) -> list:
        """The sessions connected to live that a swap would have to end."""

    def presence(self, *, state_dir: Path) -> Presence:
        """Whether live exists, the leftovers of a killed restore, live's sessions."""

    def plan_staging(self, manifest, *, state_dir: Path) -> str:
        """Where the backup will be staged; refuses (NotEnoughSpace) what cannot fit."""

    def remove_leftovers(self, state_dir: Path) -> list[str]:
        """Remove what a killed restore left (staging copies); return their names."""

    def took(self, manifest) -> bool:
        """Whether `manifest`'s backup was taken of this database (the same file, or the
        same database on the same server); manifests record their source since issue 13."""

    def restore_refusal(self) -> str | None:
        """Why this database can never be restored in place, or None."""

    def kept_database(self, name: str) -> DatabaseTarget | None:
        """The old live a restore renamed to `name` and kept beside live; None where a
        restore keeps no old database (SQLite's writes into the live file)."""

    def unopenable_live_hint(self) -> str | None:
        """What a restore can do about a live database that cannot be opened at all, or
        None where there is nothing it can do (PostgreSQL: the server refused)."""

    def stage(self, repository, manifest, *, state_dir: Path) -> Staged:
        """The backup restored into a new staging database beside live."""

    def swap(self, staged: Staged, *, terminate: bool, safety_backup: Callable[[], None] | None) -> tuple[dict, str]:
        """Put the staged database in live's place, calling `safety_backup` where no write
        made after it can be lost; (the outcome's facts, a description of what was done)."""

    def discard(self, staged: Staged, *, swapped: bool) -> None:
        """Remove the staging copy unless it became live."""


@dataclass(frozen=True)
class SqliteEngine:
    database: Database
    kind: str = SQLITE
    swap_allowance_seconds: float = 0.0
    fingerprints_in_server: bool = False
    copies_live_cheaply: bool = True

    @property
    def _path(self) -> Path:
        return self.database.target.sqlite_path

    def backup(self, workdir: Path, *, level: int, threads: int, progress: Reporter = NO_PROGRESS):
        from integrity.db import sqlite_backup

        return sqlite_backup.capture(self._path, workdir, busy_timeout_ms=self.database.connection.busy_timeout_ms,
                                     level=level, threads=threads, progress=progress)

    def backup_source_state(self) -> SourceState:
        from integrity.db.sqlite_backup import game_identity

        if not self._path.exists():
            return SourceState.MISSING
        if self._path.is_dir() or game_identity(self._path, busy_timeout_ms=self.database.connection.busy_timeout_ms) is None:
            return SourceState.NOT_THE_GAME
        return SourceState.READY

    def backup_readiness(self) -> list[Readiness]:
        path = self._path
        if path is None or not path.exists():
            return [Readiness("database", "fail", f"database {path} does not exist; set [database] url or --database-url")]
        if not os.access(path, os.R_OK):
            return [Readiness("database", "fail", f"{path} is not readable by this user; fix its permissions")]
        return [Readiness("database", "ok", f"{path} readable")]

    def restored_copy(self, repository, manifest, *, scratch_dir: Path, progress: Reporter = NO_PROGRESS):
        from integrity.db.scratch import sqlite_copy

        _require_same_engine(manifest, self.kind)
        return sqlite_copy(repository, manifest, scratch_dir=scratch_dir, progress=progress)

    def snapshot_copies(self, choice, *, scratch_dir: Path, keep_copy: bool, restored_backup,
                        progress: Reporter = NO_PROGRESS):
        from integrity.db.sqlite_snapshot import sqlite_copies

        return sqlite_copies(self.database.target, choice, scratch_dir, self.database.connection, keep_copy,
                             restored_backup, progress)

    def snapshot_source(self, snapshot: str) -> DatabaseTarget:
        from integrity.db.sqlite_snapshot import snapshot_source

        return snapshot_source(snapshot)

    def rehearse_swap(self, copy, *, scratch_dir: Path) -> str:
        source = copy.target.sqlite_path
        with claimed_path(scratch_dir, f"{source.stem}-swap-{secrets.token_hex(4)}.db") as destination:
            reader = sqlite3.connect(f"file:{url_quote(str(source))}?mode=ro", uri=True)
            try:
                writer = sqlite3.connect(str(destination))
                try:
                    reader.backup(writer, pages=-1)  # one step, as the swap copies into live
                finally:
                    writer.close()
            finally:
                reader.close()
        return "backup-API copy of the scratch copy, timed"

    def live_sessions(self) -> list:
        return []  # SQLite's writers are held out by the swap's write lock, not ended

    def presence(self, *, state_dir: Path) -> Presence:
        from integrity.db import sqlite_swap

        return Presence(self._path.exists(), tuple(str(p) for p in sqlite_swap.leftovers(state_dir, self._path)))

    def plan_staging(self, manifest, *, state_dir: Path) -> str:
        from integrity.db import sqlite_swap

        problems = sqlite_swap.space_problems(state_dir, self._path, manifest.files[0].raw_size)
        if problems:
            raise sqlite_swap.NotEnoughSpace(problems[0] + "; nothing was changed")
        return f"a staging file in {sqlite_swap.staging_directory(state_dir)}"

    def remove_leftovers(self, state_dir: Path) -> list[str]:
        from integrity.db import sqlite_swap

        return sqlite_swap.remove_leftovers(state_dir, self._path)

    def took(self, manifest) -> bool:
        path = (manifest.source or {}).get("path") or manifest.source_path
        return path is not None and Path(path).resolve() == self._path.resolve()

    def restore_refusal(self) -> str | None:
        return None

    def kept_database(self, name: str) -> DatabaseTarget | None:
        return None

    def unopenable_live_hint(self) -> str | None:
        # The swap writes into live through the backup API, which needs a file it can
        # open; with none there, the restore creates it from the backup.
        return ("if the live file is damaged beyond use, move it aside (with its -wal and -shm files) and run "
                "the restore again: it then creates the database from the backup")

    def stage(self, repository, manifest, *, state_dir: Path) -> Staged:
        from integrity.db import sqlite_swap

        path = sqlite_swap.stage(repository, manifest, state_dir=state_dir, live_path=self._path)
        return Staged(parse_database_url(str(path)), f"{path} ({path.stat().st_size / 1e6:,.1f} MB)")

    def swap(self, staged: Staged, *, terminate: bool, safety_backup: Callable[[], None] | None) -> tuple[dict, str]:
        from integrity.db import sqlite_swap

        held = sqlite_swap.swap(staged.target.sqlite_path, self._path,
                                busy_timeout_ms=self.database.connection.busy_timeout_ms, while_held=safety_backup)
        description = f"written into {self._path} through the backup API"
        if held and safety_backup:
            description += f"; the write lock held from the safety backup to the commit ({held:.2f}s)"
        return {}, description

    def discard(self, staged: Staged, *, swapped: bool) -> None:
        from integrity.db import sqlite_swap

        sqlite_swap.remove(staged.target.sqlite_path)  # copied into live, never moved: always removed


@dataclass(frozen=True)
class PostgresEngine:
    database: Database
    kind: str = POSTGRESQL
    swap_allowance_seconds: float = 1.0
    fingerprints_in_server: bool = True
    copies_live_cheaply: bool = False  # pg_dump of live: minutes of I/O on the game's server

    @property
    def _live(self) -> DatabaseTarget:
        return self.database.target

    def backup(self, workdir: Path, *, level: int, threads: int, progress: Reporter = NO_PROGRESS):
        from integrity.db import postgres_backup

        return postgres_backup.capture(self.database, workdir, level=level, threads=threads, progress=progress)

    def backup_source_state(self) -> SourceState:
        return SourceState.READY  # the capture checks identity on the snapshot its dump reads

    def backup_readiness(self) -> list[Readiness]:
        from integrity.db.pg_tools import require_tool, server_major

        user = self._live.url.username
        with ExitStack() as opened:
            try:
                engine = opened.enter_context(self.database.reader())
            except Failure as exc:
                return [Readiness("database", "fail", f"{exc}; check [database] url")]
            with engine.connect() as connection:
                denied = connection.execute(sa.text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                    "AND c.relkind IN ('r', 'S', 'p') AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1"
                )).scalars().all()
                major = server_major(connection)
        if denied:
            rights = Readiness(
                "database rights", "fail",
                f"user {user!r} cannot SELECT {', '.join(denied[:5])}{' and more' if len(denied) > 5 else ''}; "
                "pg_dump needs it: GRANT SELECT ON ALL TABLES IN SCHEMA public (and sequences) to that user, "
                "or use another user in [database] url",
            )
        else:
            rights = Readiness("database rights", "ok", f"user {user!r} can read every table")
        try:
            tool = require_tool("pg_dump", major)
            return [rights, Readiness("pg_dump", "ok", f"{tool.path}: {tool.version} (server {major})")]
        except Failure as exc:
            return [rights, Readiness("pg_dump", "fail", str(exc))]

    def restored_copy(self, repository, manifest, *, scratch_dir: Path, progress: Reporter = NO_PROGRESS):
        from integrity.db.scratch import postgres_copy

        _require_same_engine(manifest, self.kind)
        return postgres_copy(repository, manifest, server=self._live, progress=progress, scratch_dir=scratch_dir)

    def snapshot_copies(self, choice, *, scratch_dir: Path, keep_copy: bool, restored_backup,
                        progress: Reporter = NO_PROGRESS):
        from integrity.db.postgres_snapshot import postgres_copies

        return postgres_copies(self._live, choice, self.database.connection, keep_copy, restored_backup, progress)

    def snapshot_source(self, snapshot: str) -> DatabaseTarget:
        from integrity.db.postgres_snapshot import snapshot_target

        return snapshot_target(self._live, snapshot)

    def rehearse_swap(self, copy, *, scratch_dir: Path) -> str:
        name = copy.target.url.database
        renamed = f"{name}_swap"
        # On the copy's own server: a point-in-time copy lives in a scratch cluster under
        # live's own name, and the live server's maintenance database would rename live.
        with maintenance(copy.target) as admin, admin.connect() as connection:
            # Both renames in one transaction: what the swap commits, and a kill leaves the
            # scratch database under its own name for its claim's sweep to drop.
            connection.exec_driver_sql("BEGIN")
            connection.exec_driver_sql(f"ALTER DATABASE {quote(name)} RENAME TO {quote(renamed)}")
            connection.exec_driver_sql(f"ALTER DATABASE {quote(renamed)} RENAME TO {quote(name)}")
            connection.exec_driver_sql("COMMIT")
        return (f"two renames in one transaction, timed, plus {self.swap_allowance_seconds:.0f}s to terminate "
                "connections")

    def live_sessions(self) -> list:
        from integrity.db.postgres_swap import live_sessions

        return live_sessions(self._live)

    def presence(self, *, state_dir: Path) -> Presence:
        from integrity.db import postgres_swap

        name = self._live.url.database
        try:
            with maintenance(self._live) as admin, admin.connect() as connection:
                exists = postgres_swap.database_exists(connection, name)
                leftovers = postgres_swap.leftovers(connection, name)
                sessions = postgres_swap.sessions(connection, name) if exists else []
        except sa.exc.DBAPIError as exc:
            raise DatabaseUnreachable(
                f"cannot connect to the PostgreSQL server of {self._live.display}: {error_reason(exc)}"
            ) from None
        return Presence(exists, tuple(leftovers), tuple(sessions))

    def plan_staging(self, manifest, *, state_dir: Path) -> str:
        from integrity.db import postgres_swap

        return f"the staging database {postgres_swap.staging_name(self._live.url.database, manifest.id)}"

    def remove_leftovers(self, state_dir: Path) -> list[str]:
        from integrity.db import postgres_swap

        return postgres_swap.remove_leftovers(self._live)

    def took(self, manifest) -> bool:
        source, url = manifest.source or {}, self._live.url
        if not source.get("database"):
            return manifest.source_url == self._live.masked
        return (
            source.get("database") == url.database
            and str(source.get("port") or 5432) == str(url.port or 5432)
            and source.get("host") == (url.host or "local socket")
        )

    def restore_refusal(self) -> str | None:
        if self._live.url.database == MAINTENANCE_DATABASE:
            return (f"the database {MAINTENANCE_DATABASE!r} is the maintenance database the swap runs from; "
                    "keep the game's data in a database of its own")
        return None

    def kept_database(self, name: str) -> DatabaseTarget | None:
        return DatabaseTarget(self._live.url.set(database=name))

    def unopenable_live_hint(self) -> str | None:
        return None

    def stage(self, repository, manifest, *, state_dir: Path) -> Staged:
        from integrity.db import postgres_swap

        staging = postgres_swap.stage(repository, manifest, live=self._live)
        return Staged(staging, f"database {staging.url.database}")

    def swap(self, staged: Staged, *, terminate: bool, safety_backup: Callable[[], None] | None) -> tuple[dict, str]:
        from integrity.db import postgres_swap

        if safety_backup is not None:
            # The game keeps writing meanwhile: the rename keeps live as it is at the swap
            # (the old database), newer than this backup, and salvage reads from it.
            safety_backup()
        outcome = postgres_swap.swap(self._live, staged.target.url.database, terminate=terminate)
        ended = f"; ended {len(outcome.terminated)} session(s)" if outcome.terminated else ""
        kept = f"; previous database kept as {outcome.old_database}" if outcome.old_database else ""
        description = f"renamed {staged.target.url.database} to {self._live.url.database}{kept}{ended}"
        return {"old_database": outcome.old_database, "terminated": outcome.terminated}, description

    def discard(self, staged: Staged, *, swapped: bool) -> None:
        from integrity.db import postgres_swap

        if not swapped:  # once swapped, the staging database is live under live's name
            postgres_swap.drop(self._live, staged.target.url.database)


def engine_for(database: Database) -> DatabaseEngine:
    """The engine of `database`'s target."""
    return PostgresEngine(database) if database.kind == POSTGRESQL else SqliteEngine(database)


def _require_same_engine(manifest, kind: str) -> None:
    if manifest.engine != kind:
        # Callers refuse a backup of the other engine with their own message first.
        raise ValueError(f"backup {manifest.id} is a {manifest.engine} backup, not {kind}")
