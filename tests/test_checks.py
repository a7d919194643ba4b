"""The audits: a clean database passes every rule, and every rule is shown failing.

Each rule has a fixture that plants bad rows straight into the tables (foreign keys and
CHECK constraints off, as an old client, a script or a restore would), and the audit
must report exactly those rows: exact count, their keys as samples, and SQL that lists
them. Everything runs on a real SQLite file and on the real PostgreSQL server.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.sql import visitors

from checks import (
    ERROR,
    RULES,
    RULES_BY_ID,
    WARN,
    AuditContext,
    RowRule,
    UnknownRule,
    count_row_failures,
    run_audits,
)
from game_core import metrics
from game_core.db import create_engine
from game_core.errors import ExitCode
from game_core.schema import personal_bests, players, progress, results

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
SEED_START = datetime(2025, 1, 1, 9, 0, tzinfo=timezone.utc)
ORPHAN_PLAYERS = (998, 999)
_CLOCK = itertools.count()

# ---------------------------------------------------------------- rows consistent with game_core.metrics


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
    row.update(stored)
    return row


def progress_row(player_id: int, xp: int, tests: int = 1) -> dict:
    return {
        "player_id": player_id,
        "xp": xp,
        "level": metrics.level_for_xp(xp),
        "tests_completed": tests,
        "time_typing_ms": 30_000 * tests,
        "best_wpm": 49.6,
        "updated_at": SEED_START,
    }


def rebuild_caches(connection, player_id: int) -> None:
    """progress and personal_bests of one player recomputed from results, in Python."""
    rows = connection.execute(sa.select(results).where(results.c.player_id == player_id)).mappings().all()
    connection.execute(sa.delete(progress).where(progress.c.player_id == player_id))
    connection.execute(sa.delete(personal_bests).where(personal_bests.c.player_id == player_id))
    if not rows:
        return
    xp = sum(row["xp"] for row in rows)
    connection.execute(
        sa.insert(progress).values(
            player_id=player_id,
            xp=xp,
            level=metrics.level_for_xp(xp),
            tests_completed=len(rows),
            time_typing_ms=sum(row["duration_ms"] for row in rows),
            best_wpm=max(row["wpm"] for row in rows),
            updated_at=max(row["created_at"] for row in rows),
        )
    )
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["mode"], row["mode_param"])
        if key not in best or row["wpm"] > best[key]["wpm"]:
            best[key] = row
    connection.execute(
        sa.insert(personal_bests),
        [
            {"player_id": player_id, "mode": m, "mode_param": p, "result_id": r["id"], "wpm": r["wpm"], "accuracy": r["accuracy"]}
            for (m, p), r in best.items()
        ],
    )


def add_results(connection, player_id: int, overrides: list[dict], *, rebuild: bool = True) -> list[int]:
    """Insert results (each a valid row with `overrides` applied) and return their ids."""
    ids = []
    for changes in overrides:
        changes = dict(changes)
        # Distinct start times: (player_id, started_at) is unique.
        started_at = changes.pop("started_at", NOW - timedelta(days=10) + timedelta(seconds=next(_CLOCK)))
        row = result_row(player_id, started_at, **changes)
        ids.append(connection.execute(sa.insert(results).values(row)).inserted_primary_key[0])
    if rebuild:
        rebuild_caches(connection, player_id)
    return ids


def seed(connection) -> None:
    """Two players with valid results and matching caches."""
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
    add_results(connection, 1, alice)
    add_results(connection, 2, bob)


# ---------------------------------------------------------------- databases


@contextmanager
def planting(url: str):
    """A transaction with foreign keys and CHECK constraints off, committed at the end.

    Bad rows reach production past every API (an old client, a script, a restore); the
    audits must see them. The game's own engine would refuse them, so SQLite is opened
    with the raw sqlite3 module; PostgreSQL disables FK triggers for this transaction
    (the tests run as superuser). PostgreSQL cannot switch a CHECK off: see `_bad_modes`.
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


@pytest.fixture
def seeded_url(database_url):
    engine = create_engine(database_url)
    with engine.begin() as connection:
        seed(connection)
    engine.dispose()
    return database_url


def audit(url: str, **options):
    """run_audits on the game's read-only engine, so any write would raise."""
    options.setdefault("now", NOW)
    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            return run_audits(connection, **options)
    finally:
        engine.dispose()


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


