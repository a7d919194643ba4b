"""The two engines agree, row rule by row rule, and the Pandera engine stays bounded.

Agreement is proven where it is hardest: on a copy of the schema without NOT NULL, with
NULLs in every column, zero and negative durations, values at and just past every bound
and every tolerance, and numbers near the int4 limit; then on random rows (Hypothesis).
Valid data recorded through the game's store never fails a rule on either engine.
"""

from __future__ import annotations

import math
import tracemalloc
from contextlib import contextmanager
from datetime import datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checks
from checks import pandera_engine
from checks.chunks import DEFAULT_CHUNK_SIZE, READ_AMPLIFICATION, check_chunk_size, estimated_peak_bytes
from game_core import metrics
from game_core.db import create_engine
from game_core.errors import ExitCode, InvalidInput
from game_core.schema import personal_bests, players, results
from game_core.store import Store, TestOutcome
import test_checks_support
from test_checks_support import GAME_TABLES, NOW, add_results, audit, audit_on, counts, planting, result_row, seed

readers_closed = test_checks_support.readers_closed  # autouse: each test's engines closed
ROW_RULES = [rule for rule in checks.RULES if rule.kind == "row"]
# derandomize: the same examples on every run, so a failure here is a finding, never luck.
# 20 examples per test (was 30): the four Hypothesis tests were three quarters of this
# file's CPU, nearly all of it the Pandera engine validating chunks of 1 and 3 rows; the
# strategies are as broad as before, and the nulls-and-bounds test above still pins
# every bound and tolerance by hand.
HYPOTHESIS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---------------------------------------------------------------- a schema copy without NOT NULL


def _nullable_metadata() -> sa.MetaData:
    """The game tables with their types and primary keys, every other column nullable,
    no foreign keys, no unique or CHECK constraints."""
    copy = sa.MetaData()
    for name, table in GAME_TABLES.items():
        sa.Table(
            name,
            copy,
            *(
                sa.Column(column.name, column.type, primary_key=column.primary_key, nullable=not column.primary_key,
                          autoincrement=False)
                for column in table.columns
            ),
        )
    return copy


def _nullable_database(kind: str, request, tmp_path) -> str:
    """An empty SQLite file or PostgreSQL database holding the nullable copy of the schema."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'nullable.db'}"
        engine = create_engine(url, create_missing=True)
    else:
        url = request.getfixturevalue("pg_empty_url")
        engine = create_engine(url)
    with engine.begin() as connection:
        _nullable_metadata().create_all(connection)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def nullable_url(request, tmp_path):
    return _nullable_database(request.param, request, tmp_path)


def _fill(target: str | sa.Engine, rows: dict[str, list[dict]]) -> None:
    """Replace the tables' rows with `rows`, on a URL or on an engine the caller keeps."""
    engine = create_engine(target) if isinstance(target, str) else target
    with engine.begin() as connection:
        for name in reversed(GAME_TABLES):
            connection.execute(sa.delete(GAME_TABLES[name]))
        for name, table_rows in rows.items():
            if table_rows:
                connection.execute(sa.insert(GAME_TABLES[name]), table_rows)
    if engine is not target:
        engine.dispose()


@contextmanager
def audits_on_one_engine(url: str):
    """`audit(url, **options)` of test_checks_support, each in its own read transaction
    (REPEATABLE READ on PostgreSQL), on one read-only engine for all of them: the
    Hypothesis tests audit 60 times, and building an engine per audit (it checks the
    database is reachable) was 8% of such a test on PostgreSQL."""
    engine = create_engine(url, read_only=True)
    try:
        yield lambda **options: audit_on(engine, **options)
    finally:
        engine.dispose()


