"""`simulate`: realistic, deterministic, exact to the metric formulas, and consistent caches.

Real SQLite files and real PostgreSQL databases (the `database_url` fixture runs a test on
both); small workloads so the file stays fast.
"""

from __future__ import annotations

import shutil
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from game_core import metrics
from game_core import simulate as simulate_module
from game_core.db import create_engine
from game_core.errors import InvalidInput
from game_core.schema import personal_bests, players, progress, results
from game_core.simulate import MODES, simulate

UTC = timezone.utc
ALLOWED_MODES = {(mode, param) for mode, param, _, _ in MODES}
COMPARED_COLUMNS = [c for c in results.c if c.name not in ("id", "player_id")]


def utc(value: datetime) -> datetime:
    """SQLite hands back naive UTC, PostgreSQL aware values: compare both as aware UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def fixed_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def other_sqlite_url(tmp_path, sqlite_template):
    """A second migrated, empty SQLite database."""
    path = tmp_path / "other.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def run(url: str, **options):
    engine = create_engine(url)
    try:
        return simulate(engine, **options)
    finally:
        engine.dispose()


def content(url: str) -> list[tuple]:
    """Every result with its player's name and join time, ids left out, in a stable order."""
    engine = create_engine(url, read_only=True)
    query = (
        sa.select(players.c.username, players.c.created_at, *COMPARED_COLUMNS)
        .join(players, players.c.id == results.c.player_id)
        .order_by(players.c.username, results.c.started_at)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    engine.dispose()
    return [
        tuple(utc(v) if isinstance(v, datetime) else v for v in row)
        for row in rows
    ]


def result_rows(url: str) -> list:
    engine = create_engine(url, read_only=True)
    query = sa.select(results, players.c.created_at.label("player_created_at")).join(
        players, players.c.id == results.c.player_id
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    engine.dispose()
    return rows


# ---------------------------------------------------------------- determinism and naming


def test_same_seed_on_two_empty_databases_gives_identical_results(database_url, other_sqlite_url):
    # On PostgreSQL this also compares the COPY path with the SQLite executemany path.
    now = fixed_now()
    run(database_url, players=30, tests_per_player=10, seed=5, now=now)
    run(other_sqlite_url, players=30, tests_per_player=10, seed=5, now=now, batch_size=7)
    rows = content(database_url)
    assert len(rows) == 300
    assert rows == content(other_sqlite_url)


def test_another_seed_gives_other_results(sqlite_url, other_sqlite_url):
    now = fixed_now()
    run(sqlite_url, players=30, tests_per_player=10, seed=5, now=now)
    run(other_sqlite_url, players=30, tests_per_player=10, seed=6, now=now)
    first = [row[3:] for row in content(sqlite_url)]  # the usernames differ anyway
    second = [row[3:] for row in content(other_sqlite_url)]
    assert len(first) == len(second) == 300
    assert sum(a == b for a, b in zip(first, second)) == 0


def test_a_smaller_run_is_a_prefix_of_a_larger_one(sqlite_url, other_sqlite_url):
    now = fixed_now()
    run(sqlite_url, players=10, tests_per_player=10, seed=3, now=now)
    run(other_sqlite_url, players=30, tests_per_player=10, seed=3, now=now)
    small = content(sqlite_url)
    large = [row for row in content(other_sqlite_url) if row[0] in {r[0] for r in small}]
    assert len(small) == 100 and small == large


def test_running_twice_adds_players_with_continuing_names(database_url):
    engine = create_engine(database_url)
    with engine.begin() as connection:  # other names must not move the numbering
        connection.execute(
            players.insert(),
            [
                {"username": name, "created_at": datetime(2025, 1, 1, tzinfo=UTC)}
                for name in ("sim70_500", "sim7_x12", "sim7_", "alice", "sim8_99")
            ],
        )
    first = simulate(engine, players=30, tests_per_player=10, seed=7)
    second = simulate(engine, players=30, tests_per_player=10, seed=7)
    with engine.connect() as connection:
        names = connection.execute(sa.select(players.c.username)).scalars().all()
        result_count = connection.execute(sa.select(sa.func.count()).select_from(results)).scalar_one()
    engine.dispose()

    assert (first.first_username, first.last_username) == ("sim7_1", "sim7_30")
    assert (second.first_username, second.last_username) == ("sim7_31", "sim7_60")
    assert (second.players, second.results) == (30, 300)
    simulated = [n for n in names if n.startswith("sim7_") and n[5:].isdigit()]
    assert sorted(simulated) == sorted(f"sim7_{n}" for n in range(1, 61))
    assert result_count == 600
    rows = content(database_url)
    by_player = defaultdict(list)
    for row in rows:
        by_player[row[0]].append(row[3:])
    # The second run's stream starts from its own first number: new players, not copies.
    assert by_player["sim7_31"] != by_player["sim7_1"]


def test_next_player_number_only_counts_this_seed(sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            players.insert(),
            [
                {"username": name, "created_at": datetime(2025, 1, 1, tzinfo=UTC)}
                for name in ("sim1_9", "sim1_10", "sim12_400", "sim1x400", "SIM1_77", "sim1_3a")
            ],
        )
        assert simulate_module.next_player_number(connection, 1) == 11
        assert simulate_module.next_player_number(connection, 12) == 401
        assert simulate_module.next_player_number(connection, 2) == 1
    engine.dispose()


# ---------------------------------------------------------------- every row is exact and plausible


def check_row(row, now: datetime) -> None:
    assert (row.mode, row.mode_param) in ALLOWED_MODES
    assert row.wpm == metrics.wpm(row.correct_word_chars, row.correct_spaces, row.duration_ms)
    assert row.raw_wpm == metrics.raw_wpm(
        row.correct_chars, row.incorrect_chars, row.extra_chars, row.correct_spaces, row.duration_ms
    )
    assert row.accuracy == metrics.accuracy(row.correct_keystrokes, row.incorrect_keystrokes)
    assert row.xp == metrics.result_xp(
        row.correct_word_chars, row.correct_spaces, row.correct_keystrokes, row.incorrect_keystrokes
    )
    assert row.metrics_version == metrics.METRICS_VERSION
    assert 0 <= row.accuracy <= 100
    assert 0 <= row.wpm < metrics.SUSPICIOUS_WPM
    assert row.raw_wpm >= row.wpm
    assert row.duration_ms >= metrics.MIN_DURATION_MS
    if row.mode == "time":
        assert row.duration_ms == row.mode_param * 1000
    # Counts that hang together.
    assert min(row.correct_word_chars, row.correct_spaces, row.incorrect_chars, row.extra_chars, row.missed_chars) >= 0
    assert row.correct_word_chars <= row.correct_chars
    assert row.correct_keystrokes >= row.correct_chars + row.correct_spaces
    assert row.incorrect_keystrokes >= row.incorrect_chars + row.extra_chars
    typed = row.correct_chars + row.incorrect_chars + row.missed_chars
    assert row.missed_chars <= max(3, typed * 0.1) and row.extra_chars <= max(3, typed * 0.1)
    # Timestamps: after the player existed, saved after the test ended, never in the future.
    started, created, joined = utc(row.started_at), utc(row.created_at), utc(row.player_created_at)
    assert joined < started
    assert started + timedelta(milliseconds=row.duration_ms) <= created < now


def test_every_row_satisfies_the_formulas_and_the_plausible_ranges(database_url):
    now = fixed_now()
    run(database_url, players=30, tests_per_player=10, seed=11, now=now)
    rows = result_rows(database_url)
    assert len(rows) == 300
    for row in rows:
        check_row(row, now)
    # A player's tests never overlap (which also keeps started_at unique per player).
    by_player = defaultdict(list)
    for row in rows:
        by_player[row.player_id].append(row)
    for own in by_player.values():
        own.sort(key=lambda r: utc(r.started_at))
        for earlier, later in zip(own, own[1:]):
            assert utc(earlier.created_at) < utc(later.started_at)


def test_a_heavy_players_tests_never_overlap_and_all_lie_between_joining_and_now(monkeypatch):
    # 20,000 tests of about 40 s need days of typing: dense enough that tests placed at
    # random would overlap, and players who joined a day or two ago must be moved back.
    monkeypatch.setattr(simulate_module, "SIGNUP_DAYS", (1.0, 2.0))
    anchor = simulate_module._anchor_us(fixed_now())
    block = simulate_module.Block.concatenate(list(simulate_module.generate_blocks(13, 1, 3, 20_000, anchor)))
    started, created = block.results["started_at"], block.results["created_at"]
    ended = started + block.results["duration_ms"] * 1000
    assert (block.player_created_at < started[:, 0]).all()
    assert (ended <= created).all() and (created < anchor).all()
    assert (created[:, :-1] < started[:, 1:]).all()
    assert (block.player_created_at < anchor - 5 * simulate_module.DAY_US).all()


def test_without_now_nothing_lies_in_the_future(sqlite_url):
    run(sqlite_url, players=20, tests_per_player=10, seed=12)
    now = datetime.now(UTC)
    for row in result_rows(sqlite_url):
        check_row(row, now)


def test_generated_metrics_match_game_core_metrics_on_many_rows():
    # 40,000 rows without a database: enough to meet the exact halfway cases (x.xx5)
    # where integer rounding must defer to metrics.round2.
    anchor = simulate_module._anchor_us(fixed_now())
    checked = 0
    for block in simulate_module.generate_blocks(9, 1, 2000, 20, anchor):
        r = {name: array.ravel().tolist() for name, array in block.results.items()}
        for i in range(len(r["wpm"])):
            assert r["wpm"][i] == metrics.wpm(r["correct_word_chars"][i], r["correct_spaces"][i], r["duration_ms"][i])
            assert r["raw_wpm"][i] == metrics.raw_wpm(
                r["correct_chars"][i], r["incorrect_chars"][i], r["extra_chars"][i], r["correct_spaces"][i],
                r["duration_ms"][i],
            )  # fmt: skip
            assert r["accuracy"][i] == metrics.accuracy(r["correct_keystrokes"][i], r["incorrect_keystrokes"][i])
            assert r["xp"][i] == metrics.result_xp(
                r["correct_word_chars"][i], r["correct_spaces"][i], r["correct_keystrokes"][i],
                r["incorrect_keystrokes"][i],
            )  # fmt: skip
            checked += 1
    assert checked == 40_000


def test_exact_halfway_values_follow_metrics_round2():
    # Exact ties at the third decimal where the float formula lands just below the half,
    # so metrics.round2 rounds down: 23 of 160 keys is 14.375% (stored 14.37), 117
    # characters in 11.52 s are 121.875 wpm (stored 121.87). Integer half-up alone would
    # store 14.38 and 121.88.
    right_keys, wrong_keys = np.array([[23, 31]]), np.array([[137, 1]])
    chars, zero, duration = np.array([[117, 117]]), np.zeros((1, 2), dtype=np.int64), np.array([[11_520, 11_520]])
    wpm, raw_wpm, accuracy, _ = simulate_module._metrics(
        chars, zero, chars, zero, zero, duration, right_keys, wrong_keys
    )
    assert accuracy.tolist() == [[metrics.accuracy(23, 137), metrics.accuracy(31, 1)]] == [[14.37, 96.88]]
    assert wpm.tolist() == raw_wpm.tolist() == [[metrics.wpm(117, 0, 11_520)] * 2] == [[121.87, 121.87]]


# ---------------------------------------------------------------- the caches


def test_progress_and_personal_bests_are_what_results_say(database_url):
    first_now = fixed_now() - timedelta(days=1)
    second_now = fixed_now()
    run(database_url, players=15, tests_per_player=12, seed=21, now=first_now)
    run(database_url, players=15, tests_per_player=12, seed=21, now=second_now)

    engine = create_engine(database_url, read_only=True)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(results)).all()
        progress_rows = {row.player_id: row for row in connection.execute(sa.select(progress))}
        best_rows = {
            (row.player_id, row.mode, row.mode_param): row for row in connection.execute(sa.select(personal_bests))
        }
        player_ids = connection.execute(sa.select(players.c.id)).scalars().all()
    engine.dispose()

    by_player = defaultdict(list)
    for row in rows:
        by_player[row.player_id].append(row)
    assert len(player_ids) == 30 and set(progress_rows) == set(by_player) == set(player_ids)
    for player_id, own in by_player.items():
        xp = sum(r.xp for r in own)
        cached = progress_rows[player_id]
        assert cached.xp == xp
        assert cached.level == metrics.level_for_xp(xp)
        assert cached.tests_completed == len(own) == 12
        assert cached.time_typing_ms == sum(r.duration_ms for r in own)
        assert cached.best_wpm == max(r.wpm for r in own)
    expected_bests = {}
    for row in sorted(rows, key=lambda r: (-r.wpm, utc(r.started_at), r.id)):
        expected_bests.setdefault((row.player_id, row.mode, row.mode_param), row)
    assert set(best_rows) == set(expected_bests)
    for key, best in expected_bests.items():
        assert (best_rows[key].result_id, best_rows[key].wpm, best_rows[key].accuracy) == (
            best.id,
            best.wpm,
            best.accuracy,
        )
    # The second run rebuilt its own players only: the first run's caches kept their time.
    updated = Counter(utc(row.updated_at) for row in progress_rows.values())
    assert updated == Counter({first_now: 15, second_now: 15})


def test_players_without_tests_get_no_caches(sqlite_url):
    summary = run(sqlite_url, players=5, tests_per_player=0, seed=2)
    assert (summary.players, summary.results) == (5, 0)
    engine = create_engine(sqlite_url, read_only=True)
    with engine.connect() as connection:
        counts = [
            connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (players, results, progress)
        ]
    engine.dispose()
    assert counts == [5, 0, 0]


# ---------------------------------------------------------------- distribution


def test_distribution_looks_like_real_typists(sqlite_url):
    run(sqlite_url, players=200, tests_per_player=20, seed=1)
    rows = result_rows(sqlite_url)
    assert len(rows) == 4000
    wpms = [r.wpm for r in rows]
    accuracies = [r.accuracy for r in rows]
    assert 40 <= statistics.mean(wpms) <= 65
    assert statistics.median(accuracies) >= 90
    assert sum(a >= 90 for a in accuracies) / len(accuracies) >= 0.8
    assert statistics.pstdev(wpms) >= 10  # a spread of skill, not one typist
    modes = Counter((r.mode, r.mode_param) for r in rows)
    assert set(modes) == ALLOWED_MODES
    assert {mode for mode, _ in modes.most_common(2)} == {("time", 30), ("words", 25)}
    # Spread over the last year, each player's tests over days to months.
    now = datetime.now(UTC)
    joined = sorted({utc(r.player_created_at) for r in rows})
    assert now - joined[0] > timedelta(days=300) and now - joined[-1] < timedelta(days=90)
    spans = defaultdict(list)
    for r in rows:
        spans[r.player_id].append(utc(r.started_at))
    assert statistics.median(max(s) - min(s) for s in spans.values()) > timedelta(days=14)


def test_skill_has_a_long_right_tail_but_stays_human():
    anchor = simulate_module._anchor_us(fixed_now())
    player_means = []
    top = 0.0
    for block in simulate_module.generate_blocks(4, 1, 20_000, 5, anchor):
        player_means.extend(block.results["wpm"].mean(axis=1).tolist())
        top = max(top, float(block.results["wpm"].max()))
    fast = sum(m >= 120 for m in player_means)
    assert 40 <= fast <= 300  # about 0.6% of players average 120 or more
    assert sum(m >= 150 for m in player_means) <= 60
    assert max(player_means) < 230
    assert top < metrics.SUSPICIOUS_WPM
    assert statistics.mean(player_means) == pytest.approx(52, abs=3)


# ---------------------------------------------------------------- the call itself


def test_progress_is_reported_after_each_batch(sqlite_url):
    calls = []
    summary = run(
        sqlite_url, players=30, tests_per_player=10, seed=4, batch_size=50, progress=lambda *a: calls.append(a)
    )
    assert calls == [(50 * i, 300) for i in range(1, 7)]
    assert summary.results == 300 and summary.seconds > 0
    assert summary.results_per_second == pytest.approx(300 / summary.seconds)


def test_a_player_with_more_tests_than_a_batch_is_written_whole(sqlite_url, other_sqlite_url):
    now = fixed_now()
    run(sqlite_url, players=3, tests_per_player=50, seed=8, batch_size=20, now=now)
    run(other_sqlite_url, players=3, tests_per_player=50, seed=8, now=now)
    rows = content(sqlite_url)
    assert len(rows) == 150 and rows == content(other_sqlite_url)


@pytest.mark.parametrize(
    "options",
    [
        {"players": 0},
        {"players": -3},
        {"tests_per_player": -1},
        {"batch_size": 0},
        {"players": 2.5},
        {"seed": 10**30},  # usernames longer than the column
    ],
)
def test_impossible_options_are_refused_before_anything_is_written(sqlite_url, options):
    arguments = {"players": 3, "tests_per_player": 2, "seed": 1, **options}
    engine = create_engine(sqlite_url)
    with pytest.raises(InvalidInput):
        simulate(engine, **arguments)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(players)).scalar_one() == 0
    engine.dispose()


def test_the_pooled_connection_gets_its_settings_back(sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.connect() as connection:
        before = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    simulate(engine, players=3, tests_per_player=2, seed=1)
    with engine.connect() as connection:
        after = connection.exec_driver_sql("PRAGMA cache_size").scalar()
        foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    engine.dispose()
    assert before != -simulate_module.BULK_CACHE_KIB
    assert (after, foreign_keys) == (before, 1)
