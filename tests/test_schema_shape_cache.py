"""capture_schema keeps shapes per process under a digest of the schema's definition
(integrity/migrate/observe.py): every change a shape shows must change the digest, or
a status or dry run would read a schema that is no longer there.

Each case changes one thing of a table's definition and checks that the next capture
equals a fresh reflection (`_capture`, which keeps nothing) and differs from the capture
before the change.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from integrity.migrate import observe


def _sqlite_rebuild(columns: str) -> list[str]:
    """SQLite changes a column only by rebuilding its table."""
    return [f"CREATE TABLE pets_new ({columns})", "DROP TABLE pets", "ALTER TABLE pets_new RENAME TO pets"]


PETS = "id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners (id){on_delete}, kind {kind} DEFAULT {default} NOT NULL, age INTEGER{check}"


def _pets(on_delete="", kind="VARCHAR(10)", default="'cat'", check="") -> str:
    return PETS.format(on_delete=on_delete, kind=kind, default=default, check=check)


CREATE = ["CREATE TABLE owners (id INTEGER PRIMARY KEY, name VARCHAR(20))", f"CREATE TABLE pets ({_pets()})"]

# (case, SQLite statements, PostgreSQL statements); None: the engine has no such thing.
CHANGES = [
    ("column added", ["ALTER TABLE pets ADD COLUMN colour VARCHAR(8)"], ["ALTER TABLE pets ADD COLUMN colour VARCHAR(8)"]),
    ("column renamed", ["ALTER TABLE pets RENAME COLUMN age TO years"], ["ALTER TABLE pets RENAME COLUMN age TO years"]),
    ("type widened", _sqlite_rebuild(_pets(kind="VARCHAR(30)")), ["ALTER TABLE pets ALTER COLUMN kind TYPE VARCHAR(30)"]),
    ("default changed", _sqlite_rebuild(_pets(default="'dog'")), ["ALTER TABLE pets ALTER COLUMN kind SET DEFAULT 'dog'"]),
    ("nullability changed", _sqlite_rebuild(_pets().replace("age INTEGER", "age INTEGER NOT NULL")),
     ["ALTER TABLE pets ALTER COLUMN age SET NOT NULL"]),
    ("index added", ["CREATE INDEX pets_age ON pets (age)"], ["CREATE INDEX pets_age ON pets (age)"]),
    ("index made unique", ["CREATE UNIQUE INDEX pets_age ON pets (age)"], ["CREATE UNIQUE INDEX pets_age ON pets (age)"]),
    ("check added", _sqlite_rebuild(_pets(check=", CONSTRAINT age_positive CHECK (age > 0)")),
     ["ALTER TABLE pets ADD CONSTRAINT age_positive CHECK (age > 0)"]),
    ("foreign key cascades", _sqlite_rebuild(_pets(on_delete=" ON DELETE CASCADE")), [
        "ALTER TABLE pets DROP CONSTRAINT pets_owner_id_fkey",
        "ALTER TABLE pets ADD CONSTRAINT pets_owner_id_fkey FOREIGN KEY (owner_id) REFERENCES owners (id) ON DELETE CASCADE",
    ]),
    ("table added", ["CREATE TABLE toys (id INTEGER PRIMARY KEY)"], ["CREATE TABLE toys (id INTEGER PRIMARY KEY)"]),
    ("table dropped", ["DROP TABLE pets"], ["DROP TABLE pets"]),
    ("enum label added", None, ["ALTER TYPE mood ADD VALUE 'sleepy'"]),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request):
    if request.param == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path') / 'shapes.db'}"
    return request.getfixturevalue("pg_empty_url")


def _run(engine, statements) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


@pytest.mark.parametrize("case", [case for case, *_ in CHANGES])
def test_every_change_a_shape_shows_is_read_again(url, case):
    sqlite = url.startswith("sqlite")
    change = {name: (lite, pg) for name, lite, pg in CHANGES}[case][0 if sqlite else 1]
    if change is None:
        pytest.skip("SQLite has no enum types")
    engine = create_engine(url, create_missing=True) if sqlite else sa.create_engine(url)
    try:
        _run(engine, CREATE if sqlite else ["CREATE TYPE mood AS ENUM ('happy', 'sad')", *CREATE])
        with engine.connect() as connection:
            before = observe.capture_schema(connection)
            assert observe.capture_schema(connection) == before  # served from the cache
        _run(engine, change)
        with engine.connect() as connection:
            after = observe.capture_schema(connection)
            assert after == observe._capture(connection)
        assert after != before
    finally:
        engine.dispose()


def test_a_cached_shape_is_the_callers_own(tmp_path):
    engine = create_engine(str(tmp_path / "own.db"), create_missing=True)
    try:
        _run(engine, CREATE)
        with engine.connect() as connection:
            first = observe.capture_schema(connection)
            first.tables.pop("pets")
            assert "pets" in observe.capture_schema(connection).tables
    finally:
        engine.dispose()
