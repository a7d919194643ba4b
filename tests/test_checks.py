"""The audits: a clean database passes every rule, and every rule is shown failing.

Each rule has a fixture that plants exactly two bad rows (foreign keys and CHECK
constraints off, as an old client, a script or a restore would), and both engines must
report exactly those rows on both databases: exact count, their keys as samples, and SQL
that lists them. ALSO names the rules a fixture cannot help breaking too (an impossible
wpm is also a suspicious one; a level of 0 matches no xp), each with its two rows.

A test plants, audits and lists inside a transaction of its own on a seeded database the
module shares, rolled back afterwards (`seeded` in test_checks_support.py): one database,
engine and statement cache per module and engine. The tests about the caller's
transaction and what the audit sends use a committed copy of their own (`seeded_url`).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

import checks
from checks import ERROR, RULES, RULES_BY_ID, WARN, UnknownRule, UnknownTable
from checks.rules import TABLE_KEYS
from game_core import metrics
from game_core.db import create_engine
from game_core.errors import ExitCode, InvalidInput
from game_core.schema import personal_bests, players, progress, results
import test_checks_support
from test_checks_support import (
    GAME_TABLES,
    NOW,
    ORPHAN_PLAYERS,
    SEED_START,
    add_results,
    counts,
    drop_mode_check,
    drop_natural_key,
    planting,
    rebuild,
    violated,
)

# Fixtures, bound to module names as pytest finds them (see pitr_helpers' docstring): the
# seed in a transaction rolled back after the test, and the module's connection under it.
seeded = test_checks_support.seeded
seed_connection = test_checks_support.seed_connection

ENGINES = ("sql", "pandera")


# ---------------------------------------------------------------- planting helpers


def _bad_results(*overrides, player: int = 1):
    return lambda c: add_results(c, player, [dict(o) for o in overrides])


def _bad_modes(c):
    drop_mode_check(c)
    return add_results(c, 1, [{"mode": "zen"}, {"mode": "WORDS"}])


def _orphan_results(c):
    return [add_results(c, player, [{}], rebuild_caches=False)[0] for player in ORPHAN_PLAYERS]


def _duplicate_keys(c):
    drop_natural_key(c)
    original = c.execute(sa.select(results).where(results.c.id == 4)).mappings().one()
    copy = {k: v for k, v in original.items() if k != "id"}
    copy_id = c.execute(sa.insert(results).values(copy)).inserted_primary_key[0]
    rebuild(c, 2)
    return [4, copy_id]


def _bad_players(*rows):
    def plant(c):
        ids = []
        for index, changes in enumerate(rows):
            row = {"id": 100 + index, "username": f"quiet{index}", "created_at": SEED_START, **changes}
            c.execute(sa.insert(players).values(row))
            ids.append(row["id"])
        return ids

    return plant


def _progress_of(c, player_id):
    return c.execute(sa.select(progress).where(progress.c.player_id == player_id)).mappings().one()


def _update_progress(**changes):
    def plant(c):
        for player_id in (1, 2):
            current = _progress_of(c, player_id)
            values = {k: (v(current) if callable(v) else v) for k, v in changes.items()}
            c.execute(sa.update(progress).where(progress.c.player_id == player_id).values(values))
        return [1, 2]

    return plant


def _delete_progress(c):
    c.execute(sa.delete(progress))
    return [1, 2]


def _orphan_progress(c):
    c.execute(
        sa.insert(progress),
        [
            {"player_id": p, "xp": 0, "level": 1, "tests_completed": 1, "time_typing_ms": 0, "best_wpm": 0,
             "updated_at": SEED_START}
            for p in ORPHAN_PLAYERS
        ],
    )
    return list(ORPHAN_PLAYERS)


def _xp_off(c):
    for player_id in (1, 2):
        xp = _progress_of(c, player_id)["xp"] + player_id
        assert metrics.level_for_xp(xp) == _progress_of(c, player_id)["level"]
        c.execute(sa.update(progress).where(progress.c.player_id == player_id).values(xp=xp))
    return [1, 2]


def _levels_of_other_xp(c):
    # Stored xp and level agree with each other, not with the results.
    for player_id in (1, 2):
        xp = _progress_of(c, player_id)["xp"] * 3
        c.execute(
            sa.update(progress).where(progress.c.player_id == player_id).values(xp=xp, level=metrics.level_for_xp(xp))
        )
    return [1, 2]


def _best_rows(c):
    return c.execute(sa.select(personal_bests).order_by(personal_bests.c.player_id, personal_bests.c.mode)).mappings().all()


def _words_best(c, player_id):
    return c.execute(
        sa.select(personal_bests).where(personal_bests.c.player_id == player_id, personal_bests.c.mode == "words")
    ).mappings().one()


def _update_words_bests(**changes):
    def plant(c):
        for player_id in (1, 2):
            c.execute(
                sa.update(personal_bests)
                .where(personal_bests.c.player_id == player_id, personal_bests.c.mode == "words")
                .values(changes)
            )
        return [(1, "words", 25), (2, "words", 25)]

    return plant


def _extra_bests(*keys):
    """Personal bests under other keys, copying alice's words/25 best."""

    def plant(c):
        template = dict(_words_best(c, 1))
        for player_id, mode, mode_param in keys:
            c.execute(sa.insert(personal_bests).values({**template, "player_id": player_id, "mode": mode, "mode_param": mode_param}))
        return list(keys)

    return plant


