"""Restore to a point in time (issue 16): `integrity restore --to-time TIME` and
`--before-migration REVISION`, on the archive of the point-in-time engine (Litestream
for SQLite, pgBackRest for PostgreSQL; integrity.pitr).

A moment is restored the way a backup is, through the same plan, consent, safety backup,
staging, checks, atomic swap and salvage (integrity.recovery.restore): it is first
MATERIALISED AS A BACKUP.

    point-in-time   the engine restores the guarded database as it was at the moment into
                    a claimed scratch copy (a file, or a scratch cluster), refused outside
                    its window (exit 4, naming the window)
    materialise     `create_backup` takes that copy as its source: a backup of purpose
                    "point-in-time" whose manifest records {engine, moment, window, asked};
                    like a safety backup it is restored only when named by id (`latest`,
                    drills and retention's keep_* never count it), and `backup list` shows it
    restore         the normal restore of that backup id: plan, consent, lock, verify,
                    staging, verify-staging, safety backup, swap, post-check, salvage

Consent is asked after the plan is known, as for any restore; a run that cannot ask
(--no-input or no terminal, without --yes) is refused before the engine restores anything.

A dry run writes nothing, not even the repository: the engine restores into scratch, and
the preview is computed from that copy against live (counts, rows removed, brought back and
rewritten by primary key, the copy's revision, identity and audits), then the copy is
removed. The restore's own plan (the backup's journal states, the staging place, the
sessions to end) needs a backup in the repository, which only the real run makes.

`--before-migration REVISION`: the moment is the start of the newest `migrate apply` run
that applied REVISION (the ledger's runs; `ApplyReport.summary()` records `applied`), minus
one resolution step of the engine (`[pitr] resolution_seconds`, at least 1 s): the run
starts before its pinned backup and the upgrade, so that moment is before the change.
A revision the ledger never saw applied (alembic run by hand, another install's ledger) is
found from the archive (`moment_before_migration`, integrity.pitr.search): the window is
bisected for the first moment whose restored copy has the revision in alembic_version (or a
revision descending from it), a restore per probe; the moment is the newest one without it.
Not applied at the newest restorable point, or already at the oldest: exit 4.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from game_core.errors import ExitCode, PreconditionFailed
from integrity.recovery.consent import Consent
from integrity.timeparse import utc_text

PHASE = "point-in-time"
# Runs of `migrate apply` read when looking for a revision's: they are rare (one per deploy).
MIGRATE_RUNS_SCANNED = 10_000


class MigrationNotRecorded(PreconditionFailed):
    """The ledger holds no `migrate apply` run that applied the revision."""


# ---------------------------------------------------------------- what was asked


@dataclass(frozen=True)
class PointInTime:
    """The moment restored and where it came from: the engine and its window when read."""

    engine: str  # "litestream" | "pgbackrest"
    moment: datetime
    window_oldest: datetime | None
    window_newest: datetime | None
    asked: str  # what the operator gave: "--to-time 10 minutes ago", "--before-migration 0002_x"

    def record(self) -> dict:
        """The manifest's `point_in_time` field (integrity.backups.repository.Manifest)."""
        return {
            "engine": self.engine,
            "moment": self.moment.isoformat(),
            "window": {"oldest": _iso(self.window_oldest), "newest": _iso(self.window_newest)},
            "asked": self.asked,
        }

    def describe(self) -> str:
        return f"the database as it was at {utc_text(self.moment)} ({self.engine})"

    def label(self) -> str:
        """The materialised backup's label, as `backup list` shows it."""
        return f"point in time {utc_text(self.moment)} ({self.engine})"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True)
class MigrationMoment:
    """The moment just before a revision was applied, and how it was found."""

    revision: str
    moment: datetime
    applied_at: datetime  # when the change started, as far as it is known
    found: str  # how, for the operator: "applied by migrate apply run 9f3c... (the ledger); ...", or from the archive


def moment_before_migration(settings, ledger, revision: str) -> MigrationMoment:
    """The moment one resolution step before `revision` was applied to the guarded database.

    From the ledger: the newest `migrate apply` run whose summary lists `revision` among
    the revisions it applied. A revision applied behind the tool's back (no such run): the
    newest restorable moment without it, bisected from the archive (`_from_the_archive`)."""
    step = timedelta(seconds=max(settings.pitr.resolution_seconds, 1.0))
    run = _apply_run(ledger, revision)
    if run is None:
        return _from_the_archive(settings, ledger, revision)
    return MigrationMoment(revision=revision, moment=run.started_at - step, applied_at=run.started_at,
                           found=(f"applied by migrate apply run {run.id} started {utc_text(run.started_at)} (the ledger); "
                                  "restoring one resolution step earlier"))


