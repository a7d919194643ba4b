"""Shared helpers of the audit tests (test_checks*.py): rows, seeds, planting, auditing.

Not a test module (it holds no tests); named test_checks_* only because the audit
tests may touch no other file. Bad rows are planted straight into the tables with
foreign keys and CHECK constraints off, as an old client, a script or a restore would.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

import checks
from game_core import metrics
from game_core.db import create_engine
from game_core.rebuild import rebuild_derived
from game_core.schema import personal_bests, players, progress, results

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
SEED_START = datetime(2025, 1, 1, 9, 0, tzinfo=timezone.utc)
CACHE_TIME = SEED_START + timedelta(days=5)
ORPHAN_PLAYERS = (998, 999)
GAME_TABLES = {"players": players, "results": results, "progress": progress, "personal_bests": personal_bests}
_CLOCK = itertools.count()


def result_row(player_id: int, started_at: datetime, *, derive: dict | None = None, **stored) -> dict:
    """A result whose derived values follow game_core.metrics from its counts and duration.

    `derive` changes the counts or duration the derived values are computed from (a
    valid row); `stored` overwrites column values afterwards, exactly as given (a bad row
    that differs from a valid one only there).
    """
    inputs = {
        "correct_word_chars": 100,
        "correct_spaces": 24,
        "correct_chars": 110,
        "incorrect_chars": 3,
        "extra_chars": 1,
        "missed_chars": 2,
        "correct_keystrokes": 140,
        "incorrect_keystrokes": 5,
        "duration_ms": 30_000,
        **(derive or {}),
    }
    counts = {k: v for k, v in inputs.items() if k != "duration_ms"}
    duration_ms = inputs["duration_ms"]
    row = {
        "player_id": player_id,
        "mode": "words",
        "mode_param": 25,
        "started_at": started_at,
        "duration_ms": duration_ms,
        **counts,
        "wpm": metrics.wpm(counts["correct_word_chars"], counts["correct_spaces"], duration_ms),
        "raw_wpm": metrics.raw_wpm(
            counts["correct_chars"], counts["incorrect_chars"], counts["extra_chars"], counts["correct_spaces"], duration_ms
        ),
        "accuracy": metrics.accuracy(counts["correct_keystrokes"], counts["incorrect_keystrokes"]),
        "xp": metrics.result_xp(
            counts["correct_word_chars"], counts["correct_spaces"], counts["correct_keystrokes"], counts["incorrect_keystrokes"]
        ),
        "metrics_version": metrics.METRICS_VERSION,
        "created_at": started_at + timedelta(milliseconds=duration_ms),
    }
    unknown = set(stored) - set(row)
    assert not unknown, unknown
    row.update({k: (v(row) if callable(v) else v) for k, v in stored.items()})
    return row


def rebuild(connection, *player_ids: int) -> None:
    """The caches of these players (all when none given) recomputed by game_core.rebuild."""
    rebuild_derived(connection, player_ids or None, now=CACHE_TIME)


def add_results(connection, player_id: int, overrides: list[dict], *, rebuild_caches: bool = True) -> list[int]:
    """Insert results (each a valid row with `overrides` applied) and return their ids."""
    ids = []
    for changes in overrides:
        changes = dict(changes)
        # Distinct start times: (player_id, started_at) is unique.
        started_at = changes.pop("started_at", NOW - timedelta(days=10) + timedelta(seconds=next(_CLOCK)))
        row = result_row(player_id, started_at, **changes)
        ids.append(connection.execute(sa.insert(results).values(row)).inserted_primary_key[0])
    if rebuild_caches:
        rebuild(connection, player_id)
    return ids


def seed(connection) -> None:
    """Two players with valid results and caches exactly as game_core.rebuild makes them."""
    connection.execute(
        sa.insert(players),
        [
            {"id": 1, "username": "alice", "created_at": SEED_START - timedelta(days=1)},
            {"id": 2, "username": "bob", "created_at": SEED_START - timedelta(days=1)},
        ],
    )
    alice = [
        {"started_at": SEED_START},
        {"started_at": SEED_START + timedelta(hours=1), "mode": "time", "mode_param": 30, "derive": {"correct_keystrokes": 150}},
        {"started_at": SEED_START + timedelta(hours=2), "derive": {"duration_ms": 20_000, "incorrect_keystrokes": 0}},
    ]
    bob = [
        {"started_at": SEED_START + timedelta(days=1), "derive": {"correct_word_chars": 60, "correct_chars": 70}},
        {"started_at": SEED_START + timedelta(days=2), "mode": "time", "mode_param": 60, "derive": {"duration_ms": 60_000}},
    ]
    add_results(connection, 1, alice, rebuild_caches=False)
    add_results(connection, 2, bob, rebuild_caches=False)
    rebuild(connection)


@contextmanager
def planting(url: str):
    """A transaction with foreign keys and CHECK constraints off, committed at the end.

    The game's own engine would refuse bad rows, so SQLite is opened with the raw sqlite3
    module; PostgreSQL disables FK triggers for this transaction (the tests run as
    superuser). PostgreSQL cannot switch a CHECK off: drop it (`drop_mode_check`).
    """
    engine = _planting_engine(url)
    with engine.begin() as connection:
        _constraints_off(connection)
        yield connection
    engine.dispose()


def _planting_engine(url: str, *, transactional_ddl: bool = False) -> sa.Engine:
    """An engine whose connections plant bad rows: SQLite through the raw sqlite3 module
    with foreign keys and CHECK constraints off; PostgreSQL as the game opens it (its
    transactions then call `_constraints_off`). With `transactional_ddl`, SQLite begins
    for real at `begin()` (the driver otherwise begins lazily at the first DML, leaving
    a CREATE or DROP before it outside the transaction, never rolled back)."""
    target = sa.make_url(url)
    if target.get_backend_name() != "sqlite":
        return create_engine(url)

    def connect():
        raw = sqlite3.connect(target.database)
        raw.execute("PRAGMA foreign_keys = OFF")
        raw.execute("PRAGMA ignore_check_constraints = ON")
        if transactional_ddl:
            raw.isolation_level = None
        return raw

    # Deliberately not game_core.db.create_engine: its connect hook turns foreign keys on.
    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)
    if transactional_ddl:
        sa.event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN"))
    return engine


def _constraints_off(connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")


def drop_mode_check(connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ALTER TABLE results DROP CONSTRAINT ck_results_mode")


def drop_natural_key(connection) -> None:
    """Remove the unique (player_id, started_at) constraint, as a careless migration would."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ALTER TABLE results DROP CONSTRAINT uq_results_player_id_started_at")
        return
    # SQLite cannot drop a table constraint: rebuild the table without it.
    sql = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'results'").scalar_one()
    without = re.sub(r",\s*CONSTRAINT uq_results_player_id_started_at UNIQUE \(player_id, started_at\)", "", sql)
    assert without != sql, sql
    connection.exec_driver_sql(without.replace("CREATE TABLE results", "CREATE TABLE results_rebuilt", 1))
    connection.exec_driver_sql("INSERT INTO results_rebuilt SELECT * FROM results")
    connection.exec_driver_sql("DROP TABLE results")
    connection.exec_driver_sql("ALTER TABLE results_rebuilt RENAME TO results")


