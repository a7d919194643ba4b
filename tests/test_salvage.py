"""Salvage: after a restore, exactly the rows written since the backup that pass the
audits come back (new players, new results of known players); planted bad rows and the
rows the incident changed are left out and reported with their reasons, on both
engines, through `restore --keep-newer` and through `integrity salvage`.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, result_rows
from restore_helpers import filled_restore_env


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, tmp_path, filled_copy) -> BackupEnv:
    return filled_restore_env(request, tmp_path, filled_copy)


def _engine(url):
    from game_core.db import create_engine

    return create_engine(url)


def _outcome(started_at: datetime, rng: random.Random):
    from game_core.store import TestOutcome

    typed = rng.randint(80, 300)
    spaces = typed // 6
    return TestOutcome(
        mode="time", mode_param=30, started_at=started_at, duration_ms=30_000,
        correct_word_chars=typed - spaces, correct_spaces=spaces, correct_chars=typed - spaces + 2,
        incorrect_chars=2, extra_chars=0, missed_chars=1, correct_keystrokes=typed + 2, incorrect_keystrokes=2,
    )


def play(url: str, username: str, tests: int, *, seed: int = 1) -> list[int]:
    """`tests` results recorded through the game's store (a new player is registered)."""
    from game_core.store import Store

    rng = random.Random(seed)
    engine = _engine(url)
    try:
        store = Store(engine)
        store.get_or_create_player(username)
        ids = []
        for _ in range(tests):
            time.sleep(0.002)  # distinct started_at, never in the future
            ids.append(store.record_result(username, _outcome(datetime.now(timezone.utc), rng)).result.id)
        return ids
    finally:
        engine.dispose()


def plant(url: str) -> dict[str, list[int]]:
    """What the game's validation would refuse, written behind its back: a result of a
    known player with wpm in another unit (its counts still give the right one), one
    with its duration in seconds (nothing gives the right one), and a player created in
    the future with two results."""
    from game_core.schema import players, results

    engine = _engine(url)
    rng = random.Random(7)
    try:
        with engine.begin() as connection:
            known = connection.execute(sa.select(players.c.id).where(players.c.username == "p0_2")).scalar_one()
            bad = result_rows(rng, known, 1, datetime.now(timezone.utc) - timedelta(hours=1))[0]
            bad["wpm"] = round(bad["wpm"] * 5, 2)  # characters per minute
            rescaled = connection.execute(results.insert().values(**bad).returning(results.c.id)).scalar_one()
            seconds = result_rows(rng, known, 1, datetime.now(timezone.utc) - timedelta(minutes=30))[0]
            seconds["duration_ms"] //= 1000
            in_seconds = connection.execute(results.insert().values(**seconds).returning(results.c.id)).scalar_one()
            future = connection.execute(players.insert().values(
                username="from_the_future", created_at=datetime.now(timezone.utc) + timedelta(days=1),
            ).returning(players.c.id)).scalar_one()
            rows = result_rows(rng, future, 2, datetime.now(timezone.utc) - timedelta(minutes=5))
            future_results = [connection.execute(results.insert().values(**row).returning(results.c.id)).scalar_one() for row in rows]
        return {"rescaled": [rescaled], "in_seconds": [in_seconds], "future_player": [future], "future_results": future_results}
    finally:
        engine.dispose()


def results_columns() -> list:
    """The result columns `rows_by_key` gives, in order."""
    from game_core.schema import results

    return [c for c in results.c if c.name not in ("id", "player_id", "started_at")]


def rows_by_key(url: str) -> dict[tuple, tuple]:
    """Every result as {(username, started_at): (the rest of its values)}."""
    from game_core.schema import players, results

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            values = results_columns()
            rows = connection.execute(
                sa.select(players.c.username, results.c.started_at, *values).join(players, players.c.id == results.c.player_id)
            ).all()
            return {(row[0], row[1]): tuple(row[2:]) for row in rows}
    finally:
        engine.dispose()


