"""What a migration dry run observes: schema shapes and their diff, column statistics,
foreign-key reach, and the before/after content diff of a table, on both engines.

A "before" database (the game's schema plus a few tables of its own, a few hundred rows)
is copied (a SQLite file copy; a PostgreSQL database created from it as a template) and
the copy is changed with plain SQL the way a migration would: a column dropped, a
numeric(7,2) made integer, a varchar shortened with truncation, an integer made text,
values set NULL or rewritten, rows deleted (cascading through ON DELETE CASCADE) and
inserted. Every count, kind and sample key is derived from the same rules that built
the data, so the assertions are exact. An identical copy must show no difference.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from backup_helpers import fill_database
from game_core.db import create_engine
from game_core.errors import InvalidInput
from integrity.tablediff import changes, migration, walk
from integrity.tablediff.changes import CHANGE_KINDS
from integrity.tablediff.migration import diff_table_content, render_key
from integrity.migrate.observe import (
    SCHEMA_CHANGE_KINDS,
    capture_schema,
    schema_changes,
    table_statistics,
    tables_reaching,
)

ACCOUNTS = 300
OWN_TABLES = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    handle VARCHAR(32) NOT NULL,
    balance NUMERIC(7, 2) NOT NULL,
    level INTEGER,
    note VARCHAR(40),
    legacy INTEGER
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    amount NUMERIC(7, 2) NOT NULL
);
CREATE TABLE tags (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    tag VARCHAR(16) NOT NULL,
    weight INTEGER NOT NULL,
    PRIMARY KEY (account_id, tag)
);
CREATE TABLE readings (
    sensor INTEGER NOT NULL,
    reading NUMERIC(7, 2) NOT NULL
);
CREATE TABLE pairs (
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    label VARCHAR(8) NOT NULL,
    PRIMARY KEY (a, b)
);
CREATE TABLE retired (
    id INTEGER PRIMARY KEY,
    name VARCHAR(8) NOT NULL
);
CREATE TABLE events (
    day INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    what VARCHAR(8) NOT NULL,
    PRIMARY KEY (day, seq)
);
CREATE TABLE codes (
    code VARCHAR(8) NOT NULL PRIMARY KEY,
    label VARCHAR(8) NOT NULL
);
CREATE TABLE stamps (
    id INTEGER PRIMARY KEY,
    at TIMESTAMP NOT NULL
)
"""
DELETED = (10, 20, 33)
# Empty tables whose only purpose is a schema change of every kind: the migrated copy
# replaces the "before" shapes with the "after" ones.
BEFORE_DDL = """
CREATE TABLE kept (id INTEGER NOT NULL PRIMARY KEY, code VARCHAR(10) NOT NULL, score NUMERIC(7, 2) NOT NULL DEFAULT 0,
    flag INTEGER, CONSTRAINT ck_kept_score CHECK (score >= 0));
CREATE INDEX ix_kept_code ON kept (code);
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE);
CREATE TABLE gone (id INTEGER PRIMARY KEY)
"""
AFTER_DDL = """
CREATE TABLE kept (id INTEGER NOT NULL, code VARCHAR(12) NOT NULL, score NUMERIC(7, 2) DEFAULT 1,
    extra INTEGER, PRIMARY KEY (id, code), CONSTRAINT ck_kept_extra CHECK (extra > 0));
CREATE UNIQUE INDEX ux_kept_extra ON kept (extra);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id));
CREATE TABLE fresh (id INTEGER PRIMARY KEY)
"""
SCHEMA_ONLY = {"kept", "parent", "child", "gone", "fresh"}


# ---------------------------------------------------------------- the data and its rules


def handle(i: int) -> str:
    return f"handle-number-{i:04d}" if i % 5 == 0 else f"h{i}"


def balance(i: int) -> Decimal:
    return Decimal(i) + (Decimal("0.25") if i % 2 else 0)


def level(i: int) -> int | None:
    return None if i % 11 == 0 else i % 10


def legacy(i: int) -> int | None:
    return i if i % 3 == 0 else None


def survivors() -> list[int]:
    return [i for i in range(1, ACCOUNTS + 1) if i not in DELETED]


