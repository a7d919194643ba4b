"""Rebuilding progress and personal bests from results, on SQLite and PostgreSQL.

The central property: what the store maintains result by result equals what a rebuild
computes from `results` alone, ties and out-of-order saves included. Every comparison is
also shown to notice a wrong cache, so none can pass vacuously.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from game_core import rebuild as rebuild_module
from game_core.db import create_engine
from game_core.rebuild import RebuildSummary, compute_expected_progress, rebuild_derived
from game_core.schema import MODES, personal_bests, progress, results
from game_core.store import Store, TestOutcome, progress_from_row

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=400)
PARAMS = {"words": (10, 25, 50), "time": (15, 30)}


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def varied_outcomes(rng: random.Random, count: int) -> list[TestOutcome]:
    """Plausible, varied tests in shuffled order, with repeated counts to force wpm ties."""
    hours = rng.sample(range(1, 24 * 300), count)  # distinct start times, not in save order
    made: list[TestOutcome] = []
    for hour in hours:
        started_at = T0 + timedelta(hours=hour, microseconds=rng.randint(0, 999_999))
        if made and rng.random() < 0.25:
            # The same counts again at another time: an equal wpm.
            twin = rng.choice(made)
            made.append(TestOutcome(**{**twin.__dict__, "started_at": started_at}))
            continue
        mode = rng.choice(MODES)
        duration = rng.randint(1000, 120_000)
        # Up to about 150 wpm, so no test trips the 350-wpm rule.
        typed = rng.randint(0, int(150 * 5 * duration / 60_000))
        spaces = typed // 6
        word_chars = typed - spaces
        keystrokes = 0 if rng.random() < 0.05 else typed + rng.randint(0, 40)
        wrong = rng.randint(0, keystrokes // 5) if keystrokes else 0
        made.append(
            TestOutcome(
                mode=mode,
                mode_param=rng.choice(PARAMS[mode]),
                started_at=started_at,
                duration_ms=duration,
                correct_word_chars=word_chars,
                correct_spaces=spaces,
                correct_chars=word_chars + rng.randint(0, 15),
                incorrect_chars=rng.randint(0, 20),
                extra_chars=rng.randint(0, 5),
                missed_chars=rng.randint(0, 10),
                correct_keystrokes=keystrokes - wrong,
                incorrect_keystrokes=wrong,
            )
        )
    return made


def populate(engine, names: list[str], tests_each: int, seed: int = 7) -> dict[str, int]:
    """Players recorded through the store (created at T0, results saved at NOW); their ids."""
    clock_now = [T0]
    store = Store(engine, clock=lambda: clock_now[0])
    ids = {name: store.create_player(name).id for name in names}
    clock_now[0] = NOW
    rng = random.Random(seed)
    for name in names:
        for outcome in varied_outcomes(rng, tests_each):
            store.record_result(name, outcome)
    return ids


def caches(engine) -> dict[str, list[tuple]]:
    """Every row of progress and personal_bests, in key order."""
    with engine.connect() as connection:
        return {
            "progress": [tuple(r) for r in connection.execute(sa.select(progress).order_by(progress.c.player_id))],
            "personal_bests": [
                tuple(r)
                for r in connection.execute(
                    sa.select(personal_bests).order_by(
                        personal_bests.c.player_id, personal_bests.c.mode, personal_bests.c.mode_param
                    )
                )
            ],
        }


def rows_of(snapshot: dict[str, list[tuple]], player_id: int) -> dict[str, list[tuple]]:
    return {table: [row for row in rows if row[0] == player_id] for table, rows in snapshot.items()}


def corrupt(engine, player_id: int) -> None:
    """Break both caches of one player: an xp off by one and a missing best."""
    with engine.begin() as connection:
        connection.execute(progress.update().where(progress.c.player_id == player_id).values(xp=progress.c.xp + 1))
        victim = connection.execute(
            sa.select(personal_bests.c.mode, personal_bests.c.mode_param)
            .where(personal_bests.c.player_id == player_id)
            .limit(1)
        ).one()
        connection.execute(
            personal_bests.delete().where(
                personal_bests.c.player_id == player_id,
                personal_bests.c.mode == victim.mode,
                personal_bests.c.mode_param == victim.mode_param,
            )
        )


def test_the_generated_results_contain_ties_and_out_of_order_saves(engine):
    populate(engine, ["ann"], 60)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(results).order_by(results.c.id)).all()
    starts = [r.started_at for r in rows]
    assert starts != sorted(starts)
    keys = [(r.player_id, r.mode, r.mode_param, r.wpm) for r in rows]
    assert len(set(keys)) < len(keys)


def test_rebuild_equals_what_the_store_maintained(engine):
    ids = populate(engine, ["ann", "ben", "cat", "dan"], 60)
    incremental = caches(engine)
    assert len(incremental["progress"]) == 4 and len(incremental["personal_bests"]) > 4
    with engine.begin() as connection:
        summary = rebuild_derived(connection, now=NOW)
    assert caches(engine) == incremental
    assert summary == RebuildSummary(
        players=len(ids), progress_rows=4, personal_best_rows=len(incremental["personal_bests"])
    )


def test_rebuild_repairs_broken_caches(engine):
    ids = populate(engine, ["ann", "ben"], 30)
    good = caches(engine)
    corrupt(engine, ids["ann"])
    assert caches(engine) != good
    with engine.begin() as connection:
        rebuild_derived(connection, now=NOW)
    assert caches(engine) == good


def test_a_tie_goes_to_the_earlier_result_and_the_store_agrees(engine):
    clock_now = [T0]
    store = Store(engine, clock=lambda: clock_now[0])
    store.create_player("ann")
    clock_now[0] = NOW
    base = dict(mode="words", mode_param=25, duration_ms=30_000, correct_word_chars=100, correct_spaces=24,
                correct_chars=100, incorrect_chars=0, extra_chars=0, missed_chars=0)
    # Saved in the order 3 h, 1 h, 2 h; all three at 49.6 wpm with different accuracies.
    saved = {
        hour: store.record_result(
            "ann",
            TestOutcome(started_at=T0 + timedelta(hours=hour), correct_keystrokes=124, incorrect_keystrokes=hour,
                        **base),
        )
        for hour in (3, 1, 2)
    }
    assert {r.result.wpm for r in saved.values()} == {49.6}
    [best] = store.bests("ann")
    assert best.result_id == saved[1].result.id
    before = caches(engine)
    with engine.begin() as connection:
        rebuild_derived(connection, now=NOW)
    assert caches(engine) == before


def test_rebuild_of_a_subset_touches_only_those_players(engine):
    ids = populate(engine, ["ann", "ben"], 25)
    cat_id = Store(engine, clock=lambda: T0).create_player("cat").id  # no results
    good = caches(engine)
    corrupt(engine, ids["ann"])
    corrupt(engine, ids["ben"])
    # A progress row for a player without results is stale: a rebuild of cat removes it.
    with engine.begin() as connection:
        connection.execute(
            progress.insert().values(player_id=cat_id, xp=5, level=1, tests_completed=1, time_typing_ms=1000,
                                     best_wpm=10.0, updated_at=T0)
        )
    broken = caches(engine)
    with engine.begin() as connection:
        summary = rebuild_derived(connection, [ids["ann"], cat_id, 999_999], now=NOW)
    after = caches(engine)
    assert rows_of(after, ids["ann"]) == rows_of(good, ids["ann"])
    assert rows_of(after, ids["ben"]) == rows_of(broken, ids["ben"]) != rows_of(good, ids["ben"])
    assert rows_of(after, cat_id) == {"progress": [], "personal_bests": []}
    assert summary == RebuildSummary(
        players=2, progress_rows=1, personal_best_rows=len(rows_of(good, ids["ann"])["personal_bests"])
    )


def test_rebuild_of_no_players_does_nothing(engine):
    ids = populate(engine, ["ann"], 10)
    corrupt(engine, ids["ann"])
    broken = caches(engine)
    with engine.begin() as connection:
        assert rebuild_derived(connection, [], now=NOW) == RebuildSummary(0, 0, 0)
    assert caches(engine) == broken


def test_rebuild_in_small_batches_and_chunks_gives_the_same_rows(engine, monkeypatch):
    ids = populate(engine, ["ann", "ben", "cat", "dan", "eve"], 12)
    good = caches(engine)
    # Batches of 2 and IN lists of 2: several executemany calls interleaved with the
    # streamed aggregate, and a last partial batch and chunk.
    monkeypatch.setattr(rebuild_module, "PROGRESS_BATCH_SIZE", 2)
    monkeypatch.setattr(rebuild_module, "PLAYER_ID_CHUNK", 2)
    for scope in (None, sorted(ids.values())):
        for player_id in ids.values():
            corrupt(engine, player_id)
        with engine.begin() as connection:
            summary = rebuild_derived(connection, scope, now=NOW)
        assert caches(engine) == good
        assert summary.progress_rows == 5 and summary.players == 5


def test_rebuild_runs_in_the_callers_transaction_and_never_commits(engine):
    ids = populate(engine, ["ann"], 10)
    corrupt(engine, ids["ann"])
    broken = caches(engine)
    with engine.connect() as connection:
        with connection.begin() as transaction:
            rebuild_derived(connection, now=NOW)
            transaction.rollback()
    assert caches(engine) == broken


def test_players_without_results_get_no_progress_row(engine):
    Store(engine, clock=lambda: T0).create_player("idle")
    with engine.begin() as connection:
        summary = rebuild_derived(connection, now=NOW)
    assert summary == RebuildSummary(players=1, progress_rows=0, personal_best_rows=0)
    assert caches(engine) == {"progress": [], "personal_bests": []}


def test_compute_expected_progress_streams_what_rebuild_would_write_and_writes_nothing(engine):
    ids = populate(engine, ["ann", "ben", "cat"], 15)
    Store(engine, clock=lambda: T0).create_player("idle")
    corrupt(engine, ids["ben"])
    broken = caches(engine)
    with engine.connect() as connection:
        stream = compute_expected_progress(connection, now=NOW)
        assert isinstance(stream, Iterator)
        expected = list(stream)
        subset = list(compute_expected_progress(connection, [ids["cat"], ids["ann"]], now=NOW))
        stored = [progress_from_row(r) for r in connection.execute(sa.select(progress).order_by(progress.c.player_id))]
    assert caches(engine) == broken
    assert [p.player_id for p in expected] == sorted(ids.values())
    assert subset == [p for p in expected if p.player_id in (ids["ann"], ids["cat"])]
    # The store's rows equal the expectation except where ben's cache was broken.
    assert [p for p in stored if p.player_id != ids["ben"]] == [p for p in expected if p.player_id != ids["ben"]]
    [ben_stored] = [p for p in stored if p.player_id == ids["ben"]]
    [ben_expected] = [p for p in expected if p.player_id == ids["ben"]]
    assert ben_stored.xp == ben_expected.xp + 1
    for p in expected:
        assert p.updated_at == NOW and p.updated_at.utcoffset() == timedelta(0)


def test_rebuild_refuses_a_naive_time(engine):
    with engine.connect() as connection:
        with pytest.raises(ValueError, match="naive datetime"):
            rebuild_derived(connection, now=datetime(2026, 1, 1))
