"""Commands that refuse a database that is not the game's leave it exactly as it was
(issue 14 item 7): `integrity init` (and the other commands that may write the guarded
database: repair, salvage, migrate apply) ask what the database is read-only first, so a
refused SQLite file keeps its bytes, its journal mode and gets no -wal or -shm beside
it, and a refused PostgreSQL database gets no table. Nothing of the tool's is written
either: no starter config, no repository.

The class, not one example: another application's file in rollback-journal mode, one
that uses Alembic itself (a revision this code does not know), one whose alembic_version
is empty, a game-like file at an unknown revision, and files that are not databases.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, fill_database, one_error
from game_core.db import parse_database_url
from game_core.schema_state import head_revision
from restore_helpers import content

HEAD = head_revision()


def _application(path: Path) -> None:
    """Another program's SQLite database in its own (rollback journal) mode."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    connection.executemany("INSERT INTO customers (name) VALUES (?)", [("ada",), ("grace",)])
    connection.commit()
    connection.close()


def _application_with_alembic(path: Path) -> None:
    """Another program that manages its schema with Alembic too."""
    _application(path)
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    connection.execute("INSERT INTO alembic_version VALUES ('3f2a9c1d0b7e')")
    connection.commit()
    connection.close()


def _application_with_empty_alembic_version(path: Path) -> None:
    _application(path)
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    connection.commit()
    connection.close()


def _game_at_unknown_revision(path: Path) -> None:
    """The game's tables, at a revision this code does not know, still in rollback mode
    (copied off a newer host with `sqlite3 .backup`, say)."""
    from game_core import schema

    engine = sa.create_engine(f"sqlite:///{path}")
    schema.metadata.create_all(engine)
    engine.dispose()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    connection.execute("INSERT INTO alembic_version VALUES ('0099_from_newer_code')")
    connection.commit()
    connection.close()


