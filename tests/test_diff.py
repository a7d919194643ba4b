"""`integrity diff` and its library: exactly the injected differences, nothing else.

Two copies of one database (SQLite file copies; PostgreSQL databases created from one
filled template) are damaged on purpose in several tables, then compared: exact
counts, the right changed columns and sample keys, the same answer through the
in-database shortcut and through the plain row path, whatever the batch size (so
batch boundaries are crossed). The CLI is run for its exit codes 0, 3, 4 and 5 and
its JSON shape.
"""

from __future__ import annotations

import random
import shutil
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, fill_database, flip_byte, one_error, scalar
from game_core.db import create_engine
from game_core.schema import GAME_TABLES
from integrity.tablediff import backup_live, walk
from integrity.tablediff.backup_live import (
    CHANGED,
    ONLY_BACKUP,
    ONLY_LIVE,
    EnginesDiffer,
    LayoutDiffers,
    UnknownTable,
    diff_databases,
    diff_table,
    iter_table_differences,
)

T_NEW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TWINS_FILL = dict(players=6, results_per_player=12, seed=5)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def twins(request, filled_copy):
    """(live URL, backup URL): two identical copies of a database with game data (copies of
    one filled once per session)."""
    return filled_copy(request.param, "game.db", **TWINS_FILL), filled_copy(request.param, "backup.db", **TWINS_FILL)


def _module_twins(request, tmp_path_factory, filled_templates) -> tuple[str, str]:
    """What `twins` gives, made once per module and engine, for tests that only read them
    (every diff opens read-only engines): two copies of the session's filled template,
    dropped (PostgreSQL) after the module."""
    from conftest import pg_url_for

    template = filled_templates.get(request.param, **TWINS_FILL)
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("twins")
        for name in ("game.db", "backup.db"):
            shutil.copyfile(template, directory / name)
        return f"sqlite:///{directory / 'game.db'}", f"sqlite:///{directory / 'backup.db'}"
    supply = request.getfixturevalue("pg_supply")
    names = [supply.take(template), supply.take(template)]
    request.addfinalizer(lambda: [supply.drop_later(name) for name in names])
    return pg_url_for(names[0]), pg_url_for(names[1])


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def identical_twins(request, tmp_path_factory, filled_templates):
    """Twins nobody changes, shared by the module's read-only tests."""
    return _module_twins(request, tmp_path_factory, filled_templates)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def injected(request, tmp_path_factory, filled_templates):
    """(live URL, backup URL, what the diff must report): twins damaged by `_inject` once
    per module and engine, shared by the tests that only diff them (each test used to
    copy and damage its own pair: two CREATE DATABASE and the damage per test)."""
    live_url, backup_url = _module_twins(request, tmp_path_factory, filled_templates)
    return live_url, backup_url, _inject(live_url, backup_url)


@pytest.fixture(params=["in-database check", "narrowed to single rows", "buckets of 4 keys", "rows only"])
def path(request, monkeypatch):
    """Every way a range is compared: the engine's shortcut (a differing page narrowed to
    FETCH_MIN rows before they are fetched; with FETCH_MIN 1, down to single rows; on
    PostgreSQL with an integer key, per-bucket sums, here over buckets of 4 keys so that
    pages end inside buckets), and fetching every row."""
    if request.param == "rows only":
        monkeypatch.setattr(backup_live, "_choose_path", lambda live, backup: backup_live.FETCHED)
    if request.param == "narrowed to single rows":
        monkeypatch.setattr(walk, "FETCH_MIN", 1)
    if request.param == "buckets of 4 keys":
        monkeypatch.setattr(walk, "BUCKET_BITS", 2)
    return request.param


def _diff(live_url: str, backup_url: str, **options):
    live, backup = create_engine(live_url, read_only=True), create_engine(backup_url, read_only=True)
    try:
        with live.connect() as live_connection, backup.connect() as backup_connection:
            return {d.table: d for d in diff_databases(live_connection, backup_connection, **options)}
    finally:
        live.dispose()
        backup.dispose()


def _table_diffs(live_url: str, backup_url: str, batch_size: int) -> dict:
    live, backup = create_engine(live_url, read_only=True), create_engine(backup_url, read_only=True)
    try:
        with live.connect() as live_connection, backup.connect() as backup_connection:
            return {t: diff_table(live_connection, backup_connection, t, batch_size=batch_size) for t in GAME_TABLES}
    finally:
        live.dispose()
        backup.dispose()


