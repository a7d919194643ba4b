"""Job health from the ledger, not from the daemon: the same answer for cron users.

A job that is on is overdue when it has not succeeded within twice its interval (for a
cron expression, twice the gap between two consecutive fires), counted from its last
success, else from `init` (so a fresh install is healthy), else from the first run this
ledger ever recorded. `status` turns it into checks; `schedule list` shows the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from integrity.ledger import Ledger, RunRecord, _aware, runs
from integrity.scheduler import records
from integrity.scheduler.triggers import JobSchedule, build_schedules, next_fire


@dataclass(frozen=True)
class JobState:
    job: str
    schedule: str  # the [schedule] value, "off" included
    interval_seconds: float | None
    next_fire: datetime | None
    last_run: RunRecord | None
    last_success: RunRecord | None
    since: datetime | None  # what "within twice its interval" counts from
    skipped_since_success: int
    missed_since_success: int
    overdue: bool

    @property
    def deadline(self) -> datetime | None:
        if self.since is None or self.interval_seconds is None:
            return None
        return self.since + timedelta(seconds=2 * self.interval_seconds)


def first_run_time(ledger: Ledger) -> datetime | None:
    with ledger.engine.connect() as connection:
        return _aware(connection.execute(sa.select(sa.func.min(runs.c.started_at))).scalar())


def job_states(settings, ledger: Ledger, now: datetime) -> list[JobState]:
    """Every job of `[schedule]` (off ones too), in the settings' order."""
    from integrity.jobs import JOBS, available_jobs, jobs_runs

    schedules: dict[str, JobSchedule] = build_schedules(settings.schedule)
    reference = records.init_time(ledger) or first_run_time(ledger)
    states = []
    available = available_jobs()
    histories = jobs_runs(ledger, [JOBS[job] for job in JOBS if job in available])
    for job in JOBS:
        if job not in available:
            continue
        history = histories[job]
        schedule = schedules.get(job)
        success = history.last_success
        since = success.started_at if success else reference
        recent = records.events(ledger, job=job, limit=500)
        after = [e for e in recent if since is None or e.fire_time > since]
        interval = schedule.interval_seconds if schedule else None
        overdue = bool(schedule and since is not None and now > since + timedelta(seconds=2 * interval))
        states.append(JobState(
            job=job,
            schedule=getattr(settings.schedule, job),
            interval_seconds=interval,
            next_fire=next_fire(schedule, now) if schedule else None,
            last_run=history.last_completed,
            last_success=success,
            since=since,
            skipped_since_success=sum(e.kind == records.SKIPPED for e in after),
            missed_since_success=sum(e.kind == records.MISSED for e in after),
            overdue=overdue,
        ))
    return states