def _slower_result_of_mode(c, player_id):
    """Another words/25 result of the player, slower than their best."""
    (slower,) = add_results(c, player_id, [{"derive": {"correct_word_chars": 20, "correct_chars": 30}}], rebuild_caches=False)
    rebuild(c, player_id)
    return c.execute(sa.select(results).where(results.c.id == slower)).mappings().one()


def _bests_point_elsewhere(c):
    # Alice's best points at a slower words/25 result; bob's keeps its result but not its accuracy.
    slower = _slower_result_of_mode(c, 1)
    c.execute(
        sa.update(personal_bests)
        .where(personal_bests.c.player_id == 1, personal_bests.c.mode == "words")
        .values(result_id=slower["id"])
    )
    c.execute(
        sa.update(personal_bests)
        .where(personal_bests.c.player_id == 2, personal_bests.c.mode == "words")
        .values(accuracy=personal_bests.c.accuracy - 1)
    )
    return [(1, "words", 25), (2, "words", 25)]


def _bests_not_best(c):
    # Each points at a slower result of the mode, with that result's values: consistent, not the best.
    for player_id in (1, 2):
        slower = _slower_result_of_mode(c, player_id)
        c.execute(
            sa.update(personal_bests)
            .where(personal_bests.c.player_id == player_id, personal_bests.c.mode == "words")
            .values(result_id=slower["id"], wpm=slower["wpm"], accuracy=slower["accuracy"])
        )
    return [(1, "words", 25), (2, "words", 25)]


def _delete_words_bests(c):
    c.execute(sa.delete(personal_bests).where(personal_bests.c.mode == "words"))
    return [(1, "words", 25), (2, "words", 25)]


def _missing_results_of_bests(c):
    _update_words_bests(result_id=123456)(c)
    return [(1, "words", 25), (2, "words", 25)]