def test_restore_keep_newer_reapplies_exactly_the_new_rows_that_pass_the_audits(env):
    backup_id = env.create()
    in_backup = rows_by_key(env.url)
    newbie = play(env.url, "newbie", 5, seed=1)
    known = play(env.url, "p0_1", 3, seed=2)
    planted = plant(env.url)
    before_restore = rows_by_key(env.url)
    # The incident: existing rows rewritten (these must never come back).
    execute(env.url, "UPDATE results SET wpm = wpm * 5 WHERE id <= 50", "UPDATE progress SET level = 1")

    code, document = env.invoke_json("restore", backup_id, "--yes", "--keep-newer")
    assert code == 0, document
    salvage = document["result"]["salvage"]
    assert [p["name"] for p in document["result"]["phases"]][-3:] == ["post-check", "salvage", "cleanup"]
    assert salvage["reapplied"] == {"players": 1, "results": 9}
    assert salvage["renumbered"] == {"players": 0, "results": 0}
    # The result in characters per minute comes back with the wpm its counts give.
    assert salvage["recomputed"] == {"players": 0, "results": 1}
    assert salvage["recomputed_columns"] == {"wpm": 1, "raw_wpm": 0, "accuracy": 0, "xp": 0}
    assert salvage["recomputed_sample_ids"] == planted["rescaled"]
    left = {(item["table"], item["reason"]): item for item in salvage["left_out"]}
    assert set(left) == {
        ("results", "changed"),
        ("players", "players.created_not_in_future"),
        ("results", "player left out"),
        *[key for key in left if key[0] == "results" and "results.duration_min" in key[1]],
    }
    assert left[("results", "changed")]["rows"] == 50
    assert left[("players", "players.created_not_in_future")]["sample_ids"] == planted["future_player"]
    assert left[("results", "player left out")]["sample_ids"] == planted["future_results"]
    (bad,) = [item for key, item in left.items() if "results.duration_min" in key[1]]
    assert bad["sample_ids"] == planted["in_seconds"]

    # Exactly: the backup's rows, plus the new good ones as they were written, plus the
    # rescaled one with its wpm recomputed (the rest of it as written).
    now = rows_by_key(env.url)
    new_keys = set(before_restore) - set(in_backup)
    good = {key: before_restore[key] for key in new_keys if key[0] in ("newbie", "p0_1")}
    assert len(good) == 8
    (rescaled_key,) = [key for key in now if key not in in_backup and key not in good]
    assert now == {**in_backup, **good, rescaled_key: now[rescaled_key]}
    wpm = [c.name for c in results_columns()].index("wpm")
    assert now[rescaled_key][wpm] == round(before_restore[rescaled_key][wpm] / 5, 2)
    assert now[rescaled_key][:wpm] + now[rescaled_key][wpm + 1:] == before_restore[rescaled_key][:wpm] + before_restore[rescaled_key][wpm + 1:]
    assert sorted(salvage["sample_ids"]["results"]) == sorted((newbie + known)[:5])
    code, audit = env.invoke_json("audit")
    assert code == 0, [r["rule"] for r in audit["result"]["rules"] if r["status"] == "fail"]
    code, history = env.invoke_json("history", "--kind", "restore", "--limit", "1")
    assert history["result"]["runs"][0]["summary"]["salvage"]["reapplied"] == {"players": 1, "results": 9}


