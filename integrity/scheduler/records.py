"""What the scheduler writes to the ledger besides runs: claims, skipped and missed
fires, heartbeats; and what `schedule list` and `status` read back.

Runs themselves are recorded by integrity.scheduler.runner (through integrity.recorder)
exactly as the command would record them, so job health and metrics read cron runs and daemon runs alike.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from integrity.ledger import Ledger, _aware, claims, heartbeats, schedule_events, utc_now

SKIPPED = "skipped"
MISSED = "missed"
# The point-in-time replicator `schedule run` supervises (Litestream): each death is an
# event of this pseudo-job (never a [schedule] job name, so job health never counts it),
# `fire_time` the moment it died, `reason` the exit status and its last line of output.
REPLICATOR_JOB = "pitr_replicator"
DIED = "died"
# How often a running scheduler touches its heartbeat row; `status` calls a running
# scheduler silent after four of these.
HEARTBEAT_SECONDS = 15.0


def _insert(ledger: Ledger):
    """The dialect's INSERT, which knows ON CONFLICT (both engines of the ledger do)."""
    if ledger.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def claim(ledger: Ledger, job: str, fire_time: datetime) -> str | None:
    """Claim one fire for this process. None: ours to run; else who claimed it first.

    `INSERT ... ON CONFLICT DO NOTHING` on the (job, fire_time) primary key: on a shared
    PostgreSQL ledger exactly one host's insert lands, whatever the timing; SQLite's
    file lock does the same for processes sharing one ledger file."""
    host, pid = socket.gethostname(), os.getpid()
    values = {"job": job, "fire_time": fire_time, "host": host, "pid": pid, "claimed_at": utc_now()}
    insert = _insert(ledger)
    # RETURNING rather than rowcount: the ledger's PostgreSQL engine reports rowcount -1.
    statement = (
        insert(claims).values(**values).on_conflict_do_nothing(index_elements=["job", "fire_time"]).returning(claims.c.job)
    )
    with ledger.engine.begin() as connection:
        if connection.execute(statement).first() is not None:
            return None
        row = connection.execute(
            sa.select(claims.c.host, claims.c.pid).where(claims.c.job == job, claims.c.fire_time == fire_time)
        ).first()
    return f"{row.host}/{row.pid}" if row else "another scheduler"


# A claim only has to outlive the fire it settles: every host has started or skipped that
# fire within seconds. A week keeps them for `history`-style questions without letting a
# minutely probe add half a million rows a year.
CLAIMS_KEPT = timedelta(days=7)


def forget_old_claims(ledger: Ledger, now: datetime) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(claims.delete().where(claims.c.fire_time < now - CLAIMS_KEPT))


def record_event(ledger: Ledger, job: str, fire_time: datetime, kind: str, reason: str) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(schedule_events.insert().values(
            job=job, fire_time=fire_time, kind=kind, reason=reason,
            host=socket.gethostname(), pid=os.getpid(), recorded_at=utc_now(),
        ))


def record_events(ledger: Ledger, rows: list[dict]) -> None:
    if not rows:
        return
    host, pid, now = socket.gethostname(), os.getpid(), utc_now()
    with ledger.engine.begin() as connection:
        connection.execute(schedule_events.insert(), [{**row, "host": host, "pid": pid, "recorded_at": now} for row in rows])


@dataclass(frozen=True)
class ScheduleEvent:
    job: str
    fire_time: datetime
    kind: str
    reason: str
    host: str
    pid: int


def events(ledger: Ledger, *, job: str | None = None, kind: str | None = None, limit: int = 100) -> list[ScheduleEvent]:
    """Newest first."""
    query = sa.select(schedule_events).order_by(schedule_events.c.fire_time.desc(), schedule_events.c.id.desc()).limit(limit)
    if job:
        query = query.where(schedule_events.c.job == job)
    if kind:
        query = query.where(schedule_events.c.kind == kind)
    with ledger.engine.connect() as connection:
        return [
            ScheduleEvent(r["job"], _aware(r["fire_time"]), r["kind"], r["reason"], r["host"], r["pid"])
            for r in connection.execute(query).mappings()
        ]


def beat(ledger: Ledger, started_at: datetime, state: str = "running") -> None:
    """Touch this process's heartbeat row (insert on first beat)."""
    host, pid, now = socket.gethostname(), os.getpid(), utc_now()
    statement = _insert(ledger)(heartbeats).values(host=host, pid=pid, started_at=started_at, beat_at=now, state=state)
    statement = statement.on_conflict_do_update(index_elements=["host", "pid"], set_={"beat_at": now, "state": state})
    with ledger.engine.begin() as connection:
        connection.execute(statement)


@dataclass(frozen=True)
class Heartbeat:
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    state: str


def last_heartbeat(ledger: Ledger) -> Heartbeat | None:
    query = sa.select(heartbeats).order_by(heartbeats.c.beat_at.desc()).limit(1)
    with ledger.engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    if row is None:
        return None
    return Heartbeat(row["host"], row["pid"], _aware(row["started_at"]), _aware(row["beat_at"]), row["state"])


def init_time(ledger: Ledger) -> datetime | None:
    """When this install was initialised: the first successful `init` run in the ledger."""
    from integrity.ledger import runs

    query = sa.select(sa.func.min(runs.c.started_at)).where(runs.c.command == "init", runs.c.exit_code == 0)
    with ledger.engine.connect() as connection:
        return _aware(connection.execute(query).scalar())


def record_replicator_death(ledger: Ledger, died_at: datetime, reason: str) -> None:
    record_event(ledger, REPLICATOR_JOB, died_at, DIED, reason)


def replicator_deaths(ledger: Ledger, *, since: datetime, limit: int = 1000) -> list[ScheduleEvent]:
    """The replicator's deaths since `since`, newest first."""
    return [event for event in events(ledger, job=REPLICATOR_JOB, kind=DIED, limit=limit) if event.fire_time >= since]
