"""`integrity drill`: rehearse a restore on a scratch copy, never touching live, and
predict how long a real one would take.

The incident's restore took 30 minutes nobody had measured. A drill takes the newest good
backup of this database (the one `status` measures the RPO on) or a given one, holds its
reader lock so that prune leaves it alone, and runs what a restore runs, each phase timed:

1. hash check: the manifest and every file against their hashes (quick verification);
2. restore: decompress (SQLite) or pg_restore (PostgreSQL) into a scratch copy that is
   always removed (the engine's `restored_copy`, integrity.db.engines);
3. deep checks: the engine's check, counts and aggregates against the manifest, keyed
   fingerprints (PostgreSQL only: there they are the full read that is its engine check;
   on SQLite the compare with live reads every row anyway), drift against the previous
   backup (the same code as `backup verify --deep`);
4. audits: `checks.run_audits` on the copy (clean or dirty), on a second connection
   while the deep checks and then the compare with live run, so both lines use the two
   cores and the drill waits for the longer one, not for the three in a row;
5. compare with live: per table rows, and the share of rows that differ, through
   `integrity.tablediff.backup_live.diff_databases` (live opened read-only), once the
   deep checks passed;
6. swap rehearsal: the work of the swap, done on the scratch copy (see the model below).

Prediction of a full restore (`integrity restore`), in seconds:

    predicted = hash check + restore + deep checks + audits      (measured: "recovery")
              + safety backup                                   (estimated)
              + swap                                            (measured on the copy)

The measured phases are the restore's own verify, staging and verify-staging, added up
as the restore runs them (one after the other), although the drill overlaps phases 3
and 4; that margin, and on PostgreSQL the fingerprints the restore does not compute,
cover its post-check (the same counts and aggregates read again on live).

- safety backup: a restore first backs up live. It is estimated as the time the drilled
  backup took to create, scaled by how much bigger live is now than that backup's source
  was: create seconds x live bytes / backup bytes. Create seconds come, in this order,
  from the ledger's `backup create` run that wrote this backup (its own timer), else
  from the manifest's timings plus the measured hash check (create reads back its output
  exactly as the hash check does; the timings' sum errs long where SQLite overlaps the
  statistics scan with compression), else from the measured restore (a backup copies and
  compresses what a restore decompresses and writes). Bytes: SQLite the logical file
  size (page_count x page_size) of live against the manifest's raw size (the backup API
  copies every page); PostgreSQL `pg_database_size` of live against the scratch copy.
- swap, SQLite: the online backup API copies the staging copy into the live file in one
  transaction, work proportional to the database size. The drill times exactly that work:
  a one-step backup-API copy of the scratch copy into a temp file beside it (removed).
- swap, PostgreSQL: two `ALTER DATABASE ... RENAME` in one transaction, timed on the
  scratch database (renamed and back in one transaction: a kill leaves its name), plus
  terminating live's connections, which cannot be rehearsed without ending them: the
  engine's `swap_allowance_seconds` is added for it (integrity.db.engines).

The predicted total must be at most `[objectives] rto_seconds`, and the backup's age at
most `rpo_seconds`. Exit 5 when the hash check, the restore or a deep check failed (the
backup cannot be trusted: it is journalled `corrupt` or `deep_failed` as verify would);
3 when it worked but an objective was missed, the copy is dirty, or live could not be
compared; else 0. Every drill is journalled (`drilled`) and its `summary()` is what
the ledger keeps and `integrity status` reads.

A drill at a point in time (`drill --at TIME`, `run_point_in_time_drill`, issue 16)
rehearses the archive instead of a dump: the point-in-time engine restores the moment into
scratch (Litestream runs its own integrity check; pgBackRest's scratch cluster must
replay and promote), then the same audits, compare with live and swap rehearsal run on
it. There is no manifest, so no hash check and no deep checks against one; the
prediction is the measured restore, audits and swap, plus a safety backup estimated as
one more restore of that size (no `backup create` timed it). The moment's age is not
judged against the RPO (the operator chose it). Its summary carries `point_in_time`
(engine, moment, window); nothing is journalled in the backup repository.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from game_core.errors import ExitCode, Failure, PreconditionFailed
from integrity.backups.catalog import resolve_backup
from integrity.backups.encryption import DecryptionKeyUnavailable
from integrity.backups.repository import AuditVerdict, BackupCorrupt, Manifest, Repository
from integrity.backups.statistics import store_identity
from integrity.backups.verify import audit_copy, deep_checks, quick_verify
from integrity.crashpoints import crash_point
from integrity.db.connect import Database, guarded_target, one_snapshot
from integrity.db.engines import engine_for
from integrity.db.sql import database_bytes, error_reason
from integrity.phases import Phase, PhaseTimer
from integrity.progress import NO_PROGRESS, Reporter
from integrity.settings import Settings

# How many `backup create` runs the ledger is searched for the one that wrote the backup.
_CREATE_LOOKBACK = 500
# Sample keys per table kept from the compare (what a restore would lose, for the report).
_SAMPLES = 5

HASH_CHECK = "hash check"
RESTORE = "restore"
DEEP_CHECKS = "deep checks"
AUDITS = "audits"
COMPARE = "compare with live"
SWAP = "swap rehearsal"
# The measured phases a real restore repeats (the compare is the drill's own).
RECOVERY_PHASES = (HASH_CHECK, RESTORE, DEEP_CHECKS, AUDITS)


@dataclass(frozen=True)
class DrillPhase:
    """A phase as the drill's report publishes it (integrity.phases times it)."""

    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class TableComparison:
    """One table, live against the backup, keyed by primary key."""

    table: str
    live_rows: int
    backup_rows: int
    only_live: int  # what a restore of this backup would lose
    only_backup: int
    changed: int
    changed_columns: dict[str, int]  # column -> rows where it differs
    differing_rows: int
    differing_share: float  # differing rows / the larger side's rows
    samples: dict[str, list] = field(default_factory=dict)  # kind -> a few primary keys


