"""The store API on a real SQLite file and a real PostgreSQL database.

Every validation rule is shown to reject a result that breaks it and to write nothing;
recording, reading, ties and concurrency are checked against numbers worked out by hand
or against a rebuild from `results`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from game_core import metrics
from game_core.db import create_engine
from game_core.errors import ExitCode, InvalidInput, InvalidResult, PlayerExists, PlayerNotFound
from game_core.rebuild import compute_expected_progress, rebuild_derived
from game_core.schema import personal_bests, players, progress, results
from game_core.store import (
    DerivedMetrics,
    PersonalBest,
    Store,
    TestOutcome,
    derive_metrics,
    validate_outcome,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
LATER = T0 + timedelta(days=30)  # the store's "now" while results are recorded


class Clock:
    """A clock the test moves by hand, so timestamps are exact and nothing sleeps."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def store(engine, clock):
    return Store(engine, clock=clock)


@pytest.fixture
def alice(store, clock):
    """A player created at T0, with the clock then moved on to LATER."""
    player = store.create_player("alice")
    clock.now = LATER
    return player


def outcome(**changes) -> TestOutcome:
    """A plausible 30-second words test an hour after T0; `changes` override fields."""
    base = TestOutcome(
        mode="words",
        mode_param=25,
        started_at=T0 + timedelta(hours=1),
        duration_ms=30_000,
        correct_word_chars=100,
        correct_spaces=24,
        correct_chars=105,
        incorrect_chars=3,
        extra_chars=1,
        missed_chars=0,
        correct_keystrokes=130,
        incorrect_keystrokes=5,
    )
    return replace(base, **changes)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def snapshot(engine) -> dict[str, list[tuple]]:
    """Every row of the game tables, to prove a failed call wrote nothing."""
    tables = {"players": players, "results": results, "progress": progress, "personal_bests": personal_bests}
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns))]
            for name, table in tables.items()
        }


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0), value


# ---------------------------------------------------------------- players


def test_create_player_returns_it_with_an_aware_utc_creation_time(store, clock):
    player = store.create_player("alice_1.x-y")
    assert (player.username, player.created_at) == ("alice_1.x-y", T0)
    fetched = store.get_player("alice_1.x-y")
    assert fetched == player
    assert_utc(fetched.created_at)


def test_a_taken_username_is_player_exists_with_exit_code_2(store, engine):
    store.create_player("alice")
    before = snapshot(engine)
    with pytest.raises(PlayerExists) as caught:
        store.create_player("alice")
    assert caught.value.exit_code == ExitCode.USAGE == 2
    assert str(caught.value) == "player 'alice' already exists; choose another username"
    assert snapshot(engine) == before


@pytest.mark.parametrize("username", ["", "a" * 33, "two words", "émile", "alice\n", "semi;colon", None])
def test_an_invalid_username_is_refused_and_not_stored(store, engine, username):
    with pytest.raises(InvalidInput, match="invalid username") as caught:
        store.create_player(username)
    assert not isinstance(caught.value, PlayerExists)
    assert snapshot(engine)["players"] == []


def test_the_longest_allowed_username_is_accepted(store):
    assert store.create_player("a" * 32).username == "a" * 32


def test_get_or_create_player_creates_once(store, engine):
    first = store.get_or_create_player("bob")
    second = store.get_or_create_player("bob")
    assert first == second
    assert len(snapshot(engine)["players"]) == 1


def test_an_unknown_player_is_player_not_found_everywhere(store):
    calls = [
        lambda: store.get_player("nobody"),
        lambda: store.record_result("nobody", outcome()),
        lambda: store.progress("nobody"),
        lambda: store.history("nobody"),
        lambda: store.bests("nobody"),
    ]
    for call in calls:
        with pytest.raises(PlayerNotFound, match="no player named 'nobody'"):
            call()


# ---------------------------------------------------------------- recording


def test_derive_metrics_uses_the_metric_formulas():
    # 124 chars of correct words in 30 s = 49.6 wpm; 133 typed = 53.2; 130/135 keystrokes.
    assert derive_metrics(outcome()) == DerivedMetrics(wpm=49.6, raw_wpm=53.2, accuracy=96.3, xp=119)


