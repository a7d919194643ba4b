"""Invariant 5 under kills: a restore killed at any moment leaves live either exactly as
it was or exactly the backup (every row of every table), never a mixture, and a
database that opens cleanly; what a killed run leaves (a staging file or database) is
named and removed by the next restore.

The CLI runs as a real subprocess that SIGKILLs itself at a named crash point
(INTEGRITY_CRASH_AT), or is SIGKILLed from outside mid-swap and at random moments on a
database large enough for a kill to land mid-work.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, fill_large_sqlite, wait_for
from restore_helpers import (
    AFTER_SWAP,
    RESTORE_CRASH_PHASES,
    content,
    damage_like_the_incident,
    drop_restore_leftovers,
    pg_leftover_databases,
    sqlite_opens_cleanly,
)
from store_templates import DataDirTemplate


def _prepared(env: BackupEnv) -> tuple[str, dict, dict]:
    """A backup, then the incident: (backup id, the backup's content, the damaged content)."""
    backup_id = env.create()
    restored = content(env.url)
    damage_like_the_incident(env.url)
    return backup_id, restored, content(env.url)


def _prepared_template(root: Path) -> tuple[DataDirTemplate, str, dict, dict]:
    """`_prepared` once, on the game data at root/game.db, for every test to copy
    (`DataDirTemplate.copy_into`): the backup (its manifest re-pointed at the copy), the
    damaged live file and the state directory, as if the test had prepared them itself.
    A backup and two whole-database digests cost more than the restore a test kills."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # as a test runs: in its own directory
        prepared = _prepared(BackupEnv(root, f"sqlite:///{root / 'game.db'}"))
    return DataDirTemplate(root, []), *prepared


def _killed(completed, phase: str) -> None:
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert f"crash point {phase}: SIGKILL" in completed.stderr


# ---------------------------------------------------------------- SQLite, every phase


@pytest.fixture(scope="module")
def small_prepared(tmp_path_factory, filled_templates):
    """10 players with 20 results each, backed up, then damaged: built once for the module."""
    root = tmp_path_factory.mktemp("small-prepared")
    shutil.copyfile(filled_templates.get("sqlite", players=10, results_per_player=20), root / "game.db")
    return _prepared_template(root)


@pytest.mark.parametrize("phase", RESTORE_CRASH_PHASES)
def test_sqlite_crash_at_each_phase_leaves_live_old_or_new(tmp_path, small_prepared, phase):
    template, backup_id, restored, damaged = small_prepared
    template.copy_into(tmp_path)
    sqlite_url = f"sqlite:///{tmp_path / 'game.db'}"
    env = BackupEnv(tmp_path, sqlite_url)
    _killed(env.run("restore", backup_id, "--yes", INTEGRITY_CRASH_AT=phase), phase)
    sqlite_opens_cleanly(tmp_path / "game.db")
    assert content(sqlite_url) == (restored if phase in AFTER_SWAP else damaged)
    staging = list((env.settings().state.dir / "restore").glob("*.db"))
    if RESTORE_CRASH_PHASES.index(phase) >= RESTORE_CRASH_PHASES.index("restore:staged"):
        (leftover,) = staging
        # The next restore names the leftover, removes it, and restores.
        result = env.invoke("restore", backup_id, "--yes")
        assert result.returncode == 0, result.output
        assert f"removed        {leftover}" in result.stdout
        assert content(sqlite_url) == restored
        assert list((env.settings().state.dir / "restore").glob("*")) == []
    else:
        assert staging == []


# ---------------------------------------------------------------- SQLite, from outside


@pytest.fixture(scope="module")
def mid_size_prepared(tmp_path_factory, sqlite_template):
    """About 60,000 results (some 12 MB), backed up, then damaged: built once for the module."""
    root = tmp_path_factory.mktemp("mid-size")
    shutil.copyfile(sqlite_template, root / "game.db")
    fill_large_sqlite(f"sqlite:///{root / 'game.db'}", copies=2, seed=3)
    return _prepared_template(root)


@pytest.fixture
def mid_size(tmp_path, mid_size_prepared):
    template, backup_id, restored, damaged = mid_size_prepared
    template.copy_into(tmp_path)
    return BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'game.db'}"), backup_id, restored, damaged


def test_sqlite_kill_in_the_middle_of_the_swap_leaves_the_old_database(mid_size):
    """Killed while the backup API is writing the live file's WAL (before its commit):
    the uncommitted frames are ignored and live is the old database."""
    env, backup_id, restored, damaged = mid_size
    live = env.tmp_path / "game.db"
    wal = Path(f"{live}-wal")
    size = live.stat().st_size
    outcomes = []
    for attempt in range(3):
        process = env.popen("restore", backup_id, "--yes")
        try:
            # WAL frames of the new pages are appearing, but nowhere near all of them yet.
            wait_for(lambda: process.poll() is not None or (wal.exists() and wal.stat().st_size > size // 20),
                     timeout=120, what="the swap to start writing")
            process.send_signal(signal.SIGKILL)
        finally:
            process.communicate(timeout=60)
        sqlite_opens_cleanly(live)
        now = content(env.url)
        assert now in (damaged, restored), attempt
        outcomes.append("old" if now == damaged else "new")
        if outcomes[-1] == "old" and process.returncode == -signal.SIGKILL:
            break
    assert outcomes[-1] == "old", f"no kill landed mid-swap: {outcomes}"


def _working(env: BackupEnv, process) -> bool:
    """The restore holds the database lock: start-up is over, the work has begun."""
    notes = env.settings().state.dir / "locks"
    return process.poll() is not None or any(
        f"-{process.pid}-" in note.name for note in notes.glob("database-*.lock.holders/*.json")
    )


def test_random_sigkills_leave_live_old_or_new(mid_size):
    env, backup_id, restored, damaged = mid_size
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    live = env.tmp_path / "game.db"
    # How long the work of a restore takes here, measured on a copy (live must stay damaged).
    copy = env.tmp_path / "copy" / "game.db"
    copy.parent.mkdir()
    shutil.copyfile(live, copy)
    started = time.monotonic()
    assert BackupEnv(env.tmp_path, f"sqlite:///{copy}").invoke("restore", backup_id, "--yes").returncode == 0
    work = time.monotonic() - started
    for _ in range(3):
        process = env.popen("restore", backup_id, "--yes")
        wait_for(lambda: _working(env, process), what="the restore to start working")
        time.sleep(rng.uniform(0, 1.1 * work))  # mostly mid-work, now and then just after the end
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        sqlite_opens_cleanly(live)
        assert content(env.url) in (damaged, restored), seed
    # Whatever the kills left, the next restore cleans up and succeeds.
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, (seed, result.output)
    assert content(env.url) == restored
    assert list((env.settings().state.dir / "restore").glob("*")) == []


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.parametrize("phase", ["restore:staged", "restore:swapping", "restore:swapped"])
def test_postgresql_crash_around_the_rename(tmp_path, filled_copy, pg_admin, request, phase):
    pg_url = filled_copy("postgresql", players=10, results_per_player=20)
    live = sa.make_url(pg_url).database
    request.addfinalizer(lambda: drop_restore_leftovers(pg_admin, live))
    env = BackupEnv(tmp_path, pg_url)
    backup_id, restored, damaged = _prepared(env)
    _killed(env.run("restore", backup_id, "--yes", INTEGRITY_CRASH_AT=phase), phase)
    left = pg_leftover_databases(pg_admin, live)
    if phase in AFTER_SWAP:
        assert content(pg_url) == restored
        (old,) = left
        assert "_before_restore_" in old
        return
    # Before the commit of the renames: live as it was, the staging database left over.
    assert content(pg_url) == damaged
    (staging,) = left
    assert staging.startswith(f"{live}_restore_")
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert f"removed        {staging}" in result.stdout
    assert content(pg_url) == restored
    assert [name for name in pg_leftover_databases(pg_admin, live) if not "_before_restore_" in name] == []
