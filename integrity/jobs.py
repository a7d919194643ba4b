"""The scheduled jobs, in one table, and how to find their runs in the ledger.

`[schedule]` names nine jobs (integrity.settings.JOBS, the settings' schema). `JOBS` says
everything else about each: the `integrity.api` operation it performs and with which
options, the command line it is equivalent to (for cron users), the ledger command its runs
are recorded under, and how a run's summary tells the jobs of one command apart. Some jobs
share a command: `backup verify` is the quick `verify` job or, with `--deep`, the
`deep_verify` job; `audit` is the incremental `audit` job (`--since-last`) or the whole
`audit_full` one. The scheduler, the metrics and the job health of `integrity status` all
read this table, so they can never disagree about what "the last deep verify" was.

A run answers `matches` with True (a run of this job), False (another job's run, or a
narrowed run that is no job's: `audit --rule X`), or None: the run failed before its
summary said which job it was (an `Error:` exit records only the error). Such a run
counts as a completed, unsuccessful run of every job it could have been, never as a
success of any: an alert should rather fire once too often than stay silent.

A run recorded by the scheduler names its job in the summary (`"job": "deep_verify"`);
that name wins over every other rule.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from integrity.ledger import RunRecord

Verdict = bool | None


@dataclass(frozen=True)
class Job:
    """One scheduled job: what it does (`operation(inv, **options)` of integrity.api), the
    command line that does the same, the ledger command its runs are recorded under, and a
    filter telling its runs from other runs of that command."""

    name: str
    command: str
    matches: Callable[[RunRecord], Verdict]
    description: str
    operation: str
    options: dict[str, Any] = field(default_factory=dict)
    flags: str = ""  # the options as the command line gives them

    @property
    def command_line(self) -> str:
        """The crontab line equivalent to this job (`schedule list`, the README)."""
        return " ".join(part for part in ("integrity -q", self.command, self.flags) if part)


def _always(run: RunRecord) -> Verdict:
    return True


def _verify_is_deep(run: RunRecord) -> Verdict:
    # VerifyReport.summary(): {backup_id: {"quick": ..., "deep": None | "ok" | "failed", ...}}.
    # "deep" is None exactly when --deep was not asked (or the quick check failed first:
    # such a deep run is filed as a failed quick verify, which it also is).
    verdicts = [v for v in run.summary.values() if isinstance(v, dict) and "quick" in v]
    if not verdicts:
        return None
    return any(v.get("deep") is not None for v in verdicts)


def _verify_quick(run: RunRecord) -> Verdict:
    deep = _verify_is_deep(run)
    return None if deep is None else not deep


def _drill_of_a_backup(run: RunRecord) -> Verdict:
    # `drill --at TIME` rehearses the point-in-time archive (its summary has
    # "point_in_time"): it must not make the scheduled drill of the backups look fresh.
    return not run.summary.get("point_in_time")


def _drill_of_the_archive(run: RunRecord) -> Verdict:
    # The point-in-time archive's drill (`drill --at`); a run that failed before its summary
    # could have been either drill.
    return bool(run.summary.get("point_in_time")) if run.summary else None


def _audit_scope(scope: str) -> Callable[[RunRecord], Verdict]:
    def matches(run: RunRecord) -> Verdict:
        # AuditOutcome.summary(): "scope" is "full" or "incremental". A run narrowed with
        # --rule/--table is no job's: its audit history row lists its rules, and
        # `iter_finished_runs` copies that onto the run as "whole_catalogue".
        recorded = run.summary.get("scope")
        if recorded is None:
            return None
        if run.summary.get("whole_catalogue") is False:
            return False
        return recorded == scope

    return matches


def _is_prune(run: RunRecord) -> Verdict:
    # PruneResult.summary() says whether it was a --dry-run, which is no prune.
    return None if "dry_run" not in run.summary else not run.summary["dry_run"]


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("backup", "backup create", _always, "a consistent online backup, quick-verified, copied to each [[repositories]] copy",
            "backup_create", {"copy": True}, "--copy"),
        Job("verify", "backup verify", _verify_quick, "quick verification (hashes, decompression)",
            "backup_verify", {"latest": True}, "--latest"),
        Job("deep_verify", "backup verify", _verify_is_deep, "deep verification (restored, checked, audited)",
            "backup_verify", {"latest": True, "deep": True}, "--latest --deep"),
        Job("prune", "backup prune", _is_prune, "the retention policy applied (a --dry-run is no prune)",
            "backup_prune"),
        Job("audit", "audit", _audit_scope("incremental"), "incremental audit (rows since the last run)",
            "audit", {"since_last": True}, "--since-last"),
        Job("audit_full", "audit", _audit_scope("full"), "full audit of every row", "audit"),
        Job("drill", "drill", _drill_of_a_backup, "restore drill on a scratch copy, of each repository in turn", "drill",
            {"alternate": True}, "--alternate"),
        Job("drill_pitr", "drill", _drill_of_the_archive, "restore drill of a random moment of the point-in-time archive's window",
            "drill", {"at": "random"}, "--at random"),
        Job("probe", "probe", _always, "retrieval probe through the game's store", "probe"),
    )
}


def available_jobs() -> tuple[str, ...]:
    """Jobs this installation can run (`probe` needs integrity.probe)."""
    return tuple(name for name in JOBS if name != "probe" or importlib.util.find_spec("integrity.probe") is not None)


def job_verdict(job: Job, run: RunRecord) -> Verdict:
    """Whether `run` is a run of `job` (see the module docstring for None)."""
    if run.command != job.command:
        return False
    named = run.summary.get("job")
    if isinstance(named, str):
        return named == job.name
    return job.matches(run)


@dataclass(frozen=True)
class JobRuns:
    """What the ledger knows about one job: its newest completed and newest successful run."""

    job: str
    last_completed: RunRecord | None  # exit code recorded; may be an unattributed failure
    last_success: RunRecord | None  # exit 0, attributed to this job


# Runs read per round trip: the first page is small because almost every caller wants
# the newest run that matches, which is nearly always among the newest few; each later
# page is larger, up to _PAGE, so a job failing for days still finds its last success in
# a few round trips.
_FIRST_PAGE = 8
_PAGE = 500
# How far back `job_runs` looks, in runs of the job's command: 2,000 is 83 days of hourly
# verifies or 21 days of 15-minute audits. A job whose last run is further back (or that
# is off while its sibling runs, like deep_verify beside verify) reads as never run; the
# bound keeps the metrics written after every command cheap on a ledger of years.
SCAN_LIMIT = 2000


def iter_finished_runs(ledger, command: str, *, exit_code: int | None = None, limit: int | None = None) -> Iterator[RunRecord]:
    """Finished runs of exactly `command` (not its subcommands), newest first, paged
    by keyset so that a job failing for days still finds its last success; at most
    `limit` runs when given.

    An `audit` run's summary does not say whether --rule/--table narrowed it; its row in
    the audit history does (`rules` is NULL for the whole catalogue), so it is joined in
    and added to the summary as "whole_catalogue"."""
    import sqlalchemy as sa

    from integrity.ledger import audit_runs, runs

    columns = [runs]
    source = runs
    if command == "audit":
        columns.append(audit_runs.c.rules.label("audit_rules"))
        columns.append(audit_runs.c.id.label("audit_row"))
        source = runs.outerjoin(audit_runs, audit_runs.c.run_id == runs.c.id)
    query = sa.select(*columns).select_from(source).where(runs.c.command == command, runs.c.exit_code.is_not(None))
    if exit_code is not None:
        query = query.where(runs.c.exit_code == exit_code)
    query = query.order_by(runs.c.started_at.desc(), runs.c.id.desc())
    after = None
    seen = 0
    size = _FIRST_PAGE
    while True:
        if limit is not None:
            size = min(size, limit - seen)
        page = query.limit(size)
        if after is not None:
            started, run_id = after
            page = page.where(sa.or_(runs.c.started_at < started, sa.and_(runs.c.started_at == started, runs.c.id < run_id)))
        with ledger.engine.connect() as connection:
            rows = connection.execute(page).mappings().all()
        for row in rows:
            record = ledger._record(row)
            if row.get("audit_row") is not None:
                record = replace(record, summary={**record.summary, "whole_catalogue": row["audit_rules"] is None})
            yield record
            seen += 1
            if limit is not None and seen >= limit:
                return
        if len(rows) < size:
            return
        after = (rows[-1]["started_at"], rows[-1]["id"])
        size = min(size * 8, _PAGE)


def job_runs(ledger, job: Job, *, scan: int = SCAN_LIMIT) -> JobRuns:
    """The newest completed run (attributed, or unattributed and possibly this job's)
    and the newest successful run of `job`, among the newest `scan` runs of its command."""
    return jobs_runs(ledger, [job], scan=scan)[job.name]


def jobs_runs(ledger, jobs: Iterable[Job], *, scan: int = SCAN_LIMIT) -> dict[str, JobRuns]:
    """`job_runs` of each of `jobs`, by name. The newest runs of each command are read
    once for all its jobs (verify and deep_verify, audit and audit_full share one), and
    both answers come from that one pass: the metrics after every command and status ask
    for all nine jobs, and a query per job and answer was most of their ledger time."""
    sharing: dict[str, list[Job]] = {}
    for job in jobs:
        sharing.setdefault(job.command, []).append(job)
    found: dict[str, JobRuns] = {}
    for command, its_jobs in sharing.items():
        completed: dict[str, RunRecord] = {}
        succeeded: dict[str, RunRecord] = {}
        read = 0
        for run in iter_finished_runs(ledger, command, limit=scan):
            read += 1
            for job in its_jobs:
                verdict = job_verdict(job, run)
                if job.name not in completed and verdict is not False:
                    completed[job.name] = run
                if job.name not in succeeded and run.exit_code == 0 and verdict:
                    succeeded[job.name] = run
            if len(completed) == len(succeeded) == len(its_jobs):
                break
        for job in its_jobs:
            success = succeeded.get(job.name)
            if success is None and read >= scan:
                # No success among the newest `scan` runs: look further back among the
                # successes alone, as far as `scan` of them (a job failing for weeks).
                success = next((r for r in iter_finished_runs(ledger, command, exit_code=0, limit=scan)
                                if job_verdict(job, r)), None)
            found[job.name] = JobRuns(job.name, completed.get(job.name), success)
    return found