FUTURE = NOW + timedelta(seconds=1)
EARLY = {"created_at": NOW - timedelta(days=1)}
SMALL = {"correct_word_chars": 4, "correct_spaces": 0, "correct_chars": 5, "incorrect_chars": 0, "extra_chars": 0}
BREAKS = {
    # players
    "players.username_valid": (_bad_players({"username": "bad name!"}, {"username": ""}), ()),
    "players.created_not_in_future": (_bad_players({"created_at": FUTURE}, {"created_at": NOW + timedelta(days=3)}), ()),
    "players.progress_exists": (_delete_progress, ()),
    # results, row rules
    "results.accuracy_range": (
        _bad_results({"accuracy": 100.01}, {"accuracy": -0.5}),
        ("results.accuracy_recomputed",),
    ),
    "results.wpm_non_negative": (_bad_results({"wpm": -1}, {"wpm": -0.01}), ("results.wpm_recomputed",)),
    "results.raw_wpm_non_negative": (
        _bad_results(
            {"derive": {"correct_word_chars": 0, "correct_spaces": 0}, "raw_wpm": -1},
            {"derive": {"correct_word_chars": 0, "correct_spaces": 0}, "raw_wpm": -0.02},
        ),
        ("results.raw_wpm_not_below_wpm", "results.raw_wpm_recomputed"),
    ),
    "results.duration_min": (
        _bad_results({"derive": {**SMALL, "duration_ms": 999}}, {"derive": {**SMALL, "duration_ms": 500}}),
        (),
    ),
    "results.mode_allowed": (_bad_modes, ("personal_bests.mode_allowed",)),
    "results.mode_param_positive": (
        _bad_results({"mode_param": 0}, {"mode_param": -30}),
        ("personal_bests.mode_param_positive",),
    ),
    "results.counts_non_negative": (
        _bad_results({"missed_chars": -1}, {"derive": {"extra_chars": -1}}),
        (),
    ),
    "results.metrics_version_known": (_bad_results({"metrics_version": 0}, {"metrics_version": 2}), ()),
    "results.started_not_in_future": (
        _bad_results({"started_at": FUTURE, **EARLY}, {"started_at": NOW + timedelta(days=400), **EARLY}),
        (),
    ),
    "results.created_not_in_future": (
        _bad_results({"created_at": FUTURE}, {"created_at": NOW + timedelta(days=1)}),
        (),
    ),
    "results.wpm_suspicious": (
        _bad_results(
            {"derive": {"correct_word_chars": 600, "correct_spaces": 30, "correct_chars": 610}},
            {"derive": {"correct_word_chars": 800, "correct_spaces": 60, "correct_chars": 810}},
        ),
        (),
    ),
    "results.wpm_impossible": (
        _bad_results(
            {"derive": {"correct_word_chars": 400, "correct_spaces": 40, "correct_chars": 410,
                        "duration_ms": metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS}},
            {"derive": {"correct_word_chars": 550, "correct_spaces": 50, "correct_chars": 560, "duration_ms": 20_000}},
        ),
        ("results.wpm_suspicious",),
    ),
    "results.raw_wpm_not_below_wpm": (
        _bad_results(
            {"derive": {"correct_word_chars": 120, "correct_chars": 80}},
            {"derive": {"correct_word_chars": 200, "correct_chars": 100}},
        ),
        (),
    ),
    "results.wpm_recomputed": (
        _bad_results({"wpm": lambda row: round(row["wpm"] - 0.02, 2)}, {"wpm": lambda row: row["wpm"] + 0.5}),
        (),
    ),
    "results.raw_wpm_recomputed": (
        _bad_results({"raw_wpm": lambda row: round(row["raw_wpm"] + 0.02, 2)}, {"raw_wpm": lambda row: row["raw_wpm"] + 10}),
        (),
    ),
    "results.accuracy_recomputed": (
        _bad_results({"accuracy": lambda row: round(row["accuracy"] - 0.02, 2)}, {"accuracy": 50}),
        (),
    ),
    "results.xp_recomputed": (
        _bad_results(
            {"xp": lambda row: row["xp"] + 1},
            # (100 + 24) * 145 / 145 divides exactly: one less than the quotient is wrong
            {"derive": {"correct_keystrokes": 145, "incorrect_keystrokes": 0}, "xp": lambda row: row["xp"] - 1},
        ),
        (),
    ),
    # results, cross-table
    "results.player_exists": (_orphan_results, ("personal_bests.complete",)),
    "results.not_before_player": (
        _bad_results({"started_at": SEED_START - timedelta(days=2)}, {"started_at": SEED_START - timedelta(days=3)}),
        (),
    ),
    "results.natural_key_unique": (_duplicate_keys, ()),
    # progress, row rules
    "progress.xp_non_negative": (
        _update_progress(xp=-1),
        ("progress.level_matches_xp", "progress.xp_matches_results"),
    ),
    "progress.level_min": (
        _update_progress(level=0),
        ("progress.level_matches_xp", "progress.level_matches_results"),
    ),
    "progress.tests_completed_min": (
        _update_progress(tests_completed=0),
        ("progress.tests_completed_matches_results",),
    ),
    "progress.time_typing_non_negative": (
        _update_progress(time_typing_ms=-1),
        ("progress.time_typing_matches_results",),
    ),
    "progress.best_wpm_non_negative": (
        _update_progress(best_wpm=-1),
        ("progress.best_wpm_matches_results",),
    ),
    "progress.level_matches_xp": (
        _update_progress(level=lambda row: row["level"] + 1),
        ("progress.level_matches_results",),
    ),
    "progress.updated_not_in_future": (_update_progress(updated_at=FUTURE), ()),
    # progress, cross-table
    "progress.player_exists": (
        _orphan_progress,
        ("progress.tests_completed_matches_results", "progress.best_wpm_matches_results"),
    ),
    "progress.xp_matches_results": (_xp_off, ()),
    "progress.level_matches_results": (_levels_of_other_xp, ("progress.xp_matches_results",)),
    "progress.tests_completed_matches_results": (_update_progress(tests_completed=lambda row: row["tests_completed"] + 1), ()),
    "progress.time_typing_matches_results": (_update_progress(time_typing_ms=lambda row: row["time_typing_ms"] + 1), ()),
    "progress.best_wpm_matches_results": (_update_progress(best_wpm=lambda row: row["best_wpm"] + 0.01), ()),
    # personal bests, row rules
    "personal_bests.mode_allowed": (
        _extra_bests((1, "zen", 25), (1, "Words", 25)),
        ("personal_bests.result_matches", "personal_bests.is_best"),
    ),
    "personal_bests.mode_param_positive": (
        _extra_bests((1, "words", 0), (1, "words", -1)),
        ("personal_bests.result_matches", "personal_bests.is_best"),
    ),
    "personal_bests.wpm_non_negative": (
        _update_words_bests(wpm=-1),
        ("personal_bests.result_matches", "personal_bests.is_best"),
    ),
    "personal_bests.accuracy_range": (_update_words_bests(accuracy=100.5), ("personal_bests.result_matches",)),
    # personal bests, cross-table
    "personal_bests.player_exists": (
        _extra_bests(*((p, "words", 25) for p in ORPHAN_PLAYERS)),
        ("personal_bests.result_matches", "personal_bests.is_best"),
    ),
    "personal_bests.result_exists": (_missing_results_of_bests, ()),
    "personal_bests.result_matches": (_bests_point_elsewhere, ()),
    "personal_bests.is_best": (_bests_not_best, ()),
    "personal_bests.complete": (_delete_words_bests, ()),
}