@dataclass(frozen=True)
class Prediction:
    """A full restore's duration: measured phases plus the estimated safety backup and swap."""

    recovery_seconds: float  # measured: hash check, restore, deep checks, audits
    safety_backup_seconds: float
    safety_backup_basis: str
    swap_seconds: float
    swap_basis: str
    live_bytes: int
    backup_bytes: int
    total_seconds: float = field(init=False)  # a field, so that --json carries it

    def __post_init__(self) -> None:
        object.__setattr__(self, "total_seconds", self.recovery_seconds + self.safety_backup_seconds + self.swap_seconds)


@dataclass(frozen=True)
class DrillReport:
    backup_id: str
    engine: str
    backup_created_at: str | None
    backup_age_seconds: float | None
    phases: tuple[DrillPhase, ...]
    problems: tuple[str, ...]  # the restore or a check failed: exit 5
    audit: AuditVerdict | None  # None: not reached
    violations: tuple[dict, ...]
    tables: tuple[TableComparison, ...]
    compare_problem: str | None
    prediction: Prediction | None
    rto_seconds: int
    rpo_seconds: int
    # A drill of the point-in-time archive: {"engine", "moment", "window_oldest",
    # "window_newest", "asked"}; None for a drill of a backup.
    point_in_time: dict | None = None
    repository: str | None = None  # where the drilled backup was read from (primary or a copy)
    # The verdicts, derived from the above; fields so that --json carries them.
    predicted_seconds: float | None = field(init=False)
    rto_met: bool | None = field(init=False)
    rpo_met: bool | None = field(init=False)
    findings: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        predicted = None if self.prediction is None else self.prediction.total_seconds
        object.__setattr__(self, "predicted_seconds", predicted)
        object.__setattr__(self, "rto_met", None if predicted is None else predicted <= self.rto_seconds)
        age = self.backup_age_seconds
        object.__setattr__(self, "rpo_met", None if age is None else age <= self.rpo_seconds)
        object.__setattr__(self, "findings", self._findings())

    @property
    def failed(self) -> bool:
        return bool(self.problems)

    def _findings(self) -> tuple[str, ...]:
        """Why the drill worked but is not ok (exit 3), one line each."""
        if self.failed:
            return ()
        found = []
        if self.rto_met is False:
            found.append(f"predicted full restore {self.predicted_seconds:.1f}s exceeds rto {self.rto_seconds}s")
        if self.rpo_met is False:
            found.append(f"backup {self.backup_id} is {self.backup_age_seconds:.0f}s old, over rpo {self.rpo_seconds}s")
        if self.audit is AuditVerdict.DIRTY:
            rules = ", ".join(f"{v['rule']} ({v['failing_rows']} rows)" for v in self.violations if v["severity"] == "error")
            found.append(f"the backup holds dirty data: {rules}")
        if self.compare_problem:
            found.append(f"could not compare with live: {self.compare_problem}")
        return tuple(found)

    @property
    def exit_code(self) -> ExitCode:
        if self.failed:
            return ExitCode.VERIFICATION_FAILED
        if self.findings:
            return ExitCode.PROBLEMS_FOUND
        return ExitCode.OK

    def phase_seconds(self) -> dict[str, float]:
        return {phase.name: round(phase.seconds, 4) for phase in self.phases}

    def summary(self) -> dict:
        """What the ledger keeps and `integrity status` reads (see status.drill_checks)."""
        prediction = self.prediction
        return {
            "backup_id": self.backup_id,
            "backup_age_seconds": None if self.backup_age_seconds is None else round(self.backup_age_seconds, 1),
            "phases": self.phase_seconds(),
            "recovery_seconds": None if prediction is None else round(prediction.recovery_seconds, 4),
            "predicted_seconds": None if prediction is None else round(prediction.total_seconds, 4),
            "rto_seconds": self.rto_seconds,
            "rto_met": self.rto_met,
            "rpo_seconds": self.rpo_seconds,
            "rpo_met": self.rpo_met,
            "audit": self.audit,
            "differing_share": {t.table: t.differing_share for t in self.tables},
            "problems": list(self.problems),
            "findings": list(self.findings),
            "compare_problem": self.compare_problem,
            **({"point_in_time": dict(self.point_in_time)} if self.point_in_time else {}),
        }