def table_count(url: str, table: sa.Table) -> int:
    engine = create_engine(url, read_only=True)
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    engine.dispose()
    return count


def progress_of(connection, player_id: int) -> dict:
    return connection.execute(sa.select(progress).where(progress.c.player_id == player_id)).mappings().one()


# ---------------------------------------------------------------- one breaking fixture per rule
# Each returns the primary keys of the rows it planted. ALSO lists the rules a fixture
# cannot avoid breaking too (an impossible wpm is also a suspicious one; a negative
# raw_wpm is below any non-negative wpm; level 0 never matches any xp).


def _bad_results(*overrides):
    return lambda c: add_results(c, 1, [dict(o) for o in overrides])


def _bad_modes(c):
    if c.dialect.name == "postgresql":
        # This scratch database only; taken here, not in `planting`, because it needs an
        # exclusive lock that an open reader (the snapshot test) would block.
        c.exec_driver_sql("ALTER TABLE results DROP CONSTRAINT ck_results_mode")
    return add_results(c, 1, [{"mode": "zen"}, {"mode": "WORDS"}])


def _orphan_results(c):
    return [add_results(c, player, [{}], rebuild=False)[0] for player in ORPHAN_PLAYERS]


def _update_progress(**changes):
    def plant(c):
        for player_id in (1, 2):
            current = progress_of(c, player_id)
            values = {k: (v(current) if callable(v) else v) for k, v in changes.items()}
            c.execute(sa.update(progress).where(progress.c.player_id == player_id).values(values))
        return [1, 2]

    return plant


def _orphan_progress(c):
    c.execute(sa.insert(progress), [progress_row(player, xp=0) for player in ORPHAN_PLAYERS])
    return list(ORPHAN_PLAYERS)


def _progress_xp_off(c):
    for player_id, extra in ((1, 1), (2, 1000)):
        xp = progress_of(c, player_id)["xp"] + extra
        c.execute(
            sa.update(progress).where(progress.c.player_id == player_id).values(xp=xp, level=metrics.level_for_xp(xp))
        )
    return [1, 2]


def _pb(player_id, mode_param, result_id):
    return {"player_id": player_id, "mode": "words", "mode_param": mode_param, "result_id": result_id, "wpm": 49.6, "accuracy": 96.55}


def _orphan_pb_player(c):
    result_id = c.execute(sa.select(sa.func.min(results.c.id))).scalar_one()
    c.execute(sa.insert(personal_bests), [_pb(player, 25, result_id) for player in ORPHAN_PLAYERS])
    return [(player, "words", 25) for player in ORPHAN_PLAYERS]


def _orphan_pb_result(c):
    c.execute(sa.insert(personal_bests), [_pb(1, 998, 123456), _pb(1, 999, 123457)])
    return [(1, "words", 998), (1, "words", 999)]


FUTURE = {"started_at": NOW + timedelta(seconds=1)}
BREAKS = {
    "results.accuracy_range": (_bad_results({"accuracy": 100.01}, {"accuracy": -0.5}), ()),
    "results.wpm_non_negative": (_bad_results({"wpm": -1}, {"wpm": -0.01}), ()),
    "results.raw_wpm_non_negative": (
        _bad_results({"raw_wpm": -1, "wpm": 0}, {"raw_wpm": -0.02, "wpm": 0}),
        ("results.raw_wpm_not_below_wpm",),
    ),
    "results.raw_wpm_not_below_wpm": (_bad_results({"wpm": 60, "raw_wpm": 55}, {"wpm": 50, "raw_wpm": 49.98}), ()),
    "results.duration_min": (_bad_results({"duration_ms": metrics.MIN_DURATION_MS - 1}, {"duration_ms": 0}), ()),
    "results.mode_allowed": (_bad_modes, ()),
    "results.mode_param_positive": (_bad_results({"mode_param": 0}, {"mode_param": -30}), ()),
    "results.wpm_impossible": (
        _bad_results(
            {"wpm": 350.01, "raw_wpm": 360, "duration_ms": metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS},
            {"wpm": 400, "raw_wpm": 410, "duration_ms": 20_000},
        ),
        ("results.wpm_suspicious",),
    ),
    "results.wpm_suspicious": (_bad_results({"wpm": 250.01, "raw_wpm": 260}, {"wpm": 300, "raw_wpm": 310}), ()),
    "results.counts_non_negative": (_bad_results({"missed_chars": -1}, {"incorrect_keystrokes": -3}), ()),
    "results.started_not_in_future": (_bad_results(FUTURE, {"started_at": NOW + timedelta(days=400)}), ()),
    "results.player_exists": (_orphan_results, ()),
    "progress.xp_non_negative": (
        _update_progress(xp=-1),
        ("progress.level_matches_xp", "progress.xp_matches_results"),
    ),
    "progress.tests_completed_min": (_update_progress(tests_completed=0), ()),
    "progress.level_min": (_update_progress(level=0), ("progress.level_matches_xp",)),
    "progress.level_matches_xp": (_update_progress(level=lambda row: row["level"] + 1), ()),
    "progress.player_exists": (_orphan_progress, ()),
    "progress.xp_matches_results": (_progress_xp_off, ()),
    "personal_bests.player_exists": (_orphan_pb_player, ()),
    "personal_bests.result_exists": (_orphan_pb_result, ()),
}
TABLES = {"results": results, "progress": progress, "personal_bests": personal_bests}