# ---------------------------------------------------------------- the catalogue


def test_every_rule_of_the_catalogue_has_a_breaking_fixture():
    data_rules = [rule.id for rule in RULES if rule.kind != "schema"]
    assert sorted(BREAKS) == sorted(data_rules)
    schema_rules = [rule.id for rule in RULES if rule.kind == "schema"]
    assert schema_rules == [f"schema.{table}" for table in GAME_TABLES]  # broken in test_checks_drift.py


def test_catalogue_entries_are_well_formed():
    assert checks.catalogue() == RULES and len(RULES_BY_ID) == len(RULES)
    for rule in RULES:
        assert rule.severity in (ERROR, WARN)
        assert rule.kind in ("row", "cross", "schema")
        assert rule.table in GAME_TABLES
        assert rule.id.startswith(rule.table + ".") or rule.id == f"schema.{rule.table}"
        assert rule.meaning.strip() and rule.action.strip() and "\n" not in rule.meaning + rule.action
        assert rule.reads and all(columns for _table, columns in rule.reads), rule.id
    assert [r.id for r in RULES if r.severity == WARN] == [
        "players.username_valid",
        "results.wpm_suspicious",
        "progress.updated_not_in_future",
    ]
    # Stable order: per table, schema first, then row rules, then cross-table rules.
    order = {"schema": 0, "row": 1, "cross": 2}
    tables = list(GAME_TABLES)
    keyed = [(tables.index(r.table), order[r.kind]) for r in RULES]
    assert keyed == sorted(keyed)


# ---------------------------------------------------------------- clean data


@pytest.mark.parametrize("engine", ENGINES)
def test_a_clean_database_passes_every_rule(seeded, engine):
    report = seeded.audit(engine=engine)
    assert [f.rule.id for f in report.findings] == [r.id for r in RULES]
    assert report.violations == () and report.ok and report.skipped == ()
    assert all(f.failing_rows == 0 and f.sample_keys == () and f.samples == () and f.share == 0 for f in report.findings)
    assert report.engine == engine and report.dialect == seeded.connection.dialect.name
    assert report.watermarks == {"players": 2, "results": 5}
    assert report.finding("results.accuracy_range").checked_rows == 5
    assert report.finding("results.natural_key_unique").checked_rows == 5
    assert report.finding("progress.level_matches_xp").checked_rows == 2
    assert report.finding("players.progress_exists").checked_rows == 2
    assert report.finding("personal_bests.complete").checked_rows == 4
    assert report.finding("personal_bests.result_exists").checked_rows == len(seeded.fetch(sa.select(personal_bests))) == 4
    assert report.finding("schema.results").checked_rows == 19
    # Every listing query, run as text, agrees that there is nothing to list.
    for finding in report.findings:
        if finding.rule.kind != "schema":
            assert seeded.run_listing_sql(finding.sql) == [], finding.rule.id


