"""`restore` never wipes a database that is not the game's (issue 14.3), and a safety
backup always goes back to where it came from.

A restore replaces the whole database (SQLite: every page of the file; PostgreSQL: the
database renamed away), so whatever else live holds is gone afterwards. So:

- a target that is neither the game's store nor empty (another application's database:
  no store identity, no revision of the game's history) is refused with exit 4, one
  `Error:` line naming its tables, nothing changed, no safety backup taken, whatever
  the flags;
- the plan lists every table that would disappear: a game store's extra table, and a
  game table the backup does not hold;
- an empty target is restored into;
- a safety backup of such a database (`create_backup(..., purpose="safety")`, as a
  restore takes it) is restored by id onto the database it came from, also once the
  game's data replaced it; onto another database it is refused.

Each on both engines.
"""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, one_error
from restore_helpers import content, drop_restore_leftovers, filled_restore_env

CUSTOMERS = [(1, "Ada"), (2, "Grace"), (3, "Edsger")]


def _rows(url: str, query: str) -> list[tuple]:
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg") if url.startswith("postgresql") else url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(query))]
    finally:
        engine.dispose()


def _shop(url: str) -> None:
    """Another application's database: customers and orders, nothing of the game."""
    statements = [
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), total INTEGER)",
        *(f"INSERT INTO customers VALUES ({i}, '{name}')" for i, name in CUSTOMERS),
        "INSERT INTO orders VALUES (10, 1, 250)",
    ]
    if url.startswith("postgresql"):
        engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
        engine.dispose()
    else:
        connection = sqlite3.connect(sa.make_url(url).database)
        with connection:
            for statement in statements:
                connection.execute(statement)
        connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def game(request, tmp_path, filled_copy) -> BackupEnv:
    """The game's database with data (a copy of a template filled once per session) and
    the repository the test uses."""
    return filled_restore_env(request, tmp_path, filled_copy, players=5, results_per_player=4)


@pytest.fixture
def blank_url(game, tmp_path, request) -> str:
    """An empty database of the same engine as `game` (a file never written, a database with no tables)."""
    if game.url.startswith("postgresql"):
        url = request.getfixturevalue("pg_empty_url")
        admin = request.getfixturevalue("pg_admin")
        request.addfinalizer(lambda: drop_restore_leftovers(admin, sa.make_url(url).database))
        return url
    path = tmp_path / "blank.db"
    path.touch()
    return f"sqlite:///{path}"


@pytest.fixture
def shop(game, blank_url) -> BackupEnv:
    """Another application's database, sharing the game's repository and state directory."""
    _shop(blank_url)
    return BackupEnv(game.tmp_path, blank_url)


def _customers(env: BackupEnv) -> list[tuple]:
    return _rows(env.url, "SELECT id, name FROM customers ORDER BY id")


# ---------------------------------------------------------------- refused


@pytest.mark.parametrize("flags", [(), ("--force-other-source",), ("--dry-run",), ("--no-safety-backup",)])
def test_a_restore_over_another_applications_database_is_refused_and_changes_nothing(game, shop, flags):
    backup_id = game.create()
    ids = shop.listed_ids()
    result = shop.invoke("restore", backup_id, *(() if "--dry-run" in flags else ("--yes",)), *flags)
    assert result.returncode == 4, result.output
    message = one_error(result)
    assert "not the typing game's database" in message
    assert "customers" in message and "orders" in message
    assert "nothing was changed" in message
    assert _customers(shop) == CUSTOMERS
    assert _rows(shop.url, "SELECT id, customer_id, total FROM orders") == [(10, 1, 250)]
    assert shop.listed_ids() == ids  # no safety backup was taken


def test_the_refusal_is_json_too(game, shop):
    backup_id = game.create()
    code, document = shop.invoke_json("restore", backup_id, "--yes")
    assert code == 4 and document["exit_code"] == 4
    assert "customers" in document["error"]


# ---------------------------------------------------------------- what disappears is in the plan


def test_the_plan_lists_a_game_stores_extra_table_and_the_restore_removes_it(game):
    backup_id = game.create()
    execute(game.url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "INSERT INTO notes VALUES (1, 'keep me?')")
    code, document = game.invoke_json("restore", backup_id, "--dry-run")
    assert code == 0, document
    plan = document["result"]
    assert plan["disappearing"] == ["notes"]
    assert plan["disappearing_exact"] is True  # the dry run restored the backup and looked
    text = game.invoke("restore", backup_id, "--dry-run")
    assert "disappear  notes" in text.stdout
    # A real restore plans without a scratch copy: the manifest does not name notes, so it
    # is listed (it might be in the backup; it is not).
    result = game.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert "disappear  notes" in result.stdout or "notes" in result.stdout
    assert "removed table  notes" in result.stdout
    tables = sa.inspect(sa.create_engine(sa.make_url(game.url).set(drivername="postgresql+psycopg"))
                        if game.url.startswith("postgresql") else sa.create_engine(game.url)).get_table_names()
    assert "notes" not in tables


