"""The metric formulas against hand-computed numbers, and the level check in Python and SQL.

The SQL form of the level check is evaluated by both engines on the same cases and must
agree with the Python form, boundaries and corrupt values included: the audits use one,
the store the other.
"""

from __future__ import annotations

import math
import random

import pytest
import sqlalchemy as sa

from game_core import metrics
from game_core.db import create_engine


def float_level(xp: int) -> int:
    """Monkeytype's published curve, as written (floats)."""
    return math.floor((-151 + math.sqrt(392 * xp + 22801)) / 98) + 1


def boundary(n: int) -> int:
    """The least xp of level n + 1: n * (49n + 151) / 2, always an integer."""
    return n * (49 * n + 151) // 2


# ---------------------------------------------------------------- formulas


@pytest.mark.parametrize(
    ("correct_word_chars", "correct_spaces", "duration_ms", "expected"),
    [
        (200, 40, 60_000, 48.0),  # 240 chars = 48 words in one minute
        (200, 40, 30_000, 96.0),  # the same in half a minute
        (47, 9, 12_345, 54.43),  # 56 / 5 / 0.20575 = 54.4349...
        (0, 0, 15_000, 0.0),
    ],
)
def test_wpm_counts_fully_correct_words_and_spaces_per_minute(correct_word_chars, correct_spaces, duration_ms, expected):
    assert metrics.wpm(correct_word_chars, correct_spaces, duration_ms) == expected


def test_raw_wpm_counts_every_typed_character():
    # 210 + 10 + 5 + 40 = 265 chars = 53 words in one minute; missed chars are not typed.
    assert metrics.raw_wpm(210, 10, 5, 40, 60_000) == 53.0
    # 26 chars in 7 s: 26 / 5 / (7 / 60) = 44.5714...
    assert metrics.raw_wpm(20, 1, 0, 5, 7_000) == 44.57


@pytest.mark.parametrize(
    ("correct", "incorrect", "expected"),
    [(95, 5, 95.0), (2, 1, 66.67), (1, 2, 33.33), (0, 5, 0.0), (7, 0, 100.0)],
)
def test_accuracy_is_the_share_of_correct_keystrokes(correct, incorrect, expected):
    assert metrics.accuracy(correct, incorrect) == expected


def test_accuracy_is_100_without_keystrokes():
    assert metrics.accuracy(0, 0) == 100.0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((200, 40, 95, 5), 228),  # 240 * 95 // 100
        ((10, 2, 2, 1), 8),  # 12 * 2 // 3
        ((10, 2, 0, 0), 0),  # no keystrokes, no xp
        ((0, 0, 10, 0), 0),
    ],
)
def test_result_xp_is_correct_word_characters_scaled_by_correct_keystrokes(args, expected):
    assert metrics.result_xp(*args) == expected


def test_round2_rounds_half_up_as_the_value_prints():
    # Python's round() gives 0.12 and 2.67 here (binary floats just below the half).
    assert metrics.round2(0.125) == 0.13
    assert metrics.round2(2.675) == 2.68
    assert metrics.round2(54.434999) == 54.43


def test_wpm_refuses_a_zero_duration():
    with pytest.raises(ValueError):
        metrics.wpm(10, 2, 0)


def test_raw_wpm_is_never_below_wpm():
    rng = random.Random(20261127)
    for _ in range(5000):
        correct_chars = rng.randint(0, 2000)
        correct_word_chars = rng.randint(0, correct_chars)
        spaces = rng.randint(0, 400)
        incorrect, extra = rng.randint(0, 200), rng.randint(0, 50)
        duration = rng.randint(1000, 300_000)
        wpm = metrics.wpm(correct_word_chars, spaces, duration)
        raw = metrics.raw_wpm(correct_chars, incorrect, extra, spaces, duration)
        assert raw >= wpm, (correct_word_chars, correct_chars, spaces, incorrect, extra, duration)


# ---------------------------------------------------------------- level, in Python


