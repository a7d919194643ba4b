"""Shared helpers of the audit tests (test_checks*.py): rows, seeds, planting, auditing.

Not a test module (it holds no tests); named test_checks_* only because the audit
tests may touch no other file. Bad rows are planted straight into the tables with
foreign keys and CHECK constraints off, as an old client, a script or a restore would.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

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
    target = sa.make_url(url)
    if target.get_backend_name() == "sqlite":

        def connect():
            raw = sqlite3.connect(target.database)
            raw.execute("PRAGMA foreign_keys = OFF")
            raw.execute("PRAGMA ignore_check_constraints = ON")
            return raw

        # Deliberately not game_core.db.create_engine: its connect hook turns foreign keys on.
        engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            yield connection
    else:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield connection
    engine.dispose()


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


def audit(url: str, **options) -> checks.AuditReport:
    """run_audits on the game's read-only engine (any write would raise), in one
    read transaction (REPEATABLE READ on PostgreSQL), as the callers open it."""
    engine = create_engine(url, read_only=True)
    try:
        return audit_on(engine, **options)
    finally:
        engine.dispose()


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
    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            cursor = connection.connection.driver_connection.cursor()
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]
    finally:
        engine.dispose()


def fetch(url: str, statement) -> list:
    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            return connection.execute(statement).all()
    finally:
        engine.dispose()


def counts(report: checks.AuditReport) -> dict[str, tuple]:
    """Per rule: (status, failing, checked, sample keys): what two engines must agree on."""
    return {f.rule.id: (f.status, f.failing_rows, f.checked_rows, f.sample_keys) for f in report.findings}


def violated(report: checks.AuditReport) -> dict[str, int]:
    return {f.rule.id: f.failing_rows for f in report.violations}