# The game's read-only engine per database URL, kept for the rest of the test: a test
# audits its database two to eight times and lists findings between the audits. A new
# engine per call checked the server afresh (a connection and a query) and compiled
# every statement again (SQLAlchemy's statement cache belongs to the engine): in
# test_checks.py over a third of the CPU of the audits themselves. Each call still runs
# in a read transaction of its own, so it sees everything committed before it.
_READERS: dict[str, sa.Engine] = {}


def reader(url: str) -> sa.Engine:
    """The read-only engine of `url` for this test (closed by `readers_closed`)."""
    engine = _READERS.get(url)
    if engine is None:
        engine = _READERS[url] = create_engine(url, read_only=True)
    return engine


def close_readers() -> None:
    while _READERS:
        _READERS.popitem()[1].dispose()


@pytest.fixture(autouse=True)
def readers_closed():
    """Import into a test module that uses `audit`, `fetch` or `run_listing_sql`: their
    engines are disposed after each test (none outlives its database)."""
    close_readers()
    yield
    close_readers()


class SeedTransaction:
    """The audit seed in one transaction that is rolled back after the test: bad rows are
    planted (`planting()`), then audited, fetched and listed, all on this transaction's
    connection, which sees what was planted. The `audit`, `fetch` and `run_listing_sql`
    of this module, as methods.

    Each audit is checked to write nothing: the transaction's own count of inserted,
    updated and deleted rows (PostgreSQL's pg_stat_xact_user_tables, SQLite's
    total_changes) is the same after run_audits as before, whatever path its statements
    took (the Pandera engine reads on the driver cursor)."""

    def __init__(self, connection) -> None:
        self.connection = connection

    @contextmanager
    def planting(self):
        yield self.connection

    def audit(self, **options) -> checks.AuditReport:
        options.setdefault("now", NOW)
        before = self._rows_written()
        report = checks.run_audits(self.connection, **options)
        assert self._rows_written() == before, "run_audits wrote"
        return report

    def fetch(self, statement) -> list:
        return self.connection.execute(statement).all()

    def run_listing_sql(self, sql: str) -> list[tuple]:
        """A finding's SQL text run as on-call would paste it: the driver, no SQLAlchemy."""
        return _on_the_driver(self.connection, sql)

    def _rows_written(self) -> int:
        if self.connection.dialect.name == "sqlite":
            return self.connection.connection.driver_connection.total_changes
        return self.connection.exec_driver_sql(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables"
        ).scalar_one()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seed_connection(request, tmp_path_factory):
    """A connection to a copy of the audit seed of this module's own (a file copy, or
    CREATE DATABASE ... TEMPLATE), for `seeded` transactions: one database, engine and
    statement cache for the whole module instead of one per test."""
    if request.param == "sqlite":
        import shutil

        path = tmp_path_factory.mktemp("audit-seed-module") / "game.db"
        shutil.copyfile(request.getfixturevalue("audit_seed_sqlite_template"), path)
        url, name = f"sqlite:///{path}", None
    else:
        from conftest import drop_pg_database, pg_url_for

        admin = request.getfixturevalue("pg_admin")
        name = f"tg_audit_module_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{request.getfixturevalue("audit_seed_pg_template")}"')
        url = pg_url_for(name)
    engine = _planting_engine(url, transactional_ddl=True)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()
        if name is not None:
            drop_pg_database(admin, name)