def _execute(url: str, statements: list[tuple[str, object]]) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for sql, params in statements:
                connection.execute(sa.text(sql), params)
    finally:
        engine.dispose()


def populate(url: str) -> None:
    """The game's tables with a little consistent data, and this file's own tables."""
    fill_database(url, players=3, results_per_player=4, seed=7)
    is_sqlite = url.startswith("sqlite")
    statements: list[tuple[str, object]] = [(ddl, {}) for ddl in (OWN_TABLES + ";" + BEFORE_DDL).split(";")]
    if not is_sqlite:
        statements.append(("CREATE TYPE mood AS ENUM ('sad', 'ok')", {}))

    def number(value: Decimal):
        # SQLite has no decimal type; its NUMERIC affinity stores 4.00 as integer 4.
        return float(value) if is_sqlite else value

    statements.append((
        "INSERT INTO accounts (id, handle, balance, level, note, legacy) VALUES (:i, :h, :b, :l, :n, :g)",
        [
            {"i": i, "h": handle(i), "b": number(balance(i)), "l": level(i), "n": f"note {i}", "g": legacy(i)}
            for i in range(1, ACCOUNTS + 1)
        ],
    ))
    statements.append((
        "INSERT INTO entries (id, account_id, amount) VALUES (:id, :a, :m)",
        [{"id": 2 * a - k, "a": a, "m": number(Decimal(a) + Decimal("0.5"))} for a in range(1, ACCOUNTS + 1) for k in (1, 0)],
    ))
    statements.append((
        "INSERT INTO tags (account_id, tag, weight) VALUES (:a, :t, :w)",
        [{"a": a, "t": t, "w": w} for a in range(1, ACCOUNTS + 1) for t, w in (("a", 1), ("b", 2))],
    ))
    statements.append((
        "INSERT INTO readings (sensor, reading) VALUES (:s, :r)",
        [{"s": i % 50, "r": number(Decimal(i) / 2)} for i in range(1, 201)],
    ))
    statements.append((
        "INSERT INTO pairs (a, b, label) VALUES (:a, :b, :l)",
        [{"a": i, "b": i % 4, "l": f"p{i}"} for i in range(1, 101)],
    ))
    statements.append(("INSERT INTO retired (id, name) VALUES (:i, :n)", [{"i": i, "n": f"r{i}"} for i in range(1, 21)]))
    statements.append((
        "INSERT INTO events (day, seq, what) VALUES (:d, :s, :w)",
        [{"d": d, "s": q, "w": f"w{d}-{q}"} for d in range(1, 31) for q in range(3)],
    ))
    statements.append((
        "INSERT INTO codes (code, label) VALUES (:c, :l)", [{"c": f"c{i:03d}", "l": f"l{i}"} for i in range(1, 41)]
    ))
    statements.append((
        "INSERT INTO stamps (id, at) VALUES (:i, :t)",
        [{"i": i, "t": datetime(2026, 1, 1, 10, 0) + timedelta(hours=i)} for i in range(1, 101)],
    ))
    _execute(url, statements)


def copy_database(url: str, name: str, admin=None) -> str:
    """A second database holding exactly what `url` holds (every engine on it disposed,
    so a SQLite file's WAL is checkpointed and nobody is connected to a template)."""
    if url.startswith("sqlite"):
        source = sa.make_url(url).database
        target = f"{source[:-3]}-{name}.db"
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    from conftest import pg_url_for

    database = f"tg_{name}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}" TEMPLATE "{sa.make_url(url).database}"'))
    return pg_url_for(database)


