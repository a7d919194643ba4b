"""`typing-game` on a damaged or foreign database: every command refuses in one line.

The incident's change (levels stored as text, wpm rounded to integers, tables rebuilt)
left `alembic_version` at head, and `stats` and `simulate` died with tracebacks
(PostgreSQL: "invalid input syntax for type integer"). Each case here runs the real CLI
on a SQLite file and a PostgreSQL database and asserts the exit code, one `Error:` line
naming what is wrong and what to do, no traceback, and that nothing was written.
"""

from __future__ import annotations

import re
import sqlite3

import pytest
import sqlalchemy as sa

from cli_runner import CliRunner
from game_core import store as store_module
from game_core.cli import app
from game_core.db import create_engine, parse_database_url
from game_core.schema_match import schema_differences
from game_core.schema_state import head_revision
from game_core.typing_test import prompt_words

runner = CliRunner()

HINT = (
    "the schema was changed outside `integrity migrate`, or this is not the game's database: run `integrity status` "
    "and `integrity audit` to see the damage, then restore the last good backup (runbooks/restore.md)"
)
DATA_HINT = (
    "the stored data does not match the game's schema: run `integrity status` and `integrity audit` to see the "
    "damage, then restore the last good backup (runbooks/restore.md) or repair (runbooks/audit-findings.md)"
)
PLAY_WORDS = 8


def invoke(url: str, *args: str, input: str | None = None):
    return runner.invoke(app, ["--database-url", url, *args], input=input)


def commands(seed_player: str) -> dict[str, tuple[list[str], str | None]]:
    """Every typing-game command, with what it needs to get past its own option checks."""
    line = " ".join(prompt_words(PLAY_WORDS, seed=5)) + "\n"
    return {
        "stats": (["stats", "--player", seed_player], None),
        "leaderboard": (["leaderboard", "--mode", "time", "--param", "30"], None),
        "simulate": (["simulate", "--players", "1", "--tests-per-player", "2", "--seed", "2"], None),
        "play": (["play", "--player", seed_player, "--words", str(PLAY_WORDS), "--seed", "5", "--duration-ms", "4000"], line),
    }


def the_error(result) -> str:
    """The one `Error:` line, after asserting there is exactly one and no traceback."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    return errors[0].removeprefix("Error: ")


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


def count(url: str, table: str) -> int:
    engine = create_engine(url, read_only=True)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return rows


def sqlite_rebuild(path, table: str, old: str, new: str, copy_as: str) -> None:
    """Rebuild `table` with one column declared otherwise, as a batch migration does."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys = OFF")
        (create,) = connection.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        assert old in create
        columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        selected = ", ".join(copy_as if c == old.split()[0] else c for c in columns)
        connection.execute("BEGIN")
        renamed = create.replace(f"CREATE TABLE {table}", f"CREATE TABLE {table}_new", 1)
        connection.execute(re.sub(rf"(?<![\w]){re.escape(old)}", new, renamed))
        connection.execute(f"INSERT INTO {table}_new SELECT {selected} FROM {table}")
        connection.execute(f"DROP TABLE {table}")
        connection.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
        connection.execute("COMMIT")
    finally:
        connection.close()


def damage_like_the_incident(url: str) -> None:
    """progress.level stored as text, results.wpm rounded to integers (tables rebuilt on SQLite)."""
    path = parse_database_url(url).sqlite_path
    if path is None:
        execute(
            url,
            "ALTER TABLE progress ALTER COLUMN level TYPE TEXT USING level::text",
            "ALTER TABLE results ALTER COLUMN wpm TYPE INTEGER USING round(wpm)",
        )
        return
    sqlite_rebuild(path, "progress", "level INTEGER NOT NULL", "level TEXT NOT NULL", "CAST(level AS TEXT)")
    sqlite_rebuild(path, "results", "wpm NUMERIC(7, 2) NOT NULL", "wpm INTEGER NOT NULL", "CAST(round(wpm) AS INTEGER)")


