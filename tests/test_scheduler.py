"""`integrity schedule run` / `schedule list` and job health in `status`: a real scheduler
subprocess with second-scale intervals on real SQLite files, and two schedulers sharing a
real PostgreSQL ledger. Every run, skip, missed fire and failure must be in the ledger."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, one_error
from conftest import drop_pg_database, pg_url_for
from scheduler_helpers import (
    PingServer,
    free_port,
    job_runs,
    only,
    schedule_events,
    start_daemon,
    temp_dirs,
    wait_for,
)

UTC = timezone.utc


@pytest.fixture
def env(tmp_path, filled_copy) -> BackupEnv:
    # The game data is a copy of a template filled once; init runs here, per test: the
    # jobs' health and the missed fires are counted from its time.
    environment = BackupEnv(tmp_path, filled_copy("sqlite", players=3, results_per_player=10))
    assert environment.invoke("init").returncode == 0
    return environment


def _checks(env: BackupEnv, **extra: str) -> tuple[int, dict[str, tuple[str, str]]]:
    code, document = env.invoke_json("status", **extra)
    return code, {c["name"]: (c["state"], c["detail"]) for c in document["result"]["checks"]}


# ---------------------------------------------------------------- triggers


def test_crontab_weekdays_mean_what_crontab_means():
    from integrity.scheduler.triggers import JobSchedule, build_trigger, next_fire

    # 2026-11-27 is a Friday. crontab: 0 and 7 are Sunday, 1-5 Monday to Friday.
    friday = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    sunday = JobSchedule("drill", "0 3 * * 0", build_trigger("drill", "0 3 * * 0"))
    assert next_fire(sunday, friday) == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    weekdays = JobSchedule("drill", "30 2 * * 1-5", build_trigger("drill", "30 2 * * 1-5"))
    assert next_fire(weekdays, friday) == datetime(2026, 11, 30, 2, 30, tzinfo=UTC)
    assert weekdays.interval_seconds in (86400.0, 3 * 86400.0)


def test_intervals_fire_at_the_same_instants_on_every_host_and_restart():
    from integrity.scheduler.triggers import JobSchedule, build_trigger, count_fires_between, fires_between

    quarter = JobSchedule("audit", "15m", build_trigger("audit", "15m"))
    start, end = datetime(2026, 11, 27, 10, 7, tzinfo=UTC), datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    assert [f.strftime("%H:%M") for f in fires_between(quarter, start, end)] == ["10:15", "10:30", "10:45", "11:00"]
    assert count_fires_between(quarter, start, end) == 4


def test_a_bad_schedule_is_refused_at_start_up_naming_the_job_and_the_allowed_forms(env):
    completed = env.run("schedule", "run", **only(backup="every hour"))
    assert completed.returncode == 4
    message = one_error(completed)
    assert "INTEGRITY_SCHEDULE__BACKUP ([schedule] backup)" in message and "'every hour'" in message
    assert "a 5-field cron expression" in message and "'30s', '15m', '1h', '1d'" in message and "'off'" in message


def test_a_schedule_with_every_job_off_is_refused(env):
    completed = env.run("schedule", "run", **only())
    assert completed.returncode == 4
    assert "every job in [schedule] is off" in one_error(completed)


# ---------------------------------------------------------------- the daemon


def test_runs_are_recorded_like_the_commands_and_a_failing_job_never_stops_the_scheduler(env, tmp_path):
    """The database is missing at first (backup fails, exit 4), then put in place: the
    same scheduler keeps firing and records successes, under `backup create` as cron would."""
    database = tmp_path / "game.db"
    shutil.move(env.url.removeprefix("sqlite:///"), database.with_suffix(".away"))
    env.url = f"sqlite:///{database}"
    daemon = start_daemon(env, **only(backup="1s"))
    wait_for(lambda: any(r.exit_code == 4 for r in job_runs(env)), what="a failed backup")
    shutil.move(database.with_suffix(".away"), database)
    wait_for(lambda: sum(r.exit_code == 0 for r in job_runs(env)) >= 2, what="two successful backups")
    assert daemon.stop() == 0
    runs = job_runs(env)
    first_ok = next(i for i, r in enumerate(runs) if r.exit_code == 0)
    assert all(r.exit_code == 4 and r.outcome == "precondition" for r in runs[:first_ok])
    assert "does not exist" in runs[0].summary["error"]
    assert all(r.summary["job"] == "backup" and r.summary["scheduled"] for r in runs)
    assert all(r.summary["backup_id"] for r in runs[first_ok:])  # the command's own summary
    assert len(env.listed_ids()) == sum(r.exit_code == 0 for r in runs)
    assert "backup: precondition (exit 4)" in daemon.stderr and "backup: ok (exit 0)" in daemon.stderr
    assert "scheduler stopped (SIGTERM)" in daemon.stdout


def test_a_fire_while_the_previous_run_still_runs_is_recorded_as_skipped(env):
    daemon = start_daemon(env, INTEGRITY_PAUSE_AT="create:started=2.5", **only(backup="1s"))
    wait_for(lambda: any(e.kind == "skipped" for e in schedule_events(env)), what="a skipped fire")
    assert daemon.stop() == 0
    skipped = [e for e in schedule_events(env) if e.kind == "skipped"]
    assert skipped and all(e.job == "backup" and e.reason == "the previous run was still running" for e in skipped)
    runs = job_runs(env)
    assert runs and all(r.exit_code == 0 for r in runs)
    fired = {r.summary["fire_time"] for r in runs}
    assert not fired & {e.fire_time.isoformat() for e in skipped}  # a fire is run or skipped, never both
    code, checks = _checks(env, **only(backup="1h"))
    assert "skipped" in checks["job backup"][1]


def test_sigterm_during_a_backup_lets_it_finish_and_exits_0(env):
    daemon = start_daemon(env, INTEGRITY_PAUSE_AT="create:started=2", **only(backup="2s"))
    wait_for(lambda: temp_dirs(env), what="a backup in progress")
    assert daemon.stop() == 0
    assert "waiting for backup to finish" in daemon.stderr
    assert temp_dirs(env) == []
    runs = job_runs(env)
    assert runs[-1].exit_code == 0 and env.listed_ids()[-1] == runs[-1].summary["backup_id"]


def test_a_second_signal_exits_at_once_and_leaves_no_visible_partial_backup(env):
    daemon = start_daemon(env, INTEGRITY_PAUSE_AT="create:started=30", **only(backup="2s"))
    wait_for(lambda: temp_dirs(env), what="a backup in progress")
    started = time.monotonic()
    assert daemon.stop(signals=2) == 130
    assert time.monotonic() - started < 10
    assert "exiting at once" in daemon.stderr
    assert env.listed_ids() == []  # the .tmp- directory is never a backup
    assert env.invoke("restore", "latest", "--dry-run").returncode != 0


def test_fires_missed_while_stopped_are_recorded_and_the_overdue_job_runs_at_start(env):
    daemon = start_daemon(env, **only(backup="1s"))
    wait_for(lambda: job_runs(env), what="a first backup")
    assert daemon.stop() == 0
    before = len(job_runs(env))
    stopped_at = datetime.now(UTC)
    # Any 3.05 s after stopped_at hold at least 3 whole seconds, the 1s job's fire times:
    # the restarted daemon runs the newest and records at least 2 as missed.
    time.sleep(3.05)
    daemon = start_daemon(env, **only(backup="1s"))
    wait_for(lambda: len(job_runs(env)) > before, what="the catch-up run")
    assert daemon.stop() == 0
    missed = [e for e in schedule_events(env) if e.kind == "missed" and e.fire_time > stopped_at]
    assert len(missed) >= 2 and all(e.reason == "no scheduler was running" for e in missed)
    assert "fire(s) missed while no scheduler ran; running it now" in daemon.stderr


# ---------------------------------------------------------------- pings


def test_pings_reach_the_server_in_order_and_a_dead_ping_url_never_fails_the_job(env, caplog):
    from functools import partial

    from integrity import api
    from integrity.scheduler import runner

    run_job = partial(runner.run_job, perform=api.perform_job)  # as the daemon runs a fire

    with PingServer() as server:
        settings = env.settings(INTEGRITY_SCHEDULE__PINGS__BACKUP=f"{server.url}/secret-uuid")
        outcome = run_job(settings, "backup", ping_url=settings.schedule.pings["backup"])
        assert outcome.exit_code == 0
        rid = str(uuid.UUID(hex=outcome.run_id))
        assert [path for path, _ in server.received] == [f"/secret-uuid/start?rid={rid}", f"/secret-uuid?rid={rid}"]
        assert server.received[1][1].startswith("backup: ok (exit 0) in ")

        # A failing job pings /<exit code>.
        broken = env.settings(INTEGRITY_BACKUPS__REPOSITORY=str(env.tmp_path / "game.db.missing" / "x"))
        shutil.move(env.url.removeprefix("sqlite:///"), env.tmp_path / "away.db")
        failed = run_job(broken, "backup", ping_url=f"{server.url}/secret-uuid")
        assert failed.exit_code == 4
        assert server.received[-1][0] == f"/secret-uuid/4?rid={uuid.UUID(hex=failed.run_id)}"
        shutil.move(env.tmp_path / "away.db", env.url.removeprefix("sqlite:///"))

    dead = f"http://127.0.0.1:{free_port()}/dead-secret"
    caplog.set_level("WARNING", logger="integrity.scheduler.pings")
    import logging

    logging.getLogger("integrity").propagate = True
    outcome = run_job(settings, "backup", ping_url=dead)
    assert outcome.exit_code == 0
    [run] = [r for r in job_runs(env) if r.id == outcome.run_id]
    assert run.exit_code == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "integrity.scheduler.pings"]
    assert warnings and all("dead-secret" not in w and "127.0.0.1" in w for w in warnings)


# ---------------------------------------------------------------- several hosts


@pytest.mark.postgres
def test_two_schedulers_on_one_postgresql_ledger_run_each_fire_once(env, pg_admin):
    name = f"integrity_ledger_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        shared = {"INTEGRITY_STATE__LEDGER_URL": pg_url_for(name), **only(backup="2s")}
        first, second = start_daemon(env, **shared), start_daemon(env, **shared)
        wait_for(lambda: len(job_runs(env, **shared)) >= 3, timeout=30, what="three scheduled backups")
        assert first.stop() == 0 and second.stop() == 0
        runs = job_runs(env, **shared)
        fires = [r.summary["fire_time"] for r in runs]
        assert len(fires) == len(set(fires))  # each fire ran once
        claimed = [e for e in schedule_events(env, **shared) if e.kind == "skipped" and e.reason.startswith("claimed by ")]
        assert {e.fire_time.isoformat() for e in claimed} >= set(fires[1:-1])  # the other host skipped them
        assert {r.pid for r in runs} <= {first.process.pid, second.process.pid}
        from integrity.scheduler import records
        from scheduler_helpers import ledger_for

        ledger = ledger_for(env, **shared)
        try:
            assert records.last_heartbeat(ledger).state == "stopped"
        finally:
            ledger.close()
    finally:
        drop_pg_database(pg_admin, name)


def test_a_fire_is_claimed_once_in_a_sqlite_ledger_too(env):
    import os
    import socket

    from integrity.scheduler import records
    from scheduler_helpers import ledger_for

    fire = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    ledger = ledger_for(env)
    try:
        assert records.claim(ledger, "backup", fire) is None
        assert records.claim(ledger, "backup", fire) == f"{socket.gethostname()}/{os.getpid()}"
        assert records.claim(ledger, "verify", fire) is None  # per job
    finally:
        ledger.close()


# ---------------------------------------------------------------- schedule list and status


def test_status_is_ok_for_jobs_right_after_init_and_exit_3_when_a_job_is_stale(env):
    code, checks = _checks(env)
    jobs = {name: state for name, state in checks.items() if name.startswith("job ")}
    assert set(jobs) >= {"job backup", "job verify", "job deep_verify", "job prune", "job audit", "job audit_full", "job drill"}
    assert all(state == "ok" for state, _ in jobs.values()), jobs
    time.sleep(2.2)
    code, checks = _checks(env, INTEGRITY_SCHEDULE__PRUNE="1s")
    assert code == 3
    state, detail = checks["job prune"]
    assert state == "problem" and "never succeeded" in detail and "runbooks/job-stale.md" in detail
    # A run from cron (the plain command) counts exactly like the daemon's.
    assert env.invoke("backup", "prune").returncode == 0
    assert _checks(env, INTEGRITY_SCHEDULE__PRUNE="1s")[1]["job prune"][0] == "ok"


def test_schedule_list_shows_next_and_last_runs_and_status_shows_the_heartbeat(env):
    daemon = start_daemon(env, **only(backup="1s"))
    wait_for(lambda: job_runs(env), what="a backup")
    assert daemon.stop() == 0
    code, document = env.invoke_json("schedule", "list", **only(backup="1h"))
    assert code == 0
    jobs = {job["job"]: job for job in document["result"]["jobs"]}
    assert jobs["backup"]["schedule"] == "1h" and jobs["backup"]["last_run"]["outcome"] == "ok"
    assert jobs["backup"]["next_fire"].endswith(":00:00+00:00") and jobs["drill"]["next_fire"] is None
    assert document["result"]["heartbeat"]["state"] == "stopped"
    text = env.invoke("schedule", "list", **only(backup="1h")).stdout
    assert "backup" in text and "1h" in text and "ok (0)" in text and "last heartbeat" in text
    checks = _checks(env, **only(backup="1h"))[1]
    assert checks["scheduler"][0] == "ok" and "last heartbeat" in checks["scheduler"][1]