def test_every_rule_in_the_catalogue_has_a_breaking_fixture():
    assert sorted(BREAKS) == sorted(RULES_BY_ID)
    assert len(RULES_BY_ID) == len(RULES)


def test_catalogue_entries_are_well_formed():
    for rule in RULES:
        assert rule.severity in (ERROR, WARN)
        assert rule.id.startswith(rule.table + ".") and rule.table in TABLES
        assert rule.meaning.strip() and rule.action.strip()
    assert [r.id for r in RULES if r.severity == WARN] == ["results.wpm_suspicious"]


def test_a_clean_database_passes_every_rule(seeded_url):
    report = audit(seeded_url)
    assert [f.rule.id for f in report.findings] == [r.id for r in RULES]
    assert report.violations == () and report.ok
    assert all(f.failing_rows == 0 and f.sample_keys == () for f in report.findings)
    assert report.finding("results.accuracy_range").checked_rows == 5
    assert report.finding("progress.level_matches_xp").checked_rows == 2
    assert report.finding("personal_bests.result_exists").checked_rows == table_count(seeded_url, personal_bests) > 0
    # Every listing query, run as text, agrees that there is nothing to list.
    for finding in report.findings:
        assert run_listing_sql(seeded_url, finding.sql) == [], finding.rule.id


def test_the_clean_seed_is_not_vacuous(seeded_url):
    """The seed has levels above 1 and several modes, so the rules test real values."""
    engine = create_engine(seeded_url, read_only=True)
    with engine.connect() as connection:
        levels = connection.execute(sa.select(progress.c.level)).scalars().all()
        modes = set(connection.execute(sa.select(results.c.mode)).scalars())
    engine.dispose()
    assert min(levels) > 1 and modes == {"words", "time"}


@pytest.mark.parametrize("rule_id", sorted(BREAKS))
def test_each_rule_reports_exactly_the_rows_that_break_it(seeded_url, rule_id):
    plant, also = BREAKS[rule_id]
    with planting(seeded_url) as connection:
        keys = plant(connection)
    rule = RULES_BY_ID[rule_id]
    table = TABLES[rule.table]

    report = audit(seeded_url)
    finding = report.finding(rule_id)

    assert len(keys) == 2
    assert finding.failing_rows == 2
    assert finding.sample_keys == tuple(sorted(keys))
    assert finding.checked_rows == table_count(seeded_url, table)
    assert {f.rule.id for f in report.violations} == {rule_id, *also}
    assert all(f.failing_rows == 2 for f in report.violations)
    assert report.ok is (rule.severity == WARN and not also)
    listed = run_listing_sql(seeded_url, finding.sql)
    key_width = len(table.primary_key.columns)
    assert len(listed) == finding.failing_rows
    assert [row[0] if key_width == 1 else row[:key_width] for row in listed] == sorted(keys)


def test_counts_are_exact_beyond_the_sample_limit(seeded_url):
    with planting(seeded_url) as connection:
        ids = add_results(connection, 2, [{"accuracy": 101 + i} for i in range(7)])
    finding = audit(seeded_url, sample_limit=5).finding("results.accuracy_range")
    assert (finding.failing_rows, finding.sample_keys) == (7, tuple(ids[:5]))
    assert len(run_listing_sql(seeded_url, finding.sql)) == 7
    none = audit(seeded_url, sample_limit=0).finding("results.accuracy_range")
    assert (none.failing_rows, none.sample_keys) == (7, ())
    with pytest.raises(ValueError):
        audit(seeded_url, sample_limit=-1)


