"""`integrity diff`: a backup against the live database, table by table.

The backup is held against prune, verified, restored into a scratch copy that is always
removed, and compared with live (only read) by `integrity.tablediff.backup_live`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from game_core.errors import ExitCode, InvalidInput, PreconditionFailed
from integrity.db.connect import one_snapshot
from integrity.db.sql import error_reason
from integrity.tablediff.backup_live import EnginesDiffer, TableDiff, check_tables, diff_databases


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
    from integrity.backups.statistics import store_identity
    from integrity.backups.catalog import resolve_backup
    from integrity.backups.verify import verify_one
    from integrity.db.connect import Database
    from integrity.db.engines import engine_for
    from integrity.guarded import require_game_revision

    chosen_tables = check_tables(tables)  # a typo fails before any work
    if not isinstance(sample_limit, int) or isinstance(sample_limit, bool) or sample_limit < 0:
        raise InvalidInput(f"--limit {sample_limit!r} is not a non-negative integer")
    started = time.perf_counter()
    live = Database.of(settings)
    target = live.target
    with live.reader() as live_engine:
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
            with engine_for(live).restored_copy(
                repository, manifest, scratch_dir=settings.state.dir / "scratch",
            ) as copy, live.beside(copy.target).reader() as copy_engine:
                diffs = _diff_live_and_copy(live_engine, copy_engine, chosen_tables, sample_limit, target.display)
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
            live = one_snapshot(live)  # one snapshot of live for every table: the game keeps writing meanwhile
            return diff_databases(live, backup, tables=tables, sample_limit=sample_limit)
    except sa.exc.DBAPIError as exc:
        reason = error_reason(exc)
        raise DiffCouldNotRun(
            f"the diff could not read {where} or the restored backup: {reason}; check the database "
            "(and [database] statement_timeout_ms) and run it again"
        ) from None
