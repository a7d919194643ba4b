"""Progress bars on a terminal's stderr, and nothing anywhere else (issue 13, finding 9).

The long phases (backup create, quick and deep verify, drill, migrate dry-run) show rich
progress bars on stderr when stderr is a terminal; not when it is a pipe or a file (cron,
logs), and not under -q. The commands run as real subprocesses with stderr on a
pseudo-terminal, so what is checked is what a person would see. Every task is drawn once
when it starts, so the checks do not depend on how long a phase takes.
"""

from __future__ import annotations

import io
import os
import pty
import subprocess
import tempfile

import pytest
from rich.console import Console

from backup_helpers import INTEGRITY, BackupEnv, fill_database
from integrity.progress import NO_PROGRESS, TerminalReporter, reporter_for


@pytest.fixture
def env(tmp_path, sqlite_url) -> BackupEnv:
    fill_database(sqlite_url, players=5, results_per_player=10)
    return BackupEnv(tmp_path, sqlite_url)


def on_a_terminal(env: BackupEnv, *args: str) -> tuple[int, str, str]:
    """`integrity ARGS` with stderr on a pseudo-terminal: (exit code, stdout, what the
    terminal received)."""
    master, slave = pty.openpty()
    with tempfile.TemporaryFile() as stdout:
        process = subprocess.Popen(
            [*INTEGRITY, *args], cwd=env.tmp_path, env={**env.process_env(), "TERM": "xterm-256color"},
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=slave,
        )
        os.close(slave)
        received = bytearray()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not chunk:
                break
            received += chunk
        os.close(master)
        code = process.wait(timeout=120)
        stdout.seek(0)
        return code, stdout.read().decode(), received.decode("utf-8", "replace")


def test_backup_create_shows_its_phases_on_a_terminal(env):
    code, stdout, terminal = on_a_terminal(env, "backup", "create")
    assert code == 0, terminal
    assert "created and verified" in stdout  # the report stays on stdout
    for phase in ("copying the database", "compressing", "verifying the backup"):
        assert phase in terminal, terminal
    assert "eta" in terminal and "elapsed" in terminal
    assert "created and verified" not in terminal


def test_deep_verify_and_drill_show_restore_fingerprints_and_audits(env):
    env.create()
    code, _, terminal = on_a_terminal(env, "backup", "verify", "--deep")
    assert code == 0, terminal
    for phase in ("hashing", "restoring", "fingerprinting the copy", "auditing the copy"):
        assert phase in terminal, terminal
    code, _, terminal = on_a_terminal(env, "drill")
    assert code == 0, terminal
    for phase in ("hashing", "restoring", "auditing the copy", "comparing with live"):
        assert phase in terminal, terminal


def test_migrate_dry_run_shows_fingerprints_migration_and_diff(env, tmp_path):
    from test_migrate_dry_run import ADD_COUNTRY, history

    ini = history(tmp_path, ADD_COUNTRY)
    code, stdout, terminal = on_a_terminal(env, "migrate", "dry-run", "--alembic-config", str(ini), "--from-live")
    assert code == 0, terminal + stdout
    for phase in ("fingerprinting the source", "migrating the work copy", "auditing the migrated copy", "content diff",
                  "0/1 tables", "round trip"):
        assert phase in terminal, terminal


def test_nothing_when_stderr_is_not_a_terminal(env):
    created = env.run("backup", "create")
    assert created.returncode == 0
    verified = env.run("backup", "verify", "--deep")
    assert verified.returncode == 0
    for completed in (created, verified):
        assert completed.stderr.splitlines() == [line for line in completed.stderr.splitlines() if line.startswith("database: ")]
        assert "\x1b" not in completed.stderr


def test_quiet_silences_the_bars_on_a_terminal(env):
    code, stdout, terminal = on_a_terminal(env, "-q", "backup", "create")
    assert (code, stdout, terminal) == (0, "", "")


# ---------------------------------------------------------------- the seam itself


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reporter_for_a_terminal_only_and_never_when_quiet():
    assert reporter_for(io.StringIO(), quiet=False) is NO_PROGRESS
    assert reporter_for(_Terminal(), quiet=True) is NO_PROGRESS
    assert isinstance(reporter_for(_Terminal(), quiet=False), TerminalReporter)


def test_the_default_reporter_takes_every_call_and_shows_nothing():
    with NO_PROGRESS.task("anything", total=10, unit="bytes") as task:
        task.advance(5)
        task.describe("else")
        task.set(7, total=12)


def test_nested_phases_share_one_display_that_ends_with_the_last():
    screen = io.StringIO()
    reporter = TerminalReporter(Console(file=screen, force_terminal=True, width=120))
    with reporter.task("restoring", total=1000, unit="bytes") as outer:
        outer.advance(500)
        with reporter.task("auditing the copy", total=10, unit="rules") as inner:
            inner.set(4)
            assert reporter._open == 2
            reporter._progress.refresh()  # what rich's refresh thread draws ten times a second
        outer.advance(500)
    assert reporter._progress is None and reporter._open == 0
    drawn = screen.getvalue()
    assert "restoring" in drawn and "auditing the copy" in drawn
    assert "4/10 rules" in drawn and "500 bytes/1.0 kB" in drawn