def _from_the_archive(settings, ledger, revision: str) -> MigrationMoment:
    from integrity.db.connect import Database
    from integrity.pitr import engine_for
    from integrity.pitr.search import first_moment_with_revision

    engine = engine_for(settings)
    search = first_moment_with_revision(engine, Database.of(settings), settings.state.dir / "scratch", revision)
    where = "there is no ledger to read" if ledger is None else "the ledger holds no `integrity migrate apply` run that applied it"
    if search.first_dirty is None:
        raise MigrationNotRecorded(
            f"revision {revision!r} was never applied by this tool ({where}), and the {engine.name} archive does not "
            f"have it at its newest restorable point {utc_text(search.upper)}: it was never applied here, or not yet "
            "shipped; give the moment yourself with --to-time TIME (`integrity pitr status` shows the restorable window, "
            "`integrity history --kind migrate` the runs)")
    if search.found is None:
        raise MigrationNotRecorded(
            f"revision {revision!r} was never applied by this tool ({where}), and the {engine.name} archive has it "
            f"already at its oldest restorable point {utc_text(search.lower)}: it was applied before the archive "
            "begins; restore a backup taken before it (`integrity backup list`)")
    return MigrationMoment(
        revision=revision, moment=search.found, applied_at=search.first_dirty,
        found=(f"found in the {engine.name} archive ({len(search.probes)} restores): not applied at "
               f"{utc_text(search.found)}, applied at {utc_text(search.first_dirty)}; the ledger holds no `migrate apply` "
               f"run of it (applied behind the tool's back); restoring {utc_text(search.found)}"))


def _apply_run(ledger, revision: str):
    if ledger is None:
        return None
    for run in ledger.runs(kind="migrate apply", limit=MIGRATE_RUNS_SCANNED):  # newest first
        applied = run.summary.get("applied") if isinstance(run.summary, dict) else None
        if run.command == "migrate apply" and isinstance(applied, list) and revision in applied:
            return run
    return None


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class PointInTimePreview:
    """A dry run's view of the moment: the engine's copy against live, nothing written."""

    database: str  # live (masked URL or path)
    copy: str  # the scratch copy it was read from (removed)
    revision: str | None  # the copy's schema revision
    head_revision: str
    identity: str | None  # the copy's store identity
    live_identity: str | None
    changes: tuple  # integrity.recovery.restore.TableChange, one per game table
    audit: str  # "clean" | "dirty": the audits on the copy, as the staging check will run them
    violations: tuple[dict, ...]
    safety_backup: bool
    keep_newer: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PointInTimeRestore:
    """`restore --to-time` / `--before-migration`: the moment, the backup it was materialised
    as (None in a dry run), and the restore's result (or the dry run's preview)."""

    point_in_time: PointInTime
    backup_id: str | None
    outcome: object  # RestoreResult, or PointInTimePreview in a dry run
    materialise_seconds: float = 0.0
    migration: MigrationMoment | None = None

    @property
    def dry_run(self) -> bool:
        return isinstance(self.outcome, PointInTimePreview)

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK) if self.dry_run else int(self.outcome.exit_code)

    @property
    def error(self) -> str | None:
        """What went wrong after the swap (a failed salvage), as the restore says it."""
        return None if self.dry_run else self.outcome.error

    def summary(self) -> dict:
        summary = {"point_in_time": self.point_in_time.record(), "backup_id": self.backup_id, "dry_run": self.dry_run}
        if self.migration is not None:
            summary["before_migration"] = self.migration.revision
        if not self.dry_run:
            summary["restore"] = self.outcome.summary()
        return summary


# ---------------------------------------------------------------- the operation


