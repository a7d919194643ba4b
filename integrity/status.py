"""`integrity status`: one screen that says whether the data is safe right now.

Each check has a state; the command's exit code is the worst of them, in the order
5 (verification failed), 4 (precondition), 3 (problems), 0. Later issues add checks
(backups against the RPO, audits, drills, scheduled jobs) to `collect_status`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

from game_core.errors import ExitCode, Failure
from game_core.schema_state import SchemaState, head_revision, schema_status
from integrity.backups.statistics import store_identity
from integrity.database import open_read_only, table_row_counts, target_of
from integrity.report import age_text
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


@dataclass(frozen=True)
class StatusCheck:
    name: str
    state: CheckState
    detail: str


@dataclass(frozen=True)
class StatusReport:
    database: str
    engine: str
    config: str
    revision: str | None
    head: str
    row_counts: dict[str, int] = field(default_factory=dict)
    checks: tuple[StatusCheck, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        return worst_exit_code(check.state.exit_code for check in self.checks)

    @property
    def error(self) -> str | None:
        """The blocking check's detail (exit 4 or 5), shown as the one `Error:` line."""
        if self.exit_code < ExitCode.PRECONDITION:
            return None
        return next(c.detail for c in self.checks if c.state.exit_code == self.exit_code)

    def summary(self) -> dict:
        return {"exit_code": int(self.exit_code), "checks": {c.name: c.state.value for c in self.checks}}


def collect_status(settings: Settings) -> StatusReport:
    target = target_of(settings)
    head = head_revision()
    checks: list[StatusCheck] = []
    revision = None
    counts: dict[str, int] = {}
    identity = None
    try:
        _, engine = open_read_only(settings)
    except Failure as exc:
        checks.append(StatusCheck("database", CheckState.PRECONDITION, str(exc)))
    else:
        try:
            with engine.connect() as connection:
                schema = schema_status(connection)
                counts = table_row_counts(connection)
                identity = store_identity(connection)
        finally:
            engine.dispose()
        revision = schema.revision
        checks.append(StatusCheck("database", CheckState.OK, f"reachable ({target.kind})"))
        checks.append(_schema_check(schema))
    checks.extend(backup_checks(settings, identity=identity))
    checks.extend(audit_checks(settings))
    checks.extend(drill_checks(settings))
    checks.extend(job_checks(settings))
    return StatusReport(
        database=target.display,
        engine=target.kind,
        config=settings.config_display,
        revision=revision,
        head=head,
        row_counts=counts,
        checks=tuple(checks),
    )


def _schema_check(schema) -> StatusCheck:
    if schema.state is SchemaState.CURRENT:
        return StatusCheck("schema", CheckState.OK, schema.describe())
    if schema.state is SchemaState.BEHIND:
        return StatusCheck(
            "schema", CheckState.PROBLEM,
            f"{schema.describe()}: run `integrity migrate dry-run`, then `integrity migrate apply`",
        )
    if schema.state is SchemaState.EMPTY:
        return StatusCheck("schema", CheckState.PRECONDITION, f"{schema.describe()}: run `integrity init`")
    return StatusCheck("schema", CheckState.PRECONDITION, f"{schema.describe()}: check --database-url")


def backup_checks(settings: Settings, *, identity: str | None = None, now: datetime | None = None) -> list[StatusCheck]:
    """The newest good backup against the RPO; the newest deep-verified one against its limit.

    Only backups of this database count (same store identity): a repository that also
    holds another database's backups must not make this one look protected.
    """
    from integrity.backups.catalog import read_catalog
    from integrity.backups.repository import Repository

    now = now or datetime.now(timezone.utc)
    repository = Repository(settings.backups.repository)
    if not repository.backups_dir.is_dir():
        return [StatusCheck("backups", CheckState.PROBLEM,
                            f"no repository at {repository.root}: run `integrity init`, then `integrity backup create`")]
    catalog = read_catalog(repository, now).of_store(identity)
    checks = []
    objectives = settings.objectives
    good = catalog.newest_good()
    if good is None:
        checks.append(StatusCheck("newest good backup", CheckState.PROBLEM,
                                  f"none in {repository.root}: run `integrity backup create`"))
    else:
        age = (now - good.created_at).total_seconds()
        state = CheckState.OK if age <= objectives.rpo_seconds else CheckState.PROBLEM
        checks.append(StatusCheck("newest good backup", state,
                                  f"{good.id}, {age_text(good.created_at, now)} (rpo {objectives.rpo_seconds}s)"))
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
    newest = catalog.backups[-1] if catalog.backups else None
    if newest is not None and (newest.state.corrupt or newest.manifest_problem or newest.state.deep_failed):
        checks.append(StatusCheck("newest backup", CheckState.FAILED,
                                  f"{newest.id} failed verification: {'; '.join(newest.state.problems) or newest.manifest_problem}; "
                                  "see runbooks/backup-failed.md"))
    return checks


# How many recent whole-catalogue audits `audit_checks` looks through for the newest full one.
_AUDIT_LOOKBACK = 500



class _LedgerUnreadable(Exception):
    """The ledger could not be opened: carries the status row that says so."""

    def __init__(self, check: StatusCheck):
        self.check = check


