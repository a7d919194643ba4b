"""Every read the game does is probed, and whatever a read does is counted, never a crash.

The store's reads are made to raise or to return values of the wrong type (what a driver
or a damaged column hands back), one read at a time: each shows up under its kind and
read, for exactly the players it touches. The results themselves unreadable (PostgreSQL
cannot sum a column turned to text) count for every player instead of ending the probe.
The details render values as the game's screens do.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import pytest

from backup_helpers import BackupEnv, execute, scalar
from game_core.store import Store
from integrity.probe import CANARIES, CANARY_PREFIX, canary_content, check_canary
from integrity.probe_checks import type_problem, what

PLAYERS = 6
RESULTS = 4


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, filled_copy, tmp_path):
    # A copy of a database fill_database filled once per session (conftest.filled_copy).
    url = filled_copy(request.param, players=PLAYERS, results_per_player=RESULTS)
    return BackupEnv(tmp_path, url)


def _probe(env: BackupEnv) -> tuple[int, dict]:
    code, document = env.invoke_json("probe", "--sample", "1000")
    assert document["exit_code"] == code
    return code, document["result"]


def _by_kind(result: dict) -> dict[str, dict]:
    return {f["kind"]: f for f in result["failures"]}


def _player(url: str, offset: int = 0) -> tuple[int, str]:
    row = scalar(url, f"SELECT id || ' ' || username FROM players WHERE username NOT LIKE '{CANARY_PREFIX}%' "
                      f"ORDER BY id LIMIT 1 OFFSET {offset}")
    player_id, username = row.split(" ", 1)
    return int(player_id), username


def test_a_healthy_database_passes_every_read_including_the_leaderboards(env, monkeypatch):
    calls: list[tuple] = []
    original = Store.leaderboard

    def leaderboard(self, mode, mode_param, limit=10):
        calls.append((mode, mode_param, limit))
        return original(self, mode, mode_param, limit=limit)

    monkeypatch.setattr(Store, "leaderboard", leaderboard)
    code, result = _probe(env)
    assert (code, result["success_ratio"], result["failures"]) == (0, 1.0, [])
    modes = scalar(env.url, "SELECT COUNT(*) FROM (SELECT DISTINCT mode, mode_param FROM results) AS boards")
    # Each board of a probed player's modes read once per run, at the game's default limit.
    assert len(calls) == len(set(calls)) == modes
    assert {limit for _, _, limit in calls} == {10}


def test_a_read_that_raises_is_an_exception_of_that_read(env, monkeypatch):
    player_id, username = _player(env.url)
    original = Store.get_player

    def get_player(self, name):
        if name == username:
            raise RuntimeError("the driver returned garbage")
        return original(self, name)

    monkeypatch.setattr(Store, "get_player", get_player)
    code, result = _probe(env)
    assert code == 3
    failure = _by_kind(result)["exception"]
    assert (failure["players"], failure["player_ids"], failure["reads"]) == (1, [player_id], ["profile"])
    assert failure["example"] == f"player {player_id}: profile: RuntimeError: the driver returned garbage"
    assert set(_by_kind(result)) == {"exception"}


def test_a_failing_leaderboard_counts_for_every_player_on_it(env, monkeypatch):
    mode, mode_param = "words", 50  # a board no canary is on: the count below is of sampled players
    monkeypatch.setattr(Store, "leaderboard", _raising_for(Store.leaderboard, mode, mode_param))
    on_board = scalar(env.url, f"SELECT COUNT(DISTINCT player_id) FROM results WHERE mode = '{mode}' AND mode_param = {mode_param}")
    assert on_board > 0
    code, result = _probe(env)
    assert code == 3
    failure = _by_kind(result)["exception"]
    assert (failure["players"], failure["reads"]) == (on_board, ["leaderboard"])
    assert failure["example"].endswith(f"leaderboard {mode} {mode_param}: OSError: disk I/O error")


def _raising_for(original, mode: str, mode_param: int):
    def leaderboard(self, board_mode, board_param, limit=10):
        if (board_mode, board_param) == (mode, mode_param):
            raise OSError("disk I/O error")
        return original(self, board_mode, board_param, limit=limit)

    return leaderboard


def test_values_of_the_wrong_type_are_counted_per_read(env, monkeypatch):
    player_id, username = _player(env.url, 1)
    original = Store.history

    def history(self, name, limit=20):
        entries = original(self, name, limit=limit)
        if name != username:
            return entries
        # What a driver hands back from a column whose type a migration changed.
        return [dataclasses.replace(entries[0], wpm="48.2", started_at="2026-01-01 10:00:00"), *entries[1:]]

    monkeypatch.setattr(Store, "history", history)
    code, result = _probe(env)
    assert code == 3
    failure = _by_kind(result)["wrong-type"]
    assert (failure["player_ids"], failure["reads"]) == ([player_id], ["history"])
    assert failure["example"] == (f'player {player_id}: history started_at of result {_newest_result(env.url, player_id)} is '
                                  'text "2026-01-01 10:00:00", not a timezone-aware time (and 1 more wrong values)')


def _newest_result(url: str, player_id: int) -> int:
    return scalar(url, f"SELECT id FROM results WHERE player_id = {player_id} ORDER BY started_at DESC, id DESC LIMIT 1")


@pytest.mark.postgres
def test_results_the_truth_cannot_be_computed_from_count_for_every_player(filled_copy, tmp_path):
    pg_url = filled_copy("postgresql", players=PLAYERS, results_per_player=RESULTS)
    env = BackupEnv(tmp_path, pg_url)
    assert _probe(env)[0] == 0
    # A migration turning results.xp into text: PostgreSQL cannot SUM it any more.
    execute(pg_url, "ALTER TABLE results ALTER COLUMN xp TYPE text")
    code, result = _probe(env)
    assert code == 3  # counted, not "cannot read the database" (4), not a crash (1)
    assert (result["failed"], result["success_ratio"]) == (PLAYERS + len(CANARIES), 0.0)
    failures = _by_kind(result)
    assert failures["exception"]["reads"] == ["results"]
    assert "UndefinedFunction: function sum(text) does not exist" in failures["exception"]["example"]
    assert failures["wrong-type"]["reads"] == ["history"]  # the game itself reads xp as text


def test_details_show_values_the_way_the_game_does():
    assert what(250.85000000000002) == "the number 250.85"
    assert what(datetime(2026, 12, 7, 3, 56, 48, 123456, tzinfo=timezone.utc)) == "the time 2026-12-07 03:56:48 UTC"
    assert what(None) == "empty (NULL)"
    assert what("4") == 'text "4"'

    from game_core.store import Progress

    naive = Progress(player_id=1, xp=10, level=1, tests_completed=1, time_typing_ms=1000, best_wpm=40.0,
                     updated_at=datetime(2026, 1, 1, 12, 0, 0))
    problem = type_problem("progress", [("", naive)])
    assert problem.detail == "progress updated_at is the time 2026-01-01 12:00:00 UTC, not a timezone-aware time"


def test_a_canary_detail_names_the_differing_values_as_the_game_shows_them():
    name = f"{CANARY_PREFIX}2"
    created = datetime(2026, 12, 7, 2, 53, 48, tzinfo=timezone.utc)
    content = canary_content(name, created)
    from game_core.store import HistoryEntry, PersonalBest, Progress

    history = [HistoryEntry(i, mode, param, started, ms, wpm, raw, acc, xp)
               for i, (mode, param, started, ms, wpm, raw, acc, xp) in enumerate(content.history, start=1)]
    bests = [PersonalBest(mode, param, next(e.id for e in history if e.started_at == started), wpm, acc)
             for (mode, param), (started, wpm, acc) in content.bests.items()]
    progress = Progress(1, content.xp, content.level, content.tests_completed, content.time_typing_ms,
                        content.best_wpm, created)
    assert check_canary(name, created, progress, history, bests) == []

    newest = history[0]
    rounded = [dataclasses.replace(newest, raw_wpm=float(round(newest.raw_wpm))), *history[1:]]
    assert newest.raw_wpm != round(newest.raw_wpm)  # or the damage would be a no-op
    (problem,) = check_canary(name, created, progress, rounded, bests)
    assert (problem.kind, problem.read) == ("mismatch", "canary")
    assert problem.detail == (f"the result typed {newest.started_at:%Y-%m-%d %H:%M:%S} UTC: "
                              f"raw wpm {round(newest.raw_wpm):.2f}, written {newest.raw_wpm:.2f}")
    assert "datetime" not in json.dumps(problem.detail)