def _results_variants() -> list[dict]:
    """One valid result, then variants: NULL in each column, zeros, bounds, tolerances."""
    base = result_row(1, NOW - timedelta(days=1))
    variants: list[dict] = [{}]
    variants += [{column: None} for column in base if column != "id"]
    exact = result_row(1, NOW - timedelta(days=1))  # 49.6 wpm, 55.2 raw: exact in 2 decimals
    variants += [
        {"duration_ms": 0}, {"duration_ms": -5}, {"duration_ms": 999}, {"duration_ms": 1000},
        {"accuracy": 0}, {"accuracy": 100}, {"accuracy": 100.01}, {"accuracy": -0.01},
        # a tolerance of 0.01 includes 0.01 (55.2 - 55.19 is 0.0100000000000051 in doubles)
        {"wpm": round(exact["wpm"] + 0.01, 2)}, {"wpm": round(exact["wpm"] - 0.01, 2)},
        {"wpm": round(exact["wpm"] + 0.02, 2)}, {"wpm": round(exact["wpm"] - 0.011, 3)},
        {"raw_wpm": round(exact["raw_wpm"] - 0.01, 2)}, {"raw_wpm": round(exact["raw_wpm"] + 0.01, 2)},
        {"raw_wpm": round(exact["raw_wpm"] + 0.02, 2)},
        {"raw_wpm": exact["wpm"]}, {"raw_wpm": round(exact["wpm"] - 0.01, 2)},
        {"accuracy": round(base["accuracy"] + 0.01, 2)}, {"accuracy": round(base["accuracy"] - 0.01, 2)},
        {"accuracy": round(base["accuracy"] + 0.02, 2)},
        {"wpm": 250, "raw_wpm": 260}, {"wpm": 250.01, "raw_wpm": 260},
        {"wpm": 350, "raw_wpm": 360, "duration_ms": 15_000}, {"wpm": 350.01, "raw_wpm": 360, "duration_ms": 15_000},
        {"wpm": 400, "raw_wpm": 410, "duration_ms": 14_999}, {"wpm": 400, "raw_wpm": None, "duration_ms": 14_999},
        {"correct_keystrokes": 0, "incorrect_keystrokes": 0, "accuracy": 100, "xp": 0},
        {"correct_keystrokes": 0, "incorrect_keystrokes": 0, "accuracy": 99.99, "xp": 0},
        {"correct_keystrokes": 0, "incorrect_keystrokes": 0, "accuracy": 100, "xp": 1},
        {"correct_keystrokes": 5, "incorrect_keystrokes": -5},
        {"xp": base["xp"] + 1}, {"xp": base["xp"] - 1}, {"xp": -1},
        # 124 * 145 / 145 divides exactly: xp 124 is right, 123 and 125 are not
        {"correct_keystrokes": 145, "incorrect_keystrokes": 0, "xp": 124},
        {"correct_keystrokes": 145, "incorrect_keystrokes": 0, "xp": 123},
        {"correct_keystrokes": 145, "incorrect_keystrokes": 0, "xp": 125},
        {"missed_chars": -1}, {"correct_spaces": -24, "correct_word_chars": 148},
        {"correct_word_chars": 2**31 - 1, "correct_spaces": 2**31 - 1, "correct_keystrokes": 2**31 - 1,
         "incorrect_keystrokes": 2**31 - 1, "xp": 2**31 - 1, "duration_ms": 2**31 - 1},
        {"mode": "zen"}, {"mode": ""}, {"mode": "Words"}, {"mode_param": 0}, {"mode_param": -1},
        {"metrics_version": 0}, {"metrics_version": 2},
        {"started_at": NOW}, {"started_at": NOW + timedelta(microseconds=1)},
        {"created_at": NOW}, {"created_at": NOW + timedelta(microseconds=1)},
    ]
    return [{**base, "id": index + 1, **changes} for index, changes in enumerate(variants)]


def _progress_variants() -> list[dict]:
    base = {"xp": 5000, "level": metrics.level_for_xp(5000), "tests_completed": 3, "time_typing_ms": 90_000,
            "best_wpm": 49.6, "updated_at": NOW - timedelta(days=1)}
    variants = [{}] + [{column: None} for column in base] + [
        {"xp": -1}, {"level": 0}, {"level": base["level"] + 1}, {"level": 2**31 - 1}, {"xp": 2**62},
        {"xp": 2**62, "level": metrics.level_for_xp(2**62)},  # right, though 2 * xp leaves int64
        {"xp": 0, "level": 1}, {"xp": 74, "level": 1}, {"xp": 75, "level": 1}, {"xp": 75, "level": 2},
        {"tests_completed": 0}, {"time_typing_ms": -1}, {"best_wpm": -0.01}, {"best_wpm": 0},
        {"updated_at": NOW}, {"updated_at": NOW + timedelta(microseconds=1)},
    ]
    return [{**base, "player_id": index + 1, **changes} for index, changes in enumerate(variants)]