def test_the_clean_seed_is_not_vacuous(seeded):
    """Levels above 1, several modes, and more than one result per mode: real values."""
    levels = [row.level for row in seeded.fetch(sa.select(progress.c.level))]
    modes = {row.mode for row in seeded.fetch(sa.select(results.c.mode))}
    assert min(levels) > 1 and modes == {"words", "time"}
    per_mode = seeded.fetch(
        sa.select(sa.func.count()).select_from(results).where(results.c.player_id == 1, results.c.mode == "words"),
    )
    assert per_mode[0][0] == 2


# ---------------------------------------------------------------- every rule broken


@pytest.mark.parametrize("rule_id", sorted(BREAKS))
def test_each_rule_reports_exactly_the_rows_that_break_it(seeded, rule_id):
    plant, also = BREAKS[rule_id]
    with seeded.planting() as connection:
        keys = plant(connection)
    rule = RULES_BY_ID[rule_id]
    reports = {engine: seeded.audit(engine=engine) for engine in ENGINES}

    for engine, report in reports.items():
        finding = report.finding(rule_id)
        assert len(keys) == 2
        assert finding.failing_rows == 2, (engine, finding)
        assert finding.sample_keys == tuple(sorted(keys)), engine
        assert violated(report) == {rule_id: 2, **{other: 2 for other in also}}, engine
        assert report.ok is (rule.severity == WARN and not also)
        assert finding.share == pytest.approx(2 / finding.checked_rows)
        # Each sample is the key plus the values that explain the failure.
        shown = set(rule.key + rule.explain) if rule.kind == "cross" else {*TABLE_KEYS[rule.table], *rule.columns}
        assert len(finding.samples) == 2 and all(set(sample) == shown for sample in finding.samples)
        listed = seeded.run_listing_sql(finding.sql)
        width = 1 if isinstance(keys[0], int) else len(keys[0])
        assert len(listed) == finding.failing_rows
        assert [row[0] if width == 1 else tuple(row[:width]) for row in listed] == sorted(keys)
    # The two engines agree on every rule, not only the broken one.
    assert counts(reports["sql"]) == counts(reports["pandera"])


@pytest.mark.parametrize("engine", ENGINES)
def test_counts_are_exact_beyond_the_sample_limit(seeded, engine):
    with seeded.planting() as connection:
        ids = add_results(connection, 2, [{"accuracy": 101 + i} for i in range(7)])
    finding = seeded.audit(engine=engine, sample_limit=5).finding("results.accuracy_range")
    assert (finding.failing_rows, finding.sample_keys) == (7, tuple(ids[:5]))
    # across chunks too: the samples are the first failing rows in key order, no more
    chunked = seeded.audit(engine=engine, sample_limit=5, chunk_size=3).finding("results.accuracy_range")
    assert (chunked.failing_rows, chunked.sample_keys) == (7, tuple(ids[:5]))
    assert [sample["accuracy"] for sample in finding.samples] == [101, 102, 103, 104, 105]
    assert len(seeded.run_listing_sql(finding.sql)) == 7
    none = seeded.audit(engine=engine, sample_limit=0).finding("results.accuracy_range")
    assert (none.failing_rows, none.sample_keys, none.samples) == (7, (), ())
    with pytest.raises(InvalidInput) as raised:
        seeded.audit(engine=engine, sample_limit=-1)
    assert raised.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("engine", ENGINES)