def restore_point_in_time(settings, moment: datetime, options, *, dry_run: bool = False, consent: Consent,
                          notify: Callable[[str], None] = lambda line: None, asked: str | None = None,
                          migration: MigrationMoment | None = None) -> PointInTimeRestore:
    """Restore the guarded database as it was at `moment` (see the module's docstring);
    `options` is the restore's (integrity.recovery.restore.RestoreOptions, its `backup`
    ignored: the materialised backup's id takes its place)."""
    from integrity.backups.create import create_backup
    from integrity.backups.repository import POINT_IN_TIME, Repository
    from integrity.pitr import engine_for, require_enabled
    from integrity.recovery.restore import apply_restore, plan_restore

    require_enabled(settings)
    Repository.of(settings).require_exists()  # before the engine restores anything (minutes on a big database)
    if not dry_run:
        consent.require_possible(f"restore the database as it was at {utc_text(moment)}")
    engine = engine_for(settings)
    window = engine.window()
    point = PointInTime(engine.name, moment, window.oldest, window.newest, asked or f"--to-time {utc_text(moment)}")
    started = time.perf_counter()
    with engine.restored_at(moment, settings.state.dir / "scratch", window=window) as copy:
        if dry_run:
            return PointInTimeRestore(point, None, _preview(settings, copy, options), migration=migration)
        created = create_backup(settings, label=point.label(), lock_wait=options.lock_wait,
                                command=options.command, purpose=POINT_IN_TIME, source=copy.target,
                                point_in_time=point.record())
        backup_id = created.manifest.id
        seconds = time.perf_counter() - started
        notify(f"{PHASE:<15}{seconds:8.2f}s  {copy.description}, materialised as backup {backup_id}")
    options = replace(options, backup=backup_id)
    plan = plan_restore(settings, options)
    result = apply_restore(settings, plan, options, consent=consent, notify=notify)
    return PointInTimeRestore(point, backup_id, result, materialise_seconds=seconds, migration=migration)


def _preview(settings, copy, options) -> PointInTimePreview:
    """The copy against live, read only: what the restore would change, by primary key."""
    import checks
    from game_core.schema_state import current_revision, head_revision
    from integrity.backups.statistics import store_identity, table_statistics
    from integrity.db.connect import Database, one_snapshot
    from integrity.db.sql import table_row_counts
    from integrity.recovery.restore import TableChange
    from integrity.tablediff import backup_live as diff

    live_database = Database.of(settings)
    warnings: list[str] = []
    with live_database.beside(copy.target).reader() as copy_engine, live_database.reader() as live_engine, \
            copy_engine.connect() as at_moment, live_engine.connect() as live:
        at_moment, live = one_snapshot(at_moment), one_snapshot(live)
        statistics = table_statistics(at_moment)
        revision, identity = current_revision(at_moment), store_identity(at_moment)
        report = checks.run_audits(at_moment)
        try:
            live_counts = {table: info["rows"] for table, info in table_statistics(live).items()}
        except sa.exc.DBAPIError:  # a column the damage retyped cannot be summed: the counts still tell
            live.rollback()
            live_counts = table_row_counts(live)
        try:
            live_identity = store_identity(live)
        except sa.exc.DBAPIError:
            live.rollback()
            live_identity = None
        rows = {}
        for table in diff.check_tables(None):
            if table not in statistics or table not in live_counts:
                continue  # missing on one side: the counts say so
            try:
                rows[table] = diff.diff_table(live, at_moment, table, sample_limit=3)
            except (diff.LayoutDiffers, sa.exc.DBAPIError):  # retyped or dropped since the moment
                live.rollback()
                at_moment.rollback()
    changes = tuple(
        TableChange(table, live_counts.get(table), info["rows"],
                    **({} if table not in rows else {"only_live": rows[table].only_live, "only_backup": rows[table].only_backup,
                                                     "changed": rows[table].changed,
                                                     "changed_columns": dict(rows[table].changed_columns)}))
        for table, info in statistics.items()
    )
    head = head_revision()
    if live_identity and identity and live_identity != identity:
        warnings.append(f"the archive's copy is of another store ({identity}) than live ({live_identity}): check "
                        "[pitr] repository; the restore refuses it without --force-other-source")
    if revision != head:
        warnings.append(f"at that moment the database was at revision {revision}, not this code's head {head}")
    if not report.ok:
        warnings.append("the data at that moment fails the audits (violations below): the restore would ask again "
                        "before putting DIRTY data back; an earlier moment may be clean")
    violations = tuple({"rule": f.rule.id, "severity": f.rule.severity, "failing_rows": f.failing_rows}
                       for f in report.violations)
    return PointInTimePreview(
        database=live_database.display, copy=copy.description, revision=revision, head_revision=head,
        identity=identity, live_identity=live_identity, changes=changes, audit="clean" if report.ok else "dirty",
        violations=violations, safety_backup=options.safety_backup, keep_newer=options.keep_newer,
        warnings=tuple(warnings),
    )