def migrate(url: str) -> None:
    """What a careless migration does to the copy, in plain SQL."""
    postgres = not url.startswith("sqlite")
    _execute(url, [
        # Deletes cascade to entries and tags (foreign keys are on: game_core's hook).
        (f"DELETE FROM accounts WHERE id IN {DELETED}", {}),
        ("INSERT INTO accounts (id, handle, balance, level, note) VALUES (301, 'new1', 1, NULL, 'n'), "
         "(302, 'new2', 2, NULL, 'n')", {}),
        ("INSERT INTO entries (id, account_id, amount) VALUES (601, 301, 1), (602, 301, 2)", {}),
        ("INSERT INTO tags (account_id, tag, weight) VALUES (301, 'z', 1)", {}),
        ("UPDATE accounts SET note = 'changed' WHERE id % 13 = 0", {}),
        ("UPDATE accounts SET note = NULL WHERE id % 7 = 0", {}),
        ("UPDATE readings SET reading = 99 WHERE sensor = 7", {}),
        ("INSERT INTO readings (sensor, reading) VALUES (1, 0.5)", {}),
        ("DROP TABLE retired", {}),
        ("UPDATE events SET what = 'moved' WHERE day = 4 AND seq = 1", {}),
        ("UPDATE stamps SET at = :t WHERE id = 50", {"t": datetime(2020, 2, 2, 2, 2)}),
        # The game's tables: one player goes, with everything that references them.
        ("DELETE FROM players WHERE id = (SELECT MIN(id) FROM players)", {}),
        # The schema-only tables are replaced by their "after" shape.
        *[(f"DROP TABLE {table}", {}) for table in ("child", "kept", "gone")],
        *[(statement, {}) for statement in AFTER_DDL.split(";")],
        *([("DROP TYPE mood", {}), ("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')", {})] if postgres else []),
    ])
    if postgres:
        _execute(url, [
            ("ALTER TABLE accounts DROP COLUMN legacy, ALTER COLUMN balance TYPE INTEGER, "
             "ALTER COLUMN handle TYPE VARCHAR(8) USING handle::varchar(8), "
             "ALTER COLUMN level TYPE TEXT USING level::text", {}),
            ("ALTER TABLE tags ALTER COLUMN weight TYPE TEXT USING weight::text", {}),
            ("ALTER TABLE stamps ALTER COLUMN at TYPE TIMESTAMPTZ", {}),  # the session's zone is UTC
            ("ALTER TABLE events DROP COLUMN seq", {}),
            ("ALTER TABLE codes DROP CONSTRAINT codes_pkey, ALTER COLUMN code DROP NOT NULL", {}),
            ("UPDATE codes SET code = NULL WHERE code = 'c005'", {}),
            ("ALTER TABLE pairs DROP COLUMN b", {}),
            ("ALTER TABLE pairs ADD PRIMARY KEY (a)", {}),
        ])
        return
    # SQLite changes a column's type by rebuilding the table, with foreign keys off
    # (dropping the parent table would otherwise cascade into entries and tags).
    connection = sqlite3.connect(sa.make_url(url).database, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys = OFF")
        connection.executescript("""
            BEGIN;
            CREATE TABLE accounts_new (id INTEGER PRIMARY KEY, handle VARCHAR(8) NOT NULL,
                balance INTEGER NOT NULL, level TEXT, note VARCHAR(40));
            INSERT INTO accounts_new SELECT id, substr(handle, 1, 8), CAST(balance AS INTEGER),
                CAST(level AS TEXT), note FROM accounts;
            DROP TABLE accounts;
            ALTER TABLE accounts_new RENAME TO accounts;
            CREATE TABLE tags_new (account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
                tag VARCHAR(16) NOT NULL, weight TEXT NOT NULL, PRIMARY KEY (account_id, tag));
            INSERT INTO tags_new SELECT account_id, tag, CAST(weight AS TEXT) FROM tags;
            DROP TABLE tags;
            ALTER TABLE tags_new RENAME TO tags;
            CREATE TABLE events_new (day INTEGER NOT NULL, what VARCHAR(8) NOT NULL);
            INSERT INTO events_new SELECT day, what FROM events;
            DROP TABLE events;
            ALTER TABLE events_new RENAME TO events;
            CREATE TABLE codes_new (code VARCHAR(8), label VARCHAR(8) NOT NULL);
            INSERT INTO codes_new SELECT code, label FROM codes;
            DROP TABLE codes;
            ALTER TABLE codes_new RENAME TO codes;
            UPDATE codes SET code = NULL WHERE code = 'c005';
            CREATE TABLE pairs_new (a INTEGER NOT NULL PRIMARY KEY, label VARCHAR(8) NOT NULL);
            INSERT INTO pairs_new SELECT a, label FROM pairs;
            DROP TABLE pairs;
            ALTER TABLE pairs_new RENAME TO pairs;
            COMMIT;
        """)
    finally:
        connection.close()


class World:
    """One engine's before database, an identical copy and a migrated copy, each opened
    read-only, with their schemas captured once."""

    def __init__(self, kind: str, urls: dict[str, str]):
        self.kind = kind
        self.urls = urls
        self.engines = {side: create_engine(url, read_only=True) for side, url in urls.items()}
        self.shapes = {}
        for side, engine in self.engines.items():
            with engine.connect() as connection:
                self.shapes[side] = capture_schema(connection)

    def diff(self, table: str, *, after: str = "migrated", **options):
        return diff_table_content(
            self.engines["before"], self.engines[after], table,
            before_shape=self.shapes["before"].tables[table], after_shape=self.shapes[after].tables.get(table),
            **options,
        )

    def statistics(self, side: str, table: str):
        with self.engines[side].connect() as connection:
            return table_statistics(connection, table)

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request, tmp_path_factory):
    """Built once per engine for the whole module: PostgreSQL databases cost about a
    second each to create and drop."""
    admin = None
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("observe") / "before.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        before = f"sqlite:///{path}"
    else:
        from conftest import drop_pg_database, pg_url_for

        admin = request.getfixturevalue("pg_admin")
        template = request.getfixturevalue("pg_template")
        name = f"tg_before_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        before = pg_url_for(name)
    urls = {"before": before}
    try:
        populate(before)
        urls["identical"] = copy_database(before, "identical", admin)
        urls["migrated"] = copy_database(before, "migrated", admin)
        migrate(urls["migrated"])
        built = World(request.param, urls)
        yield built
        built.dispose()
    finally:
        if admin is not None:
            for url in urls.values():
                drop_pg_database(admin, sa.make_url(url).database)


