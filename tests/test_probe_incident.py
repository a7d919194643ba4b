"""The incident's own damage, on both engines: the probe's alarm must fire.

The migration "to optimise retrieval" stored `progress.level` as text and rounded wpm to
whole numbers (and rounded the caches with it, so they still agree with `results`). The
probe used to crash on it (exit 1, "TypeError") and leave the success ratio metric at its
last value, 1. Here each damage on its own and both together make the probe exit 3,
every failed player counted by kind, the metric file showing the ratio below 1 and the
per-kind counts; the details show values the way the game does.
"""

from __future__ import annotations

import re

import pytest

from backup_helpers import BackupEnv, execute, scalar
from test_metrics_export import parse

PLAYERS = 10
RESULTS = 6
CANARIES = 3


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, filled_copy, tmp_path):
    # A copy of a database fill_database filled once per session (conftest.filled_copy).
    url = filled_copy(request.param, players=PLAYERS, results_per_player=RESULTS)
    env = BackupEnv(tmp_path, url)
    code, _ = env.invoke_json("probe")  # the canaries exist before the damage, as in production
    assert code == 0
    return env


def store_level_as_text(url: str) -> None:
    """What the migration did to `progress.level`: a column of text holding the digits."""
    if url.startswith("postgresql"):
        execute(url, "ALTER TABLE progress ALTER COLUMN level TYPE text")
        return
    # SQLite keeps an INTEGER column's values integers whatever is written: the migration
    # rebuilt the table (Alembic's batch mode does exactly this) with a TEXT column.
    execute(
        url,
        "CREATE TABLE progress_new (player_id INTEGER NOT NULL PRIMARY KEY REFERENCES players (id) ON DELETE CASCADE, "
        "xp BIGINT NOT NULL, level TEXT NOT NULL, tests_completed INTEGER NOT NULL, time_typing_ms BIGINT NOT NULL, "
        "best_wpm NUMERIC(7, 2) NOT NULL, updated_at DATETIME NOT NULL)",
        "INSERT INTO progress_new SELECT player_id, xp, CAST(level AS TEXT), tests_completed, time_typing_ms, "
        "best_wpm, updated_at FROM progress",
        "DROP TABLE progress",
        "ALTER TABLE progress_new RENAME TO progress",
    )
    assert scalar(url, "SELECT COUNT(*) FROM progress WHERE level NOT LIKE '%.%'") > 0


def round_wpm(url: str) -> None:
    """wpm rounded to whole numbers in `results` and, consistently, in the caches."""
    execute(
        url,
        "UPDATE results SET wpm = ROUND(wpm)",
        "UPDATE personal_bests SET wpm = ROUND(wpm)",
        "UPDATE progress SET best_wpm = ROUND(best_wpm)",
    )


def _rounding_changes(url: str) -> int:
    """Players with a wpm that is not a whole number (a canary's may all be)."""
    return scalar(url, "SELECT COUNT(DISTINCT player_id) FROM results WHERE wpm <> ROUND(wpm)")


def _kinds(result: dict) -> dict[str, dict]:
    return {f["kind"]: f for f in result["failures"]}


def _metrics(env: BackupEnv) -> dict:
    return parse(env.settings().metrics.path.read_text(encoding="utf-8"))


def _failed_by_kind(values: dict) -> dict[str, float]:
    return {dict(labels)["kind"]: value for (name, labels), value in values.items() if name == "integrity_probe_failed_players"}


def test_level_stored_as_text_is_a_wrong_type_for_every_player(env):
    store_level_as_text(env.url)
    code, document = env.invoke_json("probe")
    result = document["result"]
    assert code == 3, document.get("error")
    n = PLAYERS + CANARIES
    assert (result["probed"], result["failed"], result["success_ratio"]) == (n, n, 0.0)
    kinds = _kinds(result)
    assert set(kinds) == {"wrong-type"}
    assert kinds["wrong-type"]["players"] == n
    assert kinds["wrong-type"]["reads"] == ["progress"]
    assert re.fullmatch(r'player \d+: progress level is text "\d+", not an integer', kinds["wrong-type"]["example"])


def test_wpm_rounded_with_consistent_caches_is_a_mismatch_with_the_counts(env):
    changed = _rounding_changes(env.url)
    assert changed >= PLAYERS  # every sampled player, at least: the rounding is no no-op
    round_wpm(env.url)
    code, document = env.invoke_json("probe")
    result = document["result"]
    assert code == 3, document.get("error")
    assert result["failed"] == changed
    kinds = _kinds(result)
    assert set(kinds) == {"mismatch"}
    assert "history" in kinds["mismatch"]["reads"]
    # Game-style values: a date like the stats screen, wpm with 2 decimals.
    assert re.search(r"result \d+ \(\w+ \d+, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\): wpm \d+\.00, its counts give \d+\.\d\d",
                     kinds["mismatch"]["example"]), kinds["mismatch"]["example"]


def test_the_incident_exits_3_counts_by_kind_and_the_metric_drops(env):
    changed = _rounding_changes(env.url)
    store_level_as_text(env.url)
    round_wpm(env.url)
    completed = env.invoke("probe")
    assert completed.returncode == 3, completed.output
    assert "unexpected error" not in completed.output
    assert "objective 99.00%: MISSED" in completed.stdout
    for kind in ("wrong-type", "mismatch"):
        assert kind in completed.stdout
    assert "datetime.datetime" not in completed.stdout
    assert not re.search(r"\d\.\d{3,}", completed.stdout.split("failed retrievals by kind")[1])  # no float noise

    values = _metrics(env)
    assert values[("integrity_probe_success_ratio", ())] == 0.0
    n = PLAYERS + CANARIES
    assert _failed_by_kind(values) == {"exception": 0, "timeout": 0, "wrong-type": n, "missing-row": 0, "mismatch": changed}

    code, history = env.invoke_json("history", "--kind", "probe")
    assert [run["exit_code"] for run in history["result"]["runs"]][:2] == [3, 0]


def test_a_revision_applied_behind_the_tools_back_is_probed_not_refused(env):
    """The incident's migration was applied with plain Alembic: live stood at a revision
    this code did not know, the probe refused it with exit 4 and wrote no ratio, and the
    retrieval-drop alert stayed quiet. It must probe what the game reads and fire."""
    store_level_as_text(env.url)
    execute(env.url, "UPDATE alembic_version SET version_num = '0002_optimise_retrieval'")
    completed = env.invoke("probe")
    assert completed.returncode == 3, completed.output
    assert "canaries not written: the database is at unknown revision 0002_optimise_retrieval" in completed.output
    values = _metrics(env)
    assert values[("integrity_probe_success_ratio", ())] == 0.0
    assert _failed_by_kind(values)["wrong-type"] == PLAYERS + CANARIES


def test_a_database_that_is_not_the_games_is_still_refused(env):
    execute(env.url, "DELETE FROM alembic_version")
    assert env.invoke("probe").returncode == 4


def test_a_healthy_database_stays_at_one_with_every_kind_at_zero(env):
    code, document = env.invoke_json("probe")
    assert (code, document["result"]["success_ratio"], document["result"]["failures"]) == (0, 1.0, [])
    values = _metrics(env)
    assert values[("integrity_probe_success_ratio", ())] == 1.0
    assert _failed_by_kind(values) == {"exception": 0, "timeout": 0, "wrong-type": 0, "missing-row": 0, "mismatch": 0}