def run_drill(
    settings: Settings,
    *,
    backup_id: str | None = None,
    lock_wait: float = 0,
    command: str = "drill",
    ledger=None,
    now: datetime | None = None,
    progress: Reporter = NO_PROGRESS,
) -> DrillReport:
    """Drill the newest good backup of the configured database, or `backup_id`.

    Raises BackupNotFound (exit 4) for an unknown id or when there is no good backup,
    PreconditionFailed (exit 4) when the backup cannot be drilled against this database
    (another engine, another store), LockHeld (exit 4) when prune holds the backup.
    Everything the backup itself fails is in the report (exit 5), not raised.
    """
    from integrity.guarded import check_guarded

    check_guarded(settings)  # first: live must be the game's, at a revision this code knows (else exit 4)
    repository = Repository.of(settings)
    repository.require_exists()
    with Database.of(settings).reader() as live:  # never written
        with live.connect() as connection:
            identity = store_identity(connection)
        chosen = resolve_backup(repository, backup_id, identity, now)
        with repository.reading(chosen, command=command, wait_seconds=lock_wait):
            report = _drill(settings, repository, chosen, live=live, identity=identity,
                            command=command, ledger=ledger, now=now, progress=progress)
    report = replace(report, repository=repository.location)
    repository.record_drill(report.backup_id, {"exit_code": int(report.exit_code), **report.summary()}, by=command)
    return report


