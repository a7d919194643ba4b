"""`integrity schedule run` supervises the point-in-time replicator (issue 16), with the
real Litestream: started with the scheduler, restarted when it is killed, each death
recorded in the ledger and shown by `integrity status`, stopped with the scheduler.

The scheduler runs as a real process (signals, a child in its own session); its stderr
(the daemon's INFO lines: "replicator running (pid N)") is how the test finds the child.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from integrity.settings import JOBS
from test_pitr_watch import DEADLINE_SECONDS, invoke, pitr_environ, wait_for, write_player

INTEGRITY = Path(sys.executable).parent / "integrity"
RUNNING = re.compile(r"replicator running \(pid (\d+)\)")


def alive(pid: int) -> bool:
    """Running and not a zombie (a killed child stays in the table until reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_schedule_run_restarts_a_killed_litestream_and_status_shows_the_death(tmp_path, sqlite_path):
    from integrity.ledger import Ledger
    from integrity.pitr import engine_for
    from integrity.scheduler.records import replicator_deaths
    from integrity.settings import resolve_settings

    # Every job off: the scheduler runs for the replicator alone.
    environ = pitr_environ(tmp_path, sqlite_path, **{f"INTEGRITY_SCHEDULE__{job.upper()}": "off" for job in JOBS})
    process_env = {key: value for key, value in os.environ.items() if not key.startswith("INTEGRITY_")}
    stderr_path = tmp_path / "schedule.stderr"
    with stderr_path.open("wb") as stderr:
        scheduler = subprocess.Popen([str(INTEGRITY), "schedule", "run"], env={**process_env, **environ},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    pids: list[int] = []
    try:
        def started(count: int):
            found = [int(pid) for pid in RUNNING.findall(stderr_path.read_text(encoding="utf-8", errors="replace"))]
            assert scheduler.poll() is None, stderr_path.read_text()
            return found if len(found) >= count else None

        first = wait_for(lambda: started(1), what="the scheduler to start litestream")[0]
        assert alive(first)
        os.kill(first, signal.SIGKILL)
        pids = wait_for(lambda: started(2), what="litestream to be restarted")
        second = pids[1]
        assert second != first and alive(second) and not alive(first)

        settings = resolve_settings(environ=environ, cwd=tmp_path)
        ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
        try:
            from datetime import UTC, datetime, timedelta

            [death] = replicator_deaths(ledger, since=datetime.now(UTC) - timedelta(hours=1))
        finally:
            ledger.close()
        assert death.reason.startswith(f"pid {first} was killed by SIGKILL after ")

        result = invoke(environ, "--json", "status")
        checks = {check["name"]: check for check in json.loads(result.stdout)["result"]["checks"]}
        row = checks["pitr replicator"]
        assert row["state"] == "problem"
        assert row["detail"].startswith("the replicator died 1 time(s) in the last day, the last ")
        assert f"pid {first} was killed by SIGKILL" in row["detail"]
        assert "restarted by `integrity schedule run`, see runbooks/pitr-lag.md" in row["detail"]

        # The restarted Litestream replicates: a new write of the game is shipped.
        engine = engine_for(settings)
        shipped = lambda: max((f.max_txid for f in engine.ltx_files()), default=0)  # noqa: E731
        before = shipped()
        write_player(sqlite_path, "after_the_restart")
        wait_for(lambda: shipped() > before, what="the restarted litestream to ship the write")
    finally:
        if scheduler.poll() is None:
            scheduler.send_signal(signal.SIGTERM)
        code = scheduler.wait(timeout=DEADLINE_SECONDS)
    assert code == 0, stderr_path.read_text()
    assert "replicator stopped" in stderr_path.read_text()
    assert pids and not alive(pids[-1])  # stopped with the scheduler, not orphaned


def test_the_drill_pitr_job_drills_a_random_moment_of_the_archive_and_counts_for_itself_only(tmp_path, sqlite_path):
    """`[schedule] drill_pitr` runs `drill --at random` as the daemon runs a fire; its run is
    that job's success and never the backups' `drill` job's (nor the other way round)."""
    from datetime import UTC, datetime

    from integrity import api
    from integrity.jobs import JOBS as JOB_TABLE
    from integrity.jobs import job_runs
    from integrity.ledger import Ledger
    from integrity.scheduler.runner import run_job
    from integrity.settings import resolve_settings
    from pitr_helpers import Replication, Writer, litestream_engine, restorable_moment_after

    assert JOB_TABLE["drill_pitr"].command_line == "integrity -q drill --at random"
    environ = pitr_environ(tmp_path, sqlite_path, INTEGRITY_SCHEDULE__DRILL_PITR="1d")
    settings = resolve_settings(environ=environ, cwd=tmp_path)
    assert settings.schedule.drill_pitr == "1d"
    assert resolve_settings(environ=pitr_environ(tmp_path, sqlite_path), cwd=tmp_path).schedule.drill_pitr == "off"
    with Replication(litestream_engine(settings)) as replication:
        engine = replication.start()
        with Writer(f"sqlite:///{sqlite_path}"):
            restorable_moment_after(engine, datetime.now(UTC))
        outcome = run_job(settings, "drill_pitr", perform=api.perform_job)
    assert outcome.exit_code == 0, outcome.error

    ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
    try:
        archive, backups = job_runs(ledger, JOB_TABLE["drill_pitr"]), job_runs(ledger, JOB_TABLE["drill"])
    finally:
        ledger.close()
    assert archive.last_success is not None and archive.last_success.id == outcome.run_id
    assert archive.last_success.summary["point_in_time"]["asked"] == "--at random"
    assert archive.last_success.summary["job"] == "drill_pitr"
    assert backups.last_success is None  # the backups' drill did not run