def test_values_at_the_limits_pass(seeded, engine):
    """Inclusive bounds stay inclusive and the tolerance is a tolerance: only the two rows
    over 250 wpm are reported (a warning)."""
    limit = metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS
    with seeded.planting() as connection:
        add_results(
            connection,
            1,
            [
                {"accuracy": 0, "derive": {"correct_keystrokes": 0, "incorrect_keystrokes": 9}},
                {"accuracy": 100, "derive": {"correct_keystrokes": 0, "incorrect_keystrokes": 0}},
                {"derive": {"correct_word_chars": 0, "correct_spaces": 0, "correct_chars": 0, "incorrect_chars": 0,
                            "extra_chars": 0}},
                {"derive": {"duration_ms": metrics.MIN_DURATION_MS, **SMALL}},
                {"wpm": lambda row: round(row["wpm"] + 0.01, 2), "raw_wpm": lambda row: round(row["raw_wpm"] - 0.01, 2)},
                {"accuracy": lambda row: round(row["accuracy"] + 0.01, 2)},
                {"derive": {"correct_word_chars": 100, "correct_spaces": 25, "correct_chars": 100,
                            "incorrect_chars": 0, "extra_chars": 0, "duration_ms": 30_000}},  # wpm == raw_wpm
                {"derive": {"correct_word_chars": 600, "correct_spaces": 25, "correct_chars": 600, "duration_ms": 30_000}},
                {"started_at": NOW, "created_at": NOW},
            ],
        )
        over = add_results(
            connection,
            2,
            [
                {"derive": {"correct_word_chars": 400, "correct_spaces": 37, "correct_chars": 400, "duration_ms": limit}},
                {"derive": {"correct_word_chars": 500, "correct_spaces": 0, "correct_chars": 500, "duration_ms": limit - 1}},
            ],
        )
    stored = {row.id: row.wpm for row in seeded.fetch(sa.select(results.c.id, results.c.wpm))}
    assert max(stored.values()) > metrics.IMPOSSIBLE_WPM and metrics.SUSPICIOUS_WPM in stored.values()
    assert stored[over[0]] == metrics.IMPOSSIBLE_WPM - 0.4  # 349.6 on a 15 s test: possible
    report = seeded.audit(engine=engine)
    assert [(f.rule.id, f.sample_keys) for f in report.violations] == [("results.wpm_suspicious", tuple(over))]
    assert report.ok


@pytest.mark.parametrize("engine", ENGINES)
def test_future_is_judged_in_utc_whatever_zone_now_is_given_in(seeded, engine):
    with seeded.planting() as connection:
        past, future = add_results(
            connection,
            1,
            [
                {"started_at": NOW - timedelta(hours=1), "created_at": NOW - timedelta(hours=1)},
                {"started_at": NOW + timedelta(hours=1), "created_at": NOW - timedelta(hours=1)},
            ],
        )
    rule = "results.started_not_in_future"
    from datetime import timezone

    # The same instant as NOW, written in UTC+02:00: a wall-clock text comparison would
    # call 13:00 UTC "before 14:00" and miss the future row.
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    for now in (NOW, plus_two, NOW.replace(tzinfo=None)):
        finding = seeded.audit(engine=engine, now=now, rules=[rule]).finding(rule)
        assert finding.sample_keys == (future,), now
    earlier = seeded.audit(engine=engine, now=NOW - timedelta(hours=2), rules=[rule]).finding(rule)
    assert earlier.sample_keys == (past, future)


def test_default_now_is_the_current_time(seeded):
    from datetime import datetime, timezone

    with seeded.planting() as connection:
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
        (future,) = add_results(connection, 1, [{"started_at": tomorrow, "created_at": NOW}])
    for engine in ENGINES:
        report = seeded.audit(engine=engine, now=None)
        assert [(f.rule.id, f.sample_keys) for f in report.violations] == [("results.started_not_in_future", (future,))]
        assert abs(report.audited_at - datetime.now(timezone.utc)) < timedelta(minutes=1)


@pytest.mark.parametrize("engine", ENGINES)
def test_huge_levels_and_xp_are_counted_not_fatal(seeded, engine):
    """A corrupt level or xp overflows PostgreSQL's integers in the level check unless it
    is computed in NUMERIC; an overflow would abort the whole audit."""
    with seeded.planting() as connection:
        connection.execute(sa.update(progress).where(progress.c.player_id == 1).values(level=2**31 - 1))
        connection.execute(sa.update(progress).where(progress.c.player_id == 2).values(xp=2**62 + 2**61))
        # Counts near the int4 limit: their sums and products must not overflow either.
        add_results(
            connection, 1,
            [{"correct_word_chars": 2**31 - 1, "correct_spaces": 2**31 - 1, "correct_keystrokes": 2**31 - 1,
              "incorrect_keystrokes": 2**31 - 1, "xp": 2**31 - 2, "correct_chars": 2**31 - 1}],
            rebuild_caches=False,
        )
    report = seeded.audit(engine=engine)
    finding = report.finding("progress.level_matches_xp")
    assert finding.sample_keys == (1, 2)
    assert report.finding("progress.xp_matches_results").sample_keys == (1, 2)
    assert report.finding("results.xp_recomputed").failing_rows == 1
    # With literal integers (not parameters) PostgreSQL types the arithmetic by the
    # columns: the listing SQL must survive the same values.
    assert [row[0] for row in seeded.run_listing_sql(finding.sql)] == [1, 2]
    assert len(seeded.run_listing_sql(report.finding("results.xp_recomputed").sql)) == 1