@pytest.fixture
def seeded(seed_connection):
    """The audit seed on each engine, in a transaction of this test's own that is rolled
    back afterwards (planted rows, dropped constraints and rebuilt tables included)."""
    transaction = seed_connection.begin()
    _constraints_off(seed_connection)
    if seed_connection.dialect.name == "postgresql":
        # A rollback does not give back what a sequence handed out: every test starts
        # from the ids the seed left, as on a copy of its own (SQLite reuses them anyway).
        for table in ("players", "results"):
            seed_connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
    try:
        yield SeedTransaction(seed_connection)
    finally:
        transaction.rollback()


def audit(url: str, **options) -> checks.AuditReport:
    """run_audits on the game's read-only engine (any write would raise), in one
    read transaction (REPEATABLE READ on PostgreSQL), as the callers open it."""
    return audit_on(reader(url), **options)


def audit_on(database, /, **options) -> checks.AuditReport:
    """`audit` on a SQLAlchemy engine the caller keeps (one read transaction per call);
    `options` may hold run_audits' own `engine` ("sql" or "pandera")."""
    options.setdefault("now", NOW)
    with database.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            return checks.run_audits(connection, **options)


def run_listing_sql(url: str, sql: str) -> list[tuple]:
    """Execute a finding's SQL text as on-call would paste it: the driver, no SQLAlchemy."""
    with reader(url).connect() as connection:
        return _on_the_driver(connection, sql)


def _on_the_driver(connection, sql: str) -> list[tuple]:
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def fetch(url: str, statement) -> list:
    with reader(url).connect() as connection:
        return connection.execute(statement).all()


def counts(report: checks.AuditReport) -> dict[str, tuple]:
    """Per rule: (status, failing, checked, sample keys): what two engines must agree on."""
    return {f.rule.id: (f.status, f.failing_rows, f.checked_rows, f.sample_keys) for f in report.findings}


def violated(report: checks.AuditReport) -> dict[str, int]:
    return {f.rule.id: f.failing_rows for f in report.violations}
