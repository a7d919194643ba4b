"""`[schedule]` values as APScheduler triggers, and the fire times between two instants.

Fire times must be the same on every host, because several schedulers sharing a
PostgreSQL ledger claim a fire by (job, fire time). So every trigger is in UTC and an
interval is anchored at a fixed epoch instead of at the process's start: `1h` fires on
every hour, `15m` at :00, :15, :30, :45, on every host and after every restart.

Cron expressions follow crontab (0 and 7 are Sunday). APScheduler 3 treats day-of-week
0 as Monday (its issue 286, kept for compatibility), so numeric days are rewritten as
names before APScheduler sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from integrity.errors import ConfigInvalid
from integrity.settings import JOBS, MAX_INTERVAL_SECONDS, SCHEDULE_ALLOWED, schedule_seconds

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
ALLOWED = SCHEDULE_ALLOWED
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Missed fires are recorded one row each up to this many per job; beyond it one row says how many.
MAX_MISSED_ROWS = 100


@dataclass(frozen=True)
class JobSchedule:
    """One job's schedule: its `[schedule]` text and the trigger built from it."""

    job: str
    value: str
    trigger: object  # apscheduler.triggers.base.BaseTrigger

    @property
    def interval_seconds(self) -> float:
        """The interval, or for cron the gap between the next two fires (job health uses it)."""
        seconds = schedule_seconds(self.value)
        if seconds is not None:
            return float(seconds)
        first = next_fire(self, datetime.now(timezone.utc))
        second = self.trigger.get_next_fire_time(first, first + timedelta(microseconds=1)) if first else None
        if first is None or second is None:
            # build_trigger refuses a cron that never fires; one that stops firing (its last
            # fire passed) has no gap left: treat it as due once a year.
            return float(MAX_INTERVAL_SECONDS)
        return (second - first).total_seconds()


def build_schedules(schedule_settings) -> dict[str, JobSchedule]:
    """Every job that is not `off`; a bad value is ConfigInvalid (exit 4) naming the job."""
    schedules = {}
    for job in JOBS:
        value = getattr(schedule_settings, job).strip()
        if value == "off":
            continue
        schedules[job] = JobSchedule(job, value, build_trigger(job, value))
    return schedules


def build_trigger(job: str, value: str):
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    seconds = schedule_seconds(value)
    if seconds is not None:
        if seconds > MAX_INTERVAL_SECONDS:
            raise ConfigInvalid(f"invalid value {value!r} for [schedule] {job}: an interval that long; allowed: {ALLOWED}")
        return IntervalTrigger(seconds=seconds, start_date=EPOCH, timezone=timezone.utc)
    fields = value.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} fields")
        trigger = CronTrigger(
            minute=fields[0], hour=fields[1], day=fields[2], month=fields[3],
            day_of_week=_crontab_days(fields[4]), timezone=timezone.utc,
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise ConfigInvalid(f"invalid value {value!r} for [schedule] {job}: {exc}; allowed: {ALLOWED}") from None
    # A day that no month has, or a weekday that a day never falls on ('0 0 31 2 *'): the
    # job would never run, and status and `schedule list` would have no next fire to show.
    if trigger.get_next_fire_time(None, EPOCH) is None:
        raise ConfigInvalid(f"invalid value {value!r} for [schedule] {job}: it never fires; allowed: {ALLOWED}")
    return trigger


def _crontab_days(text: str) -> str:
    """crontab's day-of-week field with numbers turned into names (0 and 7: Sunday)."""
    items = []
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if base == "*" and not slash:
            return "*"
        if base != "*" and not any(ch.isdigit() for ch in base):
            items.append(item)  # names mean the same to both
            continue
        first, dash, last = ("0", "-", "6") if base == "*" else base.partition("-")
        low = int(first) if first.isdigit() else _DAY_NAMES.index(first.lower())
        high = (int(last) if last.isdigit() else _DAY_NAMES.index(last.lower())) if dash else (7 if slash else low)
        days = range(low, high + 1, int(step) if slash else 1)
        items.extend(_DAY_NAMES[day] for day in days)
    return ",".join(dict.fromkeys(items))


def next_fire(schedule: JobSchedule, after: datetime) -> datetime | None:
    """The first fire time at or after `after`."""
    return schedule.trigger.get_next_fire_time(None, after)


def fires_between(schedule: JobSchedule, start: datetime, end: datetime, *, limit: int | None = None) -> list[datetime]:
    """Fire times in (start, end], oldest first, at most `limit` (the newest ones are dropped)."""
    fires: list[datetime] = []
    previous = None
    moment = start + timedelta(microseconds=1)
    while True:
        fire = schedule.trigger.get_next_fire_time(previous, moment)
        if fire is None or fire > end:
            return fires
        fires.append(fire)
        if limit is not None and len(fires) >= limit:
            return fires
        previous, moment = fire, fire + timedelta(microseconds=1)


def count_fires_between(schedule: JobSchedule, start: datetime, end: datetime) -> int:
    """How many fires in (start, end]: arithmetic for intervals, counted for cron."""
    seconds = schedule_seconds(schedule.value)
    if seconds is None:
        return len(fires_between(schedule, start, end))

    def index(moment: datetime) -> int:
        return int((moment - EPOCH).total_seconds() // seconds)

    return max(0, index(end) - index(start))


def latest_fire(schedule: JobSchedule, now: datetime, *, within: float) -> datetime | None:
    """The newest fire time in (now - within, now]: the fire a run started now belongs to."""
    fires = fires_between(schedule, now - timedelta(seconds=within), now)
    return fires[-1] if fires else None