def _drill(settings: Settings, repository: Repository, backup_id: str, *, live, identity, command: str, ledger, now,
           progress: Reporter = NO_PROGRESS) -> DrillReport:
    timer = PhaseTimer()
    report = _report_builder(settings, backup_id, timer, now)
    # 1. hash check
    try:
        with timer.phase(HASH_CHECK):
            manifest = quick_verify(repository, backup_id, progress)
    except BackupCorrupt as exc:
        repository.record_quick_check(backup_id, problem=str(exc), by=command)
        return report(None, problems=(str(exc),))
    repository.record_quick_check(backup_id, problem=None, by=command)
    live_database = Database.of(settings)
    _require_drillable(manifest, live_database.kind, identity)
    store_engine = engine_for(live_database)
    scratch_dir = settings.state.dir / "scratch"

    fingerprints: dict[str, dict] = {}
    with ExitStack() as stack:
        # 2. restore into scratch (removed when the stack closes, whatever happens)
        try:
            with timer.phase(RESTORE) as phase:
                copy = stack.enter_context(store_engine.restored_copy(
                    repository, manifest, scratch_dir=scratch_dir, progress=progress,
                ))
                phase.detail = copy.description
        except DecryptionKeyUnavailable:
            raise  # this host's missing or wrong key, not the backup's fault: never journalled as failed (exit 4)
        except Failure as exc:
            return _failed(repository, report, manifest, [str(exc)], command)
        crash_point("drill:restored")  # a kill here leaves the scratch copy for the next run to reclaim

        try:
            # Disposed before the swap rehearsal: a PostgreSQL rename needs the copy unused.
            with live_database.beside(copy.target).reader() as engine:
                checked, (audit, violations), (tables, compare_problem) = _checks_audits_and_compare(
                    engine, live, repository, manifest, settings, timer, progress,
                    with_fingerprints=store_engine.fingerprints_in_server,
                )
                fingerprints = checked.fingerprints
                if checked.problems:
                    return _failed(repository, report, manifest, list(checked.problems), command, fingerprints)
                live_bytes = _database_bytes(live)
                backup_bytes = _database_bytes(engine)
        except sa.exc.DBAPIError as exc:
            problems = [f"the restored copy cannot be read: {error_reason(exc)}"]
            return _failed(repository, report, manifest, problems, command, fingerprints)

        # 6. swap rehearsal
        swap_basis, swap_problem = _rehearse_swap(timer, store_engine, copy, scratch_dir)
        if swap_problem:
            return report(manifest, problems=(swap_problem,))

    prediction = _predict(manifest, ledger, timer, store_engine.swap_allowance_seconds, swap_basis,
                          live_bytes=live_bytes, backup_bytes=backup_bytes)
    repository.record_deep_check(manifest.id, problems=[], fingerprints=fingerprints, by=command)
    repository.record_audit(manifest.id, audit, list(violations), by=command)
    return report(manifest, audit=audit, violations=violations, tables=tables,
                  compare_problem=compare_problem, prediction=prediction)


def _report_builder(settings: Settings, backup_id: str, timer: PhaseTimer, now: datetime | None):
    """A function that builds the report from what the drill reached (None: no manifest)."""
    objectives = settings.objectives

    def report(manifest: Manifest | None, **values) -> DrillReport:
        created = manifest.created if manifest else None
        moment = now or datetime.now(timezone.utc)
        defaults = dict(
            backup_id=backup_id,
            engine=manifest.engine if manifest else guarded_target(settings).kind,
            backup_created_at=manifest.created_at if manifest else None,
            backup_age_seconds=(moment - created).total_seconds() if created else None,
            phases=tuple(phase.as_(DrillPhase) for phase in timer.done), problems=(), audit=None, violations=(),
            tables=(), compare_problem=None, prediction=None,
            rto_seconds=objectives.rto_seconds, rpo_seconds=objectives.rpo_seconds,
        )
        defaults.update(values)
        return DrillReport(**defaults)

    return report