# ---------------------------------------------------------------- samples, report, options


def test_samples_hold_the_key_and_the_offending_values_with_usernames_masked(seeded):
    with seeded.planting() as connection:
        (bad,) = add_results(connection, 1, [{"wpm": lambda row: row["wpm"] * 5}])
        _bad_players({"username": "mallory!"}, {"username": "é"})(connection)
    for engine in ENGINES:
        report = seeded.audit(engine=engine)
        (sample,) = report.finding("results.wpm_recomputed").samples
        assert sample["id"] == bad and set(sample) == {
            "id", "wpm", "correct_word_chars", "correct_spaces", "duration_ms"
        }
        names = report.finding("players.username_valid").samples
        assert [s["username"] for s in names] == ["m***!", "***"], engine
        assert report.finding("progress.xp_matches_results").samples == ()
        document = json.loads(json.dumps(report.to_dict()))
        (entry,) = [f for f in document["findings"] if f["rule"] == "players.username_valid"]
        assert "mallory" not in json.dumps(document) and entry["samples"][0]["username"] == "m***!"


def test_cross_rule_samples_show_stored_and_expected_values(seeded):
    with seeded.planting() as connection:
        _xp_off(connection)
    finding = seeded.audit().finding("progress.xp_matches_results")
    assert [(s["player_id"], s["xp"] - s["results_xp"]) for s in finding.samples] == [(1, 1), (2, 2)]


def test_report_renders_to_json(seeded):
    with seeded.planting() as connection:
        add_results(connection, 1, [{"derive": {"correct_word_chars": 600, "correct_spaces": 30, "correct_chars": 610}}])
        keys = _missing_results_of_bests(connection)
    report = seeded.audit()
    document = json.loads(json.dumps(report.to_dict()))
    assert document["schema_version"] == 2
    assert (document["engine"], document["dialect"]) == ("sql", seeded.connection.dialect.name)
    assert (document["ok"], document["errors"], document["warnings"], document["rules"]) == (False, 1, 1, len(RULES))
    assert document["watermarks"] == {"players": 2, "results": 6}
    entry = next(f for f in document["findings"] if f["rule"] == "personal_bests.result_exists")
    assert entry["sample_keys"] == [list(key) for key in keys]
    assert (entry["severity"], entry["failing_rows"], entry["passed"], entry["status"]) == ("error", 2, False, "fail")
    assert entry["share"] == 0.5 and entry["kind"] == "cross"
    assert document["audited_at"] == NOW.isoformat()


def test_rules_can_be_chosen_by_id_or_object_and_narrowed_to_tables(seeded):
    report = seeded.audit(rules=["progress.level_min", RULES_BY_ID["results.duration_min"], "progress.level_min"])
    assert [f.rule.id for f in report.findings] == ["progress.level_min", "results.duration_min"]
    assert seeded.audit(rules=[]).findings == ()
    only = seeded.audit(tables=["progress"])
    assert {f.rule.table for f in only.findings} == {"progress"}
    assert [f.rule.id for f in only.findings] == [r.id for r in RULES if r.table == "progress"]
    both = seeded.audit(rules=["progress.level_min", "results.duration_min"], tables=["results"])
    assert [f.rule.id for f in both.findings] == ["results.duration_min"]


def test_unknown_rules_tables_engines_and_watermarks_are_usage_errors(seeded):
    with pytest.raises(UnknownRule, match="'results.nope'.*results.accuracy_range") as raised:
        seeded.audit(rules=["results.nope"])
    assert raised.value.exit_code == ExitCode.USAGE
    with pytest.raises(UnknownTable, match="'scores'.*players, results, progress, personal_bests") as raised:
        seeded.audit(tables=["scores"])
    assert raised.value.exit_code == ExitCode.USAGE
    with pytest.raises(InvalidInput, match="'spark'.*sql, pandera") as raised:
        seeded.audit(engine="spark")
    assert raised.value.exit_code == ExitCode.USAGE
    with pytest.raises(InvalidInput, match="progress.*players, results"):
        seeded.audit(since={"progress": 3})
    with pytest.raises(UnknownTable):
        seeded.audit(since={"scores": 3})
    with pytest.raises(InvalidInput, match="non-negative"):
        seeded.audit(since={"results": -1})
    with pytest.raises(InvalidInput, match="chunk size"):
        seeded.audit(chunk_size=0)