def _bests_variants() -> list[dict]:
    base = {"mode": "words", "mode_param": 25, "result_id": 1, "wpm": 49.6, "accuracy": 96.55}
    variants = [{}] + [{column: None} for column in ("result_id", "wpm", "accuracy")] + [
        {"mode": "zen"}, {"mode": "time", "mode_param": 0}, {"mode": "time", "mode_param": -15},
        {"mode": "words", "mode_param": 10, "wpm": -1}, {"mode": "words", "mode_param": 50, "accuracy": 100.01},
        {"mode": "words", "mode_param": 100, "accuracy": 100}, {"mode": "time", "mode_param": 60, "accuracy": -0.01},
    ]
    return [{**base, "player_id": index + 1, **changes} for index, changes in enumerate(variants)]


def _players_variants() -> list[dict]:
    names = ["alice", None, "", "bad name", "é", "ok.name-1_", "x" * 32]
    rows = [{"id": i + 1, "username": name, "created_at": NOW - timedelta(days=1)} for i, name in enumerate(names)]
    rows += [
        {"id": 20, "username": "late", "created_at": NOW + timedelta(microseconds=1)},
        {"id": 21, "username": "now", "created_at": NOW},
        {"id": 22, "username": "unknown", "created_at": None},
        {"id": 23, "username": "far", "created_at": NOW.replace(year=3000)},
    ]
    return rows


def test_both_engines_count_every_row_rule_identically_on_nulls_and_bounds(nullable_url):
    _fill(
        nullable_url,
        {
            "players": _players_variants(),
            "results": _results_variants(),
            "progress": _progress_variants(),
            "personal_bests": _bests_variants(),
        },
    )
    if nullable_url.startswith("postgresql"):
        # PostgreSQL timestamps can be infinite: after every instant, or before.
        engine = create_engine(nullable_url)
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE players SET created_at = 'infinity' WHERE id = 1")
            connection.exec_driver_sql("UPDATE players SET created_at = '-infinity' WHERE id = 21")
            connection.exec_driver_sql("UPDATE results SET created_at = '-infinity', started_at = 'infinity' WHERE id = 1")
        engine.dispose()
    with audits_on_one_engine(nullable_url) as audit_of_url:
        sql = audit_of_url(engine="sql")
        for chunk_size in (DEFAULT_CHUNK_SIZE, 7):
            pandera = audit_of_url(engine="pandera", chunk_size=chunk_size)
            assert counts(pandera) == counts(sql), chunk_size
            assert [f.samples for f in pandera.findings] == [f.samples for f in sql.findings]
    # Not vacuous: every row rule fails somewhere here, and not everywhere.
    for rule in ROW_RULES:
        finding = sql.finding(rule.id)
        assert 0 < finding.failing_rows < finding.checked_rows, rule.id
    # Spot checks of the semantics both engines share.
    assert sql.finding("results.wpm_suspicious").failing_rows == 6  # 250.01, 350, 350.01, 400, 400, 2^31 counts
    assert sql.finding("results.accuracy_range").failing_rows == 3  # NULL, 100.01, -0.01
    assert sql.finding("players.username_valid").failing_rows == 4  # NULL, '', 'bad name', 'é'
    # The schema copy allows NULL: that is drift, reported and not fatal.
    assert sql.finding("schema.results").failing_rows == 18 and not sql.skipped


@pytest.mark.parametrize("rule", ROW_RULES, ids=lambda rule: rule.id)
def test_a_null_in_any_column_a_rule_reads_fails_it_on_both_engines(tmp_path, rule):
    """The base row passes every rule; the same row with one read column NULL fails."""
    url = f"sqlite:///{tmp_path / 'nulls.db'}"
    engine = create_engine(url, create_missing=True)
    with engine.begin() as connection:
        _nullable_metadata().create_all(connection)
    engine.dispose()
    table = rule.table
    base = {
        "players": _players_variants()[0],
        "results": _results_variants()[0],
        "progress": _progress_variants()[0],
        "personal_bests": _bests_variants()[0],
    }[table]
    key = checks.rules.TABLE_KEYS[table]
    # A primary-key column is never NULL (personal_bests' mode and mode_param): those
    # rules only show the valid row passing.
    nullable = [column for column in rule.columns if column not in key]
    rows = [base] + [
        {**base, **{k: base[k] + 100 + i for k in key if isinstance(base[k], int)}, column: None}
        for i, column in enumerate(nullable)
    ]
    _fill(url, {table: rows})
    for engine_name in ("sql", "pandera"):
        finding = audit(url, engine=engine_name, rules=[rule]).finding(rule.id)
        assert (finding.failing_rows, finding.checked_rows) == (len(nullable), len(rows)), engine_name
        expected = [row[key[0]] if len(key) == 1 else tuple(row[k] for k in key) for row in rows[1:]]
        assert finding.sample_keys == tuple(expected[:5])


