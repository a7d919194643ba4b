"""Salvage recomputes what its counts determine (issue 13, finding 7).

The incident's revision rounded `results.wpm` to integers and stored `progress.level`
as text while the game kept writing. Every result written after the good backup then
holds a rounded wpm, but its counts and duration still determine wpm, raw_wpm,
accuracy and xp exactly (`game_core.metrics`): salvage must bring each one back with
the exact values (67.01 stays 67.01, although 67 is within the audit's 0.01
tolerance), count it as recomputed, and leave out only the results nothing can
reconstruct, each kind counted with its sample ids. Both engines, through
`restore --keep-newer` and through `integrity salvage`.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, result_rows
from restore_helpers import filled_restore_env
from test_salvage import play

COUNTS = ("correct_word_chars", "correct_spaces", "correct_chars", "incorrect_chars", "extra_chars",
          "missed_chars", "correct_keystrokes", "incorrect_keystrokes")
DERIVED = ("wpm", "raw_wpm", "accuracy", "xp")
CONTRADICTION = "counts contradict (correct_word_chars > correct_chars)"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, tmp_path, filled_copy) -> BackupEnv:
    return filled_restore_env(request, tmp_path, filled_copy, players=6, results_per_player=15)


def _engine(url):
    from game_core.db import create_engine

    return create_engine(url)


def exact(row) -> dict:
    """The derived values a result's counts and duration determine."""
    from game_core import metrics

    return {
        "wpm": metrics.wpm(row["correct_word_chars"], row["correct_spaces"], row["duration_ms"]),
        "raw_wpm": metrics.raw_wpm(row["correct_chars"], row["incorrect_chars"], row["extra_chars"],
                                   row["correct_spaces"], row["duration_ms"]),
        "accuracy": metrics.accuracy(row["correct_keystrokes"], row["incorrect_keystrokes"]),
        "xp": metrics.result_xp(row["correct_word_chars"], row["correct_spaces"],
                                row["correct_keystrokes"], row["incorrect_keystrokes"]),
    }


def results_by_key(url: str) -> dict[tuple, dict]:
    """{(username, started_at): the result's columns but its ids}, as stored."""
    from game_core.schema import players, results

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            values = [c for c in results.c if c.name not in ("id", "player_id")]
            rows = connection.execute(
                sa.select(players.c.username, results.c.id, *values).join(players, players.c.id == results.c.player_id)
            ).mappings().all()
            return {(row["username"], row["started_at"]): dict(row) for row in rows}
    finally:
        engine.dispose()


def play_67_01(url: str, username: str) -> int:
    """A result through the game whose wpm is 67.01: 400 correct characters in 71.634 s
    (67.0073 before rounding). Rounded to 67 it is within the audit's 0.01 tolerance of
    its counts, so only an exact comparison brings back 67.01."""
    from game_core.store import Store, TestOutcome

    engine = _engine(url)
    try:
        outcome = TestOutcome(
            mode="words", mode_param=50, started_at=datetime.now(timezone.utc) - timedelta(seconds=1),
            duration_ms=71_634, correct_word_chars=334, correct_spaces=66, correct_chars=336, incorrect_chars=3,
            extra_chars=0, missed_chars=1, correct_keystrokes=402, incorrect_keystrokes=3,
        )
        recorded = Store(engine).record_result(username, outcome)
        assert recorded.result.wpm == 67.01
        return recorded.result.id
    finally:
        engine.dispose()


def insert_behind_the_game(url: str, username: str, rows: list[dict]) -> list[int]:
    from game_core.schema import players, results

    engine = _engine(url)
    try:
        with engine.begin() as connection:
            player = connection.execute(sa.select(players.c.id).where(players.c.username == username)).scalar_one()
            return [connection.execute(results.insert().values(**row, player_id=player).returning(results.c.id)).scalar_one()
                    for row in rows]
    finally:
        engine.dispose()


def contradicting_result(rng: random.Random) -> dict:
    """Counts that cannot all be true: more characters in correct words than correct
    characters at all (the game refuses this at write time); wpm, raw_wpm, accuracy and
    xp as those counts give them, so only the contradiction is wrong."""
    row = result_rows(rng, 0, 1, datetime.now(timezone.utc) - timedelta(minutes=3))[0]
    row["correct_word_chars"] = row["correct_chars"] + row["incorrect_chars"] + row["extra_chars"] + 40
    row.update(exact(row))
    del row["player_id"]
    return row


