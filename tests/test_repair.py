"""`integrity repair progress`: the caches are rebuilt from results, only with consent.

The fixture damages progress and personal_bests the way the incident did (levels reset,
xp wrong, a progress row gone, a personal best rewritten); the dry run must name exactly
those players and change nothing (the SQLite file stays byte-identical, PostgreSQL's rows
identical), `--no-input` without `--yes` must refuse, and `--yes` must leave a database
whose progress and personal_bests audits pass.
"""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import INTEGRITY, BackupEnv, execute, fill_database, one_error, sha256_file
from game_core.db import create_engine
from game_core.rebuild import compute_expected_personal_bests, rebuild_derived
from integrity.db.locks import database_lock
from integrity.db.connect import guarded_target

CACHE_QUERIES = (
    "SELECT player_id, xp, level, tests_completed, time_typing_ms, best_wpm, updated_at FROM progress",
    "SELECT player_id, mode, mode_param, result_id, wpm, accuracy FROM personal_bests",
)


def _rows(url: str, *queries: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [sorted(tuple(map(str, row)) for row in connection.execute(sa.text(query))) for query in queries]
    finally:
        engine.dispose()


def _snapshot(url: str):
    """What must not change: the file's bytes (SQLite), every cache row (both)."""
    path = sa.make_url(url).database if url.startswith("sqlite") else None
    return (sha256_file(Path(path)) if path else None), _rows(url, *CACHE_QUERIES)


@pytest.fixture
def damaged(tmp_path, database_url):
    """A database whose caches are wrong for players 1-5, and what must be repaired."""
    fill_database(database_url, players=8, results_per_player=12, seed=4)
    best = _rows(database_url, "SELECT mode, mode_param FROM personal_bests WHERE player_id = 5 ORDER BY mode, mode_param")[0][0]
    execute(
        database_url,
        "UPDATE progress SET level = 1 WHERE player_id IN (1, 2)",  # levels reset
        "UPDATE progress SET xp = xp * 10 WHERE player_id = 3",  # xp in another unit
        "DELETE FROM progress WHERE player_id = 4",  # a missing row
        "UPDATE personal_bests SET wpm = wpm + 7 WHERE player_id = 5 AND mode = :mode AND mode_param = :param",
        mode=best[0], param=int(best[1]),
    )
    # execute() closed the last connection: SQLite checkpointed the WAL into the file, so
    # the file's bytes are the database's whole state.
    return BackupEnv(tmp_path, database_url)


def _audit_failures(url: str) -> dict[str, int]:
    import checks

    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            report = checks.run_audits(connection, tables=["progress", "personal_bests", "players"])
    finally:
        engine.dispose()
    return {f.rule.id: f.failing_rows for f in report.findings if f.failing_rows}


def test_dry_run_names_exactly_the_damaged_players_and_writes_nothing(damaged):
    env = damaged
    before = _snapshot(env.url)
    code, document = env.invoke_json("repair", "progress", "--dry-run")
    assert code == 3, document
    result = document["result"]
    assert (result["dry_run"], result["applied"], result["players_checked"]) == (True, False, 8)
    players = {p["player_id"]: p for p in result["players"]}
    assert sorted(players) == [1, 2, 3, 4, 5]
    for player_id in (1, 2):
        change = players[player_id]
        assert change["old"]["level"] == 1 and change["new"]["level"] > 1
        assert {k for k in change["old"] if change["old"][k] != change["new"][k]} == {"level"}
    assert players[3]["old"]["xp"] == players[3]["new"]["xp"] * 10
    assert players[4]["old"] is None and players[4]["new"]["tests_completed"] == 12
    assert players[5]["old"] == players[5]["new"] and players[5]["bests_changed"] == 1
    assert players[5]["bests_added"] == players[5]["bests_removed"] == 0
    assert players[1]["username"] == "p***0"  # 'p4_0' masked as the audits mask it
    assert result["totals"] == {
        "players": 5, "progress_added": 1, "progress_removed": 0, "progress_changed": 3,
        "bests_added": 0, "bests_removed": 0, "bests_changed": 1,
    }
    assert _snapshot(env.url) == before

    text = env.run("repair", "progress", "--dry-run")
    assert text.returncode == 3
    assert "1 -> " in text.stdout and "none -> " in text.stdout
    assert "would change: 5 of 8 player(s)" in text.stdout
    assert _snapshot(env.url) == before


def test_no_input_without_yes_refuses_and_changes_nothing(damaged):
    env = damaged
    before = _snapshot(env.url)
    completed = env.run("--no-input", "repair", "progress")
    assert completed.returncode == 4
    assert one_error(completed).endswith("needs consent and --no-input forbids asking; run again with --yes")
    # Not a terminal either: no prompt, the same refusal.
    assert env.invoke("repair", "progress").returncode == 4
    assert _snapshot(env.url) == before


def test_yes_repairs_and_the_audits_pass(damaged):
    env = damaged
    failing = _audit_failures(env.url)
    assert failing["progress.level_matches_results"] == 2 and failing["players.progress_exists"] == 1
    code, document = env.invoke_json("--no-input", "repair", "progress", "--yes")
    assert code == 0, document
    result = document["result"]
    assert (result["applied"], result["consent"], result["totals"]["players"]) == (True, "--yes", 5)
    assert sorted(p["player_id"] for p in result["players"]) == [1, 2, 3, 4, 5]
    assert _audit_failures(env.url) == {}

    # Nothing left to do: exit 0 without consent, nothing written.
    before = _snapshot(env.url)
    code, document = env.invoke_json("--no-input", "repair", "progress")
    assert (code, document["result"]["players"], document["result"]["applied"]) == (0, [], False)
    assert env.invoke("repair", "progress", "--dry-run").returncode == 0
    assert _snapshot(env.url) == before


def test_only_the_planned_players_are_rewritten(damaged):
    env = damaged
    untouched = _rows(env.url, "SELECT player_id, updated_at FROM progress WHERE player_id > 5")
    assert env.invoke("repair", "progress", "--yes").returncode == 0
    assert _rows(env.url, "SELECT player_id, updated_at FROM progress WHERE player_id > 5") == untouched


def test_a_held_writer_lock_refuses_with_exit_4(damaged):
    env = damaged
    settings = env.settings()
    before = _snapshot(env.url)
    with database_lock(guarded_target(settings), state_dir=settings.state.dir, command="test", wait_seconds=0):
        completed = env.run("repair", "progress", "--yes")
    assert completed.returncode == 4
    assert "locked" in one_error(completed)
    assert _snapshot(env.url) == before


def _run_on_a_terminal(env: BackupEnv, answer: str) -> tuple[int, str]:
    """`integrity repair progress` with a pseudo-terminal as stdin, typing `answer`."""
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [*INTEGRITY, "repair", "progress"], cwd=env.tmp_path, env=env.process_env(),
            stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        os.write(primary, (answer + "\n").encode())
        out, err = process.communicate(timeout=120)
    finally:
        os.close(primary)
        os.close(secondary)
    assert "Traceback" not in err
    return process.returncode, out + err


def test_typed_confirmation_on_a_terminal(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=3, results_per_player=4)
    execute(sqlite_url, "UPDATE progress SET level = 1 WHERE player_id = 2")
    env = BackupEnv(tmp_path, sqlite_url)
    before = _rows(sqlite_url, *CACHE_QUERIES)
    code, output = _run_on_a_terminal(env, "prod.db")
    assert code == 4 and "'prod.db' typed, not the database name 'game.db'" in output
    assert "player 2 (p***1): level 1 -> " in output  # the plan is shown before the question
    assert _rows(sqlite_url, *CACHE_QUERIES) == before
    code, output = _run_on_a_terminal(env, "game.db")
    assert code == 0, output
    assert "applied in one transaction (consent: typed)" in output
    assert _audit_failures(sqlite_url) == {}


def test_expected_personal_bests_are_what_the_rebuild_writes(database_url):
    fill_database(database_url, players=4, results_per_player=15, seed=8)
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            expected = sorted((pid, b.mode, b.mode_param, b.result_id, b.wpm, b.accuracy)
                              for pid, b in compute_expected_personal_bests(connection))
            assert [pid for pid, _ in compute_expected_personal_bests(connection, [3, 1])] == sorted(
                pid for pid, *_ in expected if pid in (1, 3))
            connection.execute(sa.text("DELETE FROM personal_bests"))
            rebuild_derived(connection)
            written = sorted(tuple(row) for row in connection.execute(sa.text(
                "SELECT player_id, mode, mode_param, result_id, wpm, accuracy FROM personal_bests")))
    finally:
        engine.dispose()
    assert [row[:4] for row in expected] == [row[:4] for row in written]
    assert [(float(a), float(b)) for *_, a, b in expected] == [(float(a), float(b)) for *_, a, b in written]
