"""`integrity migrate dry-run`: run pending revisions on a copy of real data and prove
what they did to it.

Phases (each timed, in the report): the static pass (no data); two copies of one
snapshot, the work copy proven identical to its source; the before state (schema,
statistics, audits); the real upgrade, revision by revision; the after state and the
content diff keyed by primary key of every table whose content changed; the round trip
(downgrade to the start, compare with before; upgrade again, compare with the first
after); declared intent; the verdict. The source is never written: afterwards its
revision is read again and must not have moved, and the copy's must have.

Every state after the proof is read only where it can have changed: on SQLite the
fingerprints after the upgrade, the downgrade and the upgrade again read the tables
whose pages changed (integrity.migrate.pages), and the audit of the migrated copy runs
the rules that read such a table or a column the upgrade added
(integrity.migrate.audit_reuse). A safe revision on the 1 GB benchmark database read
every row five times and audited it twice before; now twice (the proof) and once.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from game_core.db import POSTGRESQL, ConnectionSettings, DatabaseTarget
from game_core.errors import ExitCode, PreconditionFailed
from integrity.db.connect import Database, Write
from integrity.db.engines import DatabaseEngine
from integrity.fingerprint import TableFingerprint
from integrity.migrate.beside import state_beside
from integrity.migrate.findings import Finding, Severity
from integrity.migrate.pages import KnownState
from integrity.migrate.rules import RULES
from integrity.migrate.snapshot import BACKUP, LIVE, SNAPSHOT, Copies, SourceChoice
from integrity.phases import PhaseTimer
from integrity.progress import NO_PROGRESS, Reporter

SUMMARY_FINDINGS = 20  # findings a dry run's ledger record keeps (its whole report is the JSON output)

REPORT_VERSION = 1


class DryRunCouldNotRun(PreconditionFailed):
    """The dry run could not run as asked (its copy did not move, the source moved...)."""


@dataclass(frozen=True)
class RevisionRun:
    id: str
    path: str
    sha256: str
    message: str
    seconds: float | None = None
    statements: tuple[dict, ...] = ()
    locks_held: tuple[dict, ...] = ()
    rewritten: tuple[dict, ...] = ()
    needs_data_pass: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class DryRunPhase:
    """A phase as the dry run's report publishes it (integrity.phases times it)."""

    name: str
    seconds: float
    rows: int | None = None

    @property
    def rows_per_second(self) -> float | None:
        if self.rows is None or self.seconds <= 0:
            return None
        return round(self.rows / self.seconds)


@dataclass(frozen=True)
class AuditFailures:
    """Failing rows per data rule on the copy before and after the migration (empty: not
    reached)."""

    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundTrip:
    """Downgrade to the start, then upgrade again: each "identical", "lossy" or "failed";
    None where the round trip did not get that far."""

    downgrade: str | None = None
    upgrade_again: str | None = None

    @property
    def reached(self) -> bool:
        return self.downgrade is not None


@dataclass(frozen=True)
class TableContent:
    """One table whose content the migration changed, keyed by primary key."""

    table: str
    key: tuple[str, ...]
    rows_before: int
    rows_after: int
    lost: int
    added: int
    changed: int
    columns: dict[str, dict[str, int]]  # column -> {"changed": rows, kind of change: rows}
    dropped_columns: dict[str, int]  # column -> values it held
    added_columns: tuple[str, ...]
    seconds: float
    statistics: dict[str, dict]  # column -> {"before": figures, "after": figures} where they moved