FOREIGN = {
    "another-application": (_application, "holds tables but no Alembic revision"),
    "another-alembic-application": (_application_with_alembic, "is at revision 3f2a9c1d0b7e, which this code does not know"),
    "empty-alembic-version": (_application_with_empty_alembic_version, "holds tables but no Alembic revision"),
    "game-at-unknown-revision": (_game_at_unknown_revision, "is at revision 0099_from_newer_code, which this code does not know"),
}
NOT_A_DATABASE = {
    "text-file": lambda path: path.write_text("id,name\n1,ada\n"),
    "random-bytes": lambda path: path.write_bytes(bytes(range(256)) * 16),
}


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file in the database's folder and its SHA-256: a changed byte, or a -wal,
    -shm or -journal appearing, shows up."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def _journal_mode(path: Path) -> str:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """The commands run in this process (CliRunner: each `integrity` subprocess cost about
    0.5 s of CPU, and what is proven here is the files left behind, not the process), from
    the test's directory as a subprocess would (a config there would be found; none may be
    written there)."""
    monkeypatch.chdir(tmp_path)


def _foreign_file(tmp_path: Path, make) -> tuple[Path, BackupEnv]:
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "app.db"
    make(path)
    env = BackupEnv(tmp_path, f"sqlite:///{path}")
    env.repo.rmdir()  # BackupEnv makes one as init would; here init must not
    return path, env


def _nothing_of_the_tool_written(env: BackupEnv) -> None:
    data = env.data_home / "typing-game"
    assert not (data / "integrity.toml").exists() and not (env.tmp_path / "integrity.toml").exists()
    assert not env.repo.exists()


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_init_refuses_a_foreign_sqlite_file_without_changing_a_byte(tmp_path, kind):
    make, said = FOREIGN[kind]
    path, env = _foreign_file(tmp_path, make)
    before = _snapshot(path.parent)
    assert _journal_mode(path) == "delete"

    result = env.invoke("init")
    assert result.returncode == 4, result.output
    assert _snapshot(path.parent) == before  # same bytes, no -wal, -shm or -journal
    assert _journal_mode(path) == "delete"
    message = one_error(result)
    assert message.startswith(f"database {path} {said}"), message
    assert f"this code's head is {HEAD}" in message or f"its head is {HEAD}" in message, message
    _nothing_of_the_tool_written(env)


@pytest.mark.parametrize("kind", sorted(NOT_A_DATABASE))
def test_init_refuses_a_file_that_is_not_a_database_without_changing_it(tmp_path, kind):
    path, env = _foreign_file(tmp_path, NOT_A_DATABASE[kind])
    before = _snapshot(path.parent)
    result = env.invoke("init")
    assert result.returncode == 4, result.output
    assert one_error(result).startswith(f"cannot connect to {path}: file is not a database")
    assert _snapshot(path.parent) == before
    _nothing_of_the_tool_written(env)


def test_the_refusal_fails_on_an_empty_file_which_init_may_take(tmp_path):
    """The control: an empty file is an empty database, and init creates the schema in it."""
    path, env = _foreign_file(tmp_path, lambda p: p.write_bytes(b""))
    result = env.invoke("init")
    assert result.returncode == 0, result.output
    assert _journal_mode(path) == "wal"
    assert env.repo.is_dir()


def _refusal(message: str, command: tuple[str, ...], display: str, said: str) -> None:
    if command[:2] == ("migrate", "apply") and "which this code does not know" in said:
        # migrate apply judges revisions by the project it runs (--alembic-config), whose
        # history may know more than the game's: its own refusal names the revision.
        revision = said.split()[3].rstrip(",")
        assert message.startswith(f"the snapshot is at revision {revision}, which is not in this history"), message
        return
    assert message.startswith(f"database {display} {said}"), message


@pytest.mark.parametrize("kind", sorted(FOREIGN))
@pytest.mark.parametrize("command", [
    ("repair", "progress", "--yes"),
    ("migrate", "apply", "--yes"),
])
def test_writing_commands_refuse_a_foreign_sqlite_file_without_changing_a_byte(tmp_path, kind, command):
    make, said = FOREIGN[kind]
    path, env = _foreign_file(tmp_path, make)
    env.repo.mkdir()
    before = _snapshot(path.parent)
    result = env.invoke("--no-input", *command)
    assert result.returncode == 4, result.output
    assert _snapshot(path.parent) == before
    _refusal(one_error(result), command, str(path), said)


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_dry_run_refuses_a_foreign_sqlite_file_without_changing_a_byte(tmp_path, kind):
    """A dry run writes only copies, but rehearsing the game's history from base on another
    application's file used to run and fail the round trip (exit 3), as if the migrations
    were at fault."""
    make, said = FOREIGN[kind]
    path, env = _foreign_file(tmp_path, make)
    env.repo.mkdir()
    before = _snapshot(path.parent)
    result = env.invoke("--no-input", "migrate", "dry-run")
    assert result.returncode == 4, result.output
    assert _snapshot(path.parent) == before
    _refusal(one_error(result), ("migrate", "apply"), str(path), said)


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_salvage_refuses_a_foreign_sqlite_file_without_changing_a_byte(tmp_path, sqlite_url, kind):
    """Salvage onto another application's file, from a real backup of a game database
    (the store identities cannot disagree: the foreign file has none)."""
    fill_database(sqlite_url, players=2, results_per_player=3)
    game = BackupEnv(tmp_path, sqlite_url)
    backup_id = game.create()
    make, said = FOREIGN[kind]
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "app.db"
    make(path)
    env = BackupEnv(tmp_path, f"sqlite:///{path}")  # the same repository
    before = _snapshot(folder)
    result = env.invoke("--no-input", "salvage", "--from-backup", backup_id, "--yes")
    assert result.returncode == 4, result.output
    assert _snapshot(folder) == before
    assert one_error(result).startswith(f"database {path} {said}")


# ---------------------------------------------------------------- PostgreSQL


def _pg_application(url: str) -> None:
    execute(url, "CREATE TABLE customers (id serial PRIMARY KEY, name text)",
            "INSERT INTO customers (name) VALUES ('ada'), ('grace')")


def _pg_application_with_alembic(url: str) -> None:
    _pg_application(url)
    execute(url, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('3f2a9c1d0b7e')")


PG_FOREIGN = {
    "another-application": (_pg_application, "holds tables but no Alembic revision"),
    "another-alembic-application": (_pg_application_with_alembic, "is at revision 3f2a9c1d0b7e, which this code does not know"),
}


def _pg_tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("kind", sorted(PG_FOREIGN))
@pytest.mark.parametrize("command", [("init",), ("repair", "progress", "--yes"), ("migrate", "apply", "--yes")])
def test_writing_commands_refuse_a_foreign_postgresql_database_and_leave_it_alone(tmp_path, pg_empty_url, kind, command):
    make, said = PG_FOREIGN[kind]
    make(pg_empty_url)
    tables, rows = _pg_tables(pg_empty_url), content(pg_empty_url)
    env = BackupEnv(tmp_path, pg_empty_url)
    if command == ("init",):
        env.repo.rmdir()
    result = env.invoke("--no-input", *command)
    assert result.returncode == 4, result.output
    display = parse_database_url(pg_empty_url).display
    _refusal(one_error(result), command, display, said)
    assert _pg_tables(pg_empty_url) == tables and content(pg_empty_url) == rows
    if command == ("init",):
        _nothing_of_the_tool_written(env)