def test_an_extra_table_the_backup_holds_is_not_said_to_disappear_by_the_dry_run(game):
    execute(game.url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", "INSERT INTO notes VALUES (1, 'kept')")
    backup_id = game.create()
    execute(game.url, "INSERT INTO notes VALUES (2, 'written after the backup')")
    code, document = game.invoke_json("restore", backup_id, "--dry-run")
    assert code == 0, document
    assert document["result"]["disappearing"] == []
    result = game.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert "removed table" not in result.stdout
    assert _rows(game.url, "SELECT id, body FROM notes") == [(1, "kept")]


def test_a_game_table_the_backup_does_not_hold_is_listed(game):
    backup_id = game.create()
    manifest = game.repository().read_manifest(backup_id)
    assert "personal_bests" in manifest.tables
    # A backup of the store with personal_bests dropped, then the table comes back in live.
    execute(game.url, "DROP TABLE personal_bests")
    older = game.create(suspect=True)  # a table gone: implausible, still restorable by id
    from game_core.db import create_engine
    from game_core.schema import personal_bests

    engine = create_engine(game.url)
    personal_bests.create(engine)
    engine.dispose()
    code, document = game.invoke_json("restore", older, "--dry-run")
    assert code == 0, document
    assert "personal_bests" in document["result"]["disappearing"]


# ---------------------------------------------------------------- empty targets


def test_an_empty_database_is_restored_into(game, blank_url):
    backup_id = game.create()
    empty = BackupEnv(game.tmp_path, blank_url)
    result = empty.invoke("restore", backup_id, "--yes", "--force-other-source")
    assert result.returncode == 0, result.output
    assert content(empty.url) == content(game.url)


# ---------------------------------------------------------------- safety backups go back where they came from


def _safety_backup_of(env: BackupEnv) -> str:
    from integrity.backups.create import create_backup

    created = create_backup(env.settings(), label="safety before restore of test", purpose="safety")
    return created.manifest.id


def test_the_safety_backup_of_another_applications_database_restores_onto_it(game, shop):
    safety = _safety_backup_of(shop)
    execute(shop.url, "DELETE FROM orders", "DELETE FROM customers WHERE id > 1", "CREATE TABLE scratch (x INTEGER)")
    code, document = shop.invoke_json("restore", safety, "--dry-run")
    assert code == 0, document
    assert document["result"]["disappearing"] == ["scratch"]
    result = shop.invoke("restore", safety, "--yes")
    assert result.returncode == 0, result.output
    assert _customers(shop) == CUSTOMERS
    assert _rows(shop.url, "SELECT id, customer_id, total FROM orders") == [(10, 1, 250)]
    assert "not the game's" in result.stdout  # the audits are skipped, and said so
    code, document = shop.invoke_json("restore", safety, "--yes", "--keep-newer")
    assert code == 4 and "--keep-newer" in document["error"]


def test_the_safety_backup_of_another_applications_database_comes_back_after_the_game_replaced_it(game, shop, request):
    """What the issue saw: the game's data was restored over the shop's (before this fix a
    restore did that after a warning); its safety backup was "schema revision None", even
    with --force-other-source. It must bring the shop back."""
    safety = _safety_backup_of(shop)
    # The game's data now where the shop's was.
    if shop.url.startswith("postgresql"):
        execute(shop.url, "DROP TABLE orders", "DROP TABLE customers")
        from game_core.db import create_engine
        from game_core.schema_state import upgrade_to_head

        engine = create_engine(shop.url)
        with engine.begin() as connection:
            upgrade_to_head(connection)
        engine.dispose()
    else:
        path = sa.make_url(shop.url).database
        source = sqlite3.connect(sa.make_url(game.url).database)
        target = sqlite3.connect(path)
        source.backup(target)
        source.close()
        target.close()
    result = shop.invoke("restore", safety, "--yes")
    assert result.returncode == 0, result.output
    assert _customers(shop) == CUSTOMERS
    assert "players" in result.stdout  # the game's tables are listed as disappearing


def test_a_safety_backup_of_another_database_is_refused_elsewhere(game, shop):
    safety = _safety_backup_of(shop)
    for flags in ((), ("--force-other-source",)):
        result = game.invoke("restore", safety, "--yes", *flags)
        assert result.returncode == 4, result.output
        message = one_error(result)
        assert "only onto the database it was taken of" in message
