"""`integrity restore`: plan, then apply (Litestream's CalcRestorePlan, then restore).

`plan_restore` only reads: it resolves the backup, checks its hashes (a backup that is
not intact is refused, exit 5), its engine, store identity and schema revision against
live and this code, compares the manifest's counts and aggregates with live's, and
names the safety backup it would take. `--dry-run` prints it and stops.

`apply_restore` performs it, each phase timed, printed and recorded:

    lock            the repository's writer lock and the database's (invariant 6)
    verify          the backup's hashes again, under the lock (invariant 4)
    staging         the backup restored beside live (a file in the state directory, or
                    a `<live>_restore_<id>` database), never into live
    verify-staging  engine check, counts and aggregates against the manifest, revision,
                    store identity, then `checks.run_audits`
    safety-backup   a backup of live as it is now, pinned for [restore] safety_pin_hours
    swap            SQLite: the backup API into the live file in one transaction;
                    PostgreSQL: two renames in one transaction (postgres_swap.py)
    post-check      live now holds what the manifest says
    salvage         with --keep-newer: rows only the pre-restore data holds (salvage.py)
    cleanup         the staging copy is removed

No write the game is told was saved is lost (issue 14): the safety backup is taken last,
right before the swap, where the engine can account for every write after it. SQLite
takes it inside the swap's write transaction, so the game's writers wait from the start
of the safety backup to the commit (and fail loudly after their busy timeout, never
"saved" and then overwritten). PostgreSQL takes it just before the rename, which keeps
live as it is at that moment (`<live>_before_restore_<time>`): a write committed after
the safety backup is there, and `--keep-newer` salvages from that database.

Invariant 5: until the swap commits, live is untouched; a failure before it removes the
staging copy and re-raises, a kill leaves a staging copy that the next restore of the
same database removes (and says so). Named crash points (`restore:<phase>`) let the
tests kill the process at each boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from game_core.db import DatabaseTarget
from game_core.errors import DatabaseUnreachable, ExitCode, Failure, PreconditionFailed
from game_core.schema_state import MIGRATE_HINT, current_revision
from integrity.backups.catalog import SAFETY_LABEL_PREFIX, BackupState, fold_journal, is_safety, pin, resolve_backup, with_manifest_facts
from integrity.backups.repository import AuditVerdict, BackupCorrupt, Event, Manifest, Repository
from integrity.backups.statistics import AGGREGATES, compare_statistics, store_identity, table_statistics
from integrity.backups.verify import engine_check, quick_verify
from integrity.crashpoints import crash_point
from integrity.db.connect import Database, guarded_target, one_snapshot
from integrity.db.engines import Staged, engine_for
from integrity.db.locks import database_lock
from integrity.db.sql import error_reason, table_row_counts
from integrity.errors import VerificationFailed
from integrity.phases import Phase, PhaseTimer
from integrity.recovery.consent import Consent, database_name
from integrity.settings import Settings



class EngineMismatch(PreconditionFailed):
    """The backup is of another engine than the live database."""


class OtherSource(PreconditionFailed):
    """The backup is of another store (its identity differs from live's)."""


class NotTheGameStore(PreconditionFailed):
    """Live holds tables but is not the game's store: a restore would wipe another application's data."""


class RevisionUnknown(PreconditionFailed):
    """The backup's schema revision is not in this code's history (newer code wrote it)."""


class BackupNotIntact(VerificationFailed):
    """The backup's hashes do not match; it is never restored."""


class StagingInvalid(VerificationFailed):
    """The staging copy does not hold what the manifest says; live was not touched."""


class PostCheckFailed(VerificationFailed):
    """After the swap, live does not hold what the manifest says."""


# ---------------------------------------------------------------- options and plan


@dataclass(frozen=True)
class RestoreOptions:
    backup: str  # a backup id, or "latest"
    safety_backup: bool = True
    terminate_connections: bool = False
    force_other_source: bool = False
    keep_newer: bool = False
    lock_wait: float = 0
    command: str = "restore"


@dataclass(frozen=True)
class TableChange:
    """One table, live against the backup: rows now, rows after, aggregates that differ."""

    table: str
    live_rows: int | None  # None: the table is missing from live
    backup_rows: int
    differing: tuple[str, ...] = ()
    # Row by row, keyed by primary key (a dry run compares a scratch copy with live):
    only_live: int | None = None  # rows the restore removes
    only_backup: int | None = None  # rows it brings back
    changed: int | None = None  # rows it rewrites
    changed_columns: dict[str, int] = field(default_factory=dict)

    @property
    def delta(self) -> int:
        return self.backup_rows - (self.live_rows or 0)

    @property
    def changes(self) -> bool:
        rows = (self.only_live or 0) + (self.only_backup or 0) + (self.changed or 0)
        return self.live_rows != self.backup_rows or bool(self.differing) or rows > 0


@dataclass(frozen=True)
class RestorePlan:
    backup_id: str
    created_at: str
    age_seconds: int
    label: str | None
    engine: str
    database: str  # masked URL or path
    database_name: str  # what a typed confirmation must match
    live_exists: bool
    states: tuple[str, ...]
    deep_verified: bool
    audit: AuditVerdict | None  # None: never audited
    backup_revision: str | None
    head_revision: str
    revision: str  # "current" or "older" (a newer or unknown one is refused)
    backup_identity: str | None
    live_identity: str | None
    changes: tuple[TableChange, ...]
    backup_violations: tuple[dict, ...] = ()
    live_violations: tuple[dict, ...] | None = None  # audited only for a dirty backup
    safety_backup: str | None = None  # the label it will get; None when skipped
    safety_pinned_hours: int | None = None
    sessions: tuple = ()  # PostgreSQL sessions on live now (postgres_swap.Session)
    staging: str = ""
    leftovers: tuple[str, ...] = ()
    keep_newer: bool = False
    warnings: tuple[str, ...] = ()
    # Live's tables (and views) that are gone after the restore: the swap replaces the
    # whole database. Exact when a copy of the backup was opened (the dry run); otherwise
    # every table the manifest does not name, which a backup may still hold.
    disappearing: tuple[str, ...] = ()
    disappearing_exact: bool = False
    live_tables: tuple[str, ...] = ()
    game_backup: bool = True  # False: a safety backup of a database that is not the game's

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {
            "backup_id": self.backup_id,
            "dry_run": True,
            "states": list(self.states),
            "revision": self.revision,
            "changes": {c.table: c.delta for c in self.changes if c.changes},
            "disappearing": list(self.disappearing),
            "warnings": len(self.warnings),
        }


def plan_restore(settings: Settings, options: RestoreOptions, *, row_diff: bool = False, now: datetime | None = None) -> RestorePlan:
    """What a restore would do, or a refusal (exit 4 or 5); reads only.

    `row_diff` (the dry run) also restores the backup into scratch and compares it with
    live row by row (`integrity.tablediff.backup_live`): the rows the restore would remove,
    bring back and rewrite. A real restore skips it: it costs a scratch restore, and the
    staging copy is checked anyway.
    """
    now = now or datetime.now(timezone.utc)
    repository = Repository.of(settings)
    repository.require_exists()
    target = guarded_target(settings)
    live = _live_facts(settings, target)
    backup_id = resolve_backup(repository, options.backup, live.identity)
    manifest = _intact_manifest(repository, backup_id, options.command)
    game_backup = manifest.source_identity is not None or manifest.revision is not None
    # A safety backup goes back where it came from, whatever that database is: it holds
    # exactly what was there before a restore replaced it.
    database_engine = engine_for(Database.of(settings))
    homecoming = is_safety(manifest) and database_engine.took(manifest)
    warnings = _check_source(manifest, target, live, options, game_backup=game_backup, homecoming=homecoming)
    refusal = database_engine.restore_refusal()
    if refusal:
        raise PreconditionFailed(refusal)
    relation, head = _revision_relation(manifest.revision)
    relation = _check_revision(manifest, relation, head, warnings, game_backup=game_backup, homecoming=homecoming)
    backup = _backup_facts(settings, repository, manifest, live, now, warnings)
    _check_live(target, live, options, warnings)

    staging = database_engine.plan_staging(manifest, state_dir=settings.state.dir)
    found = live.leftovers
    if found:
        warnings.append(f"leftovers of an interrupted restore will be removed: {', '.join(found)}")
    rows: dict = {}
    backup_tables = {*manifest.tables, "alembic_version"} if game_backup else set()
    if row_diff and live.exists:
        rows, backup_tables = _row_differences(settings, repository, manifest, target, options.command)
    safety = options.safety_backup and live.exists
    return RestorePlan(
        backup_id=backup_id, created_at=manifest.created_at, age_seconds=int((now - manifest.created).total_seconds()),
        label=manifest.label, engine=manifest.engine, database=target.display, database_name=database_name(target),
        live_exists=live.exists, states=backup.states, deep_verified=backup.state.deep_verified,
        audit=backup.state.audit, backup_revision=manifest.revision, head_revision=head, revision=relation,
        backup_identity=manifest.source_identity, live_identity=live.identity,
        changes=_changes(manifest, live.statistics, rows),
        backup_violations=backup.violations, live_violations=backup.live_violations,
        safety_backup=safety_label(backup_id) if safety else None,
        safety_pinned_hours=settings.restore.safety_pin_hours if safety else None,
        sessions=tuple(live.sessions), staging=staging, leftovers=tuple(found), keep_newer=options.keep_newer,
        warnings=tuple(warnings),
        disappearing=tuple(t for t in live.tables if _bare(t) not in backup_tables),
        disappearing_exact=bool(row_diff and live.exists), live_tables=live.tables, game_backup=game_backup,
    )


def _intact_manifest(repository: Repository, backup_id: str, command: str) -> Manifest:
    """The backup's manifest once every hash matched; a backup that is not intact is refused (exit 5)."""
    try:
        return quick_verify(repository, backup_id)
    except BackupCorrupt as exc:
        repository.record_quick_check(backup_id, problem=str(exc), by=command)
        raise BackupNotIntact(f"{exc}; a backup that is not intact is never restored: choose another with `integrity backup list`") from None


def _check_source(manifest: Manifest, target: DatabaseTarget, live: _Live, options: RestoreOptions, *,
                  game_backup: bool, homecoming: bool) -> list[str]:
    """Refusals (exit 4) of a backup that does not belong on this database; the warnings
    about what it is of and what live is."""
    backup_id = manifest.id
    if manifest.engine != target.kind:
        raise EngineMismatch(
            f"backup {backup_id} is a {manifest.engine} backup but the database {target.display} is {target.kind}; "
            "a restore never converts between engines: restore a backup of this database"
        )
    warnings: list[str] = []
    if live.exists and live.kind == FOREIGN and not homecoming:
        raise NotTheGameStore(
            f"{target.display} is not the typing game's database (no store identity, no schema revision of the "
            f"game) and holds {_listed(live.tables)}: a restore replaces the whole database, so they would be gone; "
            "check --database-url / [database] url (a safety backup a restore took of this database can be "
            "restored onto it by id); nothing was changed"
        )
    if not game_backup and not homecoming:
        where = manifest.source.get("path") or manifest.source.get("database") or manifest.source_url
        raise OtherSource(
            f"backup {backup_id} is not of a game database (no store identity, no schema revision): it is the copy "
            f"of {where} a restore took, and it is restored only onto the database it was taken of; "
            "point --database-url there; nothing was changed"
        )
    if not game_backup and options.keep_newer:
        raise PreconditionFailed(
            f"--keep-newer re-applies the game's players and results, and backup {backup_id} is not of a game "
            "database; run without it"
        )
    if live.identity and manifest.source_identity and live.identity != manifest.source_identity:
        if not options.force_other_source:
            raise OtherSource(
                f"backup {backup_id} is of another store (identity {manifest.source_identity}) than {target.display} "
                f"(identity {live.identity}); check --database-url and [backups] repository, or run again with "
                "--force-other-source to replace this store's data with the other's"
            )
        warnings.append(f"the backup is of another store ({manifest.source_identity}); live's data ({live.identity}) will be replaced")
    elif live.exists and live.identity is None and live.kind == GAME:
        warnings.append("live has no readable store identity (store_identity missing or empty): cannot prove the backup is of this store")
    elif live.exists and live.kind == FOREIGN:
        warnings.append(f"live is not the game's database: this safety backup brings back what {target.display} held before a restore replaced it")
    return warnings


def _check_revision(manifest: Manifest, relation: str, head: str, warnings: list[str], *, game_backup: bool,
                    homecoming: bool) -> str:
    """The backup's revision against this code's ("current", "older", "none" for a backup
    that is not the game's, or "unknown" for a safety backup going home); a revision this
    code does not know is refused (exit 4)."""
    backup_id = manifest.id
    if not game_backup:
        relation = "none"
        warnings.append(
            f"backup {backup_id} is not the game's data: it is restored as it was taken, without the game's checks "
            "(the staging copy gets the engine check, no audits)"
        )
    elif relation == "unknown" and homecoming:
        warnings.append(f"the backup is at revision {manifest.revision}, which this code does not know: the game refuses "
                        "that database until the version that wrote it runs")
    elif relation == "unknown":
        raise RevisionUnknown(
            f"backup {backup_id} is at schema revision {manifest.revision}, which this code does not know (its head is "
            f"{head}): a newer version of the game wrote it; restore it with that version, or choose an older backup"
        )
    if relation == "older":
        warnings.append(f"the backup is at revision {manifest.revision}, behind this code's head {head}: after the restore, {MIGRATE_HINT}")
    return relation


@dataclass(frozen=True)
class _BackupFacts:
    state: BackupState
    states: tuple[str, ...]
    violations: tuple[dict, ...]
    live_violations: tuple[dict, ...] | None


def _backup_facts(settings: Settings, repository: Repository, manifest: Manifest, live: _Live, now: datetime,
                  warnings: list[str]) -> _BackupFacts:
    """What the journal says of the backup (states, verification, audit), warned about."""
    backup_id = manifest.id
    if is_safety(manifest):
        warnings.append(
            f"this is the safety backup a restore took ({manifest.label!r}): live's data as it was before that "
            "restore, damage included"
        )
    state = with_manifest_facts(fold_journal(repository.journal()).get(backup_id, BackupState()), manifest)
    states = tuple(state.labels(now))
    if state.suspect:
        warnings.append("the backup is SUSPECT: " + "; ".join(state.suspect_reasons))
    if state.failed:
        warnings.append(f"a restore or drill of this backup FAILED verification ({'; '.join(state.problems) or 'see backup show'})")
    backup_violations: tuple[dict, ...] = ()
    live_violations = None
    if not state.deep_verified:
        if state.deep_failed:
            warnings.append(f"the backup FAILED deep verification ({'; '.join(state.problems) or 'see backup show'}); the staging checks will tell whether it can be restored")
        else:
            warnings.append("the backup was never deep-verified; the restore verifies its staging copy before the swap")
    if state.audit is AuditVerdict.DIRTY:
        backup_violations = _journal_violations(repository, backup_id)
        live_violations = _live_violations(settings) if live.exists else None
        warnings.append(
            "the backup holds DIRTY data (audit violations below): restoring it brings them back; "
            "prefer a clean backup if there is one (`integrity backup list`)"
        )
    return _BackupFacts(state, states, backup_violations, live_violations)


def _check_live(target: DatabaseTarget, live: _Live, options: RestoreOptions, warnings: list[str]) -> None:
    if not live.exists:
        if options.keep_newer:
            raise PreconditionFailed(f"--keep-newer: the live database {target.display} does not exist, so there is nothing newer to keep; run without it")
        warnings.append(f"the live database {target.display} does not exist: the restore creates it (no safety backup needed)")
    elif not options.safety_backup:
        warnings.append("--no-safety-backup: the data live holds now is lost for good after the swap")


def safety_label(backup_id: str) -> str:
    return f"{SAFETY_LABEL_PREFIX}{backup_id}"


GAME = "game"  # the game's store (its identity, or a revision of the game's history), damaged or not
EMPTY = "empty"  # no tables at all
FOREIGN = "foreign"  # tables, none of them proving the game's


@dataclass(frozen=True)
class _Live:
    exists: bool
    identity: str | None = None
    statistics: dict = field(default_factory=dict)
    sessions: list = field(default_factory=list)
    leftovers: list = field(default_factory=list)
    tables: tuple[str, ...] = ()  # every table and view, `schema.name` outside PostgreSQL's public
    revision: str | None = None

    @property
    def kind(self) -> str:
        if self.identity is not None or _revision_relation(self.revision)[0] != "unknown":
            return GAME
        return FOREIGN if self.tables else EMPTY


def table_names(connection) -> tuple[str, ...]:
    """Every table and view a database holds (what a restore replaces), sorted."""
    if connection.dialect.name == "sqlite":
        rows = connection.execute(sa.text(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite^_%' ESCAPE '^'"
        ))
        return tuple(sorted(name + (" (view)" if kind == "view" else "") for name, kind in rows))
    rows = connection.execute(sa.text(
        "SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END, c.relkind "
        "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg^_toast%' ESCAPE '^' "
        "AND n.nspname NOT LIKE 'pg^_temp^_%' ESCAPE '^'"
    ))
    return tuple(sorted(name + (" (view)" if kind in ("v", "m") else "") for name, kind in rows))


def _bare(name: str) -> str:
    return name.removesuffix(" (view)")


def _listed(tables: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(tables[:limit]) + (f" and {len(tables) - limit} more" if len(tables) > limit else "")
    return f"{len(tables)} table(s): {shown}"


def _live_facts(settings: Settings, target: DatabaseTarget) -> _Live:
    """Identity, counts and aggregates of live, read only; a missing live is a fact, not an error."""
    database_engine = engine_for(Database.of(settings))
    presence = database_engine.presence(state_dir=settings.state.dir)
    sessions, found = list(presence.sessions), list(presence.leftovers)
    if not presence.exists:
        return _Live(exists=False, leftovers=found)
    opened = ExitStack()
    try:
        engine = opened.enter_context(Database.of(settings).reader())
    except DatabaseUnreachable as exc:
        hint = database_engine.unopenable_live_hint()
        if hint is None:
            raise
        raise DatabaseUnreachable(f"{getattr(exc, 'cause', exc)}; {hint}") from None
    with opened, engine.connect() as connection:
        try:
            statistics = table_statistics(connection)
        except sa.exc.DBAPIError:
            # A column whose type the incident changed cannot be summed (PostgreSQL
            # refuses SUM(text)): the counts still say something.
            connection.rollback()
            statistics = {t: {"rows": n, "aggregates": None} for t, n in table_row_counts(connection).items()}
        try:
            identity = store_identity(connection)
        except sa.exc.DBAPIError:  # a damaged store_identity table: reported as unknown
            connection.rollback()
            identity = None
        try:
            revision = current_revision(connection)
        except sa.exc.DBAPIError:  # a damaged alembic_version: no proof of the game either
            connection.rollback()
            revision = None
        tables = table_names(connection)
    return _Live(exists=True, identity=identity, statistics=statistics, sessions=sessions, leftovers=found,
                 tables=tables, revision=revision)


def _revision_relation(revision: str | None) -> tuple[str, str]:
    """("current" | "older" | "unknown", head) of a backup's revision against this code."""
    # The module attribute, looked up at call time: tests swap the history in.
    from game_core import schema_state

    script = schema_state._script_directory()
    head = script.get_current_head()
    if revision == head:
        return "current", head
    if revision is None:
        return "unknown", head
    try:
        known = script.get_revision(revision) is not None
    except Exception:  # alembic raises a ResolutionError subclass for unknown ids
        known = False
    return ("older" if known else "unknown"), head


def _journal_violations(repository: Repository, backup_id: str) -> tuple[dict, ...]:
    entries = [e for e in repository.journal() if e.backup_id == backup_id and e.event in (Event.CLEAN, Event.DIRTY)]
    return tuple(entries[-1].detail.get("violations", ())) if entries else ()


def _violations(report) -> tuple[dict, ...]:
    return tuple(
        {"rule": f.rule.id, "severity": f.rule.severity, "failing_rows": f.failing_rows} for f in report.violations
    )


def _live_violations(settings: Settings) -> tuple[dict, ...]:
    import checks

    with Database.of(settings).snapshot() as connection:
        return _violations(checks.run_audits(connection))


def _changes(manifest: Manifest, live: dict[str, dict], rows: dict) -> tuple[TableChange, ...]:
    changes = []
    for table, info in manifest.tables.items():
        now = live.get(table)
        differing = ()
        if now is not None and now["aggregates"] is not None:
            differing = tuple(
                name for name, value in info.get("aggregates", {}).items() if now["aggregates"].get(name) != value
            )
        diff = rows.get(table)
        extra = {} if diff is None else {
            "only_live": diff.only_live, "only_backup": diff.only_backup, "changed": diff.changed,
            "changed_columns": dict(diff.changed_columns),
        }
        changes.append(TableChange(table, None if now is None else now["rows"], info["rows"], differing, **extra))
    return tuple(changes)


def _row_differences(settings: Settings, repository: Repository, manifest: Manifest, target: DatabaseTarget,
                     command: str) -> tuple[dict, set[str]]:
    """({table: TableDiff} of live against a scratch copy of the backup, the copy's tables);
    a table whose layout differs on one side (dropped, altered) is left to the counts. The copy is first
    checked against its manifest, as the real restore's staging copy would be: a plan that
    says "after restore N rows" must never stand beside a copy that holds none (a
    schema-only dump), so such a backup fails here (exit 5) and is journalled failed."""
    from integrity.tablediff import backup_live as diff

    live_database = Database.of(settings)
    found = {}
    with repository.reading(manifest.id, command="restore --dry-run"), engine_for(live_database).restored_copy(
        repository, manifest, scratch_dir=settings.state.dir / "scratch",
    ) as copy, live_database.beside(copy.target).reader() as backup_engine, live_database.reader() as live_engine:
        with backup_engine.connect() as backup, _journal_failure(repository, manifest.id, command, "restore --dry-run"):
            problems = compare_statistics(manifest.tables, table_statistics(backup))
            if problems:
                raise StagingInvalid(
                    f"the restored copy of backup {manifest.id} does not hold what its manifest says: "
                    f"{'; '.join(problems[:5])}; it cannot be restored: choose another with `integrity backup list`"
                )
            backup_tables = {_bare(name) for name in table_names(backup)}
        with live_engine.connect() as live, backup_engine.connect() as backup:
            live = one_snapshot(live)
            live_tables = set(sa.inspect(live).get_table_names())
            for table in diff.check_tables(None):
                if table not in live_tables or table not in backup_tables:
                    continue  # missing on one side: the counts say so
                try:
                    found[table] = diff.diff_table(live, backup, table, sample_limit=3)
                except (diff.LayoutDiffers, sa.exc.DBAPIError):
                    # Dropped or retyped by the incident: the counts above say what they can.
                    live.rollback()
                    backup.rollback()
    return found, backup_tables


# ---------------------------------------------------------------- apply


@dataclass(frozen=True)
class PhaseTiming:
    name: str
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class RestoreResult:
    plan: RestorePlan
    phases: tuple[PhaseTiming, ...]
    total_seconds: float
    consent: str  # how it was given: "--yes" or "typed"
    safety_backup_id: str | None = None
    safety_pinned_until: str | None = None
    staging_audit: AuditVerdict | None = None
    staging_violations: tuple[dict, ...] = ()
    old_database: str | None = None  # PostgreSQL: live before the restore, kept
    drop_old_database: str | None = None
    terminated: tuple = ()
    removed_leftovers: tuple[str, ...] = ()
    removed_tables: tuple[str, ...] = ()  # live's tables the restored database does not hold
    post_check: str = ""
    salvage: object | None = None  # salvage.SalvageReport
    next_steps: tuple[str, ...] = ()
    error: str | None = None  # the restore succeeded but salvage did not

    @property
    def exit_code(self) -> int:
        if self.error:
            return int(ExitCode.VERIFICATION_FAILED)
        # Restored, but what live holds now fails its audits (a dirty backup, restored with
        # consent): a script and the on-call engineer must not read that as "all well".
        return int(ExitCode.PROBLEMS_FOUND) if self.staging_audit is AuditVerdict.DIRTY else 0

    def summary(self) -> dict:
        summary = {
            "backup_id": self.plan.backup_id,
            "safety_backup_id": self.safety_backup_id,
            "phases": {phase.name: round(phase.seconds, 3) for phase in self.phases},
            "total_seconds": round(self.total_seconds, 3),
            "consent": self.consent,
            "audit": self.staging_audit,
        }
        if self.old_database:
            summary["old_database"] = self.old_database
        if self.salvage is not None:
            summary["salvage"] = self.salvage.summary()
        return summary


def _phase_line(phase: Phase) -> str:
    return f"{phase.name:<15}{phase.seconds:8.2f}s  {phase.detail}".rstrip()


def apply_restore(
    settings: Settings,
    plan: RestorePlan,
    options: RestoreOptions,
    *,
    consent: Consent,
    notify: Callable[[str], None] = lambda line: None,
) -> RestoreResult:
    """Perform a plan; live stays exactly as it was unless the swap commits."""
    crash_point("restore:planned")
    how = consent.confirm(
        f"restore backup {plan.backup_id} over {plan.database} (its current data is replaced)",
        expected=plan.database_name, subject=plan,
    )
    terminate = options.terminate_connections
    if plan.sessions and not terminate:
        terminate = _consent_to_end_sessions(consent, plan, list(plan.sessions))
    # The recovery time is the machine's: it starts once consent is given, however long
    # the operator took to type it.
    started = time.perf_counter()
    run = _Applying(
        settings=settings, plan=plan, options=options, consent=consent, how=how, notify=notify,
        repository=Repository.of(settings), target=guarded_target(settings), restorer=_Restorer(settings),
        # A failed phase is not announced: its error is the message the operator gets.
        phases=PhaseTimer(on_end=lambda phase: notify(_phase_line(phase)) if phase.ok else None),
    )
    with ExitStack() as locks:
        manifest = _lock_and_verify(run, locks)
        with run.phases.phase("staging") as phase:
            run.outcome["removed_leftovers"] = tuple(run.restorer.remove_leftovers())
            run.restorer.stage(run.repository, manifest)
            phase.detail = run.restorer.staging_description
        try:
            crash_point("restore:staged")
            _verify_staging(run, manifest)
            crash_point("restore:staging-verified")
            _swap(run, terminate)
        except BaseException:
            run.restorer.discard_staging()
            raise
        crash_point("restore:swapped")
        try:
            error = _after_swap(run, manifest)
        finally:
            with run.phases.phase("cleanup"):
                run.restorer.discard_staging()
    next_steps = _next_steps(run)  # first: it adds the kept database's drop command to the outcome
    return RestoreResult(
        plan=plan,
        phases=tuple(phase.as_(PhaseTiming) for phase in run.phases.done),
        total_seconds=time.perf_counter() - started,
        consent=how,
        next_steps=next_steps,
        error=error,
        **{k: v for k, v in run.outcome.items() if k in _RESULT_FIELDS},
    )


@dataclass
class _Applying:
    """One restore being applied: what its phases share, and the facts they found for the result."""

    settings: Settings
    plan: RestorePlan
    options: RestoreOptions
    consent: Consent
    how: str  # how consent was given: "--yes" or "typed"
    notify: Callable[[str], None]
    repository: Repository
    target: DatabaseTarget
    restorer: _Restorer
    phases: PhaseTimer
    outcome: dict = field(default_factory=dict)  # RestoreResult's fields, as they become known


def _lock_and_verify(run: _Applying, locks: ExitStack) -> Manifest:
    """The writer locks (invariant 6), held until `locks` closes, then the backup's hashes again, under them (invariant 4)."""
    options = run.options
    with run.phases.phase("lock"):
        locks.enter_context(run.repository.writer_lock(command=options.command, wait_seconds=options.lock_wait))
        locks.enter_context(database_lock(run.target, state_dir=run.settings.state.dir, command=options.command,
                                          wait_seconds=options.lock_wait))
    crash_point("restore:locked")
    with run.phases.phase("verify") as phase:
        try:
            manifest = quick_verify(run.repository, run.plan.backup_id)
        except BackupCorrupt as exc:
            run.repository.record_quick_check(run.plan.backup_id, problem=str(exc), by=options.command)
            raise BackupNotIntact(f"{exc}; nothing was changed") from None
        phase.detail = f"{len(manifest.files)} file(s), {manifest.size / 1e6:,.1f} MB"
    crash_point("restore:verified")
    return manifest


def _verify_staging(run: _Applying, manifest: Manifest) -> None:
    """The staging copy holds what the manifest says and passes the audits; dirty data the
    plan did not know of needs consent again."""
    plan, outcome = run.plan, run.outcome
    with run.phases.phase("verify-staging") as phase, \
            _journal_failure(run.repository, plan.backup_id, run.options.command, "restore"):
        report, staging_tables = run.restorer.verify_staging(manifest, audit=plan.game_backup)
        bare = {_bare(name) for name in staging_tables}
        outcome["removed_tables"] = tuple(t for t in plan.live_tables if _bare(t) not in bare)
        if report is None:
            phase.detail = "counts and aggregates match the manifest; not the game's data: no audit"
        else:
            outcome["staging_audit"] = AuditVerdict.of(report.ok)
            outcome["staging_violations"] = _violations(report)
            phase.detail = f"counts and aggregates match the manifest; audit {outcome['staging_audit']}"
    if report is not None and not report.ok and plan.audit is not AuditVerdict.DIRTY:
        # The plan did not know: ask again now that the violations are known.
        run.notify("warning: the staging copy holds DIRTY data: " + "; ".join(
            f"{v['rule']}: {v['failing_rows']} rows" for v in outcome["staging_violations"] if v["severity"] == "error"))
        if run.how != "--yes":
            run.consent.confirm(f"restore DIRTY data over {plan.database}", expected=plan.database_name)


def _swap(run: _Applying, terminate: bool) -> None:
    """The swap, with the safety backup taken inside it; sessions the game opened since the
    plan are ended only with consent."""
    if not terminate:
        current = run.restorer.engine.live_sessions()  # the game may have connected since the plan
        if current:
            terminate = _consent_to_end_sessions(run.consent, run.plan, current)

    def take_safety_backup() -> None:
        # Called by the engine where no write made after it can be lost (issue 14):
        # SQLite inside the swap's write transaction, PostgreSQL just before the
        # rename that keeps live as it was then.
        with run.phases.phase("safety-backup") as phase:
            run.outcome.update(_safety_backup(run.settings, run.repository, run.plan, run.options))
            phase.detail = f"{run.outcome['safety_backup_id']} pinned until {run.outcome['safety_pinned_until']}"
        crash_point("restore:safety-backup-taken")

    with run.phases.phase("swap") as phase:
        swapped = run.restorer.swap(terminate=terminate, safety_backup=take_safety_backup if run.plan.safety_backup else None)
        run.outcome.update(swapped)
        phase.detail = run.restorer.swap_description


def _after_swap(run: _Applying, manifest: Manifest) -> str | None:
    """The post-check, then with --keep-newer the salvage; what went wrong with a salvage
    (the restore itself succeeded), or None."""
    outcome, error = run.outcome, None
    with run.phases.phase("post-check") as phase, \
            _journal_failure(run.repository, run.plan.backup_id, run.options.command, "restore post-check"):
        outcome["post_check"] = _post_check(run.settings, run.target, manifest)
        phase.detail = outcome["post_check"]
    crash_point("restore:checked")
    if run.options.keep_newer:
        with run.phases.phase("salvage") as phase:
            try:
                outcome["salvage"] = run.restorer.salvage(run.repository, outcome.get("safety_backup_id"), outcome.get("old_database"))
                phase.detail = _salvage_detail(outcome["salvage"])
            except (Failure, sa.exc.DBAPIError) as exc:
                error = _salvage_failed(exc, outcome)
                phase.detail = "failed"
        crash_point("restore:salvaged")
    return error


def _next_steps(run: _Applying) -> tuple[str, ...]:
    """What the operator does next: migrate an older revision, drop the kept database, salvage."""
    plan, outcome = run.plan, run.outcome
    next_steps = []
    if plan.revision == "older":
        next_steps.append(f"the restored database is at revision {plan.backup_revision}, behind head {plan.head_revision}: {MIGRATE_HINT}")
    if outcome.get("old_database"):
        from integrity.db.postgres_swap import drop_hint

        outcome["drop_old_database"] = drop_hint(outcome["old_database"])
        next_steps.append(
            f"the previous database is kept as {outcome['old_database']}; once you no longer need it: "
            f"{outcome['drop_old_database']}"
        )
    if not run.options.keep_newer and (outcome.get("old_database") or outcome.get("safety_backup_id")):
        source = (f"--from-database {outcome['old_database']}" if outcome.get("old_database")
                  else f"--from-backup {outcome['safety_backup_id']}")
        next_steps.append(
            f"rows written since the backup are in the pre-restore data: `integrity salvage {source} --dry-run` "
            "shows what can be re-applied"
        )
    return tuple(next_steps)


def _consent_to_end_sessions(consent: Consent, plan: RestorePlan, sessions: list) -> bool:
    """The swap ends the sessions on live: only with --terminate-connections or a typed
    confirmation that names them; otherwise exit 4 listing them, nothing changed."""
    from integrity.recovery.consent import ConsentRequired
    from integrity.db.postgres_swap import SessionsOpen, sessions_message

    try:
        consent.confirm(
            f"end these {len(sessions)} session(s) connected to {plan.database_name} at the swap",
            expected=plan.database_name, flag="--terminate-connections", given=False,
            details=["sessions connected to live now:", *(f"  {s.describe()}" for s in sessions)],
        )
    except ConsentRequired:
        raise SessionsOpen(sessions_message(plan.database_name, sessions)) from None
    return True


_RESULT_FIELDS = {
    "safety_backup_id", "safety_pinned_until", "staging_audit", "staging_violations", "old_database",
    "drop_old_database", "terminated", "removed_leftovers", "post_check", "salvage", "removed_tables",
}


def _salvage_failed(exc: Exception, outcome: dict) -> str:
    reason = str(exc)
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        reason = error_reason(exc)
    source = (f"--from-database {outcome['old_database']}" if outcome.get("old_database")
              else f"--from-backup {outcome.get('safety_backup_id')}")
    return (
        f"the restore succeeded but salvage failed and re-applied nothing: {reason}; once the cause is fixed, "
        f"run `integrity salvage {source} --yes`"
    )


@contextmanager
def _journal_failure(repository: Repository, backup_id: str, command: str, what: str):
    """A backup whose restored copy fails verification is journalled `failed`, so that no
    automatic choice (`latest`, the drill) picks it again (invariant 11)."""
    try:
        yield
    except VerificationFailed as exc:
        repository.record_failure(backup_id, f"{what}: {exc}", by=command)
        raise


def _salvage_detail(report) -> str:
    left = sum(item.rows for item in report.left_out)
    return f"re-applied {report.reapplied['players']:,} players, {report.reapplied['results']:,} results; left out {left:,}"


def _safety_backup(settings: Settings, repository: Repository, plan: RestorePlan, options: RestoreOptions) -> dict:
    from integrity.backups.create import create_backup

    try:
        created = create_backup(settings, label=plan.safety_backup, command=options.command, locks_held=True, purpose="safety")
    except Failure as exc:
        raise type(exc)(
            f"the safety backup of live failed, so nothing was restored: {exc} (to restore without one, losing "
            "live's current data: --no-safety-backup)"
        ) from None
    until = datetime.now(timezone.utc) + timedelta(hours=settings.restore.safety_pin_hours)
    change = pin(repository, created.manifest.id, until=until)
    return {"safety_backup_id": created.manifest.id, "safety_pinned_until": change.until}


# ---------------------------------------------------------------- checks of a database


def _check_copy(connection, manifest: Manifest) -> list[str]:
    """The staging copy holds exactly what the manifest says (before any audit)."""
    problems = engine_check(connection)
    problems += compare_statistics(manifest.tables, table_statistics(connection))
    revision = current_revision(connection)
    if revision != manifest.revision:
        problems.append(f"revision is {revision}, the manifest says {manifest.revision}")
    identity = store_identity(connection)
    if identity != manifest.source_identity:
        problems.append(f"store identity is {identity}, the manifest says {manifest.source_identity}")
    return problems


def _audit(connection):
    import checks

    return checks.run_audits(connection)


def _verify_copy(connection, manifest: Manifest, *, audit: bool) -> tuple[object | None, tuple[str, ...]]:
    """(the audit report, None when not audited; the copy's tables) of a checked copy."""
    problems = _check_copy(connection, manifest)
    if problems:
        raise _staging_invalid(manifest, problems)
    tables = table_names(connection)
    return (_audit(connection) if audit else None), tables


def _post_check(settings: Settings, target: DatabaseTarget, manifest: Manifest) -> str:
    """Live holds what the manifest says; rows the game wrote since the swap (ids above
    the backup's highest) are allowed and counted, anything else fails (exit 5)."""
    with Database.of(settings).reader() as engine, engine.connect() as connection:
        connection = one_snapshot(connection)
        problems = []
        if store_identity(connection) != manifest.source_identity:
            problems.append("the store identity differs from the backup's")
        if current_revision(connection) != manifest.revision:
            problems.append("the revision differs from the backup's")
        statistics = table_statistics(connection)
        differences = compare_statistics(manifest.tables, statistics)
        if not differences and not problems:
            return "live matches the manifest (counts and aggregates)"
        newer = 0
        if not problems and all(t in statistics for t in manifest.tables):
            newer, unexplained = _explained_by_new_rows(connection, manifest, statistics)
            if not unexplained:
                return f"live matches the manifest; the game has written {newer} new rows since the swap"
            differences = unexplained
    raise PostCheckFailed(
        f"after the swap, live does not hold what backup {manifest.id} holds: {'; '.join([*problems, *differences][:5])}; "
        "the safety backup holds the previous data"
    )


def _explained_by_new_rows(connection, manifest: Manifest, statistics: dict) -> tuple[int, list[str]]:
    """Rows with ids above the backup's highest are the game's, written since the swap:
    below that line players and results must match the manifest exactly, and the caches
    may differ only if there are such rows."""
    newer = 0
    unexplained = []
    for table in ("players", "results"):
        info = manifest.tables.get(table)
        if not info:
            continue
        highest = info["aggregates"].get("max_id") or 0
        expressions = {name: expr for name, expr in AGGREGATES[table].items() if name in info["aggregates"]}
        select_list = ", ".join(["COUNT(*)", *expressions.values()])
        row = connection.execute(sa.text(f'SELECT {select_list} FROM "{table}" WHERE id <= :highest'), {"highest": highest}).one()
        if int(row[0]) != info["rows"]:
            unexplained.append(f"{table}: {row[0]} rows up to id {highest}, the manifest says {info['rows']}")
        for name, got in zip(expressions, row[1:]):
            value = info["aggregates"][name]
            if name != "max_id" and (None if got is None else int(got)) != value:
                unexplained.append(f"{table}.{name} up to id {highest} is {got}, the manifest says {value}")
        newer += statistics[table]["rows"] - int(row[0])
    if newer == 0:
        unexplained += compare_statistics(
            {t: i for t, i in manifest.tables.items() if t not in ("players", "results")}, statistics
        )
    return newer, unexplained


# ---------------------------------------------------------------- the engines


class _Restorer:
    """The restore's steps on live, through its engine (integrity.db.engines)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.database = Database.of(settings)
        self.engine = engine_for(self.database)
        self.staged: Staged | None = None
        self.swapped = False
        self.staging_description = ""
        self.swap_description = ""

    def remove_leftovers(self) -> list[str]:
        return self.engine.remove_leftovers(self.settings.state.dir)

    def stage(self, repository: Repository, manifest: Manifest) -> None:
        self.staged = self.engine.stage(repository, manifest, state_dir=self.settings.state.dir)
        self.staging_description = self.staged.description

    def verify_staging(self, manifest: Manifest, *, audit: bool):
        # Disposed on the way out: a PostgreSQL rename needs staging free of sessions, ours included.
        with self.database.beside(self.staged.target).reader() as engine, engine.connect() as connection:
            return _verify_copy(one_snapshot(connection), manifest, audit=audit)

    def swap(self, *, terminate: bool, safety_backup: Callable[[], None] | None) -> dict:
        facts, self.swap_description = self.engine.swap(self.staged, terminate=terminate, safety_backup=safety_backup)
        self.swapped = True
        return facts

    def salvage(self, repository: Repository, safety_backup_id: str | None, old_database: str | None):
        from integrity.recovery.salvage import salvage_from_backup_locked, salvage_from_database

        if old_database:
            # The old database a PostgreSQL swap kept is live as it was at the swap: newer than the safety backup.
            return salvage_from_database(self.settings, old_database)
        return salvage_from_backup_locked(self.settings, repository, safety_backup_id)

    def discard_staging(self) -> None:
        if self.staged is not None:
            self.engine.discard(self.staged, swapped=self.swapped)
            self.staged = None


def _staging_invalid(manifest: Manifest, problems: list[str]) -> StagingInvalid:
    return StagingInvalid(
        f"the staging copy of backup {manifest.id} does not hold what its manifest says: {'; '.join(problems[:5])}; "
        "the staging copy was removed and the live database was not touched"
    )