@pytest.fixture(params=["default pages", "tiny pages"])
def paging(request, monkeypatch):
    """PostgreSQL walks pages: tiny ones cross page boundaries, narrow differing pages
    down to single rows and switch to dense fetching, and must find the same."""
    if request.param == "tiny pages":
        monkeypatch.setattr(migration, "PAGE_SIZE", 16)
        monkeypatch.setattr(walk, "FETCH_MIN", 1)
    return request.param


def _keys(ids) -> tuple[str, ...]:
    return tuple(f"id={i}" for i in ids)


# ---------------------------------------------------------------- content diff


def test_a_careless_migration_is_counted_row_by_row_and_kind_by_kind(world, paging):
    result = world.diff("accounts", sample_limit=5)
    kept = survivors()
    truncated = [i for i in kept if len(handle(i)) > 8]
    precision = [i for i in kept if i % 2]
    as_text = [i for i in kept if level(i) is not None]
    became_null = [i for i in kept if i % 7 == 0]
    rewritten = [i for i in kept if i % 13 == 0 and i % 7]
    changed_rows = set(truncated) | set(precision) | set(as_text) | set(became_null) | set(rewritten)

    assert result.key == ("id",)
    assert (result.rows_before, result.rows_after) == (ACCOUNTS, ACCOUNTS - len(DELETED) + 2)
    assert (result.lost, result.added, result.changed) == (len(DELETED), 2, len(changed_rows))
    assert result.lost_samples == _keys(DELETED)
    assert result.added_samples == _keys((301, 302))
    assert result.dropped_columns == {"legacy": sum(1 for i in range(1, ACCOUNTS + 1) if legacy(i) is not None)}
    assert result.added_columns == ()
    columns = {change.column: change for change in result.columns}
    assert list(columns) == ["handle", "balance", "level", "note"]  # the before table's order
    assert (columns["handle"].changed, columns["handle"].kinds) == (len(truncated), {"truncated": len(truncated)})
    assert columns["handle"].samples == _keys(truncated[:5])
    assert columns["balance"].kinds == {"precision_lost": len(precision)}
    assert columns["balance"].samples == _keys(precision[:5])
    # Integer to text: the same values in another class, now ordered as text.
    assert columns["level"].changed == len(as_text)
    assert columns["level"].kinds == {"storage_class": len(as_text), "sort_order": len(as_text)}
    assert columns["level"].samples == _keys(as_text[:5])
    assert columns["note"].kinds == {"became_null": len(became_null), "rewritten": len(rewritten)}
    assert columns["note"].samples == _keys(sorted(became_null + rewritten)[:5])
    assert list(columns["note"].kinds) == [k for k in CHANGE_KINDS if k in columns["note"].kinds]
    assert result.differs and result.seconds >= 0


