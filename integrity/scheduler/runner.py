"""Run one scheduled job: the library function its command calls, recorded in the ledger
under the same command name and summary as that command (plus the job's name and fire
time), so `status`, `schedule list` and the metrics see a daemon run and a cron run alike.

Everything is caught: a job that raises is recorded as failed with its exit code and the
scheduler goes on (DESIGN.md invariant 10).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from game_core.errors import ExitCode, Failure
from integrity.jobs import JOBS
from integrity.ledger import outcome_for
from integrity.scheduler import pings

log = logging.getLogger(__name__)

# A scheduled job waits this long for a lock held by another run (the daemon's own other
# job, a cron run, an operator's restore) instead of failing at once as a command does:
# the top of the hour fires backup and verify together, and they must queue, not fail.
SCHEDULED_LOCK_WAIT = 300.0


def _backup(settings, runtime):
    from integrity.backups.create import create_backup

    return create_backup(settings, lock_wait=SCHEDULED_LOCK_WAIT, command=runtime.command)


def _verify(deep: bool):
    def call(settings, runtime):
        from integrity.backups.verify import verify_backups

        return verify_backups(settings, latest=True, deep=deep, command=runtime.command, lock_wait=SCHEDULED_LOCK_WAIT)

    return call


def _prune(settings, runtime):
    from integrity.backups.prune import prune

    return prune(settings, dry_run=False, lock_wait=SCHEDULED_LOCK_WAIT, command=runtime.command)


def _audit(since_last: bool):
    def call(settings, runtime):
        from integrity.audits import run_audit

        return run_audit(settings, runtime.ledger, run_id=runtime.run_id, since_last=since_last)

    return call


def _drill(settings, runtime):
    from integrity.recovery.drill import run_drill

    return run_drill(settings, lock_wait=SCHEDULED_LOCK_WAIT, command=runtime.command, ledger=runtime.ledger)


def _probe(settings, runtime):
    from integrity.probe import run_probe

    return run_probe(settings, command=runtime.command)


# job -> the call its command makes (`integrity backup verify --latest --deep`, ...).
CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "backup": _backup,
    "verify": _verify(deep=False),
    "deep_verify": _verify(deep=True),
    "prune": _prune,
    "audit": _audit(since_last=True),
    "audit_full": _audit(since_last=False),
    "drill": _drill,
    "probe": _probe,
}
# The command line each job is equivalent to (schedule list, the README's crontab).
COMMAND_LINES = {
    "backup": "integrity -q backup create",
    "verify": "integrity -q backup verify --latest",
    "deep_verify": "integrity -q backup verify --latest --deep",
    "prune": "integrity -q backup prune",
    "audit": "integrity -q audit --since-last",
    "audit_full": "integrity -q audit",
    "drill": "integrity -q drill",
    "probe": "integrity -q probe",
}


def available_jobs() -> tuple[str, ...]:
    """Jobs this installation can run (`probe` needs integrity.probe)."""
    return tuple(job for job in CALLS if job != "probe" or importlib.util.find_spec("integrity.probe") is not None)


@dataclass(frozen=True)
class JobOutcome:
    job: str
    run_id: str | None
    exit_code: int
    seconds: float
    error: str | None

    @property
    def line(self) -> str:
        """The one-line summary: the ping body and the daemon's log line."""
        text = f"{self.job}: {outcome_for(self.exit_code)} (exit {self.exit_code}) in {self.seconds:.1f}s"
        return f"{text}: {self.error}" if self.error else text


def run_job(settings, job: str, *, fire_time: datetime | None = None, ping_url: str | None = None) -> JobOutcome:
    """Run `job` once and record it; never raises (a failure is the outcome's exit code)."""
    from integrity.runtime import Runtime

    runtime = Runtime(quiet=True, command=JOBS[job].command)
    runtime.settings = settings
    started = time.perf_counter()
    try:
        runtime.start_run()
    except Exception as exc:  # the ledger is down: nothing can be recorded, so do not run blind
        error = str(exc) if isinstance(exc, Failure) else f"{type(exc).__name__}: {exc}"
        exit_code = int(getattr(exc, "exit_code", ExitCode.BUG))
        log.error("%s: not run, the ledger cannot be written: %s", job, error)
        return JobOutcome(job, None, exit_code, 0.0, error)
    run_id = runtime.run_id
    pings.start(ping_url, run_id)
    summary: dict[str, Any] = {}
    error = None
    try:
        result = CALLS[job](settings, runtime)
        exit_code = int(getattr(result, "exit_code", ExitCode.OK))
        error = getattr(result, "error", None)
        made = getattr(result, "summary", None)
        summary = made() if callable(made) else {}
    except Failure as exc:
        exit_code, error = int(exc.exit_code), str(exc)
    except Exception as exc:  # a bug in one job must not stop the others
        log.exception("%s: unexpected error", job)
        exit_code, error = int(ExitCode.BUG), f"unexpected error (a bug): {type(exc).__name__}: {exc}"
    # The job's name wins over the summary's other hints (integrity.jobs.job_verdict).
    runtime.summary = {**summary, "job": job, "scheduled": True}
    if fire_time is not None:
        runtime.summary["fire_time"] = fire_time.isoformat()
    runtime.finish_run(exit_code, error)
    outcome = JobOutcome(job, run_id, exit_code, time.perf_counter() - started, error)
    pings.finish(ping_url, run_id, exit_code, outcome.line)
    (log.info if exit_code == 0 else log.warning)("%s", outcome.line)
    return outcome
