"""Run one scheduled job: its `integrity.api` operation (integrity.jobs.JOBS), recorded
through integrity.recorder under the same command name and summary as its command line
(plus the job's name and fire time), so `status`, `schedule list` and the metrics see a
daemon run and a cron run alike.

The scheduler builds each job's invocation here: the job's command, the run's ledger,
SCHEDULED_LOCK_WAIT, no consent (a scheduled job never writes the guarded database), no
progress bars. The operation itself is handed in (`perform`, integrity.api.perform_job): the
API is above the scheduler, which must not import it back.

Everything is caught: a job that raises is recorded as failed with its exit code and the
scheduler goes on (DESIGN.md invariant 10).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from game_core.errors import ExitCode, Failure
from integrity.invocation import Invocation
from integrity.jobs import JOBS, Job
from integrity.ledger import outcome_for
from integrity.recorder import Outcome, Recording
from integrity.scheduler import pings

log = logging.getLogger(__name__)

# A scheduled job waits this long for a lock held by another run (the daemon's own other
# job, a cron run, an operator's restore) instead of failing at once as a command does:
# the top of the hour fires backup and verify together, and they must queue, not fail.
SCHEDULED_LOCK_WAIT = 300.0

Perform = Callable[[Invocation, Job], Any]


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


def run_job(settings, job: str, *, perform: Perform, fire_time: datetime | None = None,
            ping_url: str | None = None) -> JobOutcome:
    """Run `job` once and record it; never raises (a failure is the outcome's exit code)."""
    definition = JOBS[job]
    started = time.perf_counter()
    try:
        recording = Recording.start(settings, definition.command)
    except Exception as exc:  # the ledger is down: nothing can be recorded, so do not run blind
        error = str(exc) if isinstance(exc, Failure) else f"{type(exc).__name__}: {exc}"
        exit_code = int(getattr(exc, "exit_code", ExitCode.BUG))
        log.error("%s: not run, the ledger cannot be written: %s", job, error)
        return JobOutcome(job, None, exit_code, 0.0, error)
    pings.start(ping_url, recording.run_id)
    try:
        outcome = Outcome.of(perform(Invocation.recorded(recording, lock_wait=SCHEDULED_LOCK_WAIT), definition))
    except Failure as exc:
        outcome = Outcome.of_failure(exc)
    except Exception as exc:  # a bug in one job must not stop the others
        log.exception("%s: unexpected error", job)
        outcome = Outcome(int(ExitCode.BUG), error=f"unexpected error (a bug): {type(exc).__name__}: {exc}")
    # The job's name wins over the summary's other hints (integrity.jobs.job_verdict).
    summary = {**outcome.summary, "job": job, "scheduled": True}
    if fire_time is not None:
        summary["fire_time"] = fire_time.isoformat()
    recording.finish(replace(outcome, summary=summary))
    result = JobOutcome(job, recording.run_id, outcome.exit_code, time.perf_counter() - started, outcome.error)
    pings.finish(ping_url, recording.run_id, outcome.exit_code, result.line)
    (log.info if outcome.exit_code == 0 else log.warning)("%s", result.line)
    return result