def test_deletes_cascade_into_the_children_and_inserts_show_as_added(world, paging):
    entries = world.diff("entries")
    assert (entries.rows_before, entries.rows_after) == (2 * ACCOUNTS, 2 * ACCOUNTS - 6 + 2)
    assert (entries.lost, entries.added, entries.changed) == (6, 2, 0)
    assert entries.lost_samples == _keys(sorted(2 * a - k for a in DELETED for k in (1, 0)))
    assert entries.added_samples == _keys((601, 602))
    assert entries.columns == () and entries.dropped_columns == {}

    tags = world.diff("tags", sample_limit=4)
    assert tags.key == ("account_id", "tag")
    # Every surviving weight became text with the same value: nothing else changed, so
    # PostgreSQL's pages hash alike (as text) and are counted without fetching rows.
    surviving = 2 * ACCOUNTS - 6
    assert (tags.lost, tags.added, tags.changed) == (6, 1, surviving)
    assert tags.lost_samples == (
        "account_id=10, tag='a'", "account_id=10, tag='b'", "account_id=20, tag='a'", "account_id=20, tag='b'",
    )
    assert tags.added_samples == ("account_id=301, tag='z'",)
    (weight,) = tags.columns
    assert (weight.column, weight.changed) == ("weight", surviving)
    assert weight.kinds == {"storage_class": surviving, "sort_order": surviving}
    assert weight.samples == (
        "account_id=1, tag='a'", "account_id=1, tag='b'", "account_id=2, tag='a'", "account_id=2, tag='b'",
    )


def test_deleting_a_player_reaches_exactly_the_tables_that_reference_players(world):
    reached = tables_reaching(world.shapes["before"], {"players"})
    assert reached == {"players", "results", "progress", "personal_bests"}
    game = {"store_identity", "players", "results", "progress", "personal_bests"}
    for table in game:
        result = world.diff(table)
        assert (result.lost > 0) == (table in reached), table
        assert result.added == result.changed == 0, table
    # The children lost exactly the deleted player's rows.
    assert world.diff("results").lost == 4
    assert world.diff("progress").lost == 1


def test_a_dropped_key_column_falls_back_to_the_rest_of_the_key(world, paging):
    result = world.diff("pairs")
    assert result.key == ("a",)  # b was dropped; a is still unique on both sides
    assert (result.lost, result.added, result.changed) == (0, 0, 0)
    assert result.dropped_columns == {"b": 100}
    assert result.columns == ()


def test_a_remaining_key_that_is_not_unique_compares_whole_rows(world):
    result = world.diff("events")
    # seq was dropped and day alone repeats: rows (day, what) as multisets.
    assert result.key == ()
    assert (result.rows_before, result.rows_after, result.lost, result.added, result.changed) == (90, 90, 1, 1, 0)
    assert (result.lost_samples, result.added_samples) == (("day=4, what='w4-1'",), ("day=4, what='moved'",))
    assert result.dropped_columns == {"seq": 90}


def test_a_key_value_set_null_matches_nothing(world, paging):
    result = world.diff("codes")
    assert result.key == ("code",)  # no primary key after, but still unique
    assert (result.rows_before, result.rows_after, result.lost, result.added, result.changed) == (40, 40, 1, 1, 0)
    assert (result.lost_samples, result.added_samples) == (("code='c005'",), ("code=NULL",))