# ---------------------------------------------------------------- random rows


INT4 = st.one_of(
    st.sampled_from([0, 1, -1, 5, 24, 100, 1000, 999, 15_000, 14_999, 2**31 - 1, -(2**31)]),
    st.integers(min_value=-5, max_value=2_000),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
COUNT = st.one_of(st.none(), st.integers(min_value=0, max_value=300), INT4)
TWO_DECIMALS = st.one_of(
    st.none(),
    st.sampled_from([0.0, 100.0, 250.0, 350.0, 49.6, 55.2, 96.55]),
    st.integers(min_value=-500, max_value=40_000).map(lambda cents: cents / 100),
    st.integers(min_value=-9_999_999, max_value=9_999_999).map(lambda cents: cents / 100),
)
STAMP = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=3).map(lambda us: NOW + timedelta(microseconds=us)),
    st.integers(min_value=-10**6, max_value=10**6).map(lambda s: NOW + timedelta(seconds=s)),
)


@st.composite
def random_results(draw):
    rows = []
    for index in range(draw(st.integers(min_value=1, max_value=12))):
        row = {"id": index + 1, "player_id": 1, "mode": draw(st.sampled_from(["words", "time", "zen", None])),
               "mode_param": draw(st.one_of(st.none(), INT4)), "metrics_version": draw(st.sampled_from([0, 1, 2, None]))}
        for column in ("correct_word_chars", "correct_spaces", "correct_chars", "incorrect_chars", "extra_chars",
                       "missed_chars", "correct_keystrokes", "incorrect_keystrokes", "xp", "duration_ms"):
            row[column] = draw(COUNT)
        chars = (row["correct_word_chars"], row["correct_spaces"], row["correct_chars"])
        if draw(st.booleans()) and None not in chars and max(map(abs, chars)) <= 10_000:
            # Often make the derived values right, so the recompute rules see passing rows too.
            derived = result_row(1, NOW, derive={k: abs(row[k]) for k in ("correct_word_chars", "correct_spaces", "correct_chars")})
            row.update({k: derived[k] for k in ("duration_ms", "wpm", "raw_wpm", "accuracy", "xp",
                                                "correct_keystrokes", "incorrect_keystrokes", "incorrect_chars",
                                                "extra_chars")})
            row.update({k: abs(row[k]) for k in ("correct_word_chars", "correct_spaces", "correct_chars")})
        for column in ("wpm", "raw_wpm", "accuracy"):
            if column not in row or draw(st.integers(0, 3)) == 0:
                row[column] = draw(TWO_DECIMALS)
        row["started_at"] = draw(STAMP)
        row["created_at"] = draw(STAMP)
        rows.append(row)
    return rows


@st.composite
def random_progress(draw):
    rows = []
    for index in range(draw(st.integers(min_value=1, max_value=6))):
        xp = draw(st.one_of(st.none(), st.integers(min_value=-1, max_value=10**7), st.integers(min_value=0, max_value=2**62)))
        level = draw(st.one_of(st.none(), st.just(metrics.level_for_xp(xp) if xp is not None and xp >= 0 else 1), INT4))
        rows.append({"player_id": index + 1, "xp": xp, "level": level, "tests_completed": draw(COUNT),
                     "time_typing_ms": draw(COUNT), "best_wpm": draw(TWO_DECIMALS), "updated_at": draw(STAMP)})
    return rows


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_both_engines_agree_on_random_rows(database, request, tmp_path):
    url = _nullable_database(database, request, tmp_path)
    row_rules = [rule for rule in ROW_RULES if rule.table in ("results", "progress")]

    @HYPOTHESIS
    @given(result_rows=random_results(), progress_rows=random_progress(), chunk_size=st.sampled_from([1, 3, 1000]))
    def agree(result_rows, progress_rows, chunk_size):
        _fill(writer, {"results": result_rows, "progress": progress_rows})
        sql = audit_of_url(engine="sql", rules=row_rules)
        pandera = audit_of_url(engine="pandera", rules=row_rules, chunk_size=chunk_size)
        assert counts(pandera) == counts(sql)
        assert [f.samples for f in pandera.findings] == [f.samples for f in sql.findings]

    writer = create_engine(url)  # one for every example, as the audits share theirs
    try:
        with audits_on_one_engine(url) as audit_of_url:
            agree()
    finally:
        writer.dispose()


