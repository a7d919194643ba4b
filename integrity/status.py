"""`integrity status`: one screen that says whether the data is safe right now.

Each check has a state; the command's exit code is the worst of them, in the order
5 (verification failed), 4 (precondition), 3 (problems), 0 (DESIGN.md section 4).

The exit code says how bad the worst state is; it does not say what to read first. An
old drill failure is a 5 and live corruption a 3, yet the on-call engineer must act on
the corruption first. So each check also has an urgency, and the `Error:` line (and the
JSON `problems` list) names the problems most urgent first:

1. the database itself: unreachable, missing, empty, at a revision this code does not know;
2. live data: the audits found rows failing error rules in live (present corruption);
3. the schema: live differs from its revision's model, or a revision was applied without
   a passing dry run on this store (integrity.schema_check), or it is behind head;
4. protection: no restorable backup within the RPO, the newest backups suspect; the
   point-in-time archive lagging, failing or its replicator dying (`pitr_checks`);
5. the tool's own records: the ledger or the schedule cannot be read;
6. history: the last drill, deep verification, the newest backup's verification, audits
   and jobs that ran too long ago.

Within one urgency the worse state comes first. A failed drill is history, and a
successful restore or a later drill supersedes it (`drill_checks`).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from enum import Enum, IntEnum

from game_core.errors import ExitCode, Failure
from game_core.schema_state import SchemaState, head_revision
from integrity.db.connect import Database, guarded_target
from integrity.db.sql import table_row_counts
from integrity.timeparse import age_text
from integrity.settings import Settings


class CheckState(str, Enum):
    OK = "ok"
    PROBLEM = "problem"
    PRECONDITION = "precondition"
    FAILED = "failed"

    @property
    def exit_code(self) -> ExitCode:
        return _STATE_EXIT[self]


_STATE_EXIT = {
    CheckState.OK: ExitCode.OK,
    CheckState.PROBLEM: ExitCode.PROBLEMS_FOUND,
    CheckState.PRECONDITION: ExitCode.PRECONDITION,
    CheckState.FAILED: ExitCode.VERIFICATION_FAILED,
}
# DESIGN.md section 4: where a command reports several states, 5 beats 4 beats 3 beats 0.
_WORST_FIRST = (ExitCode.VERIFICATION_FAILED, ExitCode.PRECONDITION, ExitCode.PROBLEMS_FOUND, ExitCode.OK)


def worst_exit_code(codes) -> ExitCode:
    present = set(codes)
    return next((code for code in _WORST_FIRST if code in present), ExitCode.OK)


class Urgency(IntEnum):
    """What an on-call engineer must read first (lowest first); see the module docstring."""

    DATABASE = 1
    LIVE_DATA = 2
    SCHEMA = 3
    PROTECTION = 4
    RECORDS = 5
    HISTORY = 6


@dataclass(frozen=True)
class StatusCheck:
    name: str
    state: CheckState
    detail: str
    # Not a field: the JSON of a check stays name, state and detail; the report's
    # `problems` carries the order it implies.
    urgency: InitVar[Urgency] = Urgency.HISTORY

    def __post_init__(self, urgency: Urgency) -> None:
        object.__setattr__(self, "urgency", urgency)


def most_urgent_first(checks) -> list[StatusCheck]:
    """The checks that are not ok, most urgent first; within an urgency, worst state first
    (stable: then in the order status shows them)."""
    problems = [check for check in checks if check.state is not CheckState.OK]
    return sorted(problems, key=lambda c: (c.urgency, _WORST_FIRST.index(c.state.exit_code)))


@dataclass(frozen=True)
class StatusReport:
    database: str
    engine: str
    config: str
    revision: str | None
    head: str
    row_counts: dict[str, int] = field(default_factory=dict)
    checks: tuple[StatusCheck, ...] = ()
    problems: tuple[str, ...] = ()  # names of the checks that are not ok, most urgent first

    @property
    def exit_code(self) -> ExitCode:
        return worst_exit_code(check.state.exit_code for check in self.checks)

    @property
    def error(self) -> str | None:
        """The `Error:` line when a check blocks or failed (exit 4 or 5): the most urgent
        problem's detail first, whatever its exit code, then the check that decided the
        exit code when that is another one."""
        if self.exit_code < ExitCode.PRECONDITION:
            return None
        ranked = most_urgent_first(self.checks)
        first = ranked[0]
        if first.state.exit_code == self.exit_code:
            return first.detail
        deciding = next(c for c in ranked if c.state.exit_code == self.exit_code)
        return f"{first.detail}; also {deciding.name} (exit {int(self.exit_code)}): {deciding.detail}"

    def summary(self) -> dict:
        return {"exit_code": int(self.exit_code), "checks": {c.name: c.state.value for c in self.checks},
                "problems": list(self.problems)}


def collect_status(settings: Settings, *, ledger=None) -> StatusReport:
    """The status of `settings`' database. `ledger` is the run's open ledger (the CLI's);
    without one the ledger is opened once here and shared by every section."""
    with _one_ledger(settings, ledger) as shared:
        return _collect_status(settings, shared)


def _collect_status(settings: Settings, ledger) -> StatusReport:
    target = guarded_target(settings)
    head = head_revision()
    checks: list[StatusCheck] = []
    revision = None
    counts: dict[str, int] = {}
    identity = None
    opened = ExitStack()
    try:
        engine = opened.enter_context(Database.of(settings).reader())
    except Failure as exc:
        checks.append(StatusCheck("database", CheckState.PRECONDITION, str(exc), Urgency.DATABASE))
    else:
        with opened, engine.connect() as connection:
            verdict = _judge_schema(settings, connection, ledger)
            counts = table_row_counts(connection)
        identity = verdict.identity
        revision = verdict.status.revision
        checks.append(StatusCheck("database", CheckState.OK, f"reachable ({target.kind})", Urgency.DATABASE))
        checks.append(schema_check(verdict))
    checks.extend(backup_checks(settings, identity=identity))
    checks.extend(copy_checks(settings, identity=identity))
    checks.extend(audit_checks(settings, ledger=ledger))
    checks.extend(drill_checks(settings, ledger=ledger))
    checks.extend(job_checks(settings, ledger=ledger))
    checks.extend(pitr_checks(settings, ledger=ledger))
    checks.extend(_notify_checks(settings, ledger))
    return StatusReport(
        database=target.display,
        engine=target.kind,
        config=settings.config_display,
        revision=revision,
        head=head,
        row_counts=counts,
        checks=tuple(checks),
        problems=tuple(check.name for check in most_urgent_first(checks)),
    )


def _notify_checks(settings: Settings, ledger) -> list[StatusCheck]:
    """The `notifications` row of `integrity status` when [notify] targets are set: a
    problem while a notification did not reach every target (alerts that go nowhere are
    found here, also by cron users running -q, who never see the warning), until
    `integrity notify test` reaches every target. No row without targets, or when the
    ledger cannot be read (the ledger's own rows say so)."""
    from integrity.errors import LedgerUnavailable
    from integrity.notify_records import read_rows

    if not settings.notify.targets or ledger is None or isinstance(ledger, LedgerUnavailable):
        return []
    failed = sorted((row for row in read_rows(ledger).values() if row.last_error),
                    key=lambda row: row.error_at or row.changed_at, reverse=True)
    targets = f"{len(settings.notify.targets)} target(s)"
    if not failed:
        return [StatusCheck("notifications", CheckState.OK, f"{targets}; every notification reached every target",
                            Urgency.RECORDS)]
    newest = failed[0]
    return [StatusCheck(
        "notifications", CheckState.PROBLEM,
        f"{len(failed)} notification(s) did not reach every target of {targets}, the newest {newest.key} at "
        f"{(newest.error_at or newest.changed_at):%Y-%m-%d %H:%M:%SZ}: {newest.last_error}; fix [notify] targets, then run "
        "`integrity notify test` (it clears these once every target answers)",
        Urgency.RECORDS,
    )]


def _judge_schema(settings: Settings, connection, ledger):
    """The schema verdict; without a readable ledger the dry runs stay unknown (the
    ledger's own problem is reported by the checks that read it)."""
    from integrity.errors import LedgerUnavailable
    from integrity.schema_check import judge_schema, model_cache

    return judge_schema(connection, None if isinstance(ledger, LedgerUnavailable) else ledger,
                        model_cache=model_cache(settings.state.dir))


SCHEMA_RUNBOOK = "runbooks/schema-unchecked.md"


def schema_check(verdict) -> StatusCheck:
    """The schema row: where live stands against head, whether its columns are its
    revision's model, and whether every revision it went through passed a dry run here."""
    schema = verdict.status
    findings = verdict.describe_findings()
    if schema.state is SchemaState.EMPTY:
        return StatusCheck("schema", CheckState.PRECONDITION, f"{schema.describe()}: run `integrity init`", Urgency.DATABASE)
    if schema.state is SchemaState.UNKNOWN:
        applied = f"; {findings[-1]}: see {SCHEMA_RUNBOOK}" if verdict.is_unchecked else ""
        return StatusCheck("schema", CheckState.PRECONDITION, f"{schema.describe()}: check --database-url{applied}",
                           Urgency.DATABASE)
    if findings:
        behind = f"; it is also behind head {schema.head}" if schema.state is SchemaState.BEHIND else ""
        return StatusCheck("schema", CheckState.PROBLEM,
                           f"at {schema.revision}, but {'; '.join(findings)}{behind}: see {SCHEMA_RUNBOOK}",
                           Urgency.SCHEMA)
    if schema.state is SchemaState.BEHIND:
        return StatusCheck(
            "schema", CheckState.PROBLEM,
            f"{schema.describe()}: run `integrity migrate dry-run`, then `integrity migrate apply`", Urgency.SCHEMA,
        )
    notes = []
    if verdict.differences is None:
        notes.append(verdict.model_problem or "not compared with its model")
    else:
        notes.append(f"columns match the model of {schema.revision}")
    notes.append("dry runs unknown (the ledger cannot be read)" if verdict.unchecked is None
                 else "every revision checked on this store")
    return StatusCheck("schema", CheckState.OK, f"{schema.describe()}; {', '.join(notes)}", Urgency.SCHEMA)


def backup_checks(settings: Settings, *, identity: str | None = None, now: datetime | None = None) -> list[StatusCheck]:
    """The newest restorable backup against the RPO; the newest deep-verified one against
    its limit; suspect backups newer than the newest restorable one (the backup job is
    producing unusable backups now); the newest backup's own verification.

    Only backups of this database count (same store identity): a repository that also
    holds another database's backups must not make this one look protected.
    """
    from integrity.backups.catalog import read_catalog
    from integrity.backups.repository import Repository

    now = now or datetime.now(timezone.utc)
    repository = Repository.of(settings)
    if not repository.exists():
        return [StatusCheck("backups", CheckState.PROBLEM,
                            f"no repository at {repository.location}: run `integrity init`, then `integrity backup create`",
                            Urgency.PROTECTION)]
    catalog = read_catalog(repository, now).of_store(identity)
    checks = []
    objectives = settings.objectives
    good = catalog.newest_restorable()
    if good is None:
        checks.append(StatusCheck("newest good backup", CheckState.PROBLEM,
                                  f"none restorable in {repository.location}: run `integrity backup create`",
                                  Urgency.PROTECTION))
    else:
        age = (now - good.created_at).total_seconds()
        state = CheckState.OK if age <= objectives.rpo_seconds else CheckState.PROBLEM
        checks.append(StatusCheck("newest good backup", state,
                                  f"{good.id}, {age_text(good.created_at, now)} (rpo {objectives.rpo_seconds}s)",
                                  Urgency.PROTECTION))
    newer = [b for b in catalog.backups if good is None or b.created_at > good.created_at]
    suspect = [b for b in newer if b.state.suspect]
    if suspect:
        latest = suspect[-1]
        checks.append(StatusCheck(
            "suspect backups", CheckState.PROBLEM,
            f"{len(suspect)} backup(s) newer than the newest restorable one are suspect, the newest {latest.id}: "
            f"{'; '.join(latest.state.suspect_reasons)}; check the backup job's source, see runbooks/backup-failed.md",
            Urgency.PROTECTION,
        ))
    deep = catalog.newest_deep_verified()
    if deep is None:
        checks.append(StatusCheck("newest deep-verified backup", CheckState.PROBLEM,
                                  "none: run `integrity backup verify --deep`"))
    else:
        age = (now - deep.created_at).total_seconds()
        limit = objectives.deep_verify_max_age_seconds
        state = CheckState.OK if age <= limit else CheckState.PROBLEM
        checks.append(StatusCheck("newest deep-verified backup", state,
                                  f"{deep.id}, {age_text(deep.created_at, now)} (limit {limit}s)"))
    if catalog.journal_problems:
        # States and pins come from the journal: with lines skipped, retention refuses to run
        # (exit 4) and what status says of the backups may be missing a word.
        checks.append(StatusCheck(
            "journal", CheckState.PRECONDITION,
            f"{len(catalog.journal_problems)} line(s) of {repository.journal_location} could not be read, the first: "
            f"{catalog.journal_problems[0]}; prune refuses until it is repaired, see runbooks/backup-failed.md",
            Urgency.RECORDS,
        ))
    newest = catalog.backups[-1] if catalog.backups else None
    if newest is not None and (newest.state.corrupt or newest.manifest_problem or newest.state.deep_failed):
        checks.append(StatusCheck("newest backup", CheckState.FAILED,
                                  f"{newest.id} failed verification: {'; '.join(newest.state.problems) or newest.manifest_problem}; "
                                  "see runbooks/backup-failed.md"))
    return checks


def copy_checks(settings: Settings, *, identity: str | None = None, now: datetime | None = None) -> list[StatusCheck]:
    """Each [[repositories]] copy's newest restorable backup of this database against
    [objectives] copy_max_age_seconds: the 3-2-1 rule made visible (a copy that stopped
    receiving backups, or cannot be reached, is a problem long before the disk dies)."""
    from integrity.backups.repositories import copy_names, newest_good_per_repository

    now = now or datetime.now(timezone.utc)
    limit = settings.objectives.copy_max_age_seconds
    checks = []
    # The copies alone: backup_checks has read the primary.
    for freshness in newest_good_per_repository(settings, identity, now, copy_names(settings)):
        name = f"copy {freshness.name}"
        if freshness.problem is not None:
            checks.append(StatusCheck(name, CheckState.PRECONDITION, freshness.problem, Urgency.PROTECTION))
        elif freshness.newest is None:
            checks.append(StatusCheck(name, CheckState.PROBLEM, f"none restorable in {freshness.location}: run "
                                      f"`integrity backup copy --all-missing --to {freshness.name}`", Urgency.PROTECTION))
        else:
            age = (now - freshness.newest.created_at).total_seconds()
            state = CheckState.OK if age <= limit else CheckState.PROBLEM
            checks.append(StatusCheck(name, state, f"{freshness.newest.id}, {age_text(freshness.newest.created_at, now)} "
                                      f"in {freshness.location} (limit {limit}s)", Urgency.PROTECTION))
    return checks


# How many recent whole-catalogue audits `audit_checks` looks through for the newest full one.
_AUDIT_LOOKBACK = 500



class _LedgerUnreadable(Exception):
    """The ledger could not be opened: carries the status row that says so."""

    def __init__(self, check: StatusCheck):
        self.check = check


@contextmanager
def _one_ledger(settings: Settings, ledger):
    """The ledger every section of one status reads: `ledger` when the caller has it open
    (not closed here), else opened once and closed at the end, else the LedgerUnavailable
    that each section turns into its own precondition row (`_ledger_for`)."""
    from integrity.errors import LedgerUnavailable
    from integrity.ledger import Ledger

    if ledger is not None:
        yield ledger
        return
    try:
        opened = Ledger.open(settings.state.dir, settings.state.ledger_url)
    except LedgerUnavailable as exc:
        yield exc
        return
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def _ledger_for(settings: Settings, check_name: str, ledger=None):
    """The ledger for one status check: the one given (or the LedgerUnavailable met when
    `collect_status` opened it), else opened for this check alone; when it cannot be
    read, `_LedgerUnreadable` carries that check's precondition row."""
    from integrity.errors import LedgerUnavailable

    with _one_ledger(settings, ledger) as usable:
        if isinstance(usable, LedgerUnavailable):
            raise _LedgerUnreadable(StatusCheck(check_name, CheckState.PRECONDITION, str(usable), Urgency.RECORDS))
        yield usable


def audit_checks(settings: Settings, *, now: datetime | None = None, ledger=None) -> list[StatusCheck]:
    """The last audit: none, failed error rules (also an incremental run's, until a full
    audit after it is clean), or a full audit older than twice [schedule] audit_full."""
    from integrity.audit_history import FULL, AuditHistory
    from integrity.settings import schedule_seconds

    now = now or datetime.now(timezone.utc)
    try:
        with _ledger_for(settings, "last audit", ledger) as ledger:
            runs = AuditHistory(ledger.engine).runs(limit=_AUDIT_LOOKBACK, whole_catalogue=True)
    except _LedgerUnreadable as exc:
        return [exc.check]
    if not runs:
        return [StatusCheck("last audit", CheckState.PROBLEM, "none recorded: run `integrity audit`")]
    last = runs[0]
    described = f"audit {last.id} ({last.scope}, {age_text(last.started_at, now)})"
    full_index = next((i for i, run in enumerate(runs) if run.scope == FULL), None)
    since_full = runs if full_index is None else runs[: full_index + 1]
    dirty = next((run for run in since_full if not run.ok), None)
    if dirty is not None:
        failing = sorted(c.rule for c in dirty.counts.values() if c.failing_rows and c.severity == "error")
        rows = sum(dirty.counts[rule].failing_rows for rule in failing)
        where = "" if dirty is last else "; the last clean run was incremental and did not look at those rows again"
        return [StatusCheck(
            "last audit", CheckState.PROBLEM,
            f"audit {dirty.id} ({dirty.scope}, {age_text(dirty.started_at, now)}) found {rows:,} rows failing "
            f"error rules {', '.join(failing)}{where}: see runbooks/audit-findings.md, then run `integrity audit`",
            Urgency.LIVE_DATA,  # present corruption: read before any history
        )]
    interval = schedule_seconds(settings.schedule.audit_full)
    full = runs[full_index] if full_index is not None else None
    if interval is not None:
        if full is None:
            return [StatusCheck("last audit", CheckState.PROBLEM,
                                f"{described} clean, but no full audit recorded: run `integrity audit`")]
        age = (now - full.started_at).total_seconds()
        if age > 2 * interval:
            return [StatusCheck(
                "last audit", CheckState.PROBLEM,
                f"newest full audit {full.id} is {age_text(full.started_at, now)}, older than twice "
                f"[schedule] audit_full ({settings.schedule.audit_full}): run `integrity audit`",
            )]
    extras = f"{last.warn_rules} warn rule(s) failing, {len(last.drift)} drift warning(s)"
    return [StatusCheck("last audit", CheckState.OK, f"{described} clean; {extras}")]


# How many recent drill runs `drill_checks` looks through for one that reached a verdict.
_DRILL_LOOKBACK = 50
# Exit codes of a drill that reached a verdict on its backup (4: it could not run at all).
_DRILL_VERDICTS = (int(ExitCode.OK), int(ExitCode.PROBLEMS_FOUND), int(ExitCode.VERIFICATION_FAILED))
# How many recent restore runs are looked through for one that supersedes a failed drill.
_RESTORE_LOOKBACK = 50


@dataclass(frozen=True)
class DrillEvidence:
    """What the ledger says about restores rehearsed and done (status and metrics read it)."""

    last: object | None  # the newest drill run that reached a verdict (RunRecord)
    attempt: object | None  # a newer drill run that could not run at all
    restore: object | None  # a successful real restore after a failed `last`: it supersedes it

    @property
    def failed(self) -> bool:
        """The last drill failed verification and nothing has proven a restore since."""
        return self.last is not None and self.last.exit_code == int(ExitCode.VERIFICATION_FAILED) and self.restore is None


def drill_evidence(ledger) -> DrillEvidence:
    runs = ledger.runs(kind="drill", limit=_DRILL_LOOKBACK)
    last = next((run for run in runs if run.exit_code in _DRILL_VERDICTS), None)
    attempt = runs[0] if runs and runs[0].exit_code is not None and runs[0].exit_code not in _DRILL_VERDICTS else None
    if attempt is not None and last is not None and attempt.started_at <= last.started_at:
        attempt = None
    restore = None
    if last is not None and last.exit_code == int(ExitCode.VERIFICATION_FAILED):
        # A restore that verified its staging copy and swapped it in proves what the
        # failed drill put in doubt: the recovery path works, with a backup that restores.
        restore = next((
            run for run in ledger.runs(kind="restore", limit=_RESTORE_LOOKBACK)
            if run.command == "restore" and run.exit_code == 0 and not run.summary.get("dry_run")
            and run.started_at > last.started_at
        ), None)
    return DrillEvidence(last, attempt, restore)


def drill_checks(settings: Settings, *, now: datetime | None = None, ledger=None) -> list[StatusCheck]:
    """The last drill that reached a verdict (integrity.recovery.drill's summary in the ledger).

    Never drilled: a problem (nobody knows how long a restore takes). A failed drill (5):
    failed, until a later drill reaches a verdict or a real restore succeeds after it (the
    restore's measured time is then judged against rto_seconds). Otherwise its recorded
    facts are judged against the objectives configured now, as the backup checks are:
    predicted restore against rto_seconds, the drilled backup's age then against
    rpo_seconds, dirty data, a compare with live that could not run; and a drill (or
    superseding restore) older than twice [schedule] drill is a problem too.
    """
    from integrity.settings import schedule_seconds

    now = now or datetime.now(timezone.utc)
    try:
        with _ledger_for(settings, "last drill", ledger) as ledger:
            evidence = drill_evidence(ledger)
    except _LedgerUnreadable as exc:
        return [exc.check]
    last, attempt = evidence.last, evidence.attempt
    could_not_run = (
        f"; the last attempt ({age_text(attempt.started_at, now)}) could not run: {attempt.summary.get('error', attempt.outcome)}"
        if attempt is not None else ""
    )
    if last is None:
        return [StatusCheck("last drill", CheckState.PROBLEM, f"none recorded: run `integrity drill`{could_not_run}")]
    summary = last.summary
    objectives = settings.objectives
    interval = schedule_seconds(settings.schedule.drill)
    described = f"drill of {summary.get('backup_id', 'a backup')} ({age_text(last.started_at, now)})"
    if last.exit_code == int(ExitCode.VERIFICATION_FAILED):
        why = "; ".join(summary.get("problems") or []) or summary.get("error") or "see `integrity history --kind drill`"
        if evidence.restore is None:
            return [StatusCheck("last drill", CheckState.FAILED,
                                f"{described} failed: {why}; see runbooks/drill-failed.md{could_not_run}")]
        return [_superseded_drill(f"{described} failed ({why})", evidence.restore, objectives, interval,
                                  settings.schedule.drill, now, could_not_run)]
    problems = []
    predicted = summary.get("predicted_seconds")
    if predicted is None:
        problems.append("no restore time was predicted")
    elif predicted > objectives.rto_seconds:
        problems.append(f"predicted full restore {predicted:.1f}s exceeds rto {objectives.rto_seconds}s")
    backup_age = summary.get("backup_age_seconds")
    if backup_age is not None and backup_age > objectives.rpo_seconds:
        problems.append(f"the drilled backup was {backup_age:.0f}s old, over rpo {objectives.rpo_seconds}s")
    if summary.get("audit") == "dirty":
        problems.append("the drilled backup holds dirty data")
    if summary.get("compare_problem"):
        problems.append(f"live could not be compared: {summary['compare_problem']}")
    if interval is not None and (now - last.started_at).total_seconds() > 2 * interval:
        problems.append(f"older than twice [schedule] drill ({settings.schedule.drill})")
    if problems:
        return [StatusCheck("last drill", CheckState.PROBLEM,
                            f"{described}: {'; '.join(problems)}: see runbooks/drill-failed.md{could_not_run}")]
    return [StatusCheck(
        "last drill", CheckState.OK,
        f"{described} passed: predicted full restore {predicted:.1f}s (rto {objectives.rto_seconds}s){could_not_run}",
    )]


def _superseded_drill(failed: str, restore, objectives, interval: float | None, schedule: str,
                      now: datetime, could_not_run: str) -> StatusCheck:
    """A failed drill after which a real restore succeeded: the restore is the evidence."""
    took = restore.summary.get("total_seconds")
    described = (f"{failed}; superseded by the restore of {restore.summary.get('backup_id', 'a backup')} "
                 f"({age_text(restore.started_at, now)}), verified and swapped in")
    problems = []
    if took is not None and took > objectives.rto_seconds:
        problems.append(f"it took {took:.1f}s, over rto {objectives.rto_seconds}s")
    if interval is not None and (now - restore.started_at).total_seconds() > 2 * interval:
        problems.append(f"older than twice [schedule] drill ({schedule})")
    if problems:
        return StatusCheck("last drill", CheckState.PROBLEM,
                           f"{described}: {'; '.join(problems)}: run `integrity drill`{could_not_run}")
    timing = f" in {took:.1f}s (rto {objectives.rto_seconds}s)" if took is not None else ""
    return StatusCheck("last drill", CheckState.OK,
                       f"{described}{timing}; run `integrity drill` to rehearse again{could_not_run}")


def job_checks(settings: Settings, *, now: datetime | None = None, ledger=None) -> list[StatusCheck]:
    """One check per scheduled job (`job backup`, ...): a problem when a job that is on has
    not succeeded within twice its interval, counted from `init` when it never ran; and the
    scheduler's last heartbeat when one ever ran. Read from the ledger, so cron users get
    the same answer as the daemon's (integrity.scheduler.health)."""
    from integrity.errors import ConfigInvalid
    from integrity.scheduler import records
    from integrity.scheduler.health import job_states

    now = now or datetime.now(timezone.utc)
    try:
        with _ledger_for(settings, "scheduled jobs", ledger) as ledger:
            states = job_states(settings, ledger, now)
            heartbeat = records.last_heartbeat(ledger)
    except _LedgerUnreadable as exc:
        return [exc.check]
    except ConfigInvalid as exc:
        return [StatusCheck("scheduled jobs", CheckState.PRECONDITION, str(exc), Urgency.RECORDS)]
    checks = []
    for job in states:
        if job.interval_seconds is None:
            continue  # off
        last = (f"last success {age_text(job.last_success.started_at, now)}" if job.last_success
                else f"never succeeded (counted from {age_text(job.since, now)})" if job.since else "never ran")
        if job.last_run is not None and job.last_run.exit_code != 0:
            last += f"; last run {age_text(job.last_run.started_at, now)} exit {job.last_run.exit_code}"
        if job.skipped_since_success or job.missed_since_success:
            last += f"; since then {job.skipped_since_success} skipped, {job.missed_since_success} missed"
        if job.overdue:
            checks.append(StatusCheck(
                f"job {job.job}", CheckState.PROBLEM,
                f"{last}: not within twice its schedule ({job.schedule}); see runbooks/job-stale.md",
            ))
        else:
            checks.append(StatusCheck(f"job {job.job}", CheckState.OK, f"{last} ({job.schedule})"))
    if heartbeat is not None:
        from integrity.scheduler.records import HEARTBEAT_SECONDS

        detail = f"last heartbeat {age_text(heartbeat.beat_at, now)} from {heartbeat.host} pid {heartbeat.pid} ({heartbeat.state})"
        if heartbeat.state == "running" and (now - heartbeat.beat_at).total_seconds() > 4 * HEARTBEAT_SECONDS:
            # Informational: a scheduler killed outright never says "stopped". The job
            # checks above are the alarm, and they hold for cron users too.
            detail += ": not beating, the scheduler was killed or hangs"
        checks.append(StatusCheck("scheduler", CheckState.OK, detail))
    return checks


# ---------------------------------------------------------------- point-in-time recovery (issue 16)

PITR_RUNBOOK = "runbooks/pitr-lag.md"
# A replicator death stays a problem row until the replicator has run this long without
# dying again: a crash loop with long gaps must not look healthy between two deaths.
REPLICATOR_CLEAN_SECONDS = 600
# Deaths counted in the replicator row (the ledger keeps them all).
_DEATHS_COUNTED_SECONDS = 86400
# How long one reading of the engine's window serves status and the metrics of the same
# run: reading it is two engine subprocesses (Litestream) or an `info` and a query (pgBackRest).
_PITR_READING_SECONDS = 5.0
_pitr_reading: dict[tuple, tuple[float, object]] = {}


def read_pitr_status(settings: Settings):
    """`integrity.pitr.operations.pitr_status` of `settings` (or the Failure it raised),
    read at most once per _PITR_READING_SECONDS per process: `status` and the metrics file
    written after it share one reading."""
    import time

    from integrity.pitr.operations import pitr_status

    key = (settings.database_url, str(settings.pitr.repository), str(settings.state.dir))
    cached = _pitr_reading.get(key)
    if cached is not None and time.monotonic() - cached[0] < _PITR_READING_SECONDS:
        return cached[1]
    try:
        reading = pitr_status(settings)
    except Failure as exc:
        reading = exc
    _pitr_reading[key] = (time.monotonic(), reading)
    return reading


def _moment_text(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def pitr_checks(settings: Settings, *, now: datetime | None = None, ledger=None) -> list[StatusCheck]:
    """With `[pitr] enabled`: the point-in-time archive's recovery point (newest shipped
    position, its age, the lag against lag_objective_seconds, the oldest restorable point),
    the engine's errors, and the replicator's deaths recorded by `schedule run`. The lag
    is judged by integrity.pitr.operations (`PitrStatusReport.findings`), never here."""
    if not settings.pitr.enabled:
        return []
    now = now or datetime.now(timezone.utc)
    report = read_pitr_status(settings)
    if isinstance(report, Failure):
        state = CheckState.PRECONDITION if report.exit_code == ExitCode.PRECONDITION else CheckState.PROBLEM
        return [StatusCheck("pitr recovery point", state, f"{report}; see {PITR_RUNBOOK}", Urgency.PROTECTION)]
    checks = [_recovery_point_check(report)]
    if report.errors:
        checks.append(StatusCheck(
            "pitr errors", CheckState.PROBLEM,
            f"{report.engine}: {'; '.join(report.errors)}; see {PITR_RUNBOOK}", Urgency.PROTECTION,
        ))
    checks.extend(replicator_checks(settings, now=now, ledger=ledger))
    return checks


def _recovery_point_check(report) -> StatusCheck:
    lag_findings = [finding for finding in report.findings if finding not in report.errors]
    if report.newest is None:
        point = "nothing shipped yet"
    else:
        age = report.newest_age_seconds
        lag = "caught up, lag 0s" if report.caught_up else f"lag {report.lag_seconds:.1f}s"
        point = f"newest {_moment_text(report.newest)} ({age:.0f}s old, {lag})"
    detail = (f"{report.engine}: {point}; objective {report.lag_objective_seconds}s; "
              f"oldest restorable {_moment_text(report.oldest)}")
    if lag_findings:
        why = "; ".join(lag_findings)
        if PITR_RUNBOOK not in why:
            why += f"; see {PITR_RUNBOOK}"
        return StatusCheck("pitr recovery point", CheckState.PROBLEM, f"{detail}: {why}", Urgency.PROTECTION)
    return StatusCheck("pitr recovery point", CheckState.OK, detail, Urgency.PROTECTION)


def replicator_checks(settings: Settings, *, now: datetime | None = None, ledger=None) -> list[StatusCheck]:
    """The replicator `schedule run` supervises (integrity.scheduler.daemon): its deaths in
    the last day from the ledger; a problem until it has run REPLICATOR_CLEAN_SECONDS
    without dying. No row when it never died (nothing to say) or the engine has none."""
    from datetime import timedelta

    from integrity.scheduler.records import replicator_deaths

    now = now or datetime.now(timezone.utc)
    try:
        with _ledger_for(settings, "pitr replicator", ledger) as ledger:
            deaths = replicator_deaths(ledger, since=now - timedelta(seconds=_DEATHS_COUNTED_SECONDS))
    except _LedgerUnreadable as exc:
        return [exc.check]
    if not deaths:
        return []
    last = deaths[0]
    # The reason is the death's own line: its pid, exit status, life, time and last output.
    detail = f"the replicator died {len(deaths)} time(s) in the last day, the last {age_text(last.fire_time, now)}: {last.reason}"
    if (now - last.fire_time).total_seconds() < REPLICATOR_CLEAN_SECONDS:
        return [StatusCheck("pitr replicator", CheckState.PROBLEM,
                            f"{detail}; restarted by `integrity schedule run`, see {PITR_RUNBOOK}", Urgency.PROTECTION)]
    return [StatusCheck("pitr replicator", CheckState.OK,
                        f"{detail}; no death in the {REPLICATOR_CLEAN_SECONDS // 60} minutes since")]