def test_level_follows_the_float_curve_for_xp_up_to_100000():
    # At the boundaries 392 * xp + 22801 is the perfect square (98n + 151)^2, so the float
    # formula is exact in this range and is a fair reference.
    mismatches = [xp for xp in range(100_001) if metrics.level_for_xp(xp) != float_level(xp)]
    assert mismatches == []


def test_level_changes_exactly_at_the_boundaries():
    for n in range(1, 60):
        assert metrics.level_for_xp(boundary(n)) == n + 1
        assert metrics.level_for_xp(boundary(n) - 1) == n
    assert metrics.level_for_xp(0) == 1
    assert boundary(1) == 100  # level 2 at 100 xp


def test_level_for_xp_refuses_negative_xp():
    with pytest.raises(ValueError):
        metrics.level_for_xp(-1)


def test_level_matches_xp_accepts_only_the_right_level():
    for xp in [*range(0, 3000), *range(99_000, 100_001)]:
        level = metrics.level_for_xp(xp)
        assert metrics.level_matches_xp(level, xp)
        assert not metrics.level_matches_xp(level + 1, xp)
        assert not metrics.level_matches_xp(level - 1, xp)


def test_level_for_xp_is_exact_far_beyond_float_precision():
    xp = boundary(10**9)
    assert metrics.level_for_xp(xp) == 10**9 + 1
    assert metrics.level_for_xp(xp - 1) == 10**9
    assert metrics.level_matches_xp(10**9 + 1, xp)


# ---------------------------------------------------------------- level, in SQL


def level_cases() -> list[tuple[int | None, int | None]]:
    """(level, xp) pairs: right levels, off-by-one levels, boundaries and corrupt values."""
    cases = []
    xps = {0, 1, 99, 100, 101, 5_000, 99_999, 100_000}
    for n in range(1, 80):
        xps.update({boundary(n) - 1, boundary(n), boundary(n) + 1})
    for xp in sorted(xps):
        level = metrics.level_for_xp(xp)
        cases.extend([(level, xp), (level - 1, xp), (level + 1, xp)])
    # Corrupt rows an audit must report as wrong rather than crash on: levels whose
    # products overflow 32-bit (and 64-bit) integers, negative values, NULLs.
    cases.extend(
        [
            (100_000, 0),
            (2_147_483_647, 5),
            (7_000, boundary(6_999)),  # right, and past int4 range in the products
            (1, -1),
            (-3, 0),
            (0, 0),
            (None, 10),
            (3, None),
            (1, 9_000_000_000_000_000_000 // 2),  # 2 * xp just below the int8 limit
        ]
    )
    return cases


def python_verdict(level, xp):
    if level is None or xp is None:
        return None
    return metrics.level_matches_xp(level, xp)


def test_level_cases_include_right_and_wrong_levels():
    verdicts = [python_verdict(level, xp) for level, xp in level_cases()]
    assert len(verdicts) > 300
    assert verdicts.count(True) > 100 and verdicts.count(False) > 200 and verdicts.count(None) == 2


def test_level_check_in_sql_agrees_with_python_on_both_engines(database_url):
    cases = level_cases()
    table = sa.Table(
        "level_cases",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        # The same types as progress.level and progress.xp, so overflow behaves as there.
        sa.Column("level", sa.Integer),
        sa.Column("xp", sa.BigInteger),
        prefixes=["TEMPORARY"],
    )
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            table.create(connection)
            connection.execute(table.insert(), [{"id": i, "level": lv, "xp": xp} for i, (lv, xp) in enumerate(cases)])
            rows = connection.execute(
                sa.select(table.c.id, metrics.level_matches_xp_sql(table.c.level, table.c.xp)).order_by(table.c.id)
            ).all()
            connection.rollback()
    finally:
        engine.dispose()
    # SQLite answers 1/0, PostgreSQL true/false; NULL stays NULL on both.
    in_sql = [None if verdict is None else bool(verdict) for _, verdict in rows]
    expected = [python_verdict(level, xp) for level, xp in cases]
    disagreements = [(cases[i], in_sql[i], expected[i]) for i in range(len(cases)) if in_sql[i] != expected[i]]
    assert disagreements == []