def test_values_at_the_limits_pass(seeded_url):
    """Inclusive bounds stay inclusive: only the two rows over 250 wpm are reported."""
    limit = metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS
    with planting(seeded_url) as connection:
        add_results(
            connection,
            1,
            [
                {"accuracy": 0},
                {"accuracy": 100},
                {"wpm": 0, "raw_wpm": 0},
                {"wpm": 50, "raw_wpm": 50},
                {"duration_ms": metrics.MIN_DURATION_MS},
                {"wpm": metrics.SUSPICIOUS_WPM, "raw_wpm": 260},
                {"started_at": NOW},
            ],
        )
        over = add_results(
            connection,
            2,
            [
                {"wpm": metrics.IMPOSSIBLE_WPM, "raw_wpm": 360, "duration_ms": limit},
                {"wpm": 400, "raw_wpm": 410, "duration_ms": limit - 1},
            ],
        )
    report = audit(seeded_url)
    assert [(f.rule.id, f.sample_keys) for f in report.violations] == [("results.wpm_suspicious", tuple(over))]
    assert report.ok


def test_future_is_judged_in_utc_whatever_zone_now_is_given_in(seeded_url):
    with planting(seeded_url) as connection:
        past, future = add_results(
            connection, 1, [{"started_at": NOW - timedelta(hours=1)}, {"started_at": NOW + timedelta(hours=1)}]
        )
    rule = "results.started_not_in_future"
    # The same instant as NOW, written in UTC+02:00: a wall-clock text comparison would
    # call 13:00 UTC "before 14:00" and miss the future row.
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    for now in (NOW, plus_two, NOW.replace(tzinfo=None)):
        finding = audit(seeded_url, now=now, rules=[rule]).finding(rule)
        assert finding.sample_keys == (future,), now
    earlier = audit(seeded_url, now=NOW - timedelta(hours=2), rules=[rule]).finding(rule)
    assert earlier.sample_keys == (past, future)


def test_default_now_is_the_current_time(seeded_url):
    with planting(seeded_url) as connection:
        (future,) = add_results(connection, 1, [{"started_at": datetime.now(timezone.utc) + timedelta(days=1)}])
    report = audit(seeded_url, now=None)
    assert [(f.rule.id, f.sample_keys) for f in report.violations] == [("results.started_not_in_future", (future,))]
    assert abs(report.audited_at - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_huge_levels_and_xp_are_counted_not_fatal(seeded_url):
    """A corrupt level or xp overflows PostgreSQL's integers in the level check unless it
    is computed in NUMERIC; an overflow would abort the whole audit."""
    with planting(seeded_url) as connection:
        connection.execute(sa.update(progress).where(progress.c.player_id == 1).values(level=2**31 - 1))
        connection.execute(sa.update(progress).where(progress.c.player_id == 2).values(xp=2**62 + 2**61))
    report = audit(seeded_url)
    finding = report.finding("progress.level_matches_xp")
    assert finding.sample_keys == (1, 2)
    assert report.finding("progress.xp_matches_results").sample_keys == (2,)
    # With literal integers (not parameters) PostgreSQL types the arithmetic by the
    # columns: the listing SQL must survive the same values.
    assert [row[0] for row in run_listing_sql(seeded_url, finding.sql)] == [1, 2]


def test_nulls_fail_every_row_rule_for_each_column_it_reads(database_url):
    """The schema forbids NULLs, so the row rules are evaluated on nullable temporary
    copies of the tables: a valid row passes, and the same row with any one column the
    rule reads set to NULL fails it. (The cross-table rules cannot be reached with NULLs:
    their keys are NOT NULL and primary keys; NOT EXISTS would count a NULL key anyway.)"""
    context = AuditContext.at(NOW)
    valid = {
        "results": {"id": 1, **result_row(1, NOW - timedelta(days=1))},
        "progress": progress_row(1, xp=5000, tests=3),
    }
    engine = create_engine(database_url)
    with engine.connect() as connection:
        transaction = connection.begin()
        for name, row in valid.items():
            table = TABLES[name]
            scratch = sa.Table(
                f"nullable_{name}",
                sa.MetaData(),
                *(sa.Column(c.name, c.type, nullable=True) for c in table.columns),
                prefixes=["TEMPORARY"],
            )
            scratch.create(connection)
            rules = [r for r in RULES if isinstance(r, RowRule) and r.table == name]
            connection.execute(sa.insert(scratch).values(row))
            assert count_row_failures(connection, scratch, rules, context) == (1, (0,) * len(rules))
            for rule in rules:
                read = sorted(
                    {e.name for e in visitors.iterate(rule.predicate(scratch.c, context)) if isinstance(e, sa.Column)}
                )
                assert read, rule.id
                for column in read:
                    connection.execute(sa.delete(scratch))
                    connection.execute(sa.insert(scratch).values({**row, column: None}))
                    assert count_row_failures(connection, scratch, [rule], context) == (1, (1,)), (rule.id, column)
        transaction.rollback()
    engine.dispose()


def test_one_read_only_pass_per_table_on_a_clean_database(seeded_url):
    """Row rules share one scan per table; nothing but SELECTs is sent."""
    statements = []
    engine = create_engine(seeded_url, read_only=True)
    sa.event.listen(engine, "before_cursor_execute", lambda c, cur, sql, *rest: statements.append(sql))
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")  # the BEGIN of the transaction, issued before we count
        statements.clear()
        run_audits(connection, now=NOW)
    engine.dispose()
    query_rules = sum(1 for r in RULES if not isinstance(r, RowRule))
    assert len(statements) == len(TABLES) + query_rules
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in statements)