def _checks_audits_and_compare(engine, live, repository: Repository, manifest: Manifest, settings: Settings,
                               timer: PhaseTimer, progress: Reporter, *, with_fingerprints: bool):
    """3. deep checks, then 5. the compare with live, on one connection after the other,
    while 4. the audits run on a second connection beside them: all are database-bound
    (the GIL is released while SQLite or PostgreSQL works), so they share the two cores,
    and the drill is bound by the longer of the two lines (the audits, on PostgreSQL)
    rather than by their sum. The compare runs only when the deep checks pass (a copy that
    failed them is not worth comparing). The prediction still adds up deep checks and
    audits, because the restore runs them one after the other. The audits are recorded
    only when the deep checks pass; the phases are listed in the drill's order (compare
    after the audits) whichever ended first."""
    compared = PhaseTimer()
    tables, compare_problem = (), None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drill-audit") as pool:
        audited = pool.submit(_timed_audit, engine, progress)
        with timer.phase(DEEP_CHECKS) as phase:
            with engine.connect() as connection:
                checked = deep_checks(connection, repository, manifest,
                                      shrink_tolerance=settings.backups.shrink_tolerance,
                                      with_fingerprints=with_fingerprints, progress=progress)
            if checked.problems:
                phase.fail("; ".join(checked.problems))
        if not checked.problems:
            tables, compare_problem = _compare_with_live(live, engine, compared, progress)
        (audit, violations), audit_seconds = audited.result()
    if not checked.problems:
        timer.add(Phase(AUDITS, audit_seconds, detail=f"{audit} (alongside the deep checks and the compare with live)"))
        for phase in compared.done:
            timer.add(phase)
    return checked, (audit, violations), (tables, compare_problem)


def _compare_with_live(live, engine, timer: PhaseTimer, progress: Reporter) -> tuple[tuple[TableComparison, ...], str | None]:
    """5. compare with live, on a fresh connection to the copy: with no transaction open
    on it, the SQLite diff attaches the file and compares in SQL. A comparison that cannot
    be made is a finding of the drill, not a failure of the backup."""
    tables: tuple[TableComparison, ...] = ()
    with timer.phase(COMPARE) as phase:
        try:
            with progress.task("comparing with live", unit="tables"):
                tables = _compare(live, engine)
        except Failure as exc:
            phase.fail(str(exc))
        except sa.exc.DBAPIError as exc:
            phase.fail(error_reason(exc))
    return tables, (None if phase.ok else phase.detail)


def _rehearse_swap(timer: PhaseTimer, store_engine, copy, scratch_dir: Path) -> tuple[object, str | None]:
    """The swap rehearsal phase: (what it measured, None), or (None, why it failed). The
    copy is sound (nothing is journalled as failed), but a restore would fail at the swap
    too (a full disk, no right to rename databases): the drill fails."""
    with timer.phase(SWAP) as phase:
        try:
            phase.detail = store_engine.rehearse_swap(copy, scratch_dir=scratch_dir)
        except (OSError, sqlite3.Error, sa.exc.DBAPIError) as exc:
            phase.fail(error_reason(exc) if isinstance(exc, sa.exc.DBAPIError) else str(exc))
    if not phase.ok:
        return None, f"the swap rehearsal failed: {phase.detail}"
    return phase.detail, None


def _predict(manifest: Manifest, ledger, timer: PhaseTimer, swap_allowance: float, swap_basis: str, *,
             live_bytes: int, backup_bytes: int) -> Prediction:
    """A full restore's duration, from the phases measured and the estimates (module docstring)."""
    create_seconds, create_basis = _create_seconds(manifest, ledger, hash_seconds=timer.seconds(HASH_CHECK),
                                                   restore_seconds=timer.seconds(RESTORE))
    scale = live_bytes / backup_bytes if backup_bytes else 1.0
    return Prediction(
        recovery_seconds=timer.seconds(*RECOVERY_PHASES),
        safety_backup_seconds=create_seconds * scale,
        safety_backup_basis=f"{create_basis} x live {live_bytes:,} / backup {backup_bytes:,} bytes",
        swap_seconds=timer.seconds(SWAP) + swap_allowance,
        swap_basis=swap_basis,
        live_bytes=live_bytes,
        backup_bytes=backup_bytes,
    )