@dataclass(frozen=True)
class DataPass:
    """What the run on the copies established."""

    revisions: tuple[RevisionRun, ...]  # the pending ones, with what running them measured
    findings: tuple[Finding, ...] = ()
    schema_changes: tuple = ()  # observe.SchemaChange
    tables: tuple[TableContent, ...] = ()
    audits: AuditFailures = AuditFailures()
    round_trip: RoundTrip = RoundTrip()
    # revision -> the locks its downgrade held in the round trip (PostgreSQL), as locks_held
    downgrade_locks: dict[str, tuple[dict, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class DryRunReport:
    """Everything a dry run established; JSON is versioned and deterministic apart from
    timings (findings sorted, tables by name)."""

    report_version: int
    project: str
    engine: str | None
    source: str | None
    store_identity: str | None
    start_revision: str | None
    target_revision: str | None
    revisions: tuple[RevisionRun, ...]
    phases: tuple[DryRunPhase, ...]
    schema_changes: tuple  # observe.SchemaChange
    tables: tuple[TableContent, ...]
    audits: AuditFailures
    round_trip: RoundTrip
    findings: tuple[Finding, ...]
    fail_on: str
    kept_copies: tuple[str, ...]
    data_pass: bool
    seconds: float
    note: str | None = None  # e.g. "no pending revisions"

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.counts and f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.counts and f.severity is Severity.WARNING)

    @property
    def passed(self) -> bool:
        return self.errors == 0 and not (self.fail_on == "warning" and self.warnings)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.passed else ExitCode.PROBLEMS_FOUND

    def summary(self) -> dict:
        return {
            "start_revision": self.start_revision,
            "target_revision": self.target_revision,
            "revisions": [r.id for r in self.revisions],
            "errors": self.errors,
            "warnings": self.warnings,
            "passed": self.passed,
            "data_pass": self.data_pass,
            # What the ledger keeps of the findings (the report's "last dry runs"): errors and
            # warnings, the first SUMMARY_FINDINGS of them.
            "findings": [{"severity": str(getattr(f.severity, "value", f.severity)), "rule": f.rule, "message": f.message}
                         for f in self.findings if str(getattr(f.severity, "value", f.severity)) in ("error", "warning")
                         ][:SUMMARY_FINDINGS],
        }

    def revision_hashes(self) -> tuple[tuple[str, str], ...]:
        return tuple((r.id, r.sha256) for r in self.revisions)


# ---------------------------------------------------------------- the whole run


def dry_run(
    settings,
    *,
    alembic_config: Path | None = None,
    to: str | None = None,
    choice: SourceChoice | None = None,
    fail_on: str = "error",
    keep_copy: bool = False,
    sample_limit: int = 10,
    command: str = "migrate dry-run",
    lock_wait: float = 0,
    progress: Reporter = NO_PROGRESS,
) -> DryRunReport:
    """Rehearse the revisions pending after the source's revision (up to `to`) on copies
    of `choice` (default: live on SQLite, the newest deep-verified backup on PostgreSQL)
    and report every finding. Raises MigrationProjectInvalid, DryRunCouldNotRun,
    SnapshotUnavailable, BackupNotFound (exit 4), CopyDiffers or BackupCorrupt (exit 5)."""
    from integrity.migrate.project import MigrationProject
    from integrity.db.engines import engine_for
    from integrity.migrate.static_pass import lint_revisions

    started = time.perf_counter()
    project = MigrationProject.load(alembic_config)
    project.check_graph()
    database = Database.of(settings)
    live, conn_settings = database.target, database.connection
    copier = engine_for(database)
    choice = choice or (SourceChoice(LIVE) if copier.copies_live_cheaply else SourceChoice(BACKUP, backup_id="latest"))
    start, identity, choice = _source_facts(settings, live, choice, conn_settings, copier)
    pending = project.pending(start, to)
    target = to or (pending[-1].id if pending else start)
    if not pending:
        return _report(project, live.kind, _describe(choice, live), identity, start, target, [], [], fail_on,
                       started, data_pass=False, note=f"no pending revisions: the source is at {start or 'base'}, the target is {target or 'base'}")
    timer = PhaseTimer()
    with timer.phase("static pass"):
        lint = lint_revisions(project, pending, start_revision=start)

    with copier.snapshot_copies(
        choice, scratch_dir=settings.state.dir / "scratch", keep_copy=keep_copy,
        restored_backup=_backup_restorer(settings, command, lock_wait, progress), progress=progress,
    ) as copies:
        for phase in copies.phases:
            timer.add(phase)
        rehearsal = _Rehearsal(project=project, copies=copies, pending=tuple(pending), lint=lint, target=target,
                               conn_settings=conn_settings, sample_limit=sample_limit, progress=progress,
                               lock_budget=settings.migrate.lock_budget)
        data = _data_pass(rehearsal, timer)
        _check_source_unmoved(copies, start, conn_settings)

    from integrity.migrate.intent import apply_intent

    static = _lock_severity(for_engine(lint.findings, live.kind), data, copies.fingerprints, database,
                            settings.migrate.lock_budget)
    findings = apply_intent([*static, *data.findings], pending, data_pass=True)
    return DryRunReport(
        report_version=REPORT_VERSION,
        project=project.description,
        engine=live.kind,
        source=copies.source,
        store_identity=identity,
        start_revision=start,
        target_revision=target,
        revisions=data.revisions,
        phases=_published(timer),
        schema_changes=data.schema_changes,
        tables=data.tables,
        audits=data.audits,
        round_trip=data.round_trip,
        findings=tuple(sorted(findings, key=Finding.key)),
        fail_on=fail_on,
        kept_copies=copies.kept,
        data_pass=True,
        seconds=round(time.perf_counter() - started, 3),
    )


def lint(settings, *, alembic_config: Path | None = None, to: str | None = None, start: str | None = None,
         fail_on: str = "error") -> DryRunReport:
    """The static pass alone: no copy, no data. The start is `start`, else the configured
    database's revision (read only), else (no database reachable) base."""
    from integrity.migrate.intent import apply_intent
    from integrity.migrate.project import MigrationProject
    from integrity.migrate.static_pass import lint_revisions

    started = time.perf_counter()
    project = MigrationProject.load(alembic_config)
    project.check_graph()
    engine_kind = None
    if start is None:
        database = Database.of(settings)
        live = database.target
        try:
            start = _revision_of(live, database.connection)
            engine_kind = live.kind
        except PreconditionFailed:
            pass  # no database here (a CI job linting a branch): every revision from base
    pending = project.pending(start, to)
    target = to or (pending[-1].id if pending else start)
    if not pending:
        return _report(project, engine_kind, None, None, start, target, [], [], fail_on, started,
                       data_pass=False, note=f"no pending revisions after {start or 'base'}")
    timer = PhaseTimer()
    with timer.phase("static pass"):
        result = lint_revisions(project, pending, start_revision=start)
    from integrity.migrate.locks import unmeasured

    findings = apply_intent(unmeasured(for_engine(result.findings, engine_kind)), pending, data_pass=False)
    runs = [_revision_run(r, lint_for=result, engine=engine_kind) for r in pending]
    return _report(project, engine_kind, None, None, start, target, runs, findings, fail_on, started,
                   data_pass=False, phases=_published(timer))


# Static rules about one engine's behaviour; a run on the other engine does not have the hazard.
_ENGINE_RULES = {"batch-rebuild-cascade": "sqlite", "pg-index-not-concurrent": POSTGRESQL,
                 "pg-constraint-validated": POSTGRESQL, "pg-table-rewrite": POSTGRESQL}


def for_engine(findings, engine: str | None) -> list[Finding]:
    """The static findings that concern `engine` (all of them when it is unknown: a lint
    without a database warns about both engines)."""
    return [f for f in findings if engine is None or (f.engine or _engine_of(f.rule, engine)) == engine]


def _engine_of(rule: str, default: str) -> str:
    if rule.startswith("squawk"):  # squawk's rules (and its absence) are about PostgreSQL SQL
        return POSTGRESQL
    return _ENGINE_RULES.get(rule, default)


def _lock_severity(findings, data: DataPass, prints: dict[str, TableFingerprint], database: Database,
                   budget: float) -> list[Finding]:
    """The PostgreSQL lock rules' severity from the holds the data pass measured, scaled to
    production's rows (integrity.migrate.locks)."""
    from integrity.migrate import locks

    tables = {f.table for f in findings if f.rule in locks.LOCK_RULES and f.table}
    return locks.measured(
        findings,
        upgrade_locks={run.id: run.locks_held for run in data.revisions},
        downgrade_locks=data.downgrade_locks,
        copy_rows={name: fp.rows for name, fp in prints.items()},
        production_rows=locks.production_rows(database, tables) if tables else {},
        budget=budget,
    )


def _report(project, engine, source, identity, start, target, runs, findings, fail_on, started, *, data_pass, note=None, phases=()):
    return DryRunReport(
        report_version=REPORT_VERSION, project=project.description, engine=engine, source=source,
        store_identity=identity, start_revision=start, target_revision=target, revisions=tuple(runs),
        phases=phases, schema_changes=(), tables=(), audits=AuditFailures(), round_trip=RoundTrip(),
        findings=tuple(sorted(findings, key=Finding.key)), fail_on=fail_on, kept_copies=(),
        data_pass=data_pass, seconds=round(time.perf_counter() - started, 3), note=note,
    )


def _published(timer: PhaseTimer) -> tuple[DryRunPhase, ...]:
    return tuple(replace(phase.as_(DryRunPhase), seconds=round(phase.seconds, 3)) for phase in timer.done)


def _describe(choice: SourceChoice, live: DatabaseTarget) -> str:
    if choice.kind == BACKUP:
        return f"backup {choice.backup_id or 'latest'}"
    if choice.kind == SNAPSHOT:
        return f"snapshot {choice.snapshot}"
    return f"live {live.display}"


def _revision_run(revision, *, lint_for, engine: str | None) -> RevisionRun:
    """The revision as the report lists it; `needs_data_pass` only for `engine` (every
    dialect's when it is unknown, as for_engine does with the findings)."""
    lint = next((r for r in lint_for.revisions if r.revision == revision.id), None)
    needs = {} if lint is None else {dialect: why for dialect, why in lint.needs_data_pass.items()
                                     if engine is None or dialect == engine}
    return RevisionRun(
        id=revision.id, path=str(revision.path), sha256=revision.sha256, message=revision.message,
        needs_data_pass=needs,
    )


# ---------------------------------------------------------------- the source


def _revision_of(target: DatabaseTarget, conn_settings: ConnectionSettings) -> str | None:
    from game_core.schema_state import current_revision

    with Database(target, conn_settings).reader() as engine, engine.connect() as connection:
        return current_revision(connection)


def _source_facts(settings, live: DatabaseTarget, choice: SourceChoice, conn_settings,
                  copier: DatabaseEngine) -> tuple[str | None, str | None, SourceChoice]:
    """The revision the copy will start at, the store identity, and the source with a
    backup's id resolved ("latest" now, not again later), read before any copy is made
    so that a revision not in the history fails fast."""
    from integrity.backups.statistics import store_identity
    from game_core.schema_state import current_revision

    if choice.kind == BACKUP:
        from integrity.backups.repository import Repository

        repository = Repository.of(settings)
        repository.require_exists()
        backup_id = _chosen_backup(settings, repository, choice.backup_id, live, conn_settings)
        manifest = repository.read_manifest(backup_id)
        if manifest.engine != live.kind:
            raise DryRunCouldNotRun(f"backup {backup_id} is a {manifest.engine} backup but the configured database is {live.kind}; pick a backup of this database (`integrity backup list`)")
        return manifest.revision, manifest.source_identity, SourceChoice(BACKUP, backup_id=backup_id)
    if choice.kind == SNAPSHOT:
        source = copier.snapshot_source(choice.snapshot)
    else:
        source = live
    with Database(source, conn_settings).reader() as engine, engine.connect() as connection:
        _refuse_another_applications(connection, source.display)
        return current_revision(connection), store_identity(connection), choice


def _refuse_another_applications(connection, display: str) -> None:
    """Tables but no revision: not the game's database. Rehearsing the game's history from
    base on it would report the game's tables "added" beside another application's and
    pass; an empty database (a new store's first migration) is a fair source."""
    from game_core.schema_state import SchemaState, schema_status
    from integrity.guarded import refusal

    status = schema_status(connection)
    if status.state is SchemaState.UNKNOWN and status.revision is None:
        raise refusal(status, display)


def _chosen_backup(settings, repository, requested: str | None, live: DatabaseTarget, conn_settings) -> str:
    """An id as given; for "latest" the newest deep-verified backup of this store (a dry
    run on a backup that never passed a restore proves nothing about production)."""
    from integrity.backups.catalog import LATEST, BackupNotFound, read_catalog, resolve_backup

    if requested and requested != LATEST:
        return resolve_backup(repository, requested, None)
    identity = None
    try:
        from integrity.backups.statistics import store_identity

        with Database(live, conn_settings).reader() as engine, engine.connect() as connection:
            identity = store_identity(connection)
    except PreconditionFailed:
        pass  # live unreachable: any deep-verified backup in the repository will do
    newest = read_catalog(repository).of_store(identity).newest_deep_verified()
    if newest is None:
        raise BackupNotFound(
            f"no deep-verified backup of this database in {repository.location}; run `integrity backup verify --deep`, "
            "or dry-run another source (--from-live, --snapshot)"
        )
    return newest.id


def _backup_restorer(settings, command: str, lock_wait: float, progress: Reporter = NO_PROGRESS):
    """A context manager factory that restores the chosen backup into scratch, held
    against prune and hash-checked first (invariants 3 and 4), for the snapshot module."""
    from integrity.backups.repository import BackupCorrupt, Repository
    from integrity.db.engines import engine_for
    from integrity.backups.verify import verify_one

    @contextmanager
    def restored(requested):
        repository = Repository.of(settings)
        database = Database.of(settings)
        live = database.target
        backup_id = _chosen_backup(settings, repository, requested, live, database.connection)
        with repository.reading(backup_id, command=command, wait_seconds=lock_wait):
            verification = verify_one(settings, repository, backup_id, deep=False, command=command, progress=progress)
            if verification.quick != "ok":
                raise BackupCorrupt("; ".join(verification.problems) + "; it cannot be used for a dry run")
            manifest = repository.read_manifest(backup_id)
            with engine_for(database).restored_copy(repository, manifest, scratch_dir=settings.state.dir / "scratch",
                                                    progress=progress) as copy:
                yield backup_id, copy

    return restored


# ---------------------------------------------------------------- the data pass


@dataclass(frozen=True)
class _Rehearsal:
    """What the data pass works with: the copies and the revisions to run on them."""

    project: Any  # MigrationProject
    copies: Copies
    pending: tuple  # the revisions, in order
    lint: Any  # the static pass's result
    target: str
    conn_settings: ConnectionSettings
    sample_limit: int
    progress: Reporter = NO_PROGRESS
    lock_budget: float = 1.0  # [migrate] lock_budget


@dataclass(frozen=True)
class _State:
    """The copy at one moment: its schema, failing rows per data rule, fingerprints (with
    the page digests that let a later state reuse them: integrity.migrate.pages)."""

    schema: Any  # observe.SchemaShape
    audits: dict[str, int]
    known: KnownState

    @property
    def prints(self) -> dict[str, TableFingerprint]:
        return self.known.prints


def _data_pass(job: _Rehearsal, timer: PhaseTimer) -> DataPass:
    """Upgrade the work copy and compare it with the before copy: state, content, round trip."""
    from integrity.migrate.observe import schema_changes

    now = datetime.now(timezone.utc)
    # Both engines disposed on the way out, however the pass ends.
    with Database(job.copies.before, job.conn_settings).reader() as before_engine, \
            Database(job.copies.work, job.conn_settings).writer(Write.COPY) as work_engine:
        before = _before_state(job, before_engine, work_engine, now, timer)
        runs, failed = _upgrade(job, work_engine, timer)
        revisions = tuple(runs[r.id] for r in job.pending)
        if failed is not None:
            return DataPass(revisions, findings=(_failure_finding(failed, "migration-failed", "run"),))
        _check_copy_moved(work_engine, job.target)
        after = _after_state(job, work_engine, before, now, timer)
        changes = schema_changes(before.schema, after.schema)
        tables, content_findings = _content(job, before_engine, work_engine, before, after, changes, timer)
        with timer.phase("round trip"), job.progress.task("round trip (downgrade, upgrade again)", unit="revisions"):
            round_trip, trip_findings, downgrade_locks = _round_trip(job, before_engine, work_engine, before, after)
    return DataPass(
        revisions=revisions,
        findings=(*_audit_findings(before.audits, after.audits, job.pending), *content_findings, *trip_findings,
                  *_lock_findings(runs, job.pending, after.prints, job.lock_budget)),
        schema_changes=tuple(changes),
        tables=tables,
        audits=AuditFailures(before=before.audits, after=after.audits),
        round_trip=round_trip,
        downgrade_locks=downgrade_locks,
    )


def _before_state(job: _Rehearsal, before_engine, work_engine, now: datetime, timer: PhaseTimer) -> _State:
    """The before copy's schema and audits; the fingerprints are the source's, which the
    work copy was proven to have, paired with the work copy's page digests now, before
    anything ran on it (nothing wrote it since the proof)."""
    from concurrent.futures import ThreadPoolExecutor

    from integrity.migrate.observe import capture_schema
    from integrity.migrate.pages import page_digests

    # The work copy's pages are read in a thread beside the audit: both are mostly C
    # (SQLite, SHA-256) that lets go of the GIL.
    with ThreadPoolExecutor(max_workers=1) as beside:
        pages_of = beside.submit(page_digests, work_engine)
        with timer.phase("before: schema and audits") as phase:
            with before_engine.connect() as connection:
                schema = capture_schema(connection)
                audits = data_audit_failures(connection, now, job.progress, "auditing the copy before")
            phase.rows = job.copies.rows
            pages = pages_of.result()
    return _State(schema, audits, KnownState(job.copies.fingerprints, pages))


def _upgrade(job: _Rehearsal, work_engine, timer: PhaseTimer):
    """({revision: its run, measured}, the trace of the revision the database refused or None).
    A revision that raised for another reason is the revision's bug: the run stops (exit 4)."""
    with timer.phase("migration"), \
            job.progress.task(f"migrating the work copy ({len(job.pending)} revision(s))", unit="revisions"):
        traces = _run(job.project, work_engine, job.pending, "upgrade", job.sample_limit)
    runs = {r.id: _revision_run(r, lint_for=job.lint, engine=job.copies.engine) for r in job.pending}
    for trace in traces:
        runs[trace.revision] = _with_trace(runs[trace.revision], trace)
    failed = next((t for t in traces if t.failed), None)
    if failed is not None and not failed.database_error:
        raise DryRunCouldNotRun(
            f"revision {failed.revision} raised on the copy: {failed.error}; fix the revision (the database did not "
            "refuse anything, so there is nothing to learn about the data)"
        )
    return runs, failed


def _after_state(job: _Rehearsal, work_engine, before: _State, now: datetime, timer: PhaseTimer) -> _State:
    """The migrated copy's state; its audits run while a child fingerprints it (big SQLite
    copies). Both read only what the upgrade can have changed: the fingerprints, the
    tables whose pages changed; the audits, the rules that read such a table or a column
    it added (integrity.migrate.audit_reuse). The other rules' results are the before copy's."""
    from checks.rules import RULES as AUDIT_RULES
    from integrity.migrate.audit_reuse import reusable_rules, tables_keeping_values
    from integrity.migrate.observe import capture_schema, schema_changes
    from integrity.migrate.pages import checkpoint, page_digests

    with timer.phase("after: schema and audits"):
        checkpoint(work_engine)
        pages = page_digests(work_engine, before.known.pages)
        state_of = state_beside(job.copies.work, job.conn_settings, before.known, pages)
        with work_engine.connect() as connection:
            schema = capture_schema(connection)
            kept = tables_keeping_values(before.known.pages, pages, schema_changes(before.schema, schema))
            reused = reusable_rules(AUDIT_RULES, kept)
            audits = {rule: failing for rule, failing in before.audits.items() if rule in reused}
            rerun = [rule for rule in AUDIT_RULES if rule.id not in reused]
            if rerun:
                audits.update(data_audit_failures(connection, now, job.progress, "auditing the migrated copy", rules=rerun))
            else:  # the phase is still shown, with why it had nothing to run
                with job.progress.task("auditing the migrated copy: every rule's result kept (nothing it reads changed)",
                                       total=0, unit="rules"):
                    pass
            audits = {rule.id: audits[rule.id] for rule in AUDIT_RULES if rule.id in audits}  # the catalogue's order
    with timer.phase("after: fingerprints (beside the audits)") as phase, \
            job.progress.task("fingerprinting the migrated copy (beside)", unit="rows"):
        known = state_of()
        phase.rows = sum(f.rows for name, f in known.prints.items() if name not in before.known.unchanged(known.pages))
    return _State(schema, audits, known)


def _content(job: _Rehearsal, before_engine, work_engine, before: _State, after: _State, changes,
             timer: PhaseTimer) -> tuple[tuple[TableContent, ...], list[Finding]]:
    """The keyed content diff of every table whose fingerprint changed, the moved column
    statistics, and what they mean as findings."""
    with timer.phase("content diff") as phase:
        changed_tables = _changed_tables(before.prints, after.prints)
        diffs = _content_diffs(before_engine, work_engine, changed_tables, before.schema, after.schema,
                               job.sample_limit, job.progress)
        findings = _new_table_findings(changed_tables, before.schema, after.prints, job.pending, job.lint)
        phase.rows = sum(d.rows_before for d in diffs)
    with timer.phase("column statistics") as phase:
        tables = tuple(_table_content(d, _statistics_change(before_engine, work_engine, d, after.schema)) for d in diffs)
        phase.rows = sum(d.rows_before + d.rows_after for d in diffs)
    findings += _diff_findings(diffs, changes, job.pending, job.lint, before_engine, work_engine, before.schema, after.schema)
    return tables, findings


def _run(project, engine, revisions, direction: str, sample_limit: int):
    from integrity.migrate.runner import run_revisions

    if direction == "upgrade":
        steps = [(r.id, r.id) for r in revisions]
    else:
        steps = [(r.id, (r.down_revisions[0] if r.down_revisions else "base")) for r in reversed(revisions)]
    return run_revisions(project, engine, steps, direction=direction, sample_limit=sample_limit)


def _with_trace(run: RevisionRun, trace) -> RevisionRun:
    from dataclasses import asdict, replace

    return replace(
        run,
        seconds=round(trace.seconds, 3),
        statements=tuple(asdict(s) for s in trace.statements),
        locks_held=tuple(asdict(lock) for lock in trace.locks_held),
        rewritten=tuple(asdict(r) for r in trace.rewritten),
        error=trace.error,
    )


def _failure_finding(trace, rule: str, phase: str) -> Finding:
    where = f" in `{trace.failing_statement}`" if trace.failing_statement else ""
    rows = f"; {trace.offending_rows:,} rows make it fail" if trace.offending_rows else ""
    table = trace.offending_samples[0].split(".", 1)[0] if trace.offending_samples and "." in trace.offending_samples[0] else None
    return Finding(
        rule=rule, severity=RULES[rule].severity, revision=trace.revision, table=table,
        message=f"{trace.direction} of {trace.revision} failed on the copy{where}: {trace.error}{rows}",
        rows=trace.offending_rows, samples=tuple(trace.offending_samples), phase=phase,
    )


def _check_source_unmoved(copies: Copies, start, conn_settings) -> None:
    """Invariant 8, first half: the source's revision did not move."""
    if copies.source_target is None:
        return  # a backup: its files are immutable and were hash-checked
    now_at = _revision_of(copies.source_target, conn_settings)
    if now_at != start:
        raise DryRunCouldNotRun(
            f"the source {copies.source} moved from revision {start} to {now_at} during the dry run: something "
            "else migrated it, or env.py ignores the connection handed in config.attributes['connection']"
        )


def _check_copy_moved(work_engine, target: str) -> None:
    """Invariant 8, second half, right after the upgrade (the round trip moves it again):
    an env.py that ignores the handed connection fails here instead of passing clean. Read
    on a new connection of the work copy's engine (a new engine each dry run checked that
    the copy answers and connected again for one row)."""
    from game_core.schema_state import current_revision

    with work_engine.connect() as connection:
        copy_at = current_revision(connection)
    if copy_at != target:
        raise DryRunCouldNotRun(
            f"the copy is at revision {copy_at} after the upgrade to {target}: env.py does not use the connection handed "
            "in config.attributes['connection'] (the Alembic cookbook pattern); change env.py to use it"
        )


def _changed_tables(before: dict[str, TableFingerprint], after: dict[str, TableFingerprint]) -> list[str]:
    return sorted(
        name for name in set(before) | set(after)
        if name != "alembic_version" and (name not in before or name not in after or before[name].digest != after[name].digest)
    )


def _content_diffs(before_engine, work_engine, tables: list[str], schema_before, schema_after, sample_limit: int,
                   progress: Reporter = NO_PROGRESS):
    from integrity.tablediff.migration import diff_table_content

    diffs = []
    compared = [table for table in tables if table in schema_before.tables]  # a new table's rows are all additions
    with progress.task("content diff", total=len(compared), unit="tables") as task:
        for table in compared:
            task.describe(f"content diff {table}")
            diffs.append(diff_table_content(
                before_engine, work_engine, table,
                before_shape=schema_before.tables[table], after_shape=schema_after.tables.get(table),
                sample_limit=sample_limit,
            ))
            task.advance()
    return diffs


def _table_content(diff, statistics: dict[str, dict]) -> TableContent:
    return TableContent(
        table=diff.table, key=tuple(diff.key), rows_before=diff.rows_before, rows_after=diff.rows_after,
        lost=diff.lost, added=diff.added, changed=diff.changed,
        columns={c.column: {"changed": c.changed, **c.kinds} for c in diff.columns},
        dropped_columns=dict(diff.dropped_columns), added_columns=tuple(diff.added_columns),
        seconds=round(diff.seconds, 3), statistics=statistics,
    )


def _new_table_findings(tables, schema_before, after_prints, pending, lint) -> list[Finding]:
    """Rows in tables the revisions created: inserts, so that an `expect` of them matches."""
    findings = []
    for table in tables:
        if table in schema_before.tables or table not in after_prints or not after_prints[table].rows:
            continue
        rows = after_prints[table].rows
        findings.append(Finding(
            rule="rows-added", severity=RULES["rows-added"].severity, revision=_owner(table, pending, lint), table=table,
            rows=rows, phase="diff", message=f"{table}: new table filled with {rows:,} rows",
        ))
    return findings


def _statistics_change(before_engine, work_engine, diff, schema_after) -> dict:
    """Per-column figures (rows, NULLs, min, max, sum, SQLite storage classes) before and
    after, of the columns the diff saw change, dropped or added (every column when rows
    were lost or added). The before copy is frozen, so reading it now gives exactly the
    before state."""
    from dataclasses import asdict

    from integrity.migrate.observe import table_statistics

    table = diff.table
    columns = None
    if not (diff.lost or diff.added):
        columns = {c.column for c in diff.columns} | set(diff.dropped_columns) | set(diff.added_columns)
        if not columns:
            return {}
    with before_engine.connect() as connection:
        before = table_statistics(connection, table, columns)
    after = {}
    if table in schema_after.tables:
        with work_engine.connect() as connection:
            after = table_statistics(connection, table, columns)
    moved = {}
    for column in sorted(set(before) | set(after)):
        old, new = before.get(column), after.get(column)
        if old != new:
            moved[column] = {"before": asdict(old) if old else None, "after": asdict(new) if new else None}
    return moved


def _owner(table: str, pending, lint) -> str | None:
    """The revision a data change belongs to: the only pending one, else the last whose
    operations name the table (the data pass measures all pending revisions together)."""
    if len(pending) == 1:
        return pending[0].id
    owner = None
    for revision in lint.revisions:
        if revision.touched_tables is None or table in revision.touched_tables:
            owner = revision.revision
    return owner


def _diff_findings(diffs, changes, pending, lint, before_engine, work_engine, schema_before, schema_after) -> list[Finding]:
    from integrity.migrate.observe import tables_reaching

    findings = []
    renamed = _renamed_columns(changes, before_engine, work_engine, schema_before, schema_after)
    # A table that lost rows without any operation naming it lost them through a foreign
    # key: a child of a table the revisions did name (a SQLite batch rebuild, a DELETE).
    operated = {op.table for revision in lint.revisions for op in revision.operations if op.table}
    cascading = tables_reaching(schema_before, operated) - operated
    for diff in diffs:
        table = diff.table
        owner = _owner(table, pending, lint)
        if diff.lost:
            cascade = table in cascading
            rule = "cascade-rows-lost" if cascade else "rows-lost"
            how = " through a foreign key cascade" if cascade else ""
            gone = "the table was dropped: " if table not in schema_after.tables else ""
            findings.append(Finding(
                rule=rule, severity=RULES[rule].severity, revision=owner, table=table, rows=diff.lost,
                message=f"{table}: {gone}{diff.lost:,} of {diff.rows_before:,} rows lost{how}",
                samples=tuple(diff.lost_samples), phase="diff",
            ))
        if diff.added:
            findings.append(Finding(
                rule="rows-added", severity=RULES["rows-added"].severity, revision=owner, table=table, rows=diff.added,
                message=f"{table}: {diff.added:,} rows added", samples=tuple(diff.added_samples), phase="diff",
            ))
        for column in diff.columns:
            kinds = ", ".join(f"{kind.replace('_', ' ')} {count:,}" for kind, count in sorted(column.kinds.items()))
            findings.append(Finding(
                rule="values-changed", severity=RULES["values-changed"].severity, revision=owner, table=table,
                column=column.column, rows=column.changed, samples=tuple(column.samples), phase="diff",
                message=f"{table}.{column.column}: {column.changed:,} values changed ({kinds})",
            ))
        for column, values in sorted(diff.dropped_columns.items()):
            if (table, column) in renamed or not values:
                continue
            findings.append(Finding(
                rule="column-values-lost", severity=RULES["column-values-lost"].severity, revision=owner, table=table,
                column=column, rows=values, phase="diff",
                message=f"{table}.{column}: dropped with {values:,} values that no other column keeps",
            ))
    return findings


def _renamed_columns(changes, before_engine, work_engine, schema_before, schema_after) -> set[tuple[str, str]]:
    """(table, old column) pairs whose values live on unchanged under a new name: a
    rename keeps the data, so the dropped column's values are not lost."""
    from integrity.migrate.column_compare import same_values

    dropped: dict[str, list[str]] = {}
    added: dict[str, list[str]] = {}
    for change in changes:
        if change.kind == "column_dropped":
            dropped.setdefault(change.table, []).append(change.column)
        elif change.kind == "column_added":
            added.setdefault(change.table, []).append(change.column)
    renamed = set()
    for table, columns in dropped.items():
        key = schema_before.tables[table].primary_key
        for old in columns:
            for new in added.get(table, []):
                if key and same_values(before_engine, work_engine, table, key, old, new):
                    renamed.add((table, old))
                    break
    return renamed


# ---------------------------------------------------------------- audits


def data_audit_failures(connection, now: datetime | None = None, progress: Reporter = NO_PROGRESS,
                        what: str = "auditing", rules=None) -> dict[str, int]:
    """Failing rows per data rule (of `rules`, default the whole catalogue; schema rules
    left out: the schema diff reports the schema, and every schema change would otherwise
    look like a new audit failure)."""
    from checks import run_audits

    with progress.task(what, unit="rules") as task:
        report = run_audits(connection, rules=rules, now=now, sample_limit=0, on_progress=task.set)
    return {
        finding.rule.id: finding.failing_rows
        for finding in report.findings
        if finding.rule.kind != "schema" and not finding.skipped and finding.rule.severity == "error"
    }


def _audit_findings(before: dict[str, int], after: dict[str, int], pending) -> list[Finding]:
    owner = pending[0].id if len(pending) == 1 else None
    findings = []
    for rule_id, failing in sorted(after.items()):
        new = failing - before.get(rule_id, 0)
        if new > 0:
            findings.append(Finding(
                rule="new-audit-failures", severity=RULES["new-audit-failures"].severity, revision=owner,
                rows=new, phase="audit", table=rule_id.split(".")[0] if "." in rule_id else None,
                message=f"audit {rule_id}: {new:,} more failing rows after the migration ({before.get(rule_id, 0):,} before)",
            ))
    return findings


# ---------------------------------------------------------------- round trip


def _round_trip(job: _Rehearsal, before_engine, engine, before: _State,
                after: _State) -> tuple[RoundTrip, list[Finding], dict[str, tuple[dict, ...]]]:
    """Downgrade the migrated copy to the start and compare it with before; upgrade it again
    and compare it with the first upgrade. Also returns the locks each downgrade held."""
    from dataclasses import asdict

    from integrity.migrate.observe import capture_schema

    pending = job.pending
    owner = pending[0].id if len(pending) == 1 else pending[-1].id
    traces = _run(job.project, engine, pending, "downgrade", job.sample_limit)
    downgrade_locks = {trace.revision: tuple(asdict(lock) for lock in trace.locks_held) for trace in traces}
    failed = next((t for t in traces if t.failed), None)
    if failed is not None:
        return RoundTrip(downgrade="failed"), [_failure_finding(failed, "round-trip-failed", "round-trip")], downgrade_locks
    findings = []
    with engine.connect() as connection:
        schema_back = capture_schema(connection)
    prints_back = _fingerprints_since(engine, before.known)
    lossy = _state_differences(schema_back, prints_back, before.schema, before.prints)
    downgrade = "lossy" if lossy else "identical"
    if lossy:
        rows, samples = _rows_not_restored(before_engine, engine, before.schema, schema_back,
                                           _changed_tables(before.prints, prints_back), job.sample_limit)
        causes = downgrade_loss_causes(job.lint, after.schema, before.prints, prints_back, engine=job.copies.engine)
        because = "".join(f"; {cause}" for _table, cause in causes)
        emptied = {table for table, _cause in causes}
        findings.append(Finding(
            rule="round-trip-lossy", severity=RULES["round-trip-lossy"].severity, revision=owner, phase="round-trip",
            message=f"after the downgrade the copy differs from before the upgrade: {lossy}{because}", rows=rows,
            samples=samples, table=emptied.pop() if len(emptied) == 1 else None,
        ))
    traces = _run(job.project, engine, pending, "upgrade", job.sample_limit)
    failed = next((t for t in traces if t.failed), None)
    if failed is not None:
        return (RoundTrip(downgrade, "failed"), [*findings, _failure_finding(failed, "round-trip-failed", "round-trip")],
                downgrade_locks)
    with engine.connect() as connection:
        schema_again = capture_schema(connection)
    lossy = _state_differences(schema_again, _fingerprints_since(engine, after.known), after.schema, after.prints)
    if lossy:
        findings.append(Finding(
            rule="round-trip-lossy", severity=RULES["round-trip-lossy"].severity, revision=owner, phase="round-trip",
            message=f"upgrading again after the downgrade differs from the first upgrade: {lossy}",
        ))
    return RoundTrip(downgrade, "lossy" if lossy else "identical"), findings, downgrade_locks


def _fingerprints_since(engine, known: KnownState) -> dict[str, TableFingerprint]:
    """The work copy's fingerprints, reading only the tables whose pages changed since `known`."""
    from integrity.migrate.pages import checkpoint, fingerprints_reusing

    checkpoint(engine)
    return fingerprints_reusing(engine, known).prints


def downgrade_loss_causes(lint, schema, before_prints: dict[str, TableFingerprint], back_prints: dict[str, TableFingerprint],
                          *, engine: str) -> list[tuple[str, str]]:
    """(table, the downgrade operation that removed its rows) for every table that holds
    fewer rows after the downgrade than before the upgrade: an operation of a downgrade that
    names the table, or one that removed rows of a table it reaches through ON DELETE
    CASCADE (on SQLite, a batch rebuild: its DROP TABLE cascades like a DELETE). `schema`
    is the migrated copy's (the downgrade starts from it); `lint` the static pass's result,
    which recorded each downgrade's operations and SQLite rebuilds."""
    causes = []
    for table in sorted(before_prints):
        if table not in back_prints or back_prints[table].rows >= before_prints[table].rows:
            continue
        lost = before_prints[table].rows - back_prints[table].rows
        cause = None
        for revision in reversed(lint.revisions):  # downgrades run newest first
            where = f"the downgrade of {revision.revision}"
            rebuilt = revision.rebuilds.get("downgrade", ()) if engine == "sqlite" else ()
            for parent in rebuilt:
                path = _cascade_path(schema, parent, table)
                if path and len(path) > 1:
                    cause = (f"{table} lost {lost:,} rows through ON DELETE CASCADE ({' -> '.join(path)}) when {where} "
                             f"rebuilt {parent} (SQLite batch_alter_table: copy, DROP TABLE {parent}, rename)")
                    break
            for operation in () if cause else revision.downgrade_operations:
                if operation.kind not in ("DropTableOp", "ExecuteSQLOp") or not operation.table:
                    continue
                path = _cascade_path(schema, operation.table, table)
                if path:
                    through = f" through ON DELETE CASCADE ({' -> '.join(path)})" if len(path) > 1 else ""
                    cause = f"{table} lost {lost:,} rows{through} by {where}: {operation.detail}"
                    break
            if cause:
                break
        causes.append((table, cause or f"{table} lost {lost:,} rows in the downgrade (no operation of it names "
                                        "the table or a parent that cascades to it)"))
    return causes


def _cascade_path(schema, parent: str, child: str) -> list[str] | None:
    """[parent, ..., child] along foreign keys with ON DELETE CASCADE (child referencing
    parent), [child] when they are the same table, None when deletes do not reach it."""
    children: dict[str, set[str]] = {}
    for table in schema.tables.values():
        for foreign_key in table.foreign_keys:
            if (foreign_key.ondelete or "").upper() == "CASCADE" and foreign_key.referred_table != table.name:
                children.setdefault(foreign_key.referred_table, set()).add(table.name)
    paths = {parent: [parent]}
    queue = [parent]
    while queue:
        current = queue.pop(0)
        if current == child:
            return paths[current]
        for following in sorted(children.get(current, ())):
            if following not in paths:
                paths[following] = paths[current] + [following]
                queue.append(following)
    return None


def _rows_not_restored(before_engine, engine, schema_before, schema_back, tables: list[str], sample_limit: int) -> tuple[int | None, tuple[str, ...]]:
    """Rows the downgrade did not bring back (lost, added or still changed), keyed, for the
    tables present before and after; None when no such table can be compared by rows."""
    from integrity.tablediff.migration import diff_table_content

    rows, samples, compared = 0, [], False
    for table in tables:
        if table not in schema_before.tables or table not in schema_back.tables:
            continue
        diff = diff_table_content(before_engine, engine, table, before_shape=schema_before.tables[table],
                                  after_shape=schema_back.tables[table], sample_limit=sample_limit)
        compared = True
        rows += diff.lost + diff.added + diff.changed
        samples += [f"{table}: {key}" for key in (*diff.lost_samples, *diff.added_samples,
                                                  *(k for c in diff.columns for k in c.samples))]
    return (rows if compared else None), tuple(dict.fromkeys(samples))[:sample_limit]


def _state_differences(schema, prints, expected_schema, expected_prints) -> str:
    """'' when schema and content are the same, else one line saying where they differ."""
    from integrity.migrate.observe import schema_changes

    parts = []
    changes = schema_changes(expected_schema, schema)
    if changes:
        shown = ", ".join(f"{c.kind} {c.table}{'.' + c.column if c.column else ''}" for c in changes[:5])
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        parts.append(f"schema ({shown}{more})")
    tables = [t for t in _changed_tables(expected_prints, prints)]
    if tables:
        detail = ", ".join(
            f"{t} ({expected_prints[t].rows:,} -> {prints[t].rows:,} rows)" if t in expected_prints and t in prints else t
            for t in tables
        )
        parts.append(f"content of {detail}")
    return "; ".join(parts)


# ---------------------------------------------------------------- locks (PostgreSQL)

def _lock_findings(runs: dict, pending, after_prints: dict[str, TableFingerprint], budget: float) -> list[Finding]:
    findings = []
    populated = {name for name, fp in after_prints.items() if fp.rows}
    for revision in pending:
        run = runs[revision.id]
        for rewrite in run.rewritten:
            if rewrite["kind"] == "table" and rewrite["relation"] in populated:
                findings.append(Finding(
                    rule="table-rewritten", severity=RULES["table-rewritten"].severity, revision=revision.id,
                    table=rewrite["relation"], rows=rewrite["rows"], phase="run",
                    message=f"{rewrite['relation']}: rewritten ({rewrite['rows']:,} rows) while the revision held its lock",
                ))
        for lock in run.locks_held:
            if lock["mode"] == "AccessExclusiveLock" and lock["relation"] in populated and lock["seconds"] > budget:
                findings.append(Finding(
                    rule="long-exclusive-lock", severity=RULES["long-exclusive-lock"].severity, revision=revision.id,
                    table=lock["relation"], phase="run",
                    message=f"{lock['relation']}: ACCESS EXCLUSIVE held {lock['seconds']:.1f} s until commit (budget {budget:g} s)",
                ))
    return findings