def test_audit_runs_read_only_in_the_callers_transaction(seeded_url):
    """run_audits neither begins, ends nor writes: it judges the caller's snapshot."""
    engine = create_engine(seeded_url, read_only=True)
    with engine.connect() as reader:
        if reader.dialect.name == "postgresql":
            reader = reader.execution_options(isolation_level="REPEATABLE READ")
        transaction = reader.begin()
        reader.execute(sa.select(sa.func.count()).select_from(results)).scalar_one()  # take the snapshot
        with planting(seeded_url) as writer:
            add_results(writer, 1, [{"accuracy": 150}])
        assert run_audits(reader, now=NOW).ok  # the bad row was committed after the snapshot
        assert reader.get_transaction() is transaction and transaction.is_active
        transaction.rollback()
        assert not run_audits(reader, now=NOW).ok  # a new transaction sees it
        # The guard is real: this engine cannot write, so run_audits above wrote nothing.
        with pytest.raises(sa.exc.DBAPIError):
            reader.execute(sa.delete(results))
    engine.dispose()


def test_rules_can_be_chosen_by_id_or_object(seeded_url):
    report = audit(seeded_url, rules=["progress.level_min", RULES_BY_ID["results.duration_min"], "progress.level_min"])
    assert [f.rule.id for f in report.findings] == ["progress.level_min", "results.duration_min"]
    assert audit(seeded_url, rules=[]).findings == ()
    with pytest.raises(UnknownRule, match="'results.nope'.*results.accuracy_range") as raised:
        audit(seeded_url, rules=["results.nope"])
    assert raised.value.exit_code == ExitCode.USAGE


def test_report_renders_to_json(seeded_url):
    with planting(seeded_url) as connection:
        add_results(connection, 1, [{"wpm": 300, "raw_wpm": 310}])
        keys = _orphan_pb_result(connection)
    report = audit(seeded_url)
    document = json.loads(json.dumps(report.to_dict()))
    assert document["schema_version"] == 1
    assert document["engine"] == sa.make_url(seeded_url).get_backend_name()
    assert (document["ok"], document["errors"], document["warnings"], document["rules"]) == (False, 1, 1, len(RULES))
    entry = next(f for f in document["findings"] if f["rule"] == "personal_bests.result_exists")
    assert entry["sample_keys"] == [list(key) for key in keys]
    assert (entry["severity"], entry["failing_rows"], entry["passed"]) == ("error", 2, False)
    assert document["audited_at"] == NOW.isoformat()


def test_the_audit_imports_neither_pandas_nor_pandera(sqlite_url):
    probe = (
        "import sys\n"
        "import checks\n"
        "from game_core.db import create_engine\n"
        f"engine = create_engine({sqlite_url!r}, read_only=True)\n"
        "with engine.connect() as connection:\n"
        "    report = checks.run_audits(connection)\n"
        "assert report.findings and report.ok\n"
        "print(sorted(m for m in ('pandas', 'pandera', 'sqlalchemy.orm') if m in sys.modules))\n"
    )
    # The project root first on the path: an editable install made before checks/ had an
    # __init__.py maps `checks` to an empty namespace package.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
