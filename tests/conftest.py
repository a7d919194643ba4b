"""Shared fixtures: real SQLite files in tmp_path and real PostgreSQL databases.

Each PostgreSQL test gets its own database, created from a template migrated once per
session and dropped afterwards. Without a reachable server the `postgres` tests skip
with the reason, unless INTEGRITY_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from game_core.schema_state import upgrade_to_head

SHARED_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _test_server_url() -> str:
    """The PostgreSQL server this test process uses.

    INTEGRITY_TEST_PG_URL when set; else a throwaway cluster of this process's own
    (tests/pg_cluster.py, about 1.5 s), one per xdist worker, so that no worker sees
    another's databases, scratch copies, sessions or roles: PostgreSQL tests run on every
    worker without grouping, and a test may look at its server as a whole (scratch sweeps,
    pg_stat_activity). Without `pg_config` (no server binaries here) the machine's server at
    127.0.0.1:5432, for a single process. tests/test_shared_server.py runs the main path
    on the machine's server itself, with its own configuration.
    """
    explicit = os.environ.get("INTEGRITY_TEST_PG_URL")
    if explicit:
        return explicit
    if not shutil.which("pg_config"):
        return SHARED_SERVER_URL
    from pg_cluster import ThrowawayCluster

    # Crash safety of the test server is not under test (a crashed cluster is thrown away
    # with its data). Without fsync, synchronous commit and full-page writes, CREATE and
    # DROP DATABASE (each test's database, every scratch copy) skip the checkpoint's
    # flushes: a DROP took 0.03-0.13 s here against 0.7-3.8 s on the machine's server
    # under load, and a PostgreSQL test file ran 37% faster. The shared server at 5432 is
    # never reconfigured.
    cluster = ThrowawayCluster.start(settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    atexit.register(cluster.stop)
    url = cluster.url()
    os.environ["INTEGRITY_TEST_PG_URL"] = url  # for the children a test starts
    return url


PG_ADMIN_URL = SHARED_SERVER_URL  # this process's server, set in pytest_configure


def _cache_bytecode_for_children() -> None:
    """Let every Python process the suite starts (`integrity`, `typing-game`, alembic, the
    xdist workers) keep its compiled modules, in a cache beside the virtual environment.
    With PYTHONDONTWRITEBYTECODE set (as on this project's machines) each of the suite's
    hundreds of `integrity` subprocesses compiled the project's modules from source again:
    about 0.07 s of CPU each (medians under load), on a suite that was CPU-bound. An installed tool has its .pyc
    files, so this measures what users run; the cache stays out of the source tree."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(sys.prefix) / "pycache"))


def pytest_configure(config):
    """Start this process's server before any test module is imported (they read
    PG_ADMIN_URL). The xdist controller runs no test: it starts none, and sets no
    INTEGRITY_TEST_PG_URL that its workers would inherit and then share."""
    global PG_ADMIN_URL
    _cache_bytecode_for_children()
    # xdist 3.8 hands out modules largest test count first unless told not to; that order
    # is not the time they take. Ours is LONGEST_FIRST (pytest_collection_modifyitems).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    PG_ADMIN_URL = _test_server_url()


# The thirty modules that take longest on the wall clock (a whole run alone with
# --durations=0, 2026-12-07), longest first. Most of their time is waiting (Litestream's sync interval,
# archiving clusters, scheduler fires, a writer paced between restores), not CPU. With
# `--dist loadfile` a worker takes the next module in collection order when it is free: a
# long module collected last kept one worker busy while the other idled (the last 9% of the
# tests took a fifth of the run, the CPU half idle). Started first, they overlap with the
# short modules instead. The order of tests inside a module is kept.
LONGEST_FIRST = (
    "test_restore_writers.py", "test_migrate_cases.py", "test_pitr_watch.py", "test_pitr_pg_watch.py",
    "test_repository_damage.py", "test_pitr_restore.py", "test_backups_create.py", "test_scheduler.py",
    "test_pitr_search.py", "test_restore_crash.py", "test_incident.py", "test_restorable.py",
    "test_s3_faults.py", "test_pitr_litestream.py", "test_migrate_dry_run.py", "test_alert_rules.py",
    "test_snapshot_dry_run.py", "test_ci_templates.py", "test_signing.py", "test_restore_foreign.py",
    "test_restore.py", "test_foreign_sources.py", "test_backup_plausibility.py", "test_s3_repository.py",
    "test_checks_engines.py", "test_incident_pitr.py", "test_report_html.py", "test_scratch_claims.py",
    "test_drill.py", "test_run_honesty.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


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


def reachable_admin(url: str):
    """An AUTOCOMMIT engine on `url`'s server, checked to answer; when it does not, the
    test skips naming why (fails under INTEGRITY_REQUIRE_POSTGRES=1)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to reach the server
        engine.dispose()
        reason = f"PostgreSQL not reachable at {url}: {str(exc).splitlines()[0]}"
        if REQUIRE_POSTGRES:
            pytest.fail(reason + " (INTEGRITY_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return engine


@pytest.fixture(scope="session")
def pg_admin():
    engine = reachable_admin(PG_ADMIN_URL)
    yield engine
    engine.dispose()


def pg_url_for(database: str) -> str:
    return sa.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def drop_pg_database(admin, name: str) -> None:
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def wait_until_nobody_connected(admin, name: str, *, timeout: float = 10) -> None:
    """PostgreSQL ends a closed connection's backend asynchronously: right after a client
    disconnects, `pg_stat_activity` may still list it (PITFALLS). Wait for it to go."""
    deadline = time.monotonic() + timeout
    while True:
        with admin.connect() as connection:
            backends = connection.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            ).scalar_one()
        if backends == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{backends} backend(s) still connected to {name} after {timeout} s")
        time.sleep(0.02)


def unclaimed_scratch_databases(admin, prefix: str) -> list[str]:
    """Scratch databases starting with `prefix` that no live run claims: what a finished or
    killed run left behind. Another run's copies in use (its claim, an advisory lock, is
    held) are not listed, so a test sees its own leftovers even beside other suites on
    the same server."""
    from integrity.db.claims import CLAIM_LOCK_CLASS

    with admin.connect() as connection:
        return connection.execute(sa.text(
            "SELECT d.datname FROM pg_database d WHERE starts_with(d.datname, :prefix) AND NOT EXISTS ("
            " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 2"
            " AND l.classid::bigint = :claim AND l.objid::bigint = (hashtext(d.datname)::bigint + 4294967296) % 4294967296"
            ") ORDER BY 1"
        ), {"prefix": prefix, "claim": CLAIM_LOCK_CLASS}).scalars().all()


class DatabaseSupply:
    """Test databases copied from templates one step ahead of need and dropped behind.

    `CREATE DATABASE ... TEMPLATE` and `DROP DATABASE` each take 0.1 to 0.8 s on this
    machine, and hundreds of tests need a database of their own: one thread of this
    session does both while the tests run. A test still gets a fresh copy nobody else
    knows (made after the previous test took its own), and every drop is checked when
    the session ends, so a database that could not be dropped fails the run.
    """

    # The session's supply, for helpers that drop databases without a fixture at hand
    # (restore_helpers.drop_restore_leftovers).
    current: DatabaseSupply | None = None

    def __init__(self, admin) -> None:
        self._admin = admin
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-supply")
        self._ready: dict[str | None, Future] = {}  # template -> the next copy being made
        self._drops: list[Future] = []

    def _create(self, template: str | None) -> str:
        name = f"tg_test_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))
        return name

    def take(self, template: str | None) -> str:
        """A new database copied from `template` (None: an empty one), this caller's own."""
        ready = self._ready.pop(template, None) or self._thread.submit(self._create, template)
        name = ready.result()
        self._ready[template] = self._thread.submit(self._create, template)
        return name

    def serves(self, admin) -> bool:
        """Whether this supply's drops reach the server `admin` connects to."""
        return admin is self._admin or admin.url == self._admin.url

    def drop_later(self, name: str) -> None:
        self._drops.append(self._thread.submit(drop_pg_database, self._admin, name))

    def forget(self, template: str) -> None:
        """Drop the copy made ahead from `template`, before the template itself goes."""
        ready = self._ready.pop(template, None)
        if ready is not None:
            drop_pg_database(self._admin, ready.result())

    def close(self) -> None:
        for template in list(self._ready):
            self.forget(template)
        self._thread.shutdown(wait=True)
        for drop in self._drops:
            drop.result()  # raises what the server said


@pytest.fixture(scope="session")
def pg_supply(pg_admin):
    supply = DatabaseSupply.current = DatabaseSupply(pg_admin)
    yield supply
    DatabaseSupply.current = None
    supply.close()


@pytest.fixture(scope="session")
def pg_template(pg_admin, pg_supply):
    name = f"tg_template_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(pg_url_for(name))
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    yield name
    pg_supply.forget(name)
    drop_pg_database(pg_admin, name)


@pytest.fixture
def pg_url(pg_supply, pg_template):
    """A migrated, empty PostgreSQL database of this test's own, dropped afterwards."""
    name = pg_supply.take(pg_template)
    yield pg_url_for(name)
    pg_supply.drop_later(name)


@pytest.fixture
def pg_empty_url(pg_supply):
    """An empty PostgreSQL database (no schema), dropped afterwards."""
    name = pg_supply.take(None)
    yield pg_url_for(name)
    pg_supply.drop_later(name)


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


def _seed(url: str) -> None:
    from test_checks_support import seed

    engine = create_engine(url)
    with engine.begin() as connection:
        seed(connection)
    engine.dispose()  # nobody may stay connected to a PostgreSQL template


def sqlite_template_seeded_by(seed: Callable[[str], None], directory, sqlite_template):
    """A copy of the migrated SQLite template in `directory`, filled once by `seed(url)`,
    for tests to copy (a session fixture's body)."""
    path = directory / "seeded.db"
    shutil.copyfile(sqlite_template, path)
    seed(f"sqlite:///{path}")
    return path


@contextmanager
def pg_template_seeded_by(seed: Callable[[str], None], prefix: str, admin, supply, pg_template) -> Iterator[str]:
    """A PostgreSQL database made from the migrated template and filled once by `seed(url)`,
    for tests to copy with TEMPLATE; dropped afterwards, also when the seed fails. `seed`
    must leave nobody connected (a template in use cannot be copied)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        seed(pg_url_for(name))
        yield name
    finally:
        supply.forget(name)
        drop_pg_database(admin, name)


@pytest.fixture(scope="session")
def audit_seed_sqlite_template(tmp_path_factory, sqlite_template):
    """The migrated template holding the audits tests' clean seed rows, seeded once."""
    return sqlite_template_seeded_by(_seed, tmp_path_factory.mktemp("audit-seed"), sqlite_template)


@pytest.fixture(scope="session")
def audit_seed_pg_template(pg_admin, pg_supply, pg_template):
    with pg_template_seeded_by(_seed, "tg_audit_seed", pg_admin, pg_supply, pg_template) as name:
        yield name


def copy_of_template(request, tmp_path, engine: str, template, file_name: str = "game.db") -> str:
    """The URL of a database of this test's own copied from `template` (a SQLite file, or a
    PostgreSQL template database's name): a file in tmp_path, or a database the supply
    made from the template, dropped after the test."""
    if engine == "sqlite":
        path = tmp_path / file_name
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    supply = request.getfixturevalue("pg_supply")
    name = supply.take(template)
    request.addfinalizer(lambda: supply.drop_later(name))
    return pg_url_for(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded_url(request, tmp_path):
    """A database of this test's own holding the audits tests' clean seed rows
    (tests/test_checks_support.py), on each engine: a copy of a template seeded once per
    session, so that planting faults in it never touches another test's rows."""
    template = "audit_seed_sqlite_template" if request.param == "sqlite" else "audit_seed_pg_template"
    return copy_of_template(request, tmp_path, request.param, request.getfixturevalue(template))


class FilledTemplates:
    """Templates holding `backup_helpers.fill_database(**fill)`'s game data, each filled once
    per session: tests that only read or damage such data copy it instead of refilling."""

    def __init__(self, request, directory) -> None:
        self._request = request
        self._directory = directory
        self._made: dict[tuple, object] = {}

    def get(self, engine: str, **fill):
        from backup_helpers import fill_database

        key = (engine, *sorted(fill.items()))
        if key not in self._made:
            if engine == "sqlite":
                path = self._directory / f"filled-{len(self._made)}.db"
                shutil.copyfile(self._request.getfixturevalue("sqlite_template"), path)
                fill_database(f"sqlite:///{path}", **fill)  # disposes its engine: the WAL is checkpointed
                self._made[key] = path
            else:
                admin = self._admin = self._request.getfixturevalue("pg_admin")
                self._supply = self._request.getfixturevalue("pg_supply")
                name = f"tg_filled_{uuid.uuid4().hex[:10]}"
                with admin.connect() as connection:
                    connection.execute(sa.text(
                        f'CREATE DATABASE "{name}" TEMPLATE "{self._request.getfixturevalue("pg_template")}"'
                    ))
                self._made[key] = name  # dropped at the end even if the fill fails
                fill_database(pg_url_for(name), **fill)
        return self._made[key]

    def close(self) -> None:
        for name in self._made.values():
            if isinstance(name, str):
                self._supply.forget(name)
                drop_pg_database(self._admin, name)


@pytest.fixture(scope="session")
def filled_templates(request, tmp_path_factory):
    templates = FilledTemplates(request, tmp_path_factory.mktemp("filled"))
    yield templates
    templates.close()


@pytest.fixture
def filled_copy(request, tmp_path, filled_templates):
    """`filled_copy(engine, file_name="game.db", **fill)`: the URL of a database of this
    test's own holding exactly what `fill_database(url, **fill)` on a fresh one would."""

    def make(engine: str, file_name: str = "game.db", **fill) -> str:
        return copy_of_template(request, tmp_path, engine, filled_templates.get(engine, **fill), file_name)

    return make


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
    monkeypatch.setattr(schema_state, "_versions_dir", lambda: copy / "versions")