def test_record_result_stores_the_result_and_starts_progress(store, engine, alice):
    recorded = store.record_result("alice", outcome())
    entry = recorded.result
    assert (entry.mode, entry.mode_param, entry.started_at, entry.duration_ms) == ("words", 25, at(1), 30_000)
    assert (entry.wpm, entry.raw_wpm, entry.accuracy, entry.xp) == (49.6, 53.2, 96.3, 119)
    assert recorded.progress.xp == 119
    assert recorded.progress.level == 2  # 119 >= 100, the first boundary
    assert recorded.progress.tests_completed == 1
    assert recorded.progress.time_typing_ms == 30_000
    assert recorded.progress.best_wpm == 49.6
    assert recorded.progress.updated_at == LATER
    assert (recorded.new_personal_best, recorded.previous_best_wpm) == (True, None)
    assert store.progress("alice") == recorded.progress
    with engine.connect() as connection:
        row = connection.execute(sa.select(results)).one()
    assert row.metrics_version == metrics.METRICS_VERSION
    assert row.player_id == alice.id
    assert (row.correct_chars, row.missed_chars, row.incorrect_keystrokes) == (105, 0, 5)
    assert row.created_at.replace(tzinfo=timezone.utc) == LATER


def test_progress_accumulates_and_the_level_follows_the_total(store, alice):
    # 12 chars at 10/12 keystrokes: 12 * 10 // 12 = 10 xp, level 1.
    small = dict(correct_word_chars=10, correct_spaces=2, correct_chars=10, incorrect_chars=0, extra_chars=0)
    first = store.record_result("alice", outcome(started_at=at(1), correct_keystrokes=10, incorrect_keystrokes=2, **small))
    assert (first.progress.xp, first.progress.level) == (10, 1)
    # 124 * 130 // 135 = 119 more: 129 in all, past the level 2 boundary at 100.
    second = store.record_result("alice", outcome(started_at=at(2), duration_ms=20_000))
    assert second.progress.xp == 129
    assert second.progress.level == 2 == metrics.level_for_xp(129)
    assert second.progress.tests_completed == 2
    assert second.progress.time_typing_ms == 30_000 + 20_000
    assert second.progress.best_wpm == 74.4  # 124 chars in 20 s
    assert store.progress("alice") == second.progress


def test_progress_is_none_before_the_first_result(store, alice):
    assert store.progress("alice") is None
    assert store.history("alice") == []
    assert store.bests("alice") == []


def test_personal_best_is_replaced_only_by_a_faster_result(store, alice):
    first = store.record_result("alice", outcome(started_at=at(1)))  # 49.6
    faster = store.record_result("alice", outcome(started_at=at(2), duration_ms=20_000))  # 74.4
    slower = store.record_result("alice", outcome(started_at=at(3), duration_ms=60_000))  # 24.8
    assert (faster.new_personal_best, faster.previous_best_wpm) == (True, 49.6)
    assert (slower.new_personal_best, slower.previous_best_wpm) == (False, 74.4)
    assert slower.progress.best_wpm == 74.4
    assert store.bests("alice") == [
        PersonalBest(mode="words", mode_param=25, result_id=faster.result.id, wpm=74.4, accuracy=96.3)
    ]
    assert first.result.id != faster.result.id


def test_an_equal_wpm_keeps_the_earlier_result_as_the_best(store, alice):
    first = store.record_result("alice", outcome(started_at=at(1)))
    tie = store.record_result("alice", outcome(started_at=at(2), correct_keystrokes=100, incorrect_keystrokes=35))
    assert tie.result.wpm == first.result.wpm and tie.result.accuracy != first.result.accuracy
    assert (tie.new_personal_best, tie.previous_best_wpm) == (False, 49.6)
    assert [b.result_id for b in store.bests("alice")] == [first.result.id]


def test_an_equal_wpm_typed_earlier_but_saved_later_becomes_the_best(store, alice):
    # The order rebuild uses (wpm DESC, started_at ASC): a result that arrives late but
    # was typed first wins a tie, or the cache would disagree with a rebuild.
    later = store.record_result("alice", outcome(started_at=at(5)))
    earlier = store.record_result("alice", outcome(started_at=at(1), correct_keystrokes=120, incorrect_keystrokes=15))
    assert earlier.result.wpm == later.result.wpm
    assert earlier.new_personal_best is False  # no faster: not announced as a new best
    assert [(b.result_id, b.accuracy) for b in store.bests("alice")] == [(earlier.result.id, 88.89)]