def migrate_like_the_incident(url: str) -> None:
    """The incident's revision, applied behind the tool's back: results rebuilt with an
    integer wpm (every value rounded) and a nullable started_at, progress.level as text."""
    if url.startswith("postgresql"):
        execute(
            url,
            "ALTER TABLE results ALTER COLUMN wpm TYPE integer USING round(wpm)",
            "ALTER TABLE results ALTER COLUMN started_at DROP NOT NULL",
            "ALTER TABLE progress ALTER COLUMN level TYPE text USING level::text",
        )
        return
    # SQLite: the batch-style rebuild (copy, drop, rename) with foreign keys off, as
    # Alembic's batch mode does it.
    connection = sqlite3.connect(sa.make_url(url).database, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        rebuilds = {
            "results": ({"wpm NUMERIC(7, 2) NOT NULL": "wpm INTEGER NOT NULL",
                         "started_at DATETIME NOT NULL": "started_at DATETIME"},
                        {"wpm": "CAST(ROUND(wpm) AS INTEGER)"}),
            "progress": ({"level INTEGER NOT NULL": "level TEXT NOT NULL"}, {"level": "CAST(level AS TEXT)"}),
        }
        for table, (edits, casts) in rebuilds.items():
            (sql,) = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
            columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for old, new in {f"CREATE TABLE {table} (": f"CREATE TABLE {table}_rebuilt (", **edits}.items():
                assert old in sql, (table, old)
                sql = sql.replace(old, new)
            connection.execute(sql)
            selected = ", ".join(casts.get(column, column) for column in columns)
            connection.execute(f"INSERT INTO {table}_rebuilt SELECT {selected} FROM {table}")
            connection.execute(f"DROP TABLE {table}")
            connection.execute(f"ALTER TABLE {table}_rebuilt RENAME TO {table}")
        connection.execute("CREATE INDEX ix_results_leaderboard ON results (mode, mode_param, wpm)")
        connection.execute("COMMIT")
        assert connection.execute("SELECT typeof(level) FROM progress LIMIT 1").fetchone() == ("text",)
    finally:
        connection.close()


def written_after_the_migration(url: str, rng: random.Random, username: str, count: int) -> list[dict]:
    """The game writing on under the new revision: its wpm lands rounded. Returns the
    rows as the game computed them."""
    rows = result_rows(rng, 0, count, datetime.now(timezone.utc) - timedelta(minutes=count + 5))
    for row in rows:
        del row["player_id"]
    stored = [{**row, "wpm": int(round(row["wpm"]))} for row in rows]
    insert_behind_the_game(url, username, stored)
    return rows


def the_incident(env: BackupEnv) -> dict:
    """A good backup, then rows written before the migration (through the game, one of
    them wpm 67.01, and one with contradicting counts behind its back), the migration,
    and rows written after it (one with no started_at). Returns what salvage must find."""
    rng = random.Random(13)
    backup_id = env.create()
    in_backup = results_by_key(env.url)
    play(env.url, "newbie", 4, seed=1)
    play(env.url, "p0_1", 3, seed=2)
    play_67_01(env.url, "p0_2")
    (contradicting,) = insert_behind_the_game(env.url, "p0_3", [contradicting_result(rng)])
    before_migration = results_by_key(env.url)

    migrate_like_the_incident(env.url)
    later = written_after_the_migration(env.url, rng, "p0_4", 5)
    without_start = dict(result_rows(rng, 0, 1, datetime.now(timezone.utc) - timedelta(minutes=1))[0], started_at=None)
    del without_start["player_id"]
    (no_start,) = insert_behind_the_game(env.url, "p0_5", [without_start])
    after_migration = results_by_key(env.url)

    # What salvage must bring back: every result written since the backup, with the
    # values the game wrote (before the migration rounded them).
    expected = {}
    for key, row in after_migration.items():
        if key in in_backup or row["id"] in (contradicting, no_start):
            continue
        original = dict(before_migration.get(key) or {**row, **exact(row)})
        del original["id"]
        assert {name: original[name] for name in DERIVED} == exact(original), key
        expected[key] = original
    assert len(expected) == 4 + 3 + 1 + len(later)
    (key_67_01,) = [key for key in expected if key[0] == "p0_2"]
    assert (expected[key_67_01]["wpm"], after_migration[key_67_01]["wpm"]) == (67.01, 67)
    recomputed = [key for key in expected if after_migration[key]["wpm"] != expected[key]["wpm"]]
    assert len(expected) > len(recomputed) > len(expected) // 2  # most, not all, wpm had decimals
    rewritten_in_backup = sum(1 for row in in_backup.values() if row["wpm"] != round(row["wpm"]))
    return {
        "backup_id": backup_id, "in_backup": in_backup, "expected": expected, "recomputed": len(recomputed),
        "contradicting": contradicting, "no_start": no_start,
        "rewritten_in_backup": rewritten_in_backup,
    }


def assert_salvaged(env: BackupEnv, story: dict, salvage: dict) -> None:
    expected = story["expected"]
    now = results_by_key(env.url)
    assert [row["wpm"] for key, row in now.items() if key[0] == "p0_2" and key not in story["in_backup"]] == [67.01]
    assert salvage["reapplied"] == {"players": 1, "results": len(expected)}
    assert salvage["recomputed"] == {"players": 0, "results": story["recomputed"]}
    assert salvage["recomputed_columns"]["wpm"] == story["recomputed"]
    left = {(item["table"], item["reason"]): item for item in salvage["left_out"]}
    assert set(left) == {("results", CONTRADICTION), ("results", "NULL started_at"), ("results", "changed")}
    assert (left[("results", CONTRADICTION)]["rows"], left[("results", CONTRADICTION)]["sample_ids"]) == (1, [story["contradicting"]])
    assert (left[("results", "NULL started_at")]["rows"], left[("results", "NULL started_at")]["sample_ids"]) == (1, [story["no_start"]])
    # The backup's own rows that the migration rounded: live keeps the restored values.
    assert left[("results", "changed")]["rows"] == story["rewritten_in_backup"]

    for key, row in story["in_backup"].items():
        assert now[key] == row, key
    for key, row in expected.items():
        got = now[key]
        assert {name: got[name] for name in row} == row, key  # exact values, compared exactly
    assert len(now) == len(story["in_backup"]) + len(expected)

    # progress and personal bests rebuilt from results: the damaged text level is gone.
    engine = _engine(env.url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                kind = connection.execute(sa.text(
                    "SELECT data_type FROM information_schema.columns WHERE table_name = 'progress' AND column_name = 'level'"
                )).scalar_one()
                assert kind == "integer"
            else:
                kinds = connection.execute(sa.text("SELECT DISTINCT typeof(level) FROM progress")).scalars().all()
                assert kinds == ["integer"]
    finally:
        engine.dispose()
    code, audit = env.invoke_json("audit")
    assert code == 0, [r["rule"] for r in audit["result"]["rules"] if r["status"] == "fail"]


def test_restore_keep_newer_recomputes_the_results_the_migration_rounded(env):
    story = the_incident(env)

    code, document = env.invoke_json("restore", story["backup_id"], "--yes", "--keep-newer")
    assert code == 0, document
    salvage = document["result"]["salvage"]
    assert_salvaged(env, story, salvage)
    code, history = env.invoke_json("history", "--kind", "restore", "--limit", "1")
    summary = history["result"]["runs"][0]["summary"]["salvage"]
    assert summary["recomputed"] == {"players": 0, "results": story["recomputed"]}


def test_salvage_command_shows_recomputed_apart_and_brings_back_exact_values(env):
    story = the_incident(env)
    result = env.invoke("restore", story["backup_id"], "--yes")
    assert result.returncode == 0, result.output
    safety = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("safety backup")][0]

    text = env.invoke("salvage", "--from-backup", safety, "--dry-run")
    assert text.returncode == 0, text.output
    total, recomputed = len(story["expected"]), story["recomputed"]
    assert (f"would re-apply 1 players and {total} results ({total - recomputed} as is, recomputed {recomputed}); "
            in text.stdout), text.stdout
    assert f"  results: recomputed {recomputed} from their counts and duration (wpm {recomputed}" in text.stdout
    assert CONTRADICTION in text.stdout and "NULL started_at" in text.stdout

    code, done = env.invoke_json("salvage", "--from-backup", safety, "--yes")
    assert code == 0, done
    assert_salvaged(env, story, done["result"])


def test_reconstruct_compares_exactly_and_names_what_cannot_be_rebuilt():
    """The per-row decision, without a database: exact equality, not the audits'
    tolerance; unstorable or undetermined values are never invented."""
    from types import SimpleNamespace

    from game_core import metrics
    from integrity.recovery.salvage import TOO_LARGE, _reconstruct

    counts = dict(correct_word_chars=334, correct_spaces=66, correct_chars=336, incorrect_chars=3, extra_chars=0,
                  missed_chars=1, correct_keystrokes=402, incorrect_keystrokes=3)
    row = dict(mode="words", mode_param=50, started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), duration_ms=71_634,
               **counts, metrics_version=metrics.METRICS_VERSION, created_at=datetime(2026, 1, 1, 0, 2, tzinfo=timezone.utc))
    right = {**row, **exact(row)}
    assert right["wpm"] == 67.01

    def reconstruct(**changes):
        return _reconstruct(SimpleNamespace(**{**right, **changes}))

    assert reconstruct() == (right, (), None)
    values, differing, problem = reconstruct(wpm=67)  # within 0.01, still not the value
    assert (values["wpm"], differing, problem) == (67.01, ("wpm",), None)
    assert reconstruct(wpm=67.01, xp=right["xp"] + 1)[1:] == (("xp",), None)
    assert reconstruct(correct_word_chars=337)[2] == CONTRADICTION
    assert reconstruct(duration_ms=1000, correct_chars=10**7, correct_word_chars=10**7)[2] == TOO_LARGE
    assert reconstruct(correct_spaces="66")[2] == "not a whole number: correct_spaces"
    # The counts do not determine these: stored values kept for the rules to refuse.
    assert reconstruct(metrics_version=2, wpm=67) == ({**right, "metrics_version": 2, "wpm": 67}, (), None)
    assert reconstruct(duration_ms=71, wpm=67) == ({**right, "duration_ms": 71, "wpm": 67}, (), None)