# ---------------------------------------------------------------- valid data never fails


def _valid_outcome(draw, started_at: datetime) -> TestOutcome:
    mode = draw(st.sampled_from(["words", "time"]))
    duration = draw(st.one_of(st.sampled_from([1000, 14_999, 15_000, 30_000, 60_000]), st.integers(1000, 180_000)))
    # Keep a test of 15 s or more at or under 350 wpm (the store refuses more).
    cap = 350 * 5 * duration // 60_000 if duration >= 15_000 else 1500
    typed = draw(st.integers(0, cap))
    spaces = draw(st.integers(0, typed))
    word_chars = typed - spaces
    correct = word_chars + draw(st.integers(0, 50))
    right = draw(st.integers(0, 2000))
    return TestOutcome(
        mode=mode,
        mode_param=draw(st.sampled_from([10, 25, 50] if mode == "words" else [15, 30, 60])),
        started_at=started_at,
        duration_ms=duration,
        correct_word_chars=word_chars,
        correct_spaces=spaces,
        correct_chars=correct,
        incorrect_chars=draw(st.integers(0, 50)),
        extra_chars=draw(st.integers(0, 20)),
        missed_chars=draw(st.integers(0, 20)),
        correct_keystrokes=right,
        incorrect_keystrokes=draw(st.integers(0, 300)),
    )


@st.composite
def valid_histories(draw):
    """Per player, a few valid tests at distinct times after the player was created."""
    histories = []
    for _player in range(draw(st.integers(1, 3))):
        offsets = draw(st.lists(st.integers(1, 10**7), min_size=1, max_size=6, unique=True))
        histories.append([_valid_outcome(draw, CREATED + timedelta(seconds=s, microseconds=s % 997)) for s in offsets])
    return histories


CREATED = NOW - timedelta(days=200)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_valid_data_recorded_through_the_store_never_fails(database_url):
    engine = create_engine(database_url)

    @HYPOTHESIS
    @given(histories=valid_histories())
    def never_fails(histories):
        with engine.begin() as connection:
            connection.execute(sa.delete(players))  # cascades to the rest
        clock = Clock(CREATED)
        store = Store(engine, clock=clock)
        for index, history in enumerate(histories):
            store.create_player(f"player{index}")
        clock.now = NOW - timedelta(days=1)
        recorded = [store.record_result(f"player{index}", outcome) for index, history in enumerate(histories)
                    for outcome in history]
        suspicious = sum(1 for r in recorded if r.result.wpm > metrics.SUSPICIOUS_WPM)
        for engine_name in ("sql", "pandera"):
            report = audit_of_url(engine=engine_name)
            assert report.ok and not report.skipped, [f.to_dict() for f in report.errors]
            assert {f.rule.id: f.failing_rows for f in report.violations} == (
                {"results.wpm_suspicious": suspicious} if suspicious else {}
            )
            assert report.finding("results.xp_recomputed").checked_rows == len(recorded)

    try:
        with audits_on_one_engine(database_url) as audit_of_url:
            never_fails()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- bounded chunks


def test_chunks_are_read_by_keyset_pagination_and_agree_at_any_size(sqlite_url, monkeypatch):
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        seed(connection)
    engine.dispose()
    with planting(sqlite_url) as connection:
        add_results(connection, 1, [{"accuracy": 150}, {}, {"wpm": 0}, {}, {"accuracy": -3}])
        add_results(connection, 2, [{"mode": "time", "mode_param": 15}, {"mode": "time", "mode_param": 120}])
        connection.execute(sa.update(personal_bests).values(accuracy=101))
    statements = []
    original = pandera_engine._driver_statement

    def recording(connection, statement):
        sql, params = original(connection, statement)
        statements.append(sql)
        return sql, params

    with audits_on_one_engine(sqlite_url) as audit_of_url:
        reference = audit_of_url(engine="sql")
        monkeypatch.setattr(pandera_engine, "_driver_statement", recording)
        for chunk_size in (1, 2, 3, 5, 12, 13, 1000):
            statements.clear()
            report = audit_of_url(engine="pandera", chunk_size=chunk_size)
            assert counts(report) == counts(reference), chunk_size
            assert all("LIMIT" in sql and "OFFSET" not in sql.upper() for sql in statements)
            sizes = {"players": 2, "results": 12, "progress": 2, "personal_bests": 6}
            # ceil(n / size) chunks, plus the empty read that ends a run of full chunks
            expected = sum(math.ceil(n / chunk_size) + (n % chunk_size == 0) for n in sizes.values())
            assert len(statements) == expected, chunk_size
        # personal_bests pages on its composite key
        statements.clear()
        audit_of_url(engine="pandera", chunk_size=2, tables=["personal_bests"])
    assert any("(personal_bests.player_id, personal_bests.mode, personal_bests.mode_param) >" in sql for sql in statements)
    assert reference.finding("personal_bests.accuracy_range").failing_rows == 6


