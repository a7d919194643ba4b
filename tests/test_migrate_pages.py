"""The dry run's shortcuts over a SQLite copy (issue 18's speed target): tables whose
pages did not change keep their fingerprints (integrity.migrate.pages), and audit rules
that read only such tables keep their results (integrity.migrate.audit_reuse). Each
shortcut must never hide a change: every test here changes something and checks that
it is read again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backup_helpers import BackupEnv, fill_database
from game_core.db import ConnectionSettings, parse_database_url
from integrity.db.connect import Database, Write
from integrity.fingerprint import database_fingerprints
from integrity.migrate import pages as pages_module
from integrity.migrate.audit_reuse import only_columns_inserted, reusable_rules, tables_keeping_values
from integrity.migrate.observe import capture_schema, schema_changes
from integrity.migrate.pages import KnownState, checkpoint, fingerprints_reusing, page_digests

TWO_TABLES = """
CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL REFERENCES owners (id),
                    label TEXT COLLATE BINARY, price NUMERIC(7, 2),
                    CONSTRAINT ck_price CHECK (price >= 0));
"""


@pytest.fixture
def small_db(tmp_path) -> Path:
    path = tmp_path / "small.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(TWO_TABLES)
        connection.executemany("INSERT INTO owners VALUES (?, ?)", [(i, f"owner {i}") for i in range(1, 51)])
        connection.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                               [(i, 1 + i % 50, f"item {i}" * 20, i / 4) for i in range(1, 3001)])
    connection.close()
    return path


def _write(path: Path, sql: str) -> None:
    """`sql` in autocommit (VACUUM cannot run in a transaction), then the WAL checkpointed."""
    with Database(parse_database_url(str(path)), ConnectionSettings()).writer(Write.COPY) as engine:
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute(sql)
        finally:
            raw.close()
        checkpoint(engine)


def _state(path: Path, known: KnownState | None = None) -> KnownState:
    with Database(parse_database_url(str(path)), ConnectionSettings()).reader() as engine:
        return fingerprints_reusing(engine, known)


def _full_prints(path: Path) -> dict[str, tuple[int, str]]:
    with Database(parse_database_url(str(path)), ConnectionSettings()).reader() as engine, engine.connect() as connection:
        return {name: (f.rows, f.digest) for name, f in database_fingerprints(connection).items()}


def _as_pairs(state: KnownState) -> dict[str, tuple[int, str]]:
    return {name: (f.rows, f.digest) for name, f in state.prints.items()}


def test_a_table_whose_pages_did_not_change_is_not_read_again(small_db, monkeypatch):
    start = _state(small_db)
    _write(small_db, "UPDATE owners SET name = 'renamed' WHERE id = 7")
    read = []
    real = pages_module.database_fingerprints
    monkeypatch.setattr(pages_module, "database_fingerprints",
                        lambda connection, tables, **kw: read.extend(tables) or real(connection, tables, **kw))
    now = _state(small_db, start)
    assert read == ["owners"]  # items kept its pages: its fingerprint is start's
    assert now.prints["items"] is start.prints["items"]
    assert now.prints["owners"].digest != start.prints["owners"].digest
    assert _as_pairs(now) == _full_prints(small_db)  # what a full pass gives


@pytest.mark.parametrize("change", [
    "UPDATE items SET price = price + 0.01 WHERE id = 2999",  # one value in the last page
    "DELETE FROM items WHERE id = 1500",
    "UPDATE items SET label = label || 'x' WHERE id = 1",  # a longer value: overflow and page split
    "ALTER TABLE items ADD COLUMN colour TEXT DEFAULT 'red'",  # no page written, every row reads anew
    "INSERT INTO items SELECT id + 10000, owner_id, label, price FROM items",  # new pages, from the end of the file
    "DELETE FROM items WHERE id > 100",  # pages to the freelist
    "VACUUM",  # same rows, pages rewritten: read again, same fingerprint
])
def test_every_change_is_read_again_and_the_result_is_a_full_pass(small_db, change):
    start = _state(small_db)
    _write(small_db, change)
    now = _state(small_db, start)
    assert _as_pairs(now) == _full_prints(small_db)
    if change != "VACUUM":
        assert now.prints["items"].digest != start.prints["items"].digest


def test_a_chain_of_states_each_reusing_the_last_misses_no_change(small_db):
    """Pages taken over unwalked from a state that itself took them over stay right."""
    state = _state(small_db)
    for change in ("UPDATE owners SET name = 'x' WHERE id = 1",  # items: pages confirmed, unwalked
                   "UPDATE items SET price = 7 WHERE id = 2000",  # items changes on the next state
                   "INSERT INTO owners SELECT id + 100, name FROM owners"):
        previous = state
        _write(small_db, change)
        state = _state(small_db, previous)
        assert _as_pairs(state) == _full_prints(small_db), change
        assert state.pages == _state(small_db).pages, change  # what a walk of every b-tree finds


def test_wal_frames_not_in_the_file_give_no_page_digests(small_db):
    """Pages read from the file would be stale: every table is read instead."""
    target = parse_database_url(str(small_db))
    with Database(target, ConnectionSettings()).writer(Write.COPY) as engine:
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE items SET price = 1 WHERE id = 5")
        assert page_digests(engine) == {}  # the update is in the WAL only
        checkpoint(engine)
        assert set(page_digests(engine)) >= {"items", "owners"}


def test_add_column_keeps_the_bytes_and_only_inserts_the_column():
    connection = sqlite3.connect(":memory:")
    connection.executescript(TWO_TABLES)
    before = connection.execute("SELECT sql FROM sqlite_schema WHERE name = 'items'").fetchone()[0]
    connection.execute("ALTER TABLE items ADD COLUMN colour TEXT")
    connection.execute("ALTER TABLE items ADD COLUMN size INTEGER DEFAULT 3")
    after = connection.execute("SELECT sql FROM sqlite_schema WHERE name = 'items'").fetchone()[0]
    assert only_columns_inserted(before, after)
    # The same length of text put inside a column's definition changes how it compares.
    assert not only_columns_inserted(before, before.replace("label TEXT", "label TEXT COLLATE NOCASE"))
    assert not only_columns_inserted(before, before.replace("label TEXT COLLATE BINARY", "label TEXT, x INT COLLATE BINARY"))
    assert not only_columns_inserted(before, before.replace("price NUMERIC(7, 2)", "price TEXT"))
    assert not only_columns_inserted(before, before)


def _kept_after(path: Path, change: str) -> dict[str, frozenset[str]]:
    target = parse_database_url(str(path))
    with Database(target, ConnectionSettings()).reader() as engine, engine.connect() as connection:
        pages_before, schema_before = page_digests(engine), capture_schema(connection)
    _write(path, change)
    with Database(target, ConnectionSettings()).reader() as engine, engine.connect() as connection:
        pages_after, schema_after = page_digests(engine), capture_schema(connection)
    return tables_keeping_values(pages_before, pages_after, schema_changes(schema_before, schema_after))


def test_added_columns_and_indexes_keep_values_anything_else_does_not(small_db, tmp_path):
    assert _kept_after(small_db, "ALTER TABLE items ADD COLUMN colour TEXT") == {
        "owners": frozenset(), "items": frozenset({"colour"})}
    assert _kept_after(small_db, "CREATE INDEX ix_items_label ON items (label)")["items"] == frozenset()
    assert "items" not in _kept_after(small_db, "UPDATE items SET price = 2 WHERE id = 3")
    assert "items" not in _kept_after(small_db, "ALTER TABLE items RENAME COLUMN label TO title")
    assert "items" not in _kept_after(small_db, "ALTER TABLE items DROP COLUMN colour")


class _Rule:
    def __init__(self, id: str, *reads):
        self.id, self.reads = id, reads


def test_a_rule_is_reused_only_when_it_reads_kept_tables_and_none_of_their_new_columns():
    rules = [
        _Rule("items.price_positive", ("items", ("price",))),
        _Rule("items.colour_known", ("items", ("colour",))),  # reads the added column
        _Rule("items.owner_exists", ("items", ("owner_id",)), ("owners", ("id",))),
        _Rule("orders.total", ("orders", ("total",))),  # a table that changed
        _Rule("declares_nothing"),  # reads unknown: always run
    ]
    kept = {"items": frozenset({"colour"}), "owners": frozenset()}
    assert reusable_rules(rules, kept) == {"items.price_positive", "items.owner_exists"}


def test_a_dry_run_of_an_added_column_reads_only_players_and_reruns_no_audit(tmp_path, sqlite_url, monkeypatch):
    """The benchmark's safe revision: after the proof of the work copy (every table),
    only the table the revision changed is read row by row (after the upgrade; the
    downgrade and the upgrade again leave every table's pages as they were), and the
    audit of the migrated copy runs no rule (none reads the new column). Before issue
    18's shortcuts: five full passes (every table read five times) and two full audits."""
    import checks
    import checks.audit
    import integrity.fingerprint
    from test_migrate_dry_run import ADD_COUNTRY, history

    fill_database(sqlite_url, players=3, results_per_player=5)
    read: list[str] = []
    real = integrity.fingerprint.table_fingerprint
    monkeypatch.setattr(integrity.fingerprint, "table_fingerprint",
                        lambda connection, table, task=None: read.append(table) or real(connection, table, task))
    audits: list[object] = []
    real_audits = checks.audit.run_audits
    counting = lambda connection, **kw: audits.append(kw) or real_audits(connection, **kw)  # noqa: E731
    monkeypatch.setattr(checks.audit, "run_audits", counting)
    # `checks` hands out run_audits lazily and keeps it once asked (an earlier test in this
    # process may have asked), and the dry run asks `checks`: patched there too.
    monkeypatch.setattr(checks, "run_audits", counting, raising=False)
    code, document = BackupEnv(tmp_path, sqlite_url).invoke_json(
        "migrate", "dry-run", "--alembic-config", str(history(tmp_path, ADD_COUNTRY)), "--from-live")
    assert code == 0, document
    result = document["result"]
    assert result["round_trip"] == {"downgrade": "identical", "upgrade_again": "identical"}
    # The source's and the work copy's (the proof), then players after the upgrade only.
    assert (read.count("results"), read.count("progress"), read.count("players")) == (2, 2, 3), read
    assert len(audits) == 1  # the before copy's
    assert result["audits"]["after"] == result["audits"]["before"]
