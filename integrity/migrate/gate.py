"""`integrity migrate check-applied`: the deploy gate.

A deploy pipeline calls it before traffic moves: live must be at revisions whose files
(the ones being deployed, by SHA-256) passed a dry run on this store. The ledger's dry-run
records (integrity.migrate.records, the ones `migrate apply` trusts) are the evidence: a
passed dry run of this store and engine whose revisions include the revision with the same
file hash. A root revision (no down_revision) is accepted without one: it is the schema
that `integrity init` (or the game, on an empty database) created, never a migration of data.
Exit 0 when every revision live is at passed, 3 naming each one that did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from game_core.errors import ExitCode


@dataclass(frozen=True)
class GateRevision:
    id: str
    sha256: str
    path: str
    passed: bool
    evidence: str  # the passing dry run, or why there is none


@dataclass(frozen=True)
class GateReport:
    database: str
    engine: str
    store_identity: str | None
    project: str
    revisions: tuple[GateRevision, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.revisions)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.passed else ExitCode.PROBLEMS_FOUND

    def summary(self) -> dict:
        return {"revisions": [r.id for r in self.revisions], "passed": self.passed,
                "not_passed": [r.id for r in self.revisions if not r.passed]}


def check_applied(settings, ledger, *, alembic_config: Path | None = None) -> GateReport:
    """Whether each revision the configured database is at passed a dry run on this store
    with the files of `alembic_config`'s project (default: the game's history). Raises
    MigrationProjectInvalid (exit 4) when live is at a revision that history does not know,
    and the guarded-database refusal (exit 4) when live has no revision."""
    from integrity.backups.statistics import store_identity
    from integrity.db.connect import Database
    from integrity.guarded import require_game_revision
    from integrity.migrate.project import MigrationProject

    project = MigrationProject.load(alembic_config)
    database = Database.of(settings)
    live = database.target
    with database.reader() as engine, engine.connect() as connection:
        at = _revisions_of(connection)
        if not at:  # empty (init's job) or not the game's database: exit 4, named
            require_game_revision(connection, live.display)
        identity = store_identity(connection)
    records = _dry_runs(ledger, store_identity=identity, engine=live.kind)
    checked = tuple(_check(project.revision(rev_id), records) for rev_id in at)
    return GateReport(live.display, live.kind, identity, project.description, checked)


def _revisions_of(connection) -> list[str]:
    """Every row of alembic_version (several on a branched history), sorted."""
    import sqlalchemy as sa

    if not sa.inspect(connection).has_table("alembic_version"):
        return []
    return sorted(row[0] for row in connection.execute(sa.text("SELECT version_num FROM alembic_version")))


def _dry_runs(ledger, *, store_identity: str | None, engine: str) -> list:
    """Every recorded dry run of this store and engine, newest first."""
    import sqlalchemy as sa

    from integrity.ledger import migration_dry_runs
    from integrity.migrate.records import _record

    query = (sa.select(migration_dry_runs).where(migration_dry_runs.c.engine == engine)
             .order_by(migration_dry_runs.c.finished_at.desc()))
    if store_identity is not None:
        query = query.where(migration_dry_runs.c.store_identity == store_identity)
    with ledger.engine.connect() as connection:
        return [_record(row) for row in connection.execute(query).mappings()]


def _check(revision, records) -> GateRevision:
    def result(passed: bool, evidence: str) -> GateRevision:
        return GateRevision(revision.id, revision.sha256, str(revision.path), passed, evidence)

    ran = [r for r in records if revision.id in dict(r.revisions)]
    same_files = [r for r in ran if dict(r.revisions)[revision.id] == revision.sha256]
    passing = next((r for r in same_files if r.passed), None)
    if passing is not None:
        return result(True, f"dry run passed {passing.finished_at:%Y-%m-%d %H:%M:%S} "
                            f"({passing.start_revision or 'base'} -> {passing.target_revision}, source {passing.source})")
    if not revision.down_revisions:
        return result(True, "the first revision: created by `integrity init` on an empty database, nothing migrated")
    if same_files:
        newest = same_files[0]
        return result(False, f"its dry runs on this store failed (newest {newest.finished_at:%Y-%m-%d %H:%M:%S}: "
                             f"{newest.errors} errors, {newest.warnings} warnings); fix the revision and dry-run it again")
    # Live is already at it, so the dry run that is missing has to start from a copy of
    # before it: a backup taken before the upgrade.
    how = (f"dry-run it on a backup from before it (`integrity migrate dry-run --from-backup ID --to {revision.id}`), "
           f"or roll back (`integrity restore --before-migration {revision.id}`)")
    if ran:
        return result(False, f"passed no dry run on this store with this {Path(revision.path).name} (dry-run with "
                             f"sha256 {dict(ran[0].revisions)[revision.id][:12]}, now {revision.sha256[:12]}); {how}")
    return result(False, f"never dry-run on this store (applied without `integrity migrate apply`?); {how}")
