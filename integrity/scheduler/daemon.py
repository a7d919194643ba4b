"""`integrity schedule run`: APScheduler's BlockingScheduler in the foreground.

No APScheduler job store: what the scheduler must remember lives in the ledger, where
`status` and cron users see it too. On start, the fires missed while no scheduler ran are
computed from the ledger and the triggers (PITFALLS.md: a job store would not bring them
back either), recorded as missed, and every overdue job runs once at once.

Each fire is claimed in the ledger before it runs, so several schedulers sharing a ledger
run it once; the others record a skip. A fire while the job's previous run still runs is
recorded as skipped too (APScheduler's max_instances skip only logs), and a fire the
scheduler woke up too late for (misfire) as missed.

SIGTERM or SIGINT: no new job starts, running ones finish, exit 0. A second signal exits
at once (130); a backup killed mid-way leaves only its invisible `.tmp-` directory.

With `[pitr] enabled` and an engine that needs one (Litestream; pgBackRest's archiving is
the server's own), the scheduler also runs the engine's replicator under
integrity.pitr.supervise's Supervisor: restarted whenever it dies, each death recorded in
the ledger as a scheduler event (`records.record_replicator_death`, which `status` turns
into a problem row), stopped with SIGTERM when the scheduler stops. Every heartbeat then
also rewrites the metrics file with a fresh reading of the archive, so the lag alerts see
a new value every HEARTBEAT_SECONDS while the scheduler runs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from game_core.errors import ExitCode, PreconditionFailed
from integrity.jobs import available_jobs
from integrity.ledger import Ledger
from integrity.scheduler import records
from integrity.scheduler.records import HEARTBEAT_SECONDS
from integrity.scheduler.runner import Perform, run_job
from integrity.scheduler.triggers import (
    MAX_MISSED_ROWS,
    JobSchedule,
    count_fires_between,
    fires_between,
    latest_fire,
)

log = logging.getLogger(__name__)

# Misfire grace: a fire the scheduler wakes up for later than this is recorded as missed
# instead of run late. Half the interval (a late run must not collide with the next fire),
# at least a second, at most 10 minutes. APScheduler's default of 1 s is set explicitly too.
_MAX_GRACE_SECONDS = 600


def misfire_grace(schedule: JobSchedule) -> int:
    return int(max(1, min(schedule.interval_seconds / 2, _MAX_GRACE_SECONDS)))


@dataclass
class SchedulerStopped:
    """What `schedule run` reports when it stops after a signal."""

    started_at: datetime
    stopped_at: datetime
    jobs: tuple[str, ...]
    runs: int = 0
    failed: int = 0
    skipped: int = 0
    missed: int = 0
    signal_name: str = ""
    exit_code: ExitCode = ExitCode.OK

    def summary(self) -> dict:
        return {
            "jobs": list(self.jobs), "runs": self.runs, "failed": self.failed, "skipped": self.skipped,
            "missed": self.missed, "signal": self.signal_name,
        }


@dataclass
class Daemon:
    settings: object
    schedules: dict[str, JobSchedule]
    perform: Perform  # integrity.api.perform_job: what a job does
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    _running: set[str] = field(default_factory=set)
    _catch_up: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False
    _scheduler: object = None
    _ledger: Ledger | None = None
    _report: SchedulerStopped | None = None
    _claims_forgotten: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    replicator: tuple[str, ...] | None = None  # the point-in-time engine's argv (`replicator_argv`)
    replicator_log: object = None  # its log file (Path)
    _replicator_stop: threading.Event = field(default_factory=threading.Event)
    _replicator_thread: threading.Thread | None = None
    _supervisor: object = None

    # ------------------------------------------------------------ start

    def run(self) -> SchedulerStopped:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.blocking import BlockingScheduler

        now = datetime.now(timezone.utc)
        self._report = SchedulerStopped(started_at=now, stopped_at=now, jobs=tuple(self.schedules))
        self._ledger = Ledger.open(self.settings.state.dir, self.settings.state.ledger_url)
        records.beat(self._ledger, now)
        records.forget_old_claims(self._ledger, now)
        overdue = self._record_missed(now)

        # One worker per job: jobs never wait for a thread, only for the locks they need.
        self._scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=len(self.schedules) + 1)}, timezone=timezone.utc,
        )
        for job, schedule in self.schedules.items():
            self._scheduler.add_job(
                self._fire, trigger=schedule.trigger, args=[job], id=job, name=job,
                misfire_grace_time=misfire_grace(schedule), coalesce=True, max_instances=1,
                # An overdue job's first fire is now; the trigger takes over after it.
                **({"next_run_time": now} if job in overdue else {}),
            )
        self._scheduler.add_job(
            self._beat, trigger="interval", seconds=self.heartbeat_seconds, id="_heartbeat",
            misfire_grace_time=max(1, int(self.heartbeat_seconds)), coalesce=True, max_instances=1,
        )
        self._scheduler.add_listener(self._max_instances, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.add_listener(self._misfired, EVENT_JOB_MISSED)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("scheduler started: %s", ", ".join(f"{j} ({s.value})" for j, s in self.schedules.items()) or "no jobs")
        try:
            self._start_replicator()
            self._scheduler.start()  # blocks until a signal shuts it down
            self._wait_for_running_jobs()
        finally:
            self._stop_replicator()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._report.stopped_at = datetime.now(timezone.utc)
            try:
                records.beat(self._ledger, self._report.started_at, state="stopped")
            except Exception as exc:
                log.warning("could not record the last heartbeat: %s", exc)
            self._ledger.close()
        return self._report

    def _record_missed(self, now: datetime) -> set[str]:
        """Record the fires missed since each job's last run (or init); the jobs to run now."""
        from integrity.jobs import JOBS, job_runs

        installed = records.init_time(self._ledger)
        overdue = set()
        for job, schedule in self.schedules.items():
            history = job_runs(self._ledger, JOBS[job])
            seen = [run.started_at for run in (history.last_completed, history.last_success) if run is not None]
            seen += [event.fire_time for event in records.events(self._ledger, job=job, limit=1)]
            baseline = max(seen) if seen else installed
            if baseline is None:
                continue  # a ledger that never saw init: nothing was expected yet
            count = count_fires_between(schedule, baseline, now)
            if not count:
                continue
            overdue.add(job)
            latest = fires_between(schedule, now - timedelta(seconds=schedule.interval_seconds * 1.5), now)[-1:]
            self._catch_up[job] = latest[0] if latest else now
            missed = count - 1  # the newest missed fire is run now instead
            if 0 < missed <= MAX_MISSED_ROWS:
                fires = fires_between(schedule, baseline, now)[:-1]
                records.record_events(self._ledger, [
                    {"job": job, "fire_time": fire, "kind": records.MISSED, "reason": "no scheduler was running"}
                    for fire in fires
                ])
            elif missed:
                records.record_event(self._ledger, job, self._catch_up[job], records.MISSED,
                                     f"{missed} fires since {baseline.isoformat(timespec='seconds')}: no scheduler was running")
            self._report.missed += missed
            log.warning("%s: %d fire(s) missed while no scheduler ran; running it now", job, missed + 1)
        return overdue

    # ------------------------------------------------------------ fires

    def _fire(self, job: str) -> None:
        try:
            if self._stopping:
                return
            schedule = self.schedules[job]
            now = datetime.now(timezone.utc)
            fire_time = self._catch_up.pop(job, None) or latest_fire(
                schedule, now, within=misfire_grace(schedule) + 60
            ) or now.replace(microsecond=0)
            with self._lock:
                busy = job in self._running
                if not busy:
                    self._running.add(job)
            if busy:
                self._skip(job, fire_time, "the previous run was still running")
                return
            try:
                holder = records.claim(self._ledger, job, fire_time)
                if holder is not None:
                    self._skip(job, fire_time, f"claimed by {holder}")
                    return
                outcome = run_job(self.settings, job, perform=self.perform, fire_time=fire_time,
                                  ping_url=self.settings.schedule.pings.get(job))
                self._report.runs += 1
                self._report.failed += outcome.exit_code != 0
            finally:
                with self._lock:
                    self._running.discard(job)
        except Exception:  # never let one fire take the scheduler down
            log.exception("%s: the scheduler could not handle this fire", job)

    def _skip(self, job: str, fire_time: datetime, reason: str) -> None:
        log.warning("%s: fire at %s skipped: %s", job, fire_time.isoformat(timespec="seconds"), reason)
        self._report.skipped += 1
        records.record_event(self._ledger, job, fire_time, records.SKIPPED, reason)

    def _max_instances(self, event) -> None:
        if event.job_id not in self.schedules:
            return
        for fire_time in event.scheduled_run_times or [datetime.now(timezone.utc)]:
            try:
                self._skip(event.job_id, fire_time, "the previous run was still running")
            except Exception:
                log.exception("%s: could not record a skipped fire", event.job_id)

    def _misfired(self, event) -> None:
        if event.job_id not in self.schedules:
            return
        try:
            records.record_event(self._ledger, event.job_id, event.scheduled_run_time, records.MISSED,
                                 "the scheduler woke up after the misfire grace time")
            self._report.missed += 1
        except Exception:
            log.exception("%s: could not record a missed fire", event.job_id)

    def _beat(self) -> None:
        try:
            records.beat(self._ledger, self._report.started_at)
            now = datetime.now(timezone.utc)
            if now - self._claims_forgotten > timedelta(hours=1):
                records.forget_old_claims(self._ledger, now)
                self._claims_forgotten = now
        except Exception as exc:
            log.warning("could not record the heartbeat: %s", exc)
        if self.settings.pitr.enabled:
            self._write_metrics()

    def _write_metrics(self) -> None:
        """The metrics file with a fresh reading of the point-in-time archive (other runs
        carry it forward: integrity.prometheus `_pitr`)."""
        try:
            from integrity.prometheus import write_metrics_file

            write_metrics_file(self.settings, self._ledger, pitr_fresh=True)
        except Exception as exc:
            log.warning("could not write the metrics file: %s", exc)

    # ------------------------------------------------------------ the point-in-time replicator

    def _start_replicator(self) -> None:
        if self.replicator is None:
            return
        from integrity.pitr.supervise import Supervisor

        self._supervisor = Supervisor(self.replicator, log_path=self.replicator_log,
                                      on_start=lambda pid: log.info("replicator running (pid %d): %s", pid,
                                                                    " ".join(self.replicator)),
                                      on_death=self._replicator_died)
        self._replicator_thread = threading.Thread(target=self._supervisor.run, args=(self._replicator_stop,),
                                                   name="pitr-replicator", daemon=True)
        self._replicator_thread.start()

    def _replicator_died(self, death) -> None:
        log.warning("replicator died: %s; restarting", death.describe())
        try:
            records.record_replicator_death(self._ledger, death.at, death.describe())
        except Exception as exc:  # the restart matters more than its record
            log.warning("could not record the replicator's death: %s", exc)

    def _stop_replicator(self) -> None:
        if self._replicator_thread is None:
            return
        self._replicator_stop.set()
        self._replicator_thread.join()  # the Supervisor sends SIGTERM and waits (then kills)
        log.info("replicator stopped")

    def _kill_replicator_now(self) -> None:
        """On the second signal: the child runs in its own session and would outlive us."""
        pid = self._supervisor.pid if self._supervisor is not None else None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    # ------------------------------------------------------------ stop

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            # The operator insists. Whatever runs dies with the process; a backup leaves
            # only its `.tmp-` directory, which nothing lists or restores.
            os.write(2, f"{name} again: exiting at once\n".encode())
            self._kill_replicator_now()
            os._exit(int(ExitCode.INTERRUPTED))
        self._stopping = True
        self._report.signal_name = name
        with self._lock:
            running = sorted(self._running)
        os.write(2, (f"{name}: stopping; waiting for {', '.join(running)} to finish (signal again to exit at once)\n"
                     if running else f"{name}: stopping\n").encode())
        # Not from inside the handler: it may have interrupted the scheduler holding its locks.
        threading.Thread(target=self._scheduler.shutdown, kwargs={"wait": False}, daemon=True).start()

    def _wait_for_running_jobs(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
            time.sleep(0.1)


def run_scheduler(settings, *, perform: Perform, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> SchedulerStopped:
    """Build every trigger first (a bad schedule fails now, exit 4), then run until a signal;
    each fire runs `perform(invocation, job)` (integrity.api.perform_job)."""
    from integrity.scheduler.triggers import build_schedules

    schedules = {job: s for job, s in build_schedules(settings.schedule).items() if job in available_jobs()}
    replicator, replicator_log = replicator_argv(settings)
    if not schedules and replicator is None:
        raise PreconditionFailed("every job in [schedule] is off: nothing to schedule; set at least one job to a cron "
                                 "expression or an interval")
    return Daemon(settings, schedules, perform, heartbeat_seconds=heartbeat_seconds, replicator=replicator,
                  replicator_log=replicator_log).run()


def replicator_argv(settings):
    """(argv, log path) of the point-in-time engine's replicator when `[pitr] enabled` and
    the engine has one (its configuration written now), else (None, None). A missing
    engine program is exit 4 before the scheduler starts."""
    if not settings.pitr.enabled:
        return None, None
    from pathlib import Path

    from integrity.pitr import engine_for

    engine = engine_for(settings)
    argv = engine.replicator()
    if argv is None:
        return None, None
    engine.write_config()
    return tuple(argv), Path(settings.state.dir) / "pitr" / f"{engine.name}.log"