def _timed_audit(engine, progress: Reporter = NO_PROGRESS) -> tuple[tuple[str, tuple[dict, ...]], float]:
    """`audit_copy` on a connection of its own (opened in the calling thread), timed."""
    started = time.perf_counter()
    with engine.connect() as connection:
        outcome = audit_copy(connection, progress)
    return outcome, time.perf_counter() - started


def _failed(repository: Repository, report, manifest: Manifest, problems: list[str], command: str, fingerprints=None) -> DrillReport:
    """The backup could not be restored or failed a check: journal it as verify would, and as
    failed by a drill, so that no automatic choice picks it again (invariant 11)."""
    repository.record_deep_check(manifest.id, problems=problems, fingerprints=fingerprints or {}, by=command)
    repository.record_failure(manifest.id, "drill: " + "; ".join(problems), by=command)
    return report(manifest, problems=tuple(problems))


def _require_drillable(manifest: Manifest, engine: str, identity: str | None) -> None:
    if manifest.engine != engine:
        raise PreconditionFailed(
            f"backup {manifest.id} is a {manifest.engine} backup but the configured database is {engine}; "
            f"a drill rehearses restoring the configured database: drill one of its own backups "
            f"(`integrity backup list`) or point --database-url at the {manifest.engine} database"
        )
    if identity and manifest.source_identity and manifest.source_identity != identity:
        raise PreconditionFailed(
            f"backup {manifest.id} was taken from another database (store {manifest.source_identity}, this one is "
            f"{identity}); a drill rehearses restoring this database: drill one of its own backups "
            f"(`integrity drill` picks the newest good one)"
        )


def _compare(live, copy) -> tuple[TableComparison, ...]:
    from integrity.tablediff.backup_live import diff_databases

    with live.connect() as live_connection, copy.connect() as copy_connection:
        live_connection = one_snapshot(live_connection)  # the game keeps writing meanwhile
        diffs = diff_databases(live_connection, copy_connection, sample_limit=_SAMPLES)
    return tuple(
        TableComparison(
            table=d.table, live_rows=d.live_rows, backup_rows=d.backup_rows, only_live=d.only_live,
            only_backup=d.only_backup, changed=d.changed, changed_columns=dict(d.changed_columns),
            differing_rows=d.differing_rows, differing_share=d.differing_share, samples=dict(d.samples),
        )
        for d in diffs
    )


def _database_bytes(engine) -> int:
    with engine.connect() as connection:
        return database_bytes(connection)


def _create_seconds(manifest: Manifest, ledger, *, hash_seconds: float, restore_seconds: float) -> tuple[float, str]:
    """How long `backup create` took to write this backup, and where that figure comes from."""
    if ledger is not None:
        for run in ledger.runs(kind="backup create", limit=_CREATE_LOOKBACK):
            if run.summary.get("backup_id") == manifest.id and isinstance(run.summary.get("seconds"), (int, float)):
                return float(run.summary["seconds"]), f"backup create of {manifest.id} took {run.summary['seconds']:.2f}s"
    if manifest.timings:
        seconds = sum(manifest.timings.values()) + hash_seconds
        return seconds, f"manifest timings + hash check {seconds:.2f}s"
    return restore_seconds, f"measured restore {restore_seconds:.2f}s"



# ---------------------------------------------------------------- a drill at a point in time (issue 16)


# `drill --at random`: a moment drawn uniformly from the archive's window, so that repeated
# drills rehearse the whole retained archive, not only its newest end.
RANDOM_MOMENT = "random"


