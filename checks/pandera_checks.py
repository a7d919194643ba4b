"""The custom Pandera checks of the catalogue, registered with `register_check_method`.

Registered (not defined inside the models) so that they are named, carry their
statistics, and survive any serialisation of the schemas (PITFALLS: in-class custom
checks are dropped from Pandera's YAML export with only a warning).

Every check here has a SQL twin in `checks.compile_sql` under the same name and with the
same statistics; the two must agree row by row, and
`tests/test_checks_engines.py` proves they do on NULLs, zeros, boundaries and random rows.
The rules for agreeing exactly:

- a row whose columns read by a rule hold a NULL fails that rule; the engine adds that
  (Pandera's checks themselves skip NULLs), so the functions need not care about NULLs;
- recomputed values are compared in IEEE doubles with the same operations in the same
  order as the SQL (integers are converted before they are added, so nothing overflows);
- integer identities (xp, level) are checked exactly: int64 where it cannot overflow,
  Python integers for the rare rows where it could.

Importing this module imports pandas and pandera: only the Pandera engine and the
catalogue export do.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pandera.extensions import register_check_method

from checks.model import FLOAT_SLACK
from game_core import metrics

# The instant "the future" starts for `not_after_audit_time`: set by the Pandera engine for
# the duration of one audit (the SQL engine binds the same instant as a parameter).
AUDIT_NOW: ContextVar[datetime | None] = ContextVar("audit_now", default=None)

# Values with a magnitude under this bound multiply pairwise without leaving int64.
_SAFE_INT = 2**30


def audit_now() -> pd.Timestamp:
    now = AUDIT_NOW.get() or datetime.now(timezone.utc)
    return pd.Timestamp(now).tz_convert("UTC") if now.tzinfo else pd.Timestamp(now, tz="UTC")


def _floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 with NaN for NULL (the SQL side casts to double precision)."""
    return frame[column].to_numpy(dtype="float64", na_value=np.nan)