@contextmanager
def _ledger_for(settings: Settings, check_name: str):
    """The ledger, opened for one status check and closed after it; when it cannot be
    opened, `_LedgerUnreadable` carries that check's precondition row."""
    from integrity.errors import LedgerUnavailable
    from integrity.ledger import Ledger

    try:
        ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
    except LedgerUnavailable as exc:
        raise _LedgerUnreadable(StatusCheck(check_name, CheckState.PRECONDITION, str(exc))) from None
    try:
        yield ledger
    finally:
        ledger.close()

def audit_checks(settings: Settings, *, now: datetime | None = None) -> list[StatusCheck]:
    """The last audit: none, failed error rules (also an incremental run's, until a full
    audit after it is clean), or a full audit older than twice [schedule] audit_full."""
    from integrity.audit_history import FULL, AuditHistory
    from integrity.settings import schedule_seconds

    now = now or datetime.now(timezone.utc)
    try:
        with _ledger_for(settings, "last audit") as ledger:
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


def drill_checks(settings: Settings, *, now: datetime | None = None) -> list[StatusCheck]:
    """The last drill that reached a verdict (integrity.recovery.drill's summary in the ledger).

    Never drilled: a problem (nobody knows how long a restore takes). A failed drill (5):
    failed. Otherwise its recorded facts are judged against the objectives configured now,
    as the backup checks are: predicted restore against rto_seconds, the drilled backup's
    age then against rpo_seconds, dirty data, a compare with live that could not run; and
    a drill older than twice [schedule] drill is a problem too.
    """
    from integrity.settings import schedule_seconds

    now = now or datetime.now(timezone.utc)
    try:
        with _ledger_for(settings, "last drill") as ledger:
            runs = ledger.runs(kind="drill", limit=_DRILL_LOOKBACK)
    except _LedgerUnreadable as exc:
        return [exc.check]
    last = next((run for run in runs if run.exit_code in _DRILL_VERDICTS), None)
    attempt = runs[0] if runs and runs[0].exit_code is not None and runs[0].exit_code not in _DRILL_VERDICTS else None
    could_not_run = (
        f"; the last attempt ({age_text(attempt.started_at, now)}) could not run: {attempt.summary.get('error', attempt.outcome)}"
        if attempt is not None and (last is None or attempt.started_at > last.started_at) else ""
    )
    if last is None:
        return [StatusCheck("last drill", CheckState.PROBLEM, f"none recorded: run `integrity drill`{could_not_run}")]
    summary = last.summary
    objectives = settings.objectives
    described = f"drill of {summary.get('backup_id', 'a backup')} ({age_text(last.started_at, now)})"
    if last.exit_code == int(ExitCode.VERIFICATION_FAILED):
        why = "; ".join(summary.get("problems") or []) or summary.get("error") or "see `integrity history --kind drill`"
        return [StatusCheck("last drill", CheckState.FAILED,
                            f"{described} failed: {why}; see runbooks/drill-failed.md{could_not_run}")]
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
    interval = schedule_seconds(settings.schedule.drill)
    if interval is not None and (now - last.started_at).total_seconds() > 2 * interval:
        problems.append(f"older than twice [schedule] drill ({settings.schedule.drill})")
    if problems:
        return [StatusCheck("last drill", CheckState.PROBLEM,
                            f"{described}: {'; '.join(problems)}: see runbooks/drill-failed.md{could_not_run}")]
    return [StatusCheck(
        "last drill", CheckState.OK,
        f"{described} passed: predicted full restore {predicted:.1f}s (rto {objectives.rto_seconds}s){could_not_run}",
    )]


def job_checks(settings: Settings, *, now: datetime | None = None) -> list[StatusCheck]:
    """One check per scheduled job (`job backup`, ...): a problem when a job that is on has
    not succeeded within twice its interval, counted from `init` when it never ran; and the
    scheduler's last heartbeat when one ever ran. Read from the ledger, so cron users get
    the same answer as the daemon's (integrity.scheduler.health)."""
    from integrity.errors import ConfigInvalid
    from integrity.scheduler import records
    from integrity.scheduler.health import job_states

    now = now or datetime.now(timezone.utc)
    try:
        with _ledger_for(settings, "scheduled jobs") as ledger:
            states = job_states(settings, ledger, now)
            heartbeat = records.last_heartbeat(ledger)
    except _LedgerUnreadable as exc:
        return [exc.check]
    except ConfigInvalid as exc:
        return [StatusCheck("scheduled jobs", CheckState.PRECONDITION, str(exc))]
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
        from integrity.scheduler.daemon import HEARTBEAT_SECONDS

        detail = f"last heartbeat {age_text(heartbeat.beat_at, now)} from {heartbeat.host} pid {heartbeat.pid} ({heartbeat.state})"
        if heartbeat.state == "running" and (now - heartbeat.beat_at).total_seconds() > 4 * HEARTBEAT_SECONDS:
            # Informational: a scheduler killed outright never says "stopped". The job
            # checks above are the alarm, and they hold for cron users too.
            detail += ": not beating, the scheduler was killed or hangs"
        checks.append(StatusCheck("scheduler", CheckState.OK, detail))
    return checks