def test_started_at_in_another_offset_is_stored_as_the_same_instant_in_utc(store, alice):
    plus_two = timezone(timedelta(hours=2))
    recorded = store.record_result("alice", outcome(started_at=at(3).astimezone(plus_two)))
    assert recorded.result.started_at == at(3)
    assert_utc(recorded.result.started_at)
    [entry] = store.history("alice")
    assert entry.started_at == at(3)
    assert_utc(entry.started_at)


def test_a_duplicate_result_is_refused_and_writes_nothing(store, engine, alice):
    store.record_result("alice", outcome(started_at=at(1)))
    before = snapshot(engine)
    # The same instant in another offset is the same key.
    same_instant = at(1).astimezone(timezone(timedelta(hours=-5)))
    for started_at in (at(1), same_instant):
        with pytest.raises(InvalidResult) as caught:
            store.record_result("alice", outcome(started_at=started_at, duration_ms=45_000))
        assert str(caught.value) == (
            "a result for this player at 2026-03-01T10:00:00+00:00 is already recorded; each test is saved once"
        )
    assert snapshot(engine) == before


def test_the_same_start_time_for_two_players_is_not_a_duplicate(store, clock, alice):
    clock.now = T0
    store.create_player("bob")
    clock.now = LATER
    store.record_result("alice", outcome(started_at=at(1)))
    store.record_result("bob", outcome(started_at=at(1)))
    assert len(store.history("bob")) == 1


def test_a_failure_after_the_insert_leaves_nothing_partial(store, engine, alice, monkeypatch):
    store.record_result("alice", outcome(started_at=at(1)))
    before = snapshot(engine)

    def broken(*args, **kwargs):
        raise RuntimeError("planted failure after the result and progress were written")

    # The personal best is the last step: the result insert and the progress upsert ran.
    monkeypatch.setattr(Store, "_update_personal_best", staticmethod(broken))
    with pytest.raises(RuntimeError, match="planted"):
        store.record_result("alice", outcome(started_at=at(2), duration_ms=20_000))
    assert snapshot(engine) == before


# ---------------------------------------------------------------- validation


def _beyond_impossible() -> TestOutcome:
    # 438 chars in 15 s: 438 / 5 / 0.25 = 350.4 wpm.
    return outcome(duration_ms=15_000, correct_word_chars=400, correct_spaces=38, correct_chars=400)


