"""`integrity probe`: the retrieval success rate through the game's store.

A clean database reads 1.0 and exits 0; corrupting the caches of exactly k players
(levels reset, bests deleted) makes exactly those k retrievals fail, by kind, and exits 3
below the objective; a changed stored value of a canary is caught even when every cache
agrees with it; a read that raises or returns a value of the wrong type is counted, never
a crash; an unreachable database exits 4. The canaries are valid game data: a full audit
after a probe is clean, and drills and restores treat them like any player. The
incident's own damage is in test_probe_incident.py.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, fill_database, one_error, scalar
from game_core import metrics
from game_core.db import create_engine
from game_core.store import Store
from integrity.probe import CANARIES, CANARY_PREFIX, canary_content

PLAYERS = 10
RESULTS = 6


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, filled_copy, tmp_path):
    # A copy of a database fill_database filled once per session (conftest.filled_copy).
    url = filled_copy(request.param, players=PLAYERS, results_per_player=RESULTS)
    return BackupEnv(tmp_path, url)


def _probe(env: BackupEnv, *args: str, **extra: str) -> tuple[int, dict]:
    code, document = env.invoke_json("probe", "--sample", "1000", *args, **extra)
    assert document["exit_code"] == code
    return code, document.get("result")


def _kinds(result: dict) -> dict[str, list[int]]:
    return {f["kind"]: f["player_ids"] for f in result["failures"]}


def _player_ids(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(
                "SELECT id FROM players WHERE username NOT LIKE 'integrity.probe.%' ORDER BY id"
            )).scalars().all()
    finally:
        engine.dispose()


def test_a_clean_database_reads_one_and_the_canaries_are_written_once(env):
    code, result = _probe(env)
    assert code == 0
    assert result["success_ratio"] == 1.0
    assert (result["sampled"], len(result["canaries"]), result["probed"], result["failed"]) == (PLAYERS, 3, PLAYERS + 3, 0)
    assert sorted(result["canaries_written"]) == sorted(CANARIES)
    latency = result["latency"]
    assert 0 < latency["p50_seconds"] <= latency["p95_seconds"] <= latency["max_seconds"]

    code, again = _probe(env)
    assert (code, again["success_ratio"], again["canaries_written"]) == (0, 1.0, [])
    assert scalar(env.url, f"SELECT COUNT(*) FROM players WHERE username LIKE '{CANARY_PREFIX}%'") == 3

    code, sampled = _probe(env, "--sample", "4")  # the last --sample wins
    assert (code, sampled["sampled"], sampled["probed"]) == (0, 4, 7)

    # The run is in the ledger with what the metrics read.
    code, history = env.invoke_json("history", "--kind", "probe")
    assert [run["summary"]["success_ratio"] for run in history["result"]["runs"]] == [1.0, 1.0, 1.0]


def test_corrupting_k_of_n_players_fails_exactly_those_k(env):
    ids = _player_ids(env.url)
    reset, no_bests = ids[1:3], ids[5:6]
    # A reset level must differ from the real one, or the corruption would be a no-op.
    levels = {pid: scalar(env.url, f"SELECT level FROM progress WHERE player_id = {pid}") for pid in reset}
    assert all(level > 1 for level in levels.values()), levels
    execute(env.url, f"UPDATE progress SET level = 1 WHERE player_id IN ({', '.join(map(str, reset))})")
    execute(env.url, f"DELETE FROM personal_bests WHERE player_id = {no_bests[0]}")

    code, result = _probe(env)
    k, n = 3, PLAYERS + 3
    assert code == 3
    assert (result["probed"], result["failed"]) == (n, k)
    assert result["success_ratio"] == round((n - k) / n, 6)
    assert _kinds(result) == {"mismatch": reset, "missing-row": no_bests}
    reads = {f["kind"]: f["reads"] for f in result["failures"]}
    # No best, so no place on the leaderboards either (the board is not full: 13 players).
    assert reads == {"mismatch": ["progress"], "missing-row": ["bests", "leaderboard"]}
    example = next(f["example"] for f in result["failures"] if f["kind"] == "mismatch")
    assert re.fullmatch(r"player \d+: level 1 with xp \d+; the results give level \d+, xp \d+", example), example

    # The same failures above a lower objective: exit 0, still reported.
    code, lenient = _probe(env, INTEGRITY_OBJECTIVES__PROBE_MIN_SUCCESS_RATIO="0.7")
    assert (code, lenient["failed"], _kinds(lenient)) == (0, k, _kinds(result))


def test_text_output_names_the_kinds_and_the_runbook(env):
    execute(env.url, f"UPDATE progress SET xp = xp + 1 WHERE player_id = {_player_ids(env.url)[0]}")
    completed = env.invoke("probe")
    assert completed.returncode == 3
    assert "objective 99.00%: MISSED" in completed.stdout
    assert "mismatch" in completed.stdout
    assert re.search(r"player \d+: xp \d+, the results give \d+", completed.stdout), completed.stdout
    assert "see runbooks/retrieval-drop.md" in completed.stdout


def test_a_changed_stored_value_of_a_canary_is_caught_even_with_consistent_caches(env):
    assert _probe(env)[0] == 0
    # What the incident's migration did: every value still there, in another format (here
    # wpm truncated to whole numbers), and the caches rebuilt to agree with it.
    canary = f"{CANARY_PREFIX}2"
    player = scalar(env.url, f"SELECT id FROM players WHERE username = '{canary}'")
    before = scalar(env.url, f"SELECT SUM(wpm) FROM results WHERE player_id = {player}")
    execute(env.url, f"UPDATE results SET wpm = wpm - 0.2 WHERE player_id = {player}")
    engine = create_engine(env.url)
    with engine.begin() as connection:
        from game_core.rebuild import rebuild_derived

        rebuild_derived(connection, [player])
    engine.dispose()
    assert scalar(env.url, f"SELECT SUM(wpm) FROM results WHERE player_id = {player}") != before

    code, result = _probe(env)
    assert code == 3
    assert _kinds(result) == {"mismatch": [player]}
    mismatch = result["failures"][0]
    # The counts no longer give the stored wpm, and the canary is not what was written.
    assert mismatch["reads"] == ["history", "canary"]
    assert mismatch["example"].startswith(f"player {player}: result ")
    assert "datetime" not in json.dumps(result["failures"])
    assert result["canaries_written"] == []  # a damaged canary is reported, never rewritten


def test_an_interrupted_canary_setup_is_completed(env):
    # A first run killed between two record_result calls: the canary holds its first test only.
    name = f"{CANARY_PREFIX}3"
    created = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    engine = create_engine(env.url)
    try:
        Store(engine, clock=lambda: created).create_player(name)
        Store(engine).record_result(name, CANARIES[name][0].outcome(created))
    finally:
        engine.dispose()
    code, result = _probe(env)
    assert (code, result["failed"]) == (0, 0)
    assert sorted(result["canaries_written"]) == sorted(CANARIES)
    content = canary_content(name, created)
    player = scalar(env.url, f"SELECT id FROM players WHERE username = '{name}'")
    assert scalar(env.url, f"SELECT COUNT(*) FROM results WHERE player_id = {player}") == content.tests_completed
    assert content.level == metrics.level_for_xp(content.xp) > 1  # the level check has something to check


def test_a_slow_read_is_a_timeout(env, monkeypatch):
    slow = _player_ids(env.url)[4]
    username = scalar(env.url, f"SELECT username FROM players WHERE id = {slow}")
    original = Store.bests

    def bests(self, name):
        if name == username:
            import time

            time.sleep(1.5)  # a database that stalls on one player's rows
        return original(self, name)

    monkeypatch.setattr(Store, "bests", bests)
    # A timeout of 1 s, not 0.2: on a loaded machine (load 10) a healthy player's reads
    # took over 0.2 s and were reported as timeouts too. The stall sleeps: no CPU.
    code, result = _probe(env, "--timeout", "1")
    assert code == 3
    assert _kinds(result) == {"timeout": [slow]}
    assert result["latency"]["max_seconds"] >= 1.5


def test_a_full_audit_after_a_probe_is_clean(env):
    assert _probe(env)[0] == 0
    code, document = env.invoke_json("audit")
    assert code == 0, document["result"]["error_rules"]
    assert document["result"]["scope"] == "full"


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/missing.db", "postgresql://postgres@127.0.0.1:1/nowhere"],
                         ids=["sqlite-missing", "postgresql-refused"])
def test_an_unreachable_database_is_exit_4(url, tmp_path):
    env = BackupEnv(tmp_path, url.format(tmp=tmp_path))
    completed = env.invoke("probe")
    assert completed.returncode == 4
    message = one_error(completed)
    assert "does not exist" in message or "cannot connect" in message, message
    code, document = env.invoke_json("probe")
    assert (code, document["exit_code"]) == (4, 4)
    assert not (tmp_path / "missing.db").exists()  # the probe never creates a database


def test_a_database_without_schema_is_exit_4(tmp_path):
    path = tmp_path / "empty.db"
    create_engine(str(path), create_missing=True).dispose()
    completed = BackupEnv(tmp_path, f"sqlite:///{path}").invoke("probe")
    assert completed.returncode == 4
    assert "has no schema; run `integrity init`" in one_error(completed)


def test_drill_and_restore_treat_the_canaries_as_ordinary_players(sqlite_url, tmp_path):
    fill_database(sqlite_url, players=4, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()  # taken before the canaries exist
    assert _probe(env)[0] == 0
    assert env.invoke("drill").returncode == 0  # live holds 3 players more than the backup: fine
    assert env.invoke("restore", backup_id, "--yes").returncode == 0
    assert scalar(sqlite_url, f"SELECT COUNT(*) FROM players WHERE username LIKE '{CANARY_PREFIX}%'") == 0
    code, result = _probe(env)  # the next probe writes them again
    assert (code, len(result["canaries_written"])) == (0, 3)
    env.create()  # now with canaries: a drill of it and a full audit pass
    assert env.invoke("drill").returncode == 0
    assert env.invoke("audit").returncode == 0