def _ints(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as int64 with 0 for NULL (NULL rows fail through the engine's null mask)."""
    series = frame[column]
    if isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
        return series.to_numpy(dtype="int64", na_value=0)
    return series.fillna(0).to_numpy(dtype="int64")


def _python_ints(frame: pd.DataFrame, column: str, rows: np.ndarray) -> list[int]:
    return [0 if pd.isna(v) else int(v) for v in frame[column].to_numpy(dtype=object)[rows]]


def _series(values: np.ndarray, frame: pd.DataFrame) -> pd.Series:
    return pd.Series(values, index=frame.index, dtype=bool)


# ---------------------------------------------------------------- column checks


@register_check_method(statistics=["allowed"], supported_types=pd.Series)
def chars_within(series, *, allowed: str):
    """Every character of the text is one of `allowed` (SQL: ltrim(x, allowed) = '')."""
    return series.str.lstrip(allowed) == ""


@register_check_method(statistics=[], supported_types=pd.Series)
def not_after_audit_time(series):
    """The timestamp is not later than the audit time (the future starts after it)."""
    return series <= audit_now()


# ---------------------------------------------------------------- row invariants


def _per_minute_matches(frame, stored, chars, duration, tolerance):
    total = np.zeros(len(frame), dtype="float64")
    for column in chars:
        total = total + _floats(frame, column)
    duration_ms = _floats(frame, duration)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = total * 12000.0 / duration_ms
        ok = (duration_ms > 0) & (np.abs(_floats(frame, stored) - expected) <= tolerance + FLOAT_SLACK)
    return _series(ok, frame)


@register_check_method(statistics=["stored", "chars", "duration", "tolerance"], supported_types=pd.DataFrame)
def wpm_matches_counts(frame, *, stored, chars, duration, tolerance):
    """The stored wpm is (sum of `chars`) / 5 / minutes, within `tolerance`."""
    return _per_minute_matches(frame, stored, chars, duration, tolerance)


@register_check_method(statistics=["stored", "chars", "duration", "tolerance"], supported_types=pd.DataFrame)
def raw_wpm_matches_counts(frame, *, stored, chars, duration, tolerance):
    """The stored raw wpm is (sum of `chars`) / 5 / minutes, within `tolerance`."""
    return _per_minute_matches(frame, stored, chars, duration, tolerance)


@register_check_method(statistics=["column", "floor"], supported_types=pd.DataFrame)
def column_not_below(frame, *, column, floor):
    """`column` >= `floor` in the same row."""
    return _series(_floats(frame, column) >= _floats(frame, floor), frame)


@register_check_method(
    statistics=["column", "max_value", "duration", "min_duration"], supported_types=pd.DataFrame
)
def at_most_unless_short(frame, *, column, max_value, duration, min_duration):
    """`column` <= `max_value`, unless the test lasted less than `min_duration` ms."""
    return _series((_floats(frame, column) <= max_value) | (_floats(frame, duration) < min_duration), frame)


@register_check_method(statistics=["stored", "correct", "incorrect", "tolerance"], supported_types=pd.DataFrame)
def accuracy_matches_keystrokes(frame, *, stored, correct, incorrect, tolerance):
    """The stored accuracy is correct / (correct + incorrect) * 100 (100 without keys)."""
    right = _floats(frame, correct)
    keys = right + _floats(frame, incorrect)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(keys > 0, right * 100.0 / keys, 100.0)
        ok = (keys >= 0) & (np.abs(_floats(frame, stored) - expected) <= tolerance + FLOAT_SLACK)
    return _series(ok, frame)


@register_check_method(statistics=["stored", "chars", "correct", "incorrect"], supported_types=pd.DataFrame)
def xp_matches_counts(frame, *, stored, chars, correct, incorrect):
    """The stored xp is metrics.result_xp of the counts, exactly (all counts non-negative).

    xp = floor(N * c / D) with N the sum of `chars`, c the correct and D all keystrokes,
    checked without division as xp * D <= N * c < (xp + 1) * D; xp = 0 when D = 0.
    """
    columns = [stored, *chars, correct, incorrect]
    values = {column: _ints(frame, column) for column in columns}
    safe = np.ones(len(frame), dtype=bool)
    for column in columns:
        safe &= np.abs(values[column]) < _SAFE_INT
    ok = np.zeros(len(frame), dtype=bool)
    xp, c, i = values[stored], values[correct], values[incorrect]
    n = sum(values[column] for column in chars)
    d = c + i
    counts_ok = (c >= 0) & (i >= 0)
    for column in chars:
        counts_ok &= values[column] >= 0
    identity = np.where(d == 0, xp == 0, (xp * d <= n * c) & (n * c < (xp + 1) * d))
    ok[safe] = (counts_ok & identity)[safe]
    big = np.flatnonzero(~safe)
    if len(big):
        exact = {column: _python_ints(frame, column, big) for column in columns}
        for position, row in enumerate(big):
            xp_, c_, i_ = exact[stored][position], exact[correct][position], exact[incorrect][position]
            parts = [exact[column][position] for column in chars]
            n_, d_ = sum(parts), c_ + i_
            fine = c_ >= 0 and i_ >= 0 and all(p >= 0 for p in parts)
            ok[row] = fine and (xp_ == 0 if d_ == 0 else xp_ * d_ <= n_ * c_ < (xp_ + 1) * d_)
    return _series(ok, frame)


@register_check_method(statistics=["level", "xp"], supported_types=pd.DataFrame)
def level_matches_xp(frame, *, level, xp):
    """The level is Monkeytype's level of the xp, by metrics' integer check."""
    levels, points = _ints(frame, level), _ints(frame, xp)
    safe = (np.abs(levels) < 2**20) & (np.abs(points) < 2**60)
    n = levels - 1
    ok = np.zeros(len(frame), dtype=bool)
    identity = (n >= 0) & (points >= 0) & (n * (49 * n + 151) <= 2 * points) & (2 * points < (n + 1) * (49 * n + 200))
    ok[safe] = identity[safe]
    big = np.flatnonzero(~safe)
    if len(big):
        exact_levels = _python_ints(frame, level, big)
        exact_points = _python_ints(frame, xp, big)
        for position, row in enumerate(big):
            ok[row] = metrics.level_matches_xp(exact_levels[position], exact_points[position])
    return _series(ok, frame)