def test_timestamps_made_time_zone_aware_keep_their_instants(world, paging):
    result = world.diff("stamps")
    (at,) = result.columns
    assert (result.changed, at.column, at.kinds, at.samples) == (1, "at", {"rewritten": 1}, ("id=50",))


def test_a_table_without_a_key_is_compared_as_a_multiset_of_rows(world):
    result = world.diff("readings")
    moved = [i for i in range(1, 201) if i % 50 == 7]
    assert result.key == ()
    assert (result.rows_before, result.rows_after) == (200, 201)
    # Four rows of sensor 7 rewritten (each lost once and added once), one duplicate added.
    assert (result.lost, result.added, result.changed) == (len(moved), len(moved) + 1, 0)
    # Samples are distinct rows, in each engine's order of the grouped values.
    assert set(result.lost_samples) == {f"sensor=7, reading={Decimal(i) / 2}" for i in moved}
    assert set(result.added_samples) == {"sensor=1, reading=0.5", "sensor=7, reading=99"}


def test_a_dropped_table_loses_every_row_and_value(world):
    result = world.diff("retired", sample_limit=2)
    assert result.key == ("id",)
    assert (result.rows_before, result.rows_after, result.lost, result.added) == (20, 0, 20, 0)
    assert result.lost_samples == ("id=1", "id=2")
    assert result.dropped_columns == {"id": 20, "name": 20}


def test_an_identical_copy_shows_no_difference_in_any_table(world, paging):
    before, after = world.shapes["before"], world.shapes["identical"]
    assert schema_changes(before, after) == []
    assert {"players", "results", "progress", "personal_bests", "store_identity", "accounts"} <= set(before.tables)
    for table in set(before.tables) - SCHEMA_ONLY:
        result = world.diff(table, after="identical")
        assert not result.differs, result
        assert (result.lost, result.added, result.changed, result.columns) == (0, 0, 0, ())
        assert result.rows_before == result.rows_after > 0


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize(("old", "new", "kinds"), [
    (12.37, 12, {"precision_lost"}),
    (Decimal("12.37"), Decimal("12.4"), {"precision_lost"}),
    (Decimal("12.37"), 13, {"precision_lost"}),
    (Decimal("12.37"), 15, {"rewritten"}),
    (Decimal("12.00"), 12, set()),
    (10, "10", {"storage_class", "sort_order"}),
    ("10", 10, {"storage_class", "sort_order"}),
    (10, "10abc", {"rewritten", "sort_order"}),
    ("player-name", "player", {"truncated"}),
    ("player", "Player", {"rewritten"}),
    ("x", None, {"became_null"}),
    (None, "x", {"rewritten"}),
    (True, 1, {"rewritten"}),
])
def test_value_kinds_follow_the_documented_rules(old, new, kinds):
    code = changes.classify(old, new)
    found = set()
    if code:
        found.add(changes.KIND_OF_CODE[code & 7])
        if code & changes.SORT_FLAG:
            found.add("sort_order")
    assert found == kinds


def test_sqlite_classifies_values_as_the_python_rules_do():
    """The same pairs through the SQL of the SQLite path and the Python of PostgreSQL's."""
    pairs = [(12.37, 12), (12.37, 12.4), (12.37, 15), (10, "10"), ("10", 10), ("abcdef", "abc"),
             ("x", None), (None, "x"), (12, 12.0), (10, "10abc"), (12.371, 12.37)]
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, v)")
    connection.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v)")
    connection.executemany("INSERT INTO b VALUES (?, ?)", [(i, old) for i, (old, _new) in enumerate(pairs)])
    connection.executemany("INSERT INTO a VALUES (?, ?)", [(i, new) for i, (_old, new) in enumerate(pairs)])
    code = changes.sqlite_code("v", "")
    sql_codes = [row[0] for row in connection.execute(f"SELECT {code} FROM b JOIN a ON a.id = b.id ORDER BY b.id")]
    assert sql_codes == [changes.classify(old, new) for old, new in pairs]
    assert sql_codes[8] == 0  # 12 and 12.0 are one number