def _free_results(url: str, count: int) -> list[int]:
    """Results no personal best points at: deleting them cascades nowhere."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(
                "SELECT id FROM results WHERE id NOT IN (SELECT result_id FROM personal_bests) ORDER BY id"
            )).scalars())[:count]
    finally:
        engine.dispose()


def _inject(live_url: str, backup_url: str) -> dict:
    """Damage live (and add one row to the backup); return what the diff must report."""
    gone, (faster, longer) = (free := _free_results(live_url, 4))[:2], free[2:]
    bests = [tuple(r) for r in _rows(live_url, "SELECT player_id, mode, mode_param FROM personal_bests ORDER BY player_id, mode, mode_param")]
    execute(
        live_url,
        "INSERT INTO players (username, created_at) VALUES ('newcomer', :t)",
        "UPDATE players SET username = 'renamed' WHERE id = 2",
        f"DELETE FROM results WHERE id IN ({gone[0]}, {gone[1]})",
        f"UPDATE results SET wpm = wpm + 1 WHERE id = {faster}",
        f"UPDATE results SET xp = xp + 9, duration_ms = duration_ms + 1000 WHERE id = {longer}",
        "UPDATE progress SET level = level + 3 WHERE player_id IN (1, 4)",
        "DELETE FROM progress WHERE player_id = 6",
        t=T_NEW,
    )
    execute(live_url, "DELETE FROM personal_bests WHERE player_id = :p AND mode = :m AND mode_param = :n",
            p=bests[0][0], m=bests[0][1], n=bests[0][2])
    execute(live_url, "UPDATE personal_bests SET accuracy = accuracy - 1 WHERE player_id = :p AND mode = :m AND mode_param = :n",
            p=bests[-1][0], m=bests[-1][1], n=bests[-1][2])
    # A result the backup has and live never had (live's next id is taken by nothing).
    top = scalar(backup_url, "SELECT MAX(id) FROM results")
    execute(backup_url, f"INSERT INTO results SELECT {top} + 100, player_id, mode, mode_param, started_at + INTERVAL '1 second', "
            "duration_ms, correct_word_chars, correct_spaces, correct_chars, incorrect_chars, extra_chars, missed_chars, "
            "correct_keystrokes, incorrect_keystrokes, wpm, raw_wpm, accuracy, xp, metrics_version, created_at "
            f"FROM results WHERE id = {top}" if backup_url.startswith("postgresql") else
            f"INSERT INTO results SELECT {top} + 100, player_id, mode, mode_param, datetime(started_at, '+1 second'), "
            "duration_ms, correct_word_chars, correct_spaces, correct_chars, incorrect_chars, extra_chars, missed_chars, "
            "correct_keystrokes, incorrect_keystrokes, wpm, raw_wpm, accuracy, xp, metrics_version, created_at "
            f"FROM results WHERE id = {top}")
    new_player = scalar(live_url, "SELECT MAX(id) FROM players")
    return {
        "store_identity": dict(only_live=0, only_backup=0, changed=0, columns={}, samples={}),
        "players": dict(only_live=1, only_backup=0, changed=1, columns={"username": 1},
                        samples={ONLY_LIVE: [[new_player]], CHANGED: [[2]]}),
        "results": dict(only_live=0, only_backup=3, changed=2, columns={"duration_ms": 1, "wpm": 1, "xp": 1},
                        samples={ONLY_BACKUP: [[gone[0]], [gone[1]], [top + 100]], CHANGED: [[faster], [longer]]}),
        "progress": dict(only_live=0, only_backup=1, changed=2, columns={"level": 2},
                         samples={ONLY_BACKUP: [[6]], CHANGED: [[1], [4]]}),
        "personal_bests": dict(only_live=0, only_backup=1, changed=1, columns={"accuracy": 1},
                               samples={ONLY_BACKUP: [list(bests[0])], CHANGED: [list(bests[-1])]}),
    }


def _rows(url: str, query: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(query)).all()
    finally:
        engine.dispose()


def _assert_matches(diffs: dict, expected: dict) -> None:
    assert list(diffs) == list(GAME_TABLES)
    for table, want in expected.items():
        got = diffs[table]
        assert (got.only_live, got.only_backup, got.changed) == (want["only_live"], want["only_backup"], want["changed"]), table
        assert got.changed_columns == want["columns"], table
        for kind in (ONLY_LIVE, ONLY_BACKUP, CHANGED):
            assert got.samples[kind] == want["samples"].get(kind, []), (table, kind)
        assert got.differing_rows == want["only_live"] + want["only_backup"] + want["changed"]


def test_identical_copies_differ_in_nothing(identical_twins, path):
    live_url, backup_url = identical_twins
    diffs = _diff(live_url, backup_url)
    counts = {t: _rows(live_url, f'SELECT COUNT(*) FROM "{t}"')[0][0] for t in GAME_TABLES}
    assert list(diffs) == list(GAME_TABLES)  # every table compared, so the loop below proves something
    assert all(counts[t] > 0 for t in GAME_TABLES), counts  # and on rows, not on empty tables
    for table, result in diffs.items():
        assert (result.only_live, result.only_backup, result.changed, result.changed_columns) == (0, 0, 0, {}), table
        assert result.live_rows == result.backup_rows == counts[table]
        assert result.differing_share == 0.0


def test_finds_exactly_the_injected_differences(injected, path):
    live_url, backup_url, expected = injected
    diffs = _diff(live_url, backup_url)
    _assert_matches(diffs, expected)
    results = diffs["results"]
    assert results.live_rows == results.backup_rows - 3
    assert diffs["players"].differing_share == pytest.approx(2 / diffs["players"].live_rows)


def test_a_moved_row_is_found_on_both_sides_when_the_counts_agree(twins, path):
    """Both sides hold as many rows, yet one key is only in live and one only in the
    backup: equal counts alone must not end the search for backup-only rows."""
    live_url, backup_url = twins
    moved = _free_results(live_url, 1)[0]
    top = scalar(live_url, "SELECT MAX(id) FROM results")
    execute(live_url, f"UPDATE results SET id = {top + 50} WHERE id = {moved}")
    results = _diff(live_url, backup_url, tables=["results"])["results"]
    assert results.live_rows == results.backup_rows
    assert (results.only_live, results.only_backup, results.changed) == (1, 1, 0)
    assert results.samples[ONLY_LIVE] == [[top + 50]] and results.samples[ONLY_BACKUP] == [[moved]]


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_batch_boundaries_change_nothing(injected, path, batch_size):
    live_url, backup_url, expected = injected
    _assert_matches(_table_diffs(live_url, backup_url, batch_size), expected)


def test_row_differences_carry_both_rows_and_the_columns(injected):
    live_url, backup_url, expected = injected
    faster, longer = expected["results"]["samples"][CHANGED]
    live, backup = create_engine(live_url, read_only=True), create_engine(backup_url, read_only=True)
    try:
        with live.connect() as lc, backup.connect() as bc:
            found = list(iter_table_differences(lc, bc, "results", batch_size=4))
    finally:
        live.dispose()
        backup.dispose()
    for kind in (ONLY_LIVE, ONLY_BACKUP, CHANGED):
        keys = [d.key for d in found if d.kind == kind]
        assert keys == sorted(keys)  # primary key order within each kind, across batches
    assert {d.kind for d in found} == {ONLY_BACKUP, CHANGED}
    changed = {d.key: d for d in found if d.kind == CHANGED}
    assert changed[tuple(longer)].columns == ("duration_ms", "xp")
    assert changed[tuple(longer)].live["xp"] == changed[tuple(longer)].backup["xp"] + 9
    assert changed[tuple(faster)].columns == ("wpm",)
    assert changed[tuple(faster)].live["wpm"] == pytest.approx(changed[tuple(faster)].backup["wpm"] + 1)
    for d in found:
        if d.kind == ONLY_BACKUP:
            assert d.live is None and d.backup["id"] == d.key[0] and d.columns == ()
    # Values come back typed alike on both engines: aware UTC datetimes, floats for 2-decimal columns.
    row = changed[tuple(faster)].live
    assert row["started_at"].utcoffset().total_seconds() == 0 and isinstance(row["wpm"], float)


def test_two_spellings_of_one_sqlite_value_are_no_change(sqlite_url, tmp_path):
    """SQLite stores timestamps as text: an ISO 'T'/offset spelling of the same instant
    (another writer's) is the same value; a different instant is a change."""
    fill_database(sqlite_url, players=2, results_per_player=5, seed=9)
    backup_path = tmp_path / "backup.db"
    shutil.copyfile(sa.make_url(sqlite_url).database, backup_path)
    backup_url = f"sqlite:///{backup_path}"
    execute(backup_url, "UPDATE results SET started_at = replace(started_at, ' ', 'T') || '+00:00' WHERE id <= 4")
    execute(backup_url, "UPDATE players SET created_at = replace(created_at, ' ', 'T') WHERE id = 1")
    assert _diff(sqlite_url, backup_url)["results"].differing_rows == 0
    execute(backup_url, "UPDATE results SET started_at = replace(started_at, '+00:00', '+01:00') WHERE id = 2")
    diffs = _diff(sqlite_url, backup_url)
    assert (diffs["results"].changed, diffs["results"].changed_columns) == (1, {"started_at": 1})
    assert diffs["players"].differing_rows == 0


def test_unknown_table_and_other_revision_are_preconditions(sqlite_url, tmp_path):
    fill_database(sqlite_url, players=2, results_per_player=3)
    with pytest.raises(UnknownTable, match="results, progress, personal_bests") as caught:
        _diff(sqlite_url, sqlite_url, tables=["scores"])
    assert caught.value.exit_code == 4
    older = tmp_path / "older.db"
    shutil.copyfile(sa.make_url(sqlite_url).database, older)
    execute(f"sqlite:///{older}", "ALTER TABLE results DROP COLUMN metrics_version")
    with pytest.raises(LayoutDiffers, match="metrics_version"):
        _diff(sqlite_url, f"sqlite:///{older}", tables=["results"])


@pytest.mark.postgres
def test_engines_must_match(sqlite_url, pg_url):
    with pytest.raises(EnginesDiffer, match="sqlite database with a postgresql"):
        _diff(sqlite_url, pg_url)


# ---------------------------------------------------------------- the CLI


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backed_up(request, tmp_path, filled_copy):
    env = BackupEnv(tmp_path, filled_copy(request.param, players=5, results_per_player=10, seed=2))
    return env, env.create()


def test_cli_identical_then_differences(backed_up):
    env, backup_id = backed_up
    completed = env.run("diff", backup_id)
    assert completed.returncode == 0, completed.stderr
    assert "identical" in completed.stdout
    scratch = env.settings().state.dir / "scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []  # the restored copy is gone

    gone = _free_results(env.url, 1)[0]
    execute(env.url, f"DELETE FROM results WHERE id = {gone}", "UPDATE progress SET level = 1 WHERE player_id = 3")
    code, document = env.invoke_json("diff", "latest")
    assert code == 3, document
    result = document["result"]
    assert result["backup_id"] == backup_id and result["differing_rows"] == 2
    tables = {t["table"]: t for t in result["tables"]}
    assert list(tables) == list(GAME_TABLES)
    assert tables["results"]["only_backup"] == 1 and tables["results"]["samples"]["only_backup"] == [[gone]]
    assert tables["progress"]["changed_columns"] == {"level": 1}
    assert set(tables["results"]) >= {"live_rows", "backup_rows", "only_live", "only_backup", "changed", "changed_columns", "samples"}

    completed = env.invoke("diff", backup_id, "--table", "progress", "--limit", "0")
    assert completed.returncode == 3
    assert "progress" in completed.stdout and "personal_bests" not in completed.stdout
    assert "player_id=3" not in completed.stdout  # --limit 0: counts only
    assert "1 row(s) differ" in completed.stdout


def test_cli_preconditions_exit_4(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=2, results_per_player=3)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    completed = env.run("diff", backup_id, "--table", "scores")
    assert completed.returncode == 4
    assert one_error(completed) == (
        "unknown table 'scores'; the game's tables are: store_identity, players, results, progress, personal_bests"
    )
    missing = backup_id[:-6] + "000000"
    completed = env.invoke("diff", missing)
    assert completed.returncode == 4
    assert one_error(completed).startswith(f"no backup {missing} in ")
    assert env.invoke("diff", "../etc").returncode == 4


def test_cli_other_store_exit_4(tmp_path, sqlite_url, sqlite_template):
    fill_database(sqlite_url, players=2, results_per_player=3)
    other = tmp_path / "other.db"
    shutil.copyfile(sqlite_template, other)
    execute(f"sqlite:///{other}", "UPDATE store_identity SET identity_uuid = :u", u=str(uuid.uuid4()))
    other_id = BackupEnv(tmp_path, f"sqlite:///{other}").create()
    completed = BackupEnv(tmp_path, sqlite_url).run("diff", other_id)
    assert completed.returncode == 4
    message = one_error(completed)
    assert "another store" in message and str(other) in message


def test_cli_corrupt_backup_exit_5(backed_up):
    env, backup_id = backed_up
    data = env.repo / backup_id / env.repository().read_manifest(backup_id).files[0].name
    flip_byte(data, random.Random(3))
    code, document = env.invoke_json("diff", backup_id)
    assert code == 5, document
    assert backup_id in document["error"]
    assert env.journal_events(backup_id)[-1] == "corrupt"
