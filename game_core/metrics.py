"""Pure functions for a finished test's numbers (Monkeytype's definitions).

Definitions, with t the seconds from the first key press to the end of the test:

- a "word" is 5 characters, spaces included;
- wpm     = (correct_word_chars + correct_spaces) / 5 / (t / 60): only fully correct
  words count;
- raw_wpm = (correct_chars + incorrect_chars + extra_chars + correct_spaces) / 5 / (t / 60):
  everything typed; raw_wpm >= wpm always, since correct_word_chars <= correct_chars;
- accuracy = correct_keystrokes / (correct_keystrokes + incorrect_keystrokes) * 100, and
  100 when no key was pressed;
- xp of a result = (correct_word_chars + correct_spaces) * correct_keystrokes
  // (correct_keystrokes + incorrect_keystrokes), and 0 without keystrokes: one point per
  correctly typed character of a correct word, scaled down by the share of wrong key
  presses, in integers so Python and SQL agree exactly;
- xp of a player is the sum over their results;
- level = floor((-151 + sqrt(392 * xp + 22801)) / 98) + 1 (Monkeytype's curve), computed
  and checked in integers: with n = level - 1, the level is right exactly when
  n * (49n + 151) <= 2 * xp < (n + 1) * (49n + 200).

wpm, raw_wpm and accuracy are stored rounded to 2 decimals (`METRICS_VERSION` 1).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

METRICS_VERSION = 1
CHARS_PER_WORD = 5

# Plausible ranges (DESIGN.md section 3), shared by write-time validation and the audits.
MIN_DURATION_MS = 1000
SUSPICIOUS_WPM = 250
IMPOSSIBLE_WPM = 350
IMPOSSIBLE_WPM_MIN_DURATION_MS = 15_000
# wpm, raw_wpm and accuracy are stored with 2 decimals; recomputed values agree within this.
STORED_VALUE_TOLERANCE = 0.01


def round2(value: float) -> float:
    """Round half up to 2 decimals, the same on every platform and engine."""
    return float(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _per_minute(chars: int, duration_ms: int) -> float:
    if duration_ms <= 0:
        raise ValueError("duration_ms must be positive")
    return chars / CHARS_PER_WORD / (duration_ms / 60_000)


def wpm(correct_word_chars: int, correct_spaces: int, duration_ms: int) -> float:
    """Words per minute from fully correct words only, rounded to 2 decimals."""
    return round2(_per_minute(correct_word_chars + correct_spaces, duration_ms))


def raw_wpm(correct_chars: int, incorrect_chars: int, extra_chars: int, correct_spaces: int, duration_ms: int) -> float:
    """Words per minute from every typed character, rounded to 2 decimals."""
    return round2(_per_minute(correct_chars + incorrect_chars + extra_chars + correct_spaces, duration_ms))


def accuracy(correct_keystrokes: int, incorrect_keystrokes: int) -> float:
    """Share of correct key presses in percent, 2 decimals; 100 when none were pressed."""
    total = correct_keystrokes + incorrect_keystrokes
    if total == 0:
        return 100.0
    return round2(correct_keystrokes / total * 100)


def result_xp(correct_word_chars: int, correct_spaces: int, correct_keystrokes: int, incorrect_keystrokes: int) -> int:
    """Experience points of one result (integer; see the module docstring)."""
    keystrokes = correct_keystrokes + incorrect_keystrokes
    if keystrokes <= 0:
        return 0
    return (correct_word_chars + correct_spaces) * correct_keystrokes // keystrokes


def level_for_xp(xp: int) -> int:
    """Monkeytype's level for a total xp, exact in integers (level 1 at 0 xp)."""
    if xp < 0:
        raise ValueError("xp cannot be negative")
    n = (math.isqrt(392 * xp + 22801) - 151) // 98
    # isqrt floors, so n can be one off at exact boundaries: settle it with the check.
    while n > 0 and n * (49 * n + 151) > 2 * xp:
        n -= 1
    while (n + 1) * (49 * n + 200) <= 2 * xp:
        n += 1
    return n + 1


def level_matches_xp(level: int, xp: int) -> bool:
    """True when `level` is the right level for `xp`; the same test as `level_matches_xp_sql`."""
    n = level - 1
    return n >= 0 and xp >= 0 and n * (49 * n + 151) <= 2 * xp < (n + 1) * (49 * n + 200)


def level_matches_xp_sql(level, xp):
    """The integer level check as a SQLAlchemy expression (portable to SQLite and PostgreSQL).

    `level` and `xp` are column expressions; NULLs make it NULL, which the audits count as
    a failure with `IS NOT TRUE`.
    """
    import sqlalchemy as sa

    # NUMERIC rather than the columns' own types: PostgreSQL raises "integer out of range"
    # once n * (49n + 151) leaves int4 (any level above about 6600), and the audits must
    # report a corrupt level, not crash on it. SQLite keeps small values integers and turns
    # an overflowing product into a float, which still compares correctly at that scale.
    level = sa.cast(level, sa.Numeric)
    xp = sa.cast(xp, sa.Numeric)
    n = level - 1
    return sa.and_(n >= 0, xp >= 0, n * (49 * n + 151) <= 2 * xp, 2 * xp < (n + 1) * (49 * n + 200))