@pytest.mark.parametrize(("old", "new", "number_text", "kinds"), [
    ("12.50", "12.50", True, {"storage_class", "sort_order"}),
    ("12.50", "12.5", True, {"storage_class", "sort_order"}),
    ("12.50", "12.4", True, {"rewritten", "sort_order"}),
    ("2026-01-01 10:00:00+00", "2026-01-01 10:00:00+00", False, {"storage_class"}),
    ("12.50", None, True, {"became_null"}),
    (None, "x", False, {"rewritten"}),
    (None, None, True, set()),
])
def test_a_column_that_changed_type_category_compares_its_texts(old, new, number_text, kinds):
    code = changes.classify_texts(old, new, number_text)
    found = {changes.KIND_OF_CODE[code & 7]} if code else set()
    if code & changes.SORT_FLAG:
        found.add("sort_order")
    assert found == kinds


def test_sqlite_declarations_sqlalchemy_does_not_know(tmp_path):
    """Type names SQLite accepts but SQLAlchemy does not recognise, a REFERENCES without
    columns, and a sum past 64 bits."""
    path = tmp_path / "odd.db"
    connection = sqlite3.connect(path)
    connection.executescript("""
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE odd (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent ON DELETE SET NULL,
            x FANCYTYPE, big INTEGER);
        INSERT INTO odd (id, big) VALUES (1, 9000000000000000000), (2, 9000000000000000000);
    """)
    connection.close()
    engine = create_engine(str(path), read_only=True)
    try:
        with engine.connect() as connection:
            odd = capture_schema(connection).tables["odd"]
            statistics = table_statistics(connection, "odd")
    finally:
        engine.dispose()
    assert [(c.name, c.type) for c in odd.columns] == [("id", "INTEGER"), ("p", "INTEGER"), ("x", "FANCYTYPE"), ("big", "INTEGER")]
    assert [fk.render() for fk in odd.foreign_keys] == ["(p) -> parent(id) ON DELETE SET NULL"]
    # SUM refuses to overflow; the figure falls back to TOTAL's floating point.
    assert float(statistics["big"].total) == 1.8e19
    assert statistics["x"].storage_classes == {"null": 2}


def test_render_key_and_sample_limit():
    assert render_key(("player_id", "mode", "at"), (3, "it's", None)) == "player_id=3, mode='it''s', at=NULL"
    with pytest.raises(InvalidInput):
        diff_table_content(None, None, "t", before_shape=None, after_shape=None, sample_limit=-1)


# ---------------------------------------------------------------- schema


def test_schema_changes_name_every_kind_in_a_deterministic_order(world):
    before, after = world.shapes["before"], world.shapes["migrated"]
    changes = [c for c in schema_changes(before, after) if c.table in SCHEMA_ONLY or c.table is None]
    found = [(c.kind, c.table, c.column) for c in changes]
    expected = [
        ("foreign_key_dropped", "child", None),
        ("foreign_key_added", "child", None),
        ("table_added", "fresh", None),
        ("table_dropped", "gone", None),
        ("column_dropped", "kept", "flag"),
        ("type_changed", "kept", "code"),
        ("nullable_changed", "kept", "score"),
        ("default_changed", "kept", "score"),
        ("column_added", "kept", "extra"),
        ("primary_key_changed", "kept", None),
        ("index_dropped", "kept", None),
        ("index_added", "kept", None),
        ("check_dropped", "kept", None),
        ("check_added", "kept", None),
    ]
    if world.kind == "postgresql":
        expected += [("enum_dropped", None, None), ("enum_added", None, None)]
    assert found == expected
    assert {c.kind for c in changes} <= set(SCHEMA_CHANGE_KINDS)
    by_kind = {c.kind: c for c in changes}
    assert (by_kind["foreign_key_dropped"].before, by_kind["foreign_key_added"].after) == (
        "(parent_id) -> parent(id) ON DELETE CASCADE", "(parent_id) -> parent(id)",
    )
    assert (by_kind["type_changed"].before, by_kind["type_changed"].after) == ("VARCHAR(10)", "VARCHAR(12)")
    assert (by_kind["nullable_changed"].before, by_kind["nullable_changed"].after) == ("NOT NULL", "NULL")
    assert (by_kind["primary_key_changed"].before, by_kind["primary_key_changed"].after) == ("id", "id, code")
    assert (by_kind["index_dropped"].before, by_kind["index_added"].after) == (
        "ix_kept_code(code)", "ux_kept_extra(extra) unique",
    )
    assert by_kind["check_dropped"].before.startswith("ck_kept_score: ")
    assert by_kind["check_added"].after.startswith("ck_kept_extra: ")
    assert by_kind["default_changed"].before != by_kind["default_changed"].after
    assert by_kind["table_dropped"].before == "id INTEGER"
    if world.kind == "postgresql":
        assert (by_kind["enum_dropped"].before, by_kind["enum_added"].after) == (
            "mood('sad', 'ok')", "mood('sad', 'ok', 'happy')",
        )