@pytest.fixture
def played(database_url):
    """The game database with a few simulated players; returns (url, a player's name)."""
    result = invoke(database_url, "simulate", "--players", "3", "--tests-per-player", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    return database_url, "sim1_1"


def assert_every_command_refuses(url: str, player: str, expected: str, code: int = 4) -> None:
    before = count(url, "results")
    for name, (args, stdin) in commands(player).items():
        result = invoke(url, *args, input=stdin)
        assert result.exit_code == code, (name, result.output)
        assert the_error(result) == expected, name
    assert count(url, "results") == before  # nothing written


def test_the_model_matches_a_fresh_database(database_url):
    engine = create_engine(database_url, read_only=True)
    with engine.connect() as connection:
        assert schema_differences(connection) == []
    engine.dispose()


def test_the_incidents_schema_change_is_refused_by_every_command(played):
    url, player = played
    damage_like_the_incident(url)
    display = parse_database_url(url).display
    assert_every_command_refuses(
        url,
        player,
        f"database {display}: the game's schema at revision {head_revision()} does not match: "
        "progress.level is TEXT, expected INTEGER; results.wpm is INTEGER, expected NUMERIC(7, 2); " + HINT,
    )


def test_a_game_table_missing_a_column_is_refused_by_every_command(played):
    url, player = played
    execute(url, "ALTER TABLE results DROP COLUMN xp")
    display = parse_database_url(url).display
    assert_every_command_refuses(
        url,
        player,
        f"database {display}: the game's schema at revision {head_revision()} does not match: "
        "results.xp is missing (expected INTEGER); " + HINT,
    )


def test_a_missing_game_table_is_refused(played):
    url, player = played
    execute(url, "DROP TABLE personal_bests")
    display = parse_database_url(url).display
    assert_every_command_refuses(
        url,
        player,
        f"database {display}: the game's schema at revision {head_revision()} does not match: "
        "table personal_bests is missing; " + HINT,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def foreign_url(request, tmp_path):
    """Another application's database: a customers table, no Alembic revision."""
    if request.param == "sqlite":
        path = tmp_path / "crm.db"
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers (name) VALUES ('Ada')")
        connection.commit()
        connection.close()
        return str(path)
    url = request.getfixturevalue("pg_empty_url")
    execute(url, "CREATE TABLE customers (id serial PRIMARY KEY, name text)")
    return url


def test_another_applications_database_is_refused_and_left_as_it_was(foreign_url):
    display = parse_database_url(foreign_url).display
    path = parse_database_url(foreign_url).sqlite_path
    before = path.read_bytes() if path else None
    for name, (args, stdin) in commands("alice").items():
        result = invoke(foreign_url, *args, input=stdin)
        assert result.exit_code == 4, (name, result.output)
        assert the_error(result) == (
            f"database {display} holds tables but no Alembic revision; point --database-url at the game's "
            "database or install the version of the game that wrote it"
        ), name
    if path:
        # The writers check the schema read-only first: the file was not switched to WAL
        # (which rewrites its header) or given a -wal file, nor had a byte changed.
        assert path.read_bytes() == before
        assert not path.with_name(path.name + "-wal").exists()
        connection = sqlite3.connect(path)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        connection.close()
    else:
        assert count(foreign_url, "customers") == 0
        engine = create_engine(foreign_url, read_only=True)
        assert sa.inspect(engine).get_table_names() == ["customers"]
        engine.dispose()


def test_a_statement_the_database_refuses_is_one_line_exit_4(played):
    """A trigger added outside the migrations passes the schema check but refuses the
    game's write: the driver's reason in one line, not a traceback."""
    url, player = played
    if parse_database_url(url).sqlite_path:
        execute(url, "CREATE TRIGGER frozen BEFORE UPDATE ON progress BEGIN SELECT RAISE(ABORT, 'progress is frozen'); END")
    else:
        execute(
            url,
            "CREATE FUNCTION frozen() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'progress is frozen'; END $$",
            "CREATE TRIGGER frozen BEFORE UPDATE ON progress FOR EACH ROW EXECUTE FUNCTION frozen()",
        )
    display = parse_database_url(url).display
    args, stdin = commands(player)["play"]
    result = invoke(url, *args, input=stdin)
    assert result.exit_code == 4, result.output
    assert the_error(result) == f"the database {display} refused the game's statement: progress is frozen; " + DATA_HINT
    assert count(url, "results") == 9  # the result was rolled back with the progress update


@pytest.mark.parametrize(
    "column, value, shown",
    [("level", "'Level 5'", "'Level 5' (str), expected int"), ("best_wpm", "'fast'", "'fast' (str), expected float")],
)
def test_a_value_of_the_wrong_storage_class_is_named_with_its_row(sqlite_url, column, value, shown):
    # SQLite keeps text that does not look like a number in an INTEGER or NUMERIC column:
    # the declared schema matches, the value does not (stats used to die with a TypeError).
    result = invoke(sqlite_url, "simulate", "--players", "2", "--tests-per-player", "2", "--seed", "1")
    assert result.exit_code == 0
    execute(sqlite_url, f"UPDATE progress SET {column} = {value} WHERE player_id = 1")
    result = invoke(sqlite_url, "stats", "--player", "sim1_1")
    assert result.exit_code == 4
    display = parse_database_url(sqlite_url).display
    assert the_error(result) == f"database {display}: progress.{column} of player 'sim1_1' is {shown}; " + DATA_HINT
    assert invoke(sqlite_url, "stats", "--player", "sim1_2").exit_code == 0  # other players still show


def test_a_value_that_does_not_convert_is_damaged_data(sqlite_url):
    invoke(sqlite_url, "simulate", "--players", "1", "--tests-per-player", "1", "--seed", "1")
    execute(sqlite_url, "UPDATE results SET started_at = 'garbage'")
    result = invoke(sqlite_url, "stats", "--player", "sim1_1")
    assert result.exit_code == 4
    display = parse_database_url(sqlite_url).display
    assert the_error(result) == (
        f"database {display}: a stored value cannot be read as the game's schema says "
        "(ValueError: Invalid isoformat string: 'garbage'); " + DATA_HINT
    )


def test_a_bug_is_one_line_exit_1_and_verbose_shows_the_traceback(sqlite_url, monkeypatch):
    def broken(self, username):
        raise RuntimeError("something we did not expect")

    monkeypatch.setattr(store_module.Store, "progress", broken)
    result = invoke(sqlite_url, "stats", "--player", "nobody")
    assert result.exit_code == 1
    assert the_error(result) == (
        "unexpected error (a bug): RuntimeError: something we did not expect; "
        "run again with --verbose for the traceback"
    )
    verbose = runner.invoke(app, ["--verbose", "--database-url", sqlite_url, "stats", "--player", "nobody"])
    assert verbose.exit_code == 1
    assert "Traceback" in verbose.stderr and "RuntimeError: something we did not expect" in verbose.stderr
