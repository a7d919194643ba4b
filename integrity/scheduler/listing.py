"""`integrity schedule list`: every job, its schedule, next fire, last run and outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from integrity.scheduler.health import JobState


@dataclass(frozen=True)
class ScheduleListing:
    now: datetime
    jobs: tuple[JobState, ...]
    heartbeat: object | None  # records.Heartbeat

    def summary(self) -> dict:
        return {"jobs": len(self.jobs), "overdue": [job.job for job in self.jobs if job.overdue]}


def list_schedule(settings, *, now: datetime | None = None) -> ScheduleListing:
    """Bad schedules fail here as in `schedule run` (exit 4 naming the job)."""
    from integrity.ledger import Ledger
    from integrity.scheduler import records
    from integrity.scheduler.health import job_states

    now = now or datetime.now(timezone.utc)
    ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
    try:
        return ScheduleListing(now, tuple(job_states(settings, ledger, now)), records.last_heartbeat(ledger))
    finally:
        ledger.close()