def test_salvage_command_renumbers_rows_whose_ids_the_game_reused(env):
    backup_id = env.create()
    play(env.url, "newbie", 4, seed=3)
    play(env.url, "p0_1", 3, seed=4)
    before_restore = rows_by_key(env.url)
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    safety = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("safety backup")][0]
    assert f"integrity salvage --from-backup {safety} --dry-run" in result.stdout or "--from-database" in result.stdout
    # The game goes on after the restore: its next result takes an id a lost row had.
    play(env.url, "p0_3", 1, seed=5)
    after_game = rows_by_key(env.url)

    text = env.invoke("salvage", "--from-backup", safety, "--dry-run")
    assert text.returncode == 0, text.output
    assert "would re-apply 1 players and 7 results" in text.stdout and "nothing was changed" in text.stdout
    code, dry = env.invoke_json("salvage", "--from-backup", safety, "--dry-run")
    assert code == 0, dry
    assert dry["result"]["reapplied"] == {"players": 1, "results": 7}
    assert dry["result"]["renumbered"]["results"] >= 1
    assert rows_by_key(env.url) == after_game  # the dry run changed nothing

    refused = env.invoke("--no-input", "salvage", "--from-backup", safety)
    assert refused.returncode == 4

    code, done = env.invoke_json("salvage", "--from-backup", safety, "--yes")
    assert code == 0, done
    assert done["result"]["reapplied"] == dry["result"]["reapplied"]
    assert done["result"]["renumbered"] == dry["result"]["renumbered"]
    assert done["result"]["left_out"] == []
    now = rows_by_key(env.url)
    assert now == {**after_game, **{k: v for k, v in before_restore.items() if k[0] in ("newbie", "p0_1")}}
    code, audit = env.invoke_json("audit")
    assert code == 0
    # The game keeps writing afterwards: the id sequences moved past the re-applied rows.
    play(env.url, "newbie", 1, seed=6)
    # Salvaging again re-applies nothing: everything is there.
    code, again = env.invoke_json("salvage", "--from-backup", safety, "--yes")
    assert code == 0 and again["result"]["reapplied"] == {"players": 0, "results": 0}


def test_a_new_player_who_plays_again_before_the_salvage_keeps_every_result(env):
    """`newbie` is new since the backup; after the restore the game creates `newbie` again
    (a later created_at) before anyone salvages. Salvage used to map the old results to
    the re-created player and leave them out (`results.not_before_player`): now the player
    gets back the first created_at, and every result comes back."""
    backup_id = env.create()
    play(env.url, "newbie", 3, seed=3)
    before_restore = rows_by_key(env.url)
    first_created = _created_at(env.url, "newbie")
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    safety = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("safety backup")][0]
    time.sleep(0.01)  # the game's clock moves on: the re-created player is strictly newer
    play(env.url, "newbie", 1, seed=9)  # the game registers `newbie` again
    assert _created_at(env.url, "newbie") > first_created
    after_game = rows_by_key(env.url)

    code, done = env.invoke_json("salvage", "--from-backup", safety, "--yes")
    assert code == 0, done
    assert done["result"]["left_out"] == [], done["result"]["left_out"]
    assert done["result"]["recreated_players"] == 1
    assert done["result"]["reapplied"] == {"players": 0, "results": 3}
    assert _created_at(env.url, "newbie") == first_created
    assert rows_by_key(env.url) == {**after_game, **{k: v for k, v in before_restore.items() if k[0] == "newbie"}}
    code, audit = env.invoke_json("audit")
    assert code == 0, audit


def test_a_player_whose_created_at_the_damage_changed_is_not_redated(env):
    """The control: a player the backup holds, whose created_at differs in the source (the
    incident's kind of change), keeps the restored value and is reported as changed."""
    backup_id = env.create()
    restored_created = _created_at(env.url, "p0_2")
    execute(env.url, "UPDATE players SET created_at = :t WHERE username = 'p0_2'",
            t=restored_created - timedelta(days=30))
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    safety = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("safety backup")][0]
    code, done = env.invoke_json("salvage", "--from-backup", safety, "--yes")
    assert code == 0, done
    assert done["result"]["recreated_players"] == 0
    left_out = {(item["table"], item["reason"]): item["rows"] for item in done["result"]["left_out"]}
    assert left_out == {("players", "changed"): 1}, left_out
    assert _created_at(env.url, "p0_2") == restored_created


def _created_at(url: str, username: str):
    from game_core.schema import players

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.select(players.c.created_at).where(players.c.username == username)).scalar_one()
    finally:
        engine.dispose()