INVALID = {
    "unknown mode": (lambda: outcome(mode="zen"), "mode is 'zen'; allowed: words or time"),
    "zero mode_param": (lambda: outcome(mode_param=0), "mode_param is 0; it must be a positive word count"),
    "negative seconds": (
        lambda: outcome(mode="time", mode_param=-15),
        "mode_param is -15; it must be a positive number of seconds",
    ),
    **{
        f"negative {name}": (lambda name=name: outcome(**{name: -1}), f"{name} is -1; counts cannot be negative")
        for name in (
            "correct_word_chars",
            "correct_spaces",
            "correct_chars",
            "incorrect_chars",
            "extra_chars",
            "missed_chars",
            "correct_keystrokes",
            "incorrect_keystrokes",
        )
    },
    "too short": (lambda: outcome(duration_ms=999), "duration_ms is 999; a test lasts at least 1000 ms"),
    "negative duration": (lambda: outcome(duration_ms=-30_000), "duration_ms is -30000; a test lasts at least 1000 ms"),
    "word chars over correct chars": (
        lambda: outcome(correct_word_chars=106),
        "correct_word_chars is 106; it cannot exceed correct_chars (105)",
    ),
    "impossible wpm": (
        _beyond_impossible,
        "wpm is 350.4; over 350 on a test of 15 s or more is impossible for a human",
    ),
    "naive started_at": (
        lambda: outcome(started_at=at(1).replace(tzinfo=None)),
        "started_at is 2026-03-01T10:00:00; it must be timezone-aware (UTC), not naive",
    ),
    "future started_at": (
        lambda: outcome(started_at=LATER + timedelta(microseconds=1)),
        "started_at is 2026-03-31T09:00:00.000001+00:00; it cannot be in the future "
        "(now is 2026-03-31T09:00:00+00:00)",
    ),
    "before the player": (
        lambda: outcome(started_at=T0 - timedelta(seconds=1)),
        "started_at is 2026-03-01T08:59:59+00:00; it cannot be before the player was created "
        "(2026-03-01T09:00:00+00:00)",
    ),
    # Beyond the listed rules: values PostgreSQL's columns cannot hold must be refused
    # as invalid input, not surface as a driver traceback.
    "count over int32": (
        lambda: outcome(missed_chars=2**31),
        "missed_chars is 2147483648; it must be at most 2147483647",
    ),
    "raw wpm over the column": (
        # 1,000,028 chars typed in 1 s = 12,000,336 wpm: short tests escape the 350 rule.
        lambda: outcome(duration_ms=1000, correct_chars=1_000_000),
        "raw_wpm is 12000336.0; at most 99999.99 can be stored",
    ),
    "non-integer count": (lambda: outcome(extra_chars=1.5), "extra_chars is 1.5; it must be an integer"),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_an_invalid_result_is_refused_with_one_line_and_writes_nothing(store, engine, alice, case):
    make, message = INVALID[case]
    store.record_result("alice", outcome(started_at=at(0.5)))  # progress and a best exist
    before = snapshot(engine)
    with pytest.raises(InvalidResult) as caught:
        store.record_result("alice", make())
    assert str(caught.value) == f"invalid result: {message}"
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE
    assert snapshot(engine) == before


ACCEPTED_BOUNDARIES = {
    "shortest test": lambda: outcome(duration_ms=metrics.MIN_DURATION_MS, correct_word_chars=5, correct_spaces=1),
    # 700 chars in 24 s: 700 / 5 / 0.4 = 350.0 (no 15 s count lands on 350 exactly).
    "exactly 350 wpm over 15 s": lambda: outcome(
        duration_ms=24_000, correct_word_chars=600, correct_spaces=100, correct_chars=600
    ),
    "over 350 wpm on a test under 15 s": lambda: outcome(
        duration_ms=14_999, correct_word_chars=460, correct_spaces=40, correct_chars=460
    ),
    "started when the player was created": lambda: outcome(started_at=T0),
    "started just now": lambda: outcome(started_at=LATER),
    "no keystrokes": lambda: outcome(correct_keystrokes=0, incorrect_keystrokes=0),
    "zero counts": lambda: outcome(
        correct_word_chars=0, correct_spaces=0, correct_chars=0, incorrect_chars=0, extra_chars=0,
        correct_keystrokes=0, incorrect_keystrokes=0,
    ),
}


@pytest.mark.parametrize("case", ACCEPTED_BOUNDARIES, ids=list(ACCEPTED_BOUNDARIES))
def test_a_result_on_the_edge_of_a_rule_is_accepted(store, alice, case):
    recorded = store.record_result("alice", ACCEPTED_BOUNDARIES[case]())
    assert store.history("alice") == [recorded.result]


def test_the_accepted_edges_are_the_edges():
    assert derive_metrics(ACCEPTED_BOUNDARIES["exactly 350 wpm over 15 s"]()).wpm == metrics.IMPOSSIBLE_WPM
    assert derive_metrics(ACCEPTED_BOUNDARIES["over 350 wpm on a test under 15 s"]()).wpm > metrics.IMPOSSIBLE_WPM
    assert derive_metrics(ACCEPTED_BOUNDARIES["no keystrokes"]()).accuracy == 100.0


def test_validate_outcome_returns_the_derived_metrics():
    derived = validate_outcome(outcome(), player_created_at=T0, now=LATER)
    assert derived == derive_metrics(outcome())


# ---------------------------------------------------------------- reading


def test_history_is_newest_first_and_limited(store, alice):
    recorded = [store.record_result("alice", outcome(started_at=at(hour))) for hour in (2, 5, 1, 4, 3)]
    by_start = {r.result.started_at: r.result for r in recorded}
    assert store.history("alice") == [by_start[at(h)] for h in (5, 4, 3, 2, 1)]
    assert store.history("alice", limit=2) == [by_start[at(5)], by_start[at(4)]]
    for entry in store.history("alice"):
        assert_utc(entry.started_at)
    with pytest.raises(InvalidInput, match="limit is 0"):
        store.history("alice", limit=0)


def test_bests_has_one_row_per_mode_and_parameter_in_order(store, alice):
    plan = [("words", 50, 1), ("time", 60, 2), ("words", 10, 3), ("time", 15, 4), ("words", 10, 5)]
    recorded = {}
    for mode, param, hour in plan:
        # A longer duration each time: the later words-10 result is slower.
        recorded[hour] = store.record_result(
            "alice", outcome(mode=mode, mode_param=param, started_at=at(hour), duration_ms=20_000 + hour * 1000)
        )
    bests = store.bests("alice")
    assert [(b.mode, b.mode_param) for b in bests] == [("time", 15), ("time", 60), ("words", 10), ("words", 50)]
    assert [b.result_id for b in bests] == [recorded[h].result.id for h in (4, 2, 3, 1)]


def test_leaderboard_ranks_each_players_best_with_ties_to_the_earlier_test(store, clock):
    for name in ("ann", "ben", "cat", "dan"):
        store.create_player(name)
    clock.now = LATER
    # wpm: 124 chars in d seconds = 1488 / d.
    plan = [
        ("ann", 1, 20_000),  # 74.4
        ("ann", 2, 30_000),  # 49.6, slower: not her leaderboard entry
        ("ben", 3, 20_000),  # 74.4, same as ann but later: ranked after her
        ("cat", 4, 15_000),  # 99.2
        ("dan", 5, 60_000),  # 24.8
    ]
    for name, hour, duration in plan:
        store.record_result(name, outcome(started_at=at(hour), duration_ms=duration))
    store.record_result("dan", outcome(mode="time", mode_param=30, started_at=at(6), duration_ms=10_000))
    board = store.leaderboard("words", 25)
    assert [(e.rank, e.username, e.wpm, e.started_at) for e in board] == [
        (1, "cat", 99.2, at(4)),
        (2, "ann", 74.4, at(1)),
        (3, "ben", 74.4, at(3)),
        (4, "dan", 24.8, at(5)),
    ]
    assert [e.username for e in store.leaderboard("words", 25, limit=2)] == ["cat", "ann"]
    assert [(e.username, e.wpm) for e in store.leaderboard("time", 30)] == [("dan", 148.8)]
    assert store.leaderboard("words", 50) == []
    for entry in board:
        assert_utc(entry.started_at)
        assert entry.accuracy == 96.3


def test_leaderboard_refuses_an_unknown_mode(store):
    with pytest.raises(InvalidInput, match="unknown mode 'zen'"):
        store.leaderboard("zen", 25)


def test_a_naive_clock_is_refused(engine):
    store = Store(engine, clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive datetime"):
        store.create_player("alice")


# ---------------------------------------------------------------- concurrency

WORKER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timedelta
    from pathlib import Path
    from game_core.db import create_engine
    from game_core.store import Store, TestOutcome

    url, worker, count, base, gate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    base = datetime.fromisoformat(base)
    store = Store(create_engine(url))
    (gate.parent / f"ready-{worker}").touch()
    deadline = time.monotonic() + 60
    while not gate.exists():  # start together, so the two really overlap
        if time.monotonic() > deadline:
            sys.exit("the gate never opened")
        time.sleep(0.005)
    for i in range(count):
        words = 10 + (i * 7 + worker * 3) % 40
        store.record_result("racer", TestOutcome(
            mode="time" if i % 3 else "words", mode_param=15 if i % 2 else 30,
            started_at=base + timedelta(seconds=2 * i + worker), duration_ms=15_000 + 250 * (i % 5),
            correct_word_chars=words * 5, correct_spaces=words, correct_chars=words * 5 + 3,
            incorrect_chars=i % 4, extra_chars=0, missed_chars=1,
            correct_keystrokes=words * 6, incorrect_keystrokes=i % 7,
        ))
    """
)


def test_two_processes_recording_for_one_player_lose_no_update(database_url, tmp_path):
    """Two real processes record for the same player at once; the caches equal a rebuild."""
    count = 40
    setup = create_engine(database_url)
    # Created a day ago so that both workers' (real-clock) results are valid.
    creator = Store(setup, clock=lambda: datetime.now(timezone.utc) - timedelta(days=1))
    player = creator.create_player("racer")
    base = player.created_at + timedelta(minutes=1)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    gate = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), database_url, str(worker), str(count), base.isoformat(), str(gate)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in (0, 1)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{w}").exists() for w in (0, 1)):
            assert time.monotonic() < deadline, "workers did not start"
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.01)
        gate.touch()
        outputs = [w.communicate(timeout=120) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert [w.returncode for w in workers] == [0, 0], outputs

    recorded = Store(setup).progress("racer")
    with setup.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(results)).scalar_one() == 2 * count
        [expected] = compute_expected_progress(connection, [player.id], now=recorded.updated_at)
    assert recorded.tests_completed == 2 * count
    assert recorded == expected
    bests_before = Store(setup).bests("racer")
    with setup.begin() as connection:
        rebuild_derived(connection, [player.id])
    assert Store(setup).bests("racer") == bests_before
    setup.dispose()