def test_a_callers_own_rules_run_in_sql_on_both_engines(seeded):
    """Rules outside the catalogue have no contract: both engines run them in SQL."""
    slow = checks.RowRule(
        "results.slow", "results", WARN, "wpm under 50", "none",
        predicate=lambda t, _context: t.wpm >= 50, columns=("wpm",), reads=(("results", ("wpm",)),),
    )
    brief = checks.QueryRule(
        "progress.brief", "progress", WARN, "under two minutes of typing", "none",
        failing_rows=lambda _context: sa.select(progress).where(progress.c.time_typing_ms < 120_000),
    )
    expected_slow = tuple(r.id for r in seeded.fetch(sa.select(results.c.id).where(results.c.wpm < 50).order_by(results.c.id)))
    expected_brief = tuple(
        r.player_id for r in seeded.fetch(sa.select(progress.c.player_id).where(progress.c.time_typing_ms < 120_000))
    )
    assert expected_slow and expected_brief
    for engine in ENGINES:
        report = seeded.audit(engine=engine, rules=[slow, brief])
        assert report.finding("results.slow").sample_keys == expected_slow
        assert report.finding("progress.brief").sample_keys == expected_brief
        assert report.finding("progress.brief").checked_rows == 2
        assert len(seeded.run_listing_sql(report.finding("progress.brief").sql)) == len(expected_brief)


# ---------------------------------------------------------------- how it reads


def test_one_read_only_pass_per_table_on_a_clean_database(seeded_url):
    """Row rules share one scan per table, the cross-rule groups one statement (plus one
    per group with its own counter); nothing but SELECTs is sent, and a clean database
    costs no sample queries."""
    statements = []
    engine = create_engine(seeded_url, read_only=True)
    sa.event.listen(engine, "before_cursor_execute", lambda c, cur, sql, *rest: statements.append(sql))
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")  # the BEGIN of the transaction, issued before we count
        statements.clear()
        checks.run_audits(connection, now=NOW)
    engine.dispose()
    counters = {rule.group for rule in RULES if rule.kind == "cross" and rule.counter is not None}
    # the layout query, one pass per table, one statement for the shared cross-rule groups,
    # one per counter, the watermarks
    assert len(statements) == 1 + len(GAME_TABLES) + 1 + len(counters) + 1
    assert all(sql.lstrip().upper().startswith(("SELECT", "WITH")) for sql in statements)
    row_passes = [sql for sql in statements if "FILTER (WHERE" in sql and "audited" not in sql and "key_groups" not in sql]
    assert len(row_passes) == len(GAME_TABLES)


@pytest.mark.parametrize("engine", ENGINES)
def test_audit_runs_read_only_in_the_callers_transaction(seeded_url, engine):
    """run_audits neither begins, ends nor writes: it judges the caller's snapshot, the
    Pandera engine's chunk reads included."""
    db = create_engine(seeded_url, read_only=True)
    with db.connect() as reader:
        if reader.dialect.name == "postgresql":
            reader = reader.execution_options(isolation_level="REPEATABLE READ")
        transaction = reader.begin()
        reader.execute(sa.select(sa.func.count()).select_from(results)).scalar_one()  # take the snapshot
        with planting(seeded_url) as writer:
            add_results(writer, 1, [{"accuracy": 150}])
        report = checks.run_audits(reader, now=NOW, engine=engine)
        assert report.ok and report.watermarks["results"] == 5  # committed after the snapshot
        assert reader.get_transaction() is transaction and transaction.is_active
        transaction.rollback()
        after = checks.run_audits(reader, now=NOW, engine=engine)
        assert not after.ok and after.watermarks["results"] == 6  # a new transaction sees it
        # The guard is real: this engine cannot write, so run_audits above wrote nothing.
        with pytest.raises(sa.exc.DBAPIError):
            reader.execute(sa.delete(results))
    db.dispose()