def test_the_migration_s_own_schema_changes(world):
    changes = schema_changes(world.shapes["before"], world.shapes["migrated"])
    accounts = [(c.kind, c.column, c.before, c.after) for c in changes if c.table == "accounts"]
    assert accounts == [
        ("column_dropped", "legacy", "INTEGER", None),
        ("type_changed", "handle", "VARCHAR(32)", "VARCHAR(8)"),
        ("type_changed", "balance", "NUMERIC(7, 2)", "INTEGER"),
        ("type_changed", "level", "INTEGER", "TEXT"),
    ]
    assert [(c.kind, c.before, c.after) for c in changes if c.table == "pairs"][:2] == [
        ("column_dropped", "INTEGER", None), ("primary_key_changed", "a, b", "a"),
    ]
    assert ("table_dropped", "retired") in [(c.kind, c.table) for c in changes]
    assert "alembic_version" not in world.shapes["before"].tables


# ---------------------------------------------------------------- statistics and reach


def test_table_statistics_before_and_after(world):
    before, after = world.statistics("before", "accounts"), world.statistics("migrated", "accounts")
    assert list(before) == ["id", "handle", "balance", "level", "note", "legacy"]
    assert (before["id"].rows, before["id"].nulls, before["id"].minimum, before["id"].maximum) == (300, 0, "1", "300")
    assert before["id"].total == str(sum(range(1, 301)))
    assert Decimal(before["balance"].total) == sum(balance(i) for i in range(1, 301))
    nulls = sum(1 for i in range(1, 301) if level(i) is None)
    assert (before["level"].nulls, before["level"].minimum, before["level"].maximum) == (nulls, "0", "9")
    assert (before["handle"].minimum, before["handle"].total) == ("h1", None)
    assert before["legacy"].nulls == 200
    # Level became text: its sum is gone and, on SQLite, the storage classes say why.
    kept = survivors()
    text_values = sum(1 for i in kept if level(i) is not None)
    assert after["level"].total is None
    assert (after["level"].rows, after["level"].nulls) == (299, 299 - text_values)
    assert (after["level"].minimum, after["level"].maximum) == ("0", "9")
    assert Decimal(after["balance"].total) == sum(int(balance(i)) for i in kept) + 1 + 2
    assert "legacy" not in after
    if world.kind == "sqlite":
        assert before["level"].storage_classes == {"null": nulls, "integer": 300 - nulls}
        assert after["level"].storage_classes == {"null": 299 - text_values, "text": text_values}
        assert before["balance"].storage_classes == {"integer": 150, "real": 150}
    else:
        assert before["level"].storage_classes == after["level"].storage_classes == {}


def test_tables_reaching_follows_foreign_keys_from_parent_to_children(world):
    schema = world.shapes["before"]
    assert tables_reaching(schema, {"players"}) == {"players", "results", "progress", "personal_bests"}
    assert tables_reaching(schema, {"results"}) == {"results", "personal_bests"}
    assert tables_reaching(schema, {"personal_bests"}) == {"personal_bests"}
    assert tables_reaching(schema, {"progress", "store_identity"}) == {"progress", "store_identity"}
    assert tables_reaching(schema, {"accounts"}) == {"accounts", "entries", "tags"}
    assert tables_reaching(schema, {"entries"}) == {"entries"}
    assert tables_reaching(schema, set()) == set()