def run_point_in_time_drill(settings: Settings, moment: datetime | str, *, asked: str,
                            progress: Reporter = NO_PROGRESS, rng=None) -> DrillReport:
    """Drill the point-in-time archive at `moment` (module docstring), or at a random
    moment of its window (`RANDOM_MOMENT`, drawn with `rng`, default `random`). Exit 4
    when pitr is not enabled, nothing is restorable or `moment` is outside the window; 5
    when the engine cannot restore it or the copy cannot be read; 3 for the same findings
    as a backup's drill."""
    from integrity.guarded import check_guarded
    from integrity.pitr import engine_for as pitr_engine_for
    from integrity.pitr import require_enabled
    from integrity.timeparse import utc_text

    require_enabled(settings)
    check_guarded(settings)
    archive = pitr_engine_for(settings)
    window = archive.window()
    if moment == RANDOM_MOMENT:
        moment = _random_moment(window, rng)
    if not window.contains(moment):
        span = ("nothing restorable yet" if window.oldest is None or window.newest is None
                else f"{utc_text(window.oldest)} to {utc_text(window.newest)}")
        raise PreconditionFailed(f"{utc_text(moment)} is outside the point-in-time window ({span}); "
                                 "run `integrity pitr status` for the window")
    point = {"engine": archive.name, "moment": utc_text(moment), "window_oldest": utc_text(window.oldest),
             "window_newest": utc_text(window.newest), "asked": asked}
    label = f"point in time {utc_text(moment)} ({archive.name})"
    timer = PhaseTimer()
    objectives = settings.objectives

    def report(**values) -> DrillReport:
        defaults = dict(backup_id=label, engine=guarded_target(settings).kind, backup_created_at=utc_text(moment),
                        backup_age_seconds=None, phases=tuple(phase.as_(DrillPhase) for phase in timer.done),
                        problems=(), audit=None, violations=(), tables=(), compare_problem=None, prediction=None,
                        rto_seconds=objectives.rto_seconds, rpo_seconds=objectives.rpo_seconds, point_in_time=point)
        defaults.update(values)
        return DrillReport(**defaults)

    live_database = Database.of(settings)
    store_engine = engine_for(live_database)
    scratch_dir = settings.state.dir / "scratch"
    with live_database.reader() as live, ExitStack() as stack:
        try:
            with timer.phase(RESTORE) as phase:
                copy = stack.enter_context(archive.restored_at(moment, scratch_dir, window=window))
                phase.detail = copy.description
        except Failure as exc:
            return report(problems=(f"the {archive.name} archive could not restore {utc_text(moment)}: {exc}",))
        try:
            with live_database.beside(copy.target).reader() as engine:
                (audit, violations), audit_seconds = _timed_audit(engine, progress)
                timer.add(Phase(AUDITS, audit_seconds, detail=str(audit)))
                tables, compare_problem = _compare_with_live(live, engine, timer, progress)
                live_bytes = _database_bytes(live)
                copy_bytes = _database_bytes(engine)
        except sa.exc.DBAPIError as exc:
            return report(problems=(f"the restored copy cannot be read: {error_reason(exc)}",))
        swap_basis, swap_problem = _rehearse_swap(timer, store_engine, copy, scratch_dir)
        if swap_problem:
            return report(problems=(swap_problem,))
    restore_seconds = timer.seconds(RESTORE)
    scale = live_bytes / copy_bytes if copy_bytes else 1.0
    prediction = Prediction(
        recovery_seconds=timer.seconds(RESTORE, AUDITS),
        safety_backup_seconds=restore_seconds * scale,
        safety_backup_basis=(f"one more restore of the archive {restore_seconds:.2f}s x live {live_bytes:,} / "
                             f"restored {copy_bytes:,} bytes (no backup create to scale)"),
        swap_seconds=timer.seconds(SWAP) + store_engine.swap_allowance_seconds,
        swap_basis=swap_basis,
        live_bytes=live_bytes,
        backup_bytes=copy_bytes,
    )
    return report(audit=audit, violations=violations, tables=tables, compare_problem=compare_problem,
                  prediction=prediction)


def _random_moment(window, rng) -> datetime:
    import random

    if window.oldest is None or window.newest is None or window.newest < window.oldest:
        reason = f": {window.errors[0]}" if window.errors else ""
        raise PreconditionFailed(f"nothing can be restored from the point-in-time archive yet{reason}; "
                                 "run `integrity pitr status`")
    return window.oldest + (window.newest - window.oldest) * (rng or random).random()
