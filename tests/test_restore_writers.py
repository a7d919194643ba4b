"""No game write reported as saved is lost by a restore (issue 14.1).

A restore takes a safety backup of live, then swaps the backup in. A write the game
commits between the two is in neither, unless the restore holds writers out (SQLite:
the swap's write transaction is open from before the safety backup to its commit, so
the game's writers wait their busy timeout and then fail loudly) or captures it
(PostgreSQL: the swap keeps live as it was at the rename, which `--keep-newer` salvages
from). Either way, every write the store reported as saved is in live afterwards.

A writer subprocess hammers live through the game's store API, logging each result it
was told was saved, while `restore --keep-newer` runs again and again (20 restores per
engine); the writer's player is in every backup, so it never has to be re-created. Then
the game itself: `typing-game play` started the moment the safety-backup phase line
appears either saves into live or fails with an `Error:` line, never a result printed
and then lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import PROJECT, BackupEnv, execute, one_error, scalar, wait_for
from restore_helpers import HAMMER_PLAYER, drop_restore_leftovers_after, filled_restore_env, hammering_writer, saved_started_at

# 20 restores per engine under a hammering writer (issue 14), in rounds of 4 so that a
# PostgreSQL round stays under the suite's 20 s per test; the rounds alternate the two
# busy timeouts.
ROUNDS = 5
RESTORES_PER_ROUND = 4


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, tmp_path, filled_copy) -> BackupEnv:
    """A small game database whose backup holds the writer's player: a copy of a template
    filled once per session (conftest's filled_copy), the player added to the copy."""
    env = filled_restore_env(request, tmp_path, filled_copy, players=3, results_per_player=5)
    execute(env.url, "INSERT INTO players (username, created_at) VALUES (:u, CURRENT_TIMESTAMP)", u=HAMMER_PLAYER)
    return env


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_no_write_reported_as_saved_is_lost_by_restores_under_a_hammering_writer(env, round_):
    postgres = env.url.startswith("postgresql")
    # Odd rounds: a game that gives up on a lock at once (it fails loudly while the restore
    # holds writers out); even rounds: the default busy timeout (it waits, then saves into
    # the restored database).
    busy_timeout_ms = 5000 if round_ % 2 == 0 else 50
    flags = ("--terminate-connections",) if postgres else ()
    # What is under test is the writer's saves around each restore's safety backup and swap,
    # not the backup restored. On SQLite one backup serves the round: a restore takes well
    # under a second, and a backup in the same second as the last safety backup waits for
    # the next (ids have one-second resolution), which was half the round. On PostgreSQL a
    # restore takes longer than that, and its --keep-newer salvage costs grow with the rows
    # written since the backup (5 restores of one backup: salvage 1.2 s -> 6.4 s, profiled),
    # so each restore gets the newest backup, as `latest` would pick.
    backup_id = env.create()
    with hammering_writer(env.url, env.tmp_path, busy_timeout_ms=busy_timeout_ms) as writer:
        for attempt in range(RESTORES_PER_ROUND):
            if postgres and attempt:
                backup_id = env.create()
            before = len(writer.saved)
            result = env.invoke("--no-input", "restore", backup_id, "--yes", "--keep-newer", *flags)
            assert result.returncode == 0, f"restore {attempt}: {result.output}"
            assert "salvage" in result.output
            # The writer goes on through every restore: a save (or a loud failure) after the
            # ones logged before it. Waited for, as the writer logs a save made as the restore
            # ended a moment after the restore returns (a fast SQLite restore once ended
            # between two of its writes, and the log did not show the next one yet).
            wait_for(lambda: len(writer.saved) > before or writer.failures, timeout=30,
                     what=f"the writer to save again after restore {attempt}")
    saved = writer.saved
    assert len(saved) >= RESTORES_PER_ROUND
    missing = sorted(set(saved) - saved_started_at(env.url))
    assert not missing, f"{len(missing)} of {len(saved)} saved writes lost, e.g. {missing[:3]}; failures {writer.failures[:3]}"
    # Every failure the writer saw was an error the store raised: nothing silent.
    assert all(reason.split(":")[0] in ("OperationalError", "DatabaseUnreachable", "InterfaceError", "DatabaseError")
               for reason in writer.failures), writer.failures[:5]


def _typing_game(*args: str, url: str, cwd: Path, stdin: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "typing-game"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "game_core.cli"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("INTEGRITY_", "GAME_"))}
    environment["GAME_DATABASE_URL"] = url
    environment["PYTHONPATH"] = str(PROJECT)
    return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=60)


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_game_played_during_a_restore_is_saved_into_live_or_fails_loudly(engine, filled_copy, tmp_path, request):
    """The issue's reproduction, made deterministic: the restore is frozen (SIGSTOP) the
    moment its safety-backup phase line appears, `typing-game play` runs to its end, then
    the restore goes on. Before the fix play printed its result, exit 0, and lost_player
    was in neither live nor the safety backup. Now SQLite's play waits for the write lock
    the frozen restore holds and fails with one `Error:` line; PostgreSQL's play saves into
    live as it was, which the swap keeps and --keep-newer salvages."""
    database_url = filled_copy(engine, players=10, results_per_player=10)
    postgres = engine == "postgresql"
    drop_restore_leftovers_after(request, database_url)
    env = BackupEnv(tmp_path, database_url)
    backup_id = env.create()
    flags = ("--terminate-connections",) if postgres else ()
    restore = env.popen("--no-input", "restore", backup_id, "--yes", "--keep-newer", *flags)
    seen = []
    try:
        for line in restore.stderr:
            seen.append(line)
            if line.startswith("safety-backup"):
                restore.send_signal(signal.SIGSTOP)
                break
        assert seen and seen[-1].startswith("safety-backup"), "".join(seen)
        played = _typing_game("play", "--player", "lost_player", "--words", "4", "--seed", "3", "--duration-ms", "6000",
                              url=database_url, cwd=tmp_path, stdin="effort pour suggest lived\n")
    finally:
        restore.send_signal(signal.SIGCONT)
        out, err = restore.communicate(timeout=120)
    assert restore.returncode == 0, "".join(seen) + err
    assert "Traceback" not in played.stderr
    in_live = scalar(database_url, "SELECT COUNT(*) FROM players WHERE username = 'lost_player'")
    if postgres:
        assert played.returncode == 0, played.stderr
    if played.returncode == 0:
        assert "wpm" in played.stdout
        assert in_live == 1, "play printed its result and exited 0, but lost_player is not in live"
        results = scalar(database_url, "SELECT COUNT(*) FROM results AS r JOIN players AS p ON p.id = r.player_id "
                                       "WHERE p.username = 'lost_player'")
        assert results == 1
    else:
        assert played.returncode == 4, played.stderr
        assert "database is locked" in one_error(played)
        assert "wpm" not in played.stdout  # never a result printed for a write that failed
        assert in_live == 0


def test_a_writer_that_keeps_the_sqlite_lock_makes_the_restore_give_up_before_its_safety_backup(filled_copy, tmp_path):
    """The swap waits for the write lock as long as the game would ([database]
    busy_timeout_ms), then gives up: exit 4, live and the repository as they were (no
    safety backup, no staging file). Before the fix the backup API retried for ever."""
    import sqlite3

    sqlite_url = filled_copy("sqlite", players=3, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    execute(sqlite_url, "UPDATE progress SET level = level + 1")
    before = scalar(sqlite_url, "SELECT SUM(level) FROM progress")
    holder = sqlite3.connect(sa.make_url(sqlite_url).database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = env.invoke("--no-input", "restore", backup_id, "--yes", INTEGRITY_DATABASE__BUSY_TIMEOUT_MS="300")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 4, result.output
    assert "stayed locked by another writer for longer than busy_timeout" in one_error(result)
    assert scalar(sqlite_url, "SELECT SUM(level) FROM progress") == before
    assert env.listed_ids() == [backup_id]
    assert list((env.settings().state.dir / "restore").glob("*")) == []