def test_chunk_frames_have_the_dtypes_the_contracts_pin(seeded_pg_or_sqlite):
    url = seeded_pg_or_sqlite
    engine = create_engine(url, read_only=True)
    with engine.connect() as connection:
        for name, table in GAME_TABLES.items():
            dtypes = pandera_engine.pinned_dtypes(name)
            frame = next(pandera_engine.read_chunks(
                connection, table, checks.rules.TABLE_KEYS[name], list(dtypes), dtypes, chunk_size=100
            ))
            assert list(frame.columns) == list(dtypes)
            for column, dtype in frame.dtypes.items():
                assert dtype == pd.api.types.pandas_dtype(dtypes[column]), (name, column, dtype)
            assert len(frame) > 0
    engine.dispose()
    assert dtypes["wpm"] == "float64" and pandera_engine.pinned_dtypes("results")["started_at"] == "datetime64[us, UTC]"
    assert pandera_engine.pinned_dtypes("players")["username"].startswith("string")


@pytest.fixture
def seeded_pg_or_sqlite(database_url):
    engine = create_engine(database_url)
    with engine.begin() as connection:
        seed(connection)
    engine.dispose()
    return database_url


def test_check_chunk_size_refuses_a_chunk_that_would_not_fit_saying_how_much_it_needs(seeded_pg_or_sqlite):
    check_chunk_size(DEFAULT_CHUNK_SIZE)  # the default fits the 300 MB limit
    with pytest.raises(InvalidInput, match=r"10,000,000 rows would need about [\d,]+ MB.*limit is 300 MB") as raised:
        check_chunk_size(10_000_000)
    assert raised.value.exit_code == ExitCode.USAGE
    needed = round(estimated_peak_bytes(10_000_000) / 2**20)
    assert f"{needed:,} MB" in str(raised.value) and needed > 300
    with pytest.raises(InvalidInput, match="limit is 20 MB: use at most"):
        check_chunk_size(DEFAULT_CHUNK_SIZE, limit_mb=20)
    for bad in (0, -1, 2.5, True, "1000"):
        with pytest.raises(InvalidInput):
            check_chunk_size(bad)
    # run_audits refuses before it reads anything; the SQL engine does not read in chunks.
    with pytest.raises(InvalidInput, match="MB"):
        audit(seeded_pg_or_sqlite, engine="pandera", chunk_size=10_000_000)
    assert audit(seeded_pg_or_sqlite, engine="sql", chunk_size=10_000_000).ok


def test_chunk_size_estimate_covers_the_measured_peak(tmp_path):
    """Read and validate one 40,000-row results chunk under tracemalloc: the peak stays
    within what check_chunk_size estimates for that chunk size."""
    from game_core.simulate import simulate

    url = f"sqlite:///{tmp_path / 'sim.db'}"
    engine = create_engine(url, create_missing=True)
    from game_core.schema_state import upgrade_to_head

    with engine.begin() as connection:
        upgrade_to_head(connection)
    simulate(engine, players=400, tests_per_player=100, seed=3, now=NOW)
    engine.dispose()
    chunk = 40_000
    rules = [rule for rule in ROW_RULES if rule.table == "results"]
    reader = create_engine(url, read_only=True)
    with reader.connect() as connection:
        pandera_engine.run_row_rules(  # warm up imports and caches outside the measurement
            connection, "results", rules, checks.AuditContext.at(NOW), source=results, key=("id",),
            chunk_size=100, sample_limit=5, after=39_800,
        )
        tracemalloc.start()
        outcomes = pandera_engine.run_row_rules(
            connection, "results", rules, checks.AuditContext.at(NOW), source=results, key=("id",),
            chunk_size=chunk, sample_limit=5,
        )
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    reader.dispose()
    assert outcomes[rules[0].id].checked == chunk
    assert peak < estimated_peak_bytes(chunk), (peak, estimated_peak_bytes(chunk))
    # and the estimate is not absurdly loose either
    assert estimated_peak_bytes(chunk) < 4 * READ_AMPLIFICATION * peak
