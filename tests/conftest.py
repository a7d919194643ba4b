"""Shared fixtures: real SQLite files in tmp_path and real PostgreSQL databases.

Each PostgreSQL test gets its own database, created from a template migrated once per
session and dropped afterwards. Without a reachable server the `postgres` tests skip
with the reason, unless INTEGRITY_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from game_core.schema_state import upgrade_to_head

PG_ADMIN_URL = os.environ.get("INTEGRITY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("INTEGRITY_REQUIRE_POSTGRES") == "1"
RESTRICTED_ROLE = "integrity_test_restricted"


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No test may touch the real data directory or pick up a developer's settings."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("INTEGRITY_") and name not in ("INTEGRITY_REQUIRE_POSTGRES", "INTEGRITY_TEST_PG_URL"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("GAME_DATABASE_URL", raising=False)


# ---------------------------------------------------------------- SQLite


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_engine(str(path), create_missing=True)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()  # closing the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def sqlite_path(tmp_path, sqlite_template):
    """A migrated, empty game database file of this test's own."""
    path = tmp_path / "game.db"
    shutil.copyfile(sqlite_template, path)
    return path


@pytest.fixture
def sqlite_url(sqlite_path):
    return f"sqlite:///{sqlite_path}"


# ---------------------------------------------------------------- PostgreSQL


def _admin_engine():
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(scope="session")
def pg_admin():
    engine = _admin_engine()
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to reach the server
        engine.dispose()
        reason = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}"
        if REQUIRE_POSTGRES:
            pytest.fail(reason + " (INTEGRITY_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    yield engine
    engine.dispose()


def pg_url_for(database: str) -> str:
    return sa.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def drop_pg_database(admin, name: str) -> None:
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_template(pg_admin):
    name = f"tg_template_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(pg_url_for(name))
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    yield name
    drop_pg_database(pg_admin, name)


@pytest.fixture
def pg_url(pg_admin, pg_template):
    """A migrated, empty PostgreSQL database of this test's own, dropped afterwards."""
    name = f"tg_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield pg_url_for(name)
    drop_pg_database(pg_admin, name)


@pytest.fixture
def pg_empty_url(pg_admin):
    """An empty PostgreSQL database (no schema), dropped afterwards."""
    name = f"tg_empty_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield pg_url_for(name)
    drop_pg_database(pg_admin, name)


@pytest.fixture
def pg_restricted_url(pg_admin, pg_url):
    """The test database reached as a role that may connect and read, nothing more."""
    database = sa.make_url(pg_url).database
    with pg_admin.connect() as connection:
        exists = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": RESTRICTED_ROLE}).first()
        if not exists:
            connection.execute(sa.text(f"CREATE ROLE {RESTRICTED_ROLE} LOGIN"))
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {RESTRICTED_ROLE}"))
        connection.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {RESTRICTED_ROLE}"))
    engine.dispose()
    yield sa.make_url(pg_url).set(username=RESTRICTED_ROLE).render_as_string(hide_password=False)
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'REVOKE ALL ON DATABASE "{database}" FROM {RESTRICTED_ROLE}'))


@pytest.fixture
def seeded_url(database_url):
    """`database_url` holding the audits tests' clean seed rows (tests/test_checks_support.py)."""
    from test_checks_support import seed

    engine = create_engine(database_url)
    with engine.begin() as connection:
        seed(connection)
    engine.dispose()
    return database_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request):
    """The same test on a migrated SQLite file and a migrated PostgreSQL database."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


# ---------------------------------------------------------------- schema history

NEXT_REVISION = """
from alembic import op
import sqlalchemy as sa
revision = "0002_next"
down_revision = "{head}"
branch_labels = None
depends_on = None
def upgrade():
    op.add_column("players", sa.Column("country", sa.String(2)))
def downgrade():
    op.drop_column("players", "country")
"""


@pytest.fixture
def newer_history(tmp_path, monkeypatch):
    """This code's history plus one newer revision, as after a deploy of new code:
    databases at our head are now behind it."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from game_core import schema_state
    from game_core.migrations import MIGRATIONS_DIR
    from game_core.schema_state import head_revision

    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / "0002_next.py").write_text(NEXT_REVISION.format(head=head_revision()))
    config = Config()
    config.set_main_option("script_location", str(copy))
    monkeypatch.setattr(schema_state, "_script_directory", lambda: ScriptDirectory.from_config(config))
