"""Runs are honest in the ledger, and quiet when asked (issue 13, finding 8).

- A run whose process is gone (SIGKILL, the OOM killer, a host that went down) becomes
  `killed` at the next run instead of `running` forever: the same host checks the pid and
  the process's start time; a PostgreSQL ledger also checks the run's advisory lock, which
  any host can test.
- A reader that closes stdout (`integrity backup create | head -1`) never turns a finished
  backup into a failure: the ledger records the real outcome, the exit code is the
  operation's, no traceback.
- `-q` prints nothing when the run succeeds (the README's cron lines mail only on trouble);
  a failure still prints its `Error:` line.

The commands run as real subprocesses where the process boundary is the point (kills,
pipes, what reaches the file descriptors); the ledger is read with plain SQL so that
reading it does not itself mark anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess

import pytest
import sqlalchemy as sa

from backup_helpers import INTEGRITY, BackupEnv, fill_database
from game_core.db import create_engine
from integrity.ledger import KILLED, LEDGER_SCHEMA_VERSION, RUNNING, Ledger, process_gone, process_token

@pytest.fixture
def env(tmp_path, sqlite_url) -> BackupEnv:
    fill_database(sqlite_url, players=4, results_per_player=10)
    return BackupEnv(tmp_path, sqlite_url)


def ledger_rows(env: BackupEnv, command: str | None = None) -> list[dict]:
    """The runs, oldest first, straight from the SQLite ledger file."""
    path = env.settings().state.dir / "ledger.db"
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        rows = [dict(row) for row in connection.execute("SELECT * FROM runs ORDER BY started_at, rowid")]
    return [row for row in rows if command is None or row["command"] == command]


def run_with_stdout(env: BackupEnv, stdout, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*INTEGRITY, *args], cwd=env.tmp_path, env=env.process_env(**extra), stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


# ---------------------------------------------------------------- killed runs


def test_a_killed_backup_becomes_killed_at_the_next_run(env):
    crashed = env.run("backup", "create", INTEGRITY_CRASH_AT="create:compressed")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    [row] = ledger_rows(env, "backup create")
    assert (row["outcome"], row["exit_code"]) == (RUNNING, None)
    assert row["process"] is not None  # pid and start time: a reused pid does not pass for it

    # Any command that opens the ledger settles it; `history` then shows it.
    completed = env.run("--json", "history", "--kind", "backup")
    assert completed.returncode == 0, completed.stderr
    [run] = json.loads(completed.stdout)["result"]["runs"]
    assert (run["outcome"], run["exit_code"], run["finished_at"]) == (KILLED, None, None)
    assert run["summary"]["error"].startswith(
        f"the run's process (pid {row['pid']} on {socket.gethostname()}) ended without recording an outcome"
    )
    assert f"run {row['id']} (backup create, started " in completed.stderr and "marked killed" in completed.stderr
    # It never counts as a success: the newest ok backup run is still none.
    ledger = Ledger.open(env.settings().state.dir)
    try:
        assert ledger.last("backup create", outcome="ok") is None
        assert ledger.last("backup create").outcome == KILLED
    finally:
        ledger.close()


def test_a_running_run_of_a_live_process_stays_running(env):
    """The check must not kill the living: this process's own run, and a run started by a
    live process of this host, stay `running` however often the ledger is opened."""
    ledger = Ledger.open(env.settings().state.dir)
    try:
        run_id = ledger.start("backup create")
        for _ in range(2):
            Ledger.open(env.settings().state.dir).close()
        assert ledger.runs()[0].outcome == RUNNING
        ledger.finish(run_id, 0)
        assert ledger.runs()[0].outcome == "ok"
    finally:
        ledger.close()


def test_a_reused_pid_does_not_keep_a_dead_run_running(env):
    """Same pid, another process (pids are reused, and every pid is new after a reboot):
    the recorded start time tells them apart."""
    ledger = Ledger.open(env.settings().state.dir)
    try:
        run_id = ledger.start("backup create")
        with ledger.engine.begin() as connection:
            connection.execute(sa.text("UPDATE runs SET process = :p WHERE id = :id"),
                               {"p": "another-boot:12345", "id": run_id})
        [killed] = ledger.reap_killed()
        assert (killed.id, killed.outcome) == (run_id, KILLED)
        assert ledger.runs()[0].outcome == KILLED
    finally:
        ledger.close()


def test_process_gone_and_token():
    assert process_gone(os.getpid(), process_token(os.getpid())) is False
    child = subprocess.Popen(["sleep", "30"])
    token = process_token(child.pid)
    assert token is not None and process_gone(child.pid, token) is False
    child.kill()
    child.wait()
    assert process_gone(child.pid, token) is True


def test_a_layout_4_ledger_gains_the_columns_and_its_dead_runs_are_marked(tmp_path):
    """Layout 5 arrives through the ledger's own upgrade step; a `running` row written by
    an older tool (no process token) is judged by its pid alone."""
    state_dir = tmp_path / "state"
    ledger = Ledger.open(state_dir)
    ledger.close()
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that is surely gone
    with sqlite3.connect(state_dir / "ledger.db") as connection:  # back to exactly layout 4
        connection.execute("DROP INDEX runs_running")
        connection.execute("ALTER TABLE runs DROP COLUMN process")
        connection.execute("ALTER TABLE runs DROP COLUMN run_lock")
        connection.execute("UPDATE ledger_meta SET value = '4' WHERE key = 'schema_version'")
        connection.execute(
            "INSERT INTO runs (id, command, started_at, outcome, summary, host, pid, tool_version) "
            "VALUES ('dead', 'drill', '2026-11-01 10:00:00.000000', 'running', '{}', ?, ?, '0.1.0'), "
            "('alive', 'drill', '2026-11-01 10:00:01.000000', 'running', '{}', ?, ?, '0.1.0')",
            (socket.gethostname(), child.pid, socket.gethostname(), os.getpid()),
        )
    upgraded = Ledger.open(state_dir)
    try:
        assert upgraded.schema_version() == LEDGER_SCHEMA_VERSION  # every later layout's step ran too
        columns = {c["name"] for c in sa.inspect(upgraded.engine).get_columns("runs")}
        assert {"process", "run_lock"} <= columns
        assert {run.id: run.outcome for run in upgraded.runs()} == {"dead": KILLED, "alive": RUNNING}
    finally:
        upgraded.close()


@pytest.mark.postgres
def test_postgresql_ledger_a_killed_backup_becomes_killed(pg_empty_url, tmp_path, sqlite_url):
    fill_database(sqlite_url, players=2, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_STATE__LEDGER_URL": pg_empty_url})
    crashed = env.run("backup", "create", INTEGRITY_CRASH_AT="create:compressed")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    engine = create_engine(pg_empty_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT outcome FROM runs")).scalars().all() == [RUNNING]
        code, document = env.run_json("history")
        assert code == 0
        assert [(r["command"], r["outcome"]) for r in document["result"]["runs"]] == [
            ("history", RUNNING), ("backup create", KILLED),
        ]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_ledger_judges_another_hosts_run_by_its_lock(pg_empty_url, tmp_path):
    """A run of another host cannot be judged by pid: its advisory lock, held while its
    process lives and freed by the server when the session ends, can."""
    first = Ledger.open(tmp_path, pg_empty_url)
    run_id = first.start("backup create")
    with first.engine.begin() as connection:  # as if another host had started it
        connection.execute(sa.text("UPDATE runs SET host = 'db2', pid = 1 WHERE id = :id"), {"id": run_id})
    other = Ledger.open(tmp_path, pg_empty_url)
    try:
        assert other.reap_killed() == []
        assert other.runs()[0].outcome == RUNNING
        first.close()  # the process "dies": its session, and the lock, end
        [killed] = other.reap_killed()
        assert (killed.id, killed.outcome) == (run_id, KILLED)
        assert "pid 1 on db2" in killed.summary["error"]
    finally:
        other.close()


@pytest.mark.postgres
def test_postgresql_ledger_a_finished_run_is_never_marked(pg_empty_url, tmp_path):
    ledger = Ledger.open(tmp_path, pg_empty_url)
    try:
        run_id = ledger.start("status")
        ledger.finish(run_id, 3)
        assert ledger._run_locks == {}  # released once the outcome is written
        assert ledger.reap_killed() == []
        assert ledger.runs()[0].outcome == "problems"
    finally:
        ledger.close()


# ---------------------------------------------------------------- a reader that goes away


@pytest.mark.parametrize("json_output", [False, True])
def test_a_closed_stdout_never_fails_a_finished_backup(env, json_output):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: every write is EPIPE
    try:
        completed = run_with_stdout(env, write_end, *(["--json"] if json_output else []), "backup", "create")
    finally:
        os.close(write_end)
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr and "Error" not in completed.stderr
    assert "Exception ignored" not in completed.stderr
    [row] = ledger_rows(env, "backup create")
    assert (row["outcome"], row["exit_code"]) == ("ok", 0)
    assert json.loads(row["summary"])["stdout_closed"] is True
    assert len(env.listed_ids()) == 1


def test_a_closed_stdout_keeps_a_failures_exit_code(env):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        completed = run_with_stdout(env, write_end, "backup", "verify", "no-such-backup")
    finally:
        os.close(write_end)
    assert completed.returncode == 4, completed.stderr
    assert completed.stderr.count("Error: ") == 1 and "Traceback" not in completed.stderr
    [row] = ledger_rows(env, "backup verify")
    assert (row["outcome"], row["exit_code"]) == ("precondition", 4)


def test_head_reading_one_byte_of_a_backup(env):
    """The README's shape of it: `integrity backup create | head -c1`."""
    completed = subprocess.run(
        f"{' '.join(INTEGRITY)} backup create | head -c1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        shell=True, executable="/bin/bash", cwd=env.tmp_path, env=env.process_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert completed.stdout.strip() == "0", completed.stderr
    assert "Traceback" not in completed.stderr
    [row] = ledger_rows(env, "backup create")
    assert (row["outcome"], row["exit_code"]) == ("ok", 0)


# ---------------------------------------------------------------- -q


def test_quiet_success_prints_nothing_at_all(env):
    completed = env.run("-q", "backup", "create")
    assert completed.returncode == 0
    assert (completed.stdout, completed.stderr) == ("", "")
    # Still recorded, still a real backup.
    assert [row["outcome"] for row in ledger_rows(env, "backup create")] == ["ok"]
    assert len(env.listed_ids()) == 1


def test_quiet_cron_lines_print_nothing_on_a_healthy_store(env):
    """Every job of the README's cron block, on a healthy store: not one byte."""
    env.create()
    cron_lines = (
        ("backup", "create", "--lock-wait", "300"),
        ("backup", "verify", "--latest", "--lock-wait", "300"),
        ("backup", "verify", "--latest", "--deep", "--lock-wait", "300"),
        ("backup", "prune", "--lock-wait", "300"),
        ("audit", "--since-last"),
        ("audit",),
        ("drill", "--lock-wait", "300"),
        ("probe",),
    )
    for line in cron_lines:
        result = env.invoke("-q", *line)
        assert result.returncode == 0, (line, result.output)
        assert (result.stdout, result.stderr) == ("", ""), line


def test_quiet_failure_still_says_what_is_wrong(env):
    completed = env.run("-q", "backup", "verify", "no-such-backup")
    assert completed.returncode == 4
    assert completed.stdout == ""
    assert completed.stderr.startswith("Error: 'no-such-backup' is not a backup id")
    assert completed.stderr.count("\n") == 1


def test_quiet_json_still_prints_its_document(env):
    completed = env.run("-q", "--json", "backup", "create")
    assert completed.returncode == 0 and completed.stderr == ""
    assert json.loads(completed.stdout)["result"]["manifest"]["id"] == env.listed_ids()[0]
